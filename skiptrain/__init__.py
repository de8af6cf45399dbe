"""skiptrain: a DNN training accelerator with gradient-skip methods, its golden model and flows.

The package holds what the RTL generator (``rtl``), the golden model (``golden``), the benches
(``cocotb_tests``) and the FPGA flow (``fpga``) share: the config (:mod:`skiptrain.config`), the
command set (:mod:`skiptrain.isa`), the memory layout (:mod:`skiptrain.layout`) and the host
register map (:mod:`skiptrain.hostmap`), and the ``skiptrain`` command line.
"""

__version__ = "0.1.0"
