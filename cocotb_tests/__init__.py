"""cocotb co-simulation of the generated Verilog against the golden model.

- :mod:`.bus`: the host bus for cocotb (a ``TB`` that owns clock and reset) behind
  :class:`skiptrain.driver.Driver`;
- :mod:`.test_accelerator`: the cocotb test; it runs a list of scenarios from a file written by
  the calling process and writes back what the hardware did;
- :mod:`.scenarios`: that file format (the golden side, run in the pytest/CLI process);
- :mod:`.runner`: build (one folder per config and simulator, reused) and run helpers.
"""
