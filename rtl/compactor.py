"""The compactor: which lane holds the q-th kept sample of a group (the per-sample skip)."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .arith import popcount


class Compactor(wiring.Component):
    """From a group's ``keep`` mask (one bit per lane, lane = sample order), ``count`` = the
    number of kept lanes (``count_latency`` = 1) and ``lane_of_rank[q]`` = the lane of the q-th
    kept sample, q < count, in increasing lane order (``latency`` = 2: each lane's rank, the
    number of kept lanes below it, registered; then per rank the one lane with that rank,
    an OR of one-hot candidates). The loss unit writes the group's kept dY columns and kept
    list entries through it; ranks q >= count are not used.

    Both outputs follow ``keep`` every cycle (a pipeline, no state): hold ``keep`` for
    ``latency`` cycles and read them.
    """

    count_latency = 1
    latency = 2

    def __init__(self, lanes: int):
        if lanes < 2:
            raise ValueError(f"lanes={lanes}: must be at least 2")
        self._lanes = lanes
        self.lane_bits = (lanes - 1).bit_length()
        super().__init__({
            "keep": In(lanes),
            "count": Out(range(lanes + 1)),
            "lane_of_rank": Out(data.ArrayLayout(self.lane_bits, lanes)),
        })

    def _rank_of(self, keep, lane):
        """Kept lanes below ``lane``: its rank if it is kept itself (each rank its own
        table-and-tree popcount, no ripple from lane to lane)."""
        return popcount(keep[:lane]) if lane else 0

    def elaborate(self, platform):
        V = self._lanes
        m = Module()
        rank = [Signal(range(V), name=f"rank{lane}") for lane in range(V)]
        kept = Signal(V)
        m.d.sync += [kept.eq(self.keep), self.count.eq(popcount(self.keep))]
        m.d.sync += [r.eq(self._rank_of(self.keep, lane)) for lane, r in enumerate(rank)]
        for q in range(V):
            pick = 0
            for lane in range(V):
                pick = pick | Mux(kept[lane] & (rank[lane] == q), lane, 0)
            m.d.sync += self.lane_of_rank[q].eq(pick)
        return m
