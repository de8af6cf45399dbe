"""The FPGA flow: synthesis with Yosys and place and route with nextpnr (both YoWASP builds).

:mod:`fpga.targets` describes the parts, :mod:`fpga.flow` runs the tools,
:mod:`fpga.report` reads their output and writes the report, and :mod:`fpga.ice40_wrapper`
fits a core with a wide interface onto the iCE40's few pins. ``skiptrain synth`` drives it.
"""
