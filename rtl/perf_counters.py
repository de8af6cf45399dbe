"""Performance counters: cycles, commands, tiles, bubbles, and cycles and MACs per training phase."""

from amaranth.hdl import Module, Mux, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .command import Phase

from skiptrain.hostmap import COUNTERS, PHASE_NAMES

assert [p.name.lower() for p in Phase] == list(PHASE_NAMES)


class PerfCounters(wiring.Component):
    """Free-running event counters, cleared by ``clear``; they wrap at counter_width bits.

    ``cycles`` counts every busy cycle; per phase, ``phase_cycles`` counts the CHECK, ISSUE and
    DRAIN cycles of GEMM commands and ``phase_macs`` the useful multiply-accumulates
    (M*K*N per command, ragged tile edges excluded).
    """

    def __init__(self, cfg: Config):
        self._cfg = cfg
        super().__init__({
            "clear": In(1), "busy": In(1), "in_command": In(1), "phase": In(Phase),
            "tile": In(1), "bubble": In(1), "cmd_done": In(1),
            "macs": In(range(cfg.rows * cfg.cols + 1)),
            "count": Out(data.ArrayLayout(unsigned(cfg.counter_width), len(COUNTERS))),
        })

    def elaborate(self, platform):
        m = Module()
        c = {name: self.count[n] for n, name in enumerate(COUNTERS)}
        incs = {"cycles": self.busy, "commands": self.cmd_done, "tiles": self.tile,
                "bubbles": self.bubble}
        for p in Phase:
            active = self.phase == p
            incs[f"phase_cycles_{p.name.lower()}"] = self.in_command & active
            incs[f"phase_macs_{p.name.lower()}"] = Mux(active, self.macs, 0)
        with m.If(self.clear):
            m.d.sync += [v.eq(0) for v in c.values()]
        with m.Else():
            m.d.sync += [c[name].eq(c[name] + incs[name]) for name in COUNTERS]
        return m
