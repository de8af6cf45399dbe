"""Performance counters: cycles, commands, tiles, bubbles, and cycles and MACs per training phase."""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .command import Phase

from skiptrain.hostmap import COUNTERS, PHASE_NAMES, SKIP_COUNTERS, TRAINING_COUNTERS

assert [p.name.lower() for p in Phase] == list(PHASE_NAMES)


class PerfCounters(wiring.Component):
    """Free-running event counters, cleared by ``clear``; they wrap at counter_width bits.

    The events are registered on arrival (they come from the sequencer, possibly from across
    the die), so every count lags its event by one cycle more than ``clear`` does; the host
    reads a counter no earlier than a cycle after ``done``, when all events are counted.

    ``cycles`` counts every busy cycle; ``commands`` the GEMM and LOSS commands completed;
    ``loss_cycles`` the CHECK and run cycles of LOSS commands, ``correct`` the samples whose
    argmax equals their label (LOSS commands); per phase, ``phase_cycles`` counts the CHECK, ISSUE and
    DRAIN cycles of GEMM commands and ``phase_macs`` the useful multiply-accumulates
    (M*K*N per command, ragged tile edges excluded). The skip counters: ``confident`` the
    samples that passed the per-sample confidence test, ``skipped_batches`` the batches the
    skip controller skipped, and per phase ``skipped_macs`` the M*K*N of gated GEMMs skipped
    (the sequencer's SKIP state hands them over as partial products); ``skipped_samples`` the
    samples the per-sample policy skipped.
    """

    def __init__(self, cfg: Config):
        self._cfg = cfg
        super().__init__({
            "clear": In(1), "busy": In(1), "in_command": In(1), "phase": In(Phase),
            "tile": In(1), "bubble": In(1), "cmd_done": In(1), "in_loss": In(1),
            "correct": In(range(cfg.banks + 1)),
            "macs": In(range(cfg.rows * cfg.cols + 1)),
            "confident": In(range(cfg.banks + 1)), "skipped_batch": In(1),
            "skipped_macs": In(unsigned(3 * cfg.dim_width)),
            "skipped_samples": In(range(cfg.banks + 1)),
            "count": Out(data.ArrayLayout(unsigned(cfg.counter_width), len(COUNTERS))),
        })

    def elaborate(self, platform):
        m = Module()
        busy = Signal(name="busy")
        in_command = Signal(name="in_command")
        tile = Signal(name="tile")
        bubble = Signal(name="bubble")
        cmd_done = Signal(name="cmd_done")
        phase, macs = Signal.like(self.phase), Signal.like(self.macs)
        in_loss, correct = Signal(), Signal.like(self.correct)
        m.d.sync += [in_loss.eq(self.in_loss), correct.eq(self.correct)]
        confident, skipped_batch = Signal.like(self.confident), Signal()
        skipped_macs = Signal.like(self.skipped_macs)
        skipped_samples = Signal.like(self.skipped_samples)
        m.d.sync += [confident.eq(self.confident), skipped_batch.eq(self.skipped_batch),
                     skipped_macs.eq(self.skipped_macs), skipped_samples.eq(self.skipped_samples)]
        m.d.sync += [busy.eq(self.busy), in_command.eq(self.in_command), tile.eq(self.tile),
                     bubble.eq(self.bubble), cmd_done.eq(self.cmd_done), phase.eq(self.phase),
                     macs.eq(self.macs)]
        c = {name: self.count[n] for n, name in enumerate(COUNTERS)}
        # (enable, amount): a counter adds its amount in the cycles it is enabled, so the
        # enable is the flip-flops' clock enable rather than a multiplexer on the adder's input
        incs = {"cycles": (busy, 1), "commands": (cmd_done, 1), "tiles": (tile, 1),
                "bubbles": (bubble, 1), "loss_cycles": (in_loss, 1), "correct": (1, correct),
                "confident": (1, confident), "skipped_batches": (skipped_batch, 1),
                "skipped_samples": (1, skipped_samples)}
        for p in Phase:
            active = phase == p
            incs[f"phase_cycles_{p.name.lower()}"] = (in_command & active, 1)
            incs[f"phase_macs_{p.name.lower()}"] = (active, macs)
            incs[f"skipped_macs_{p.name.lower()}"] = (active, skipped_macs)
        # without the training hardware the LOSS counters never count, without the skip
        # hardware the skip counters: no registers for them (they read 0)
        names = [n for n in COUNTERS if (self._cfg.training or n not in TRAINING_COUNTERS)
                 and (self._cfg.has_skip or n not in SKIP_COUNTERS)]
        for name in names:
            enable, amount = incs[name]
            with m.If(self.clear):
                m.d.sync += c[name].eq(0)
            with m.Elif(enable):
                m.d.sync += c[name].eq(c[name] + amount)
        return m
