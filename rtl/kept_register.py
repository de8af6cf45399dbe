"""A register that synthesis keeps as a module of its own: one copy of a fan-out register."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class KeptRegister(wiring.Component):
    """``q`` is ``d`` one cycle later (reset value 0).

    Alone, it is just a register. It exists so that a value whose register drives too many
    loads can be held in several copies, each near the logic it drives: in one module, Yosys
    merges flip-flops with the same input into one (``opt_merge``; a ``keep`` attribute on the
    signal does not stop it), so each copy is an instance of this component, and the design
    names the instances in its ``synthesis_keep_hierarchy`` (see :mod:`fpga.flow`).
    """

    latency = 1

    def __init__(self, width: int):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width={width!r}: must be an integer >= 1")
        super().__init__({"d": In(width), "q": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.q.eq(self.d)
        return m
