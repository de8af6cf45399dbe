"""PyTorch golden model of the skiptrain accelerator, and the training library (golden.training).

The model mirrors rtl/ block by block under the same names (requantizer, systolic_array,
operand_reader, result_writer, sequencer, accelerator) and never imports rtl/: both read only
:mod:`skiptrain`'s config, command set and memory layout.
"""
