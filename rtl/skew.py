"""Staggering of operand lanes so that a wavefront crosses the array diagonally."""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class Skew(wiring.Component):
    """Delays lane ``l`` by ``l`` cycles (lane 0 is a wire).

    Row i of the array must see step k of op(A) at the same cycle as column j sees step k of
    op(B) at PE (i, j); delaying lane i of A by i and lane j of B by j achieves that.

    Members
    -------
    i : In(ArrayLayout(shape, lanes))
    o : Out(ArrayLayout(shape, lanes))
    """

    def __init__(self, lanes: int, shape):
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes={lanes!r}: must be a positive integer")
        self._lanes = lanes
        self._shape = Shape.cast(shape)
        layout = data.ArrayLayout(shape, lanes)
        super().__init__({"i": In(layout), "o": Out(layout)})

    def latency(self, lane: int) -> int:
        return lane

    def elaborate(self, platform):
        m = Module()
        for lane in range(self._lanes):
            v = self.i[lane]
            for stage in range(lane):
                d = Signal(self._shape, name=f"lane{lane}_d{stage}")
                m.d.sync += d.eq(v)
                v = d
            m.d.comb += self.o[lane].eq(v)
        return m
