"""The gradient-skip controller: decides per batch, in hardware, whether B, G and U run."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config
from skiptrain.numerics import LFSR_WIDTH
from skiptrain.skip import (RATE_BITS, SKIP_LFSR_LANE, BatchPolicy, ConfMode, SamplePolicy, SkipCtrl,
                            batch_tau_width)

from .lfsr import Lfsr


class SkipController(wiring.Component):
    """At the end of every LOSS command (``loss_done`` without ``loss_error``) it decides whether
    the batch is skipped, ``decision_latency`` cycles later; the decision (``skip``) holds until
    the next LOSS, and ``start`` (the program's START) clears it. The sequencer skips every
    ``Gate.BATCH`` command while ``skip`` is set.

    - policy ``CONFIDENCE``: skip when the loss unit's ``batch_sum`` (sum of c_i over the batch,
      see :mod:`skiptrain.skip`) is at least ``batch_tau``;
    - policy ``RANDOM``: the skip LFSR (:class:`~rtl.lfsr.Lfsr` lane ``SKIP_LFSR_LANE``, seeded
      by ``seed_load``) steps once, and the batch is skipped when the stepped value's low 16
      bits are below ``rate`` (the step lands a cycle after the decision is taken);
    - ``OFF``: never.

    ``config_error`` is high while ``ctrl`` holds an unassigned policy, sample policy or
    confidence mode, or norm_kept on an accelerator built without the normaliser (the
    sequencer stops a LOSS with SKIP_CONFIG then; :meth:`skiptrain.skip.SkipCtrl.valid_on`). ``skipped``
    pulses once per skipped batch.
    """

    #: cycles from loss_done to ``skip`` holding the decision
    decision_latency = 2

    def __init__(self, cfg: Config):
        self._cfg = cfg
        super().__init__(skip_controller_signature(cfg))
        # made here, not in elaborate, so a formal harness can state invariants over them
        self.lfsr = Lfsr(SKIP_LFSR_LANE)
        self.pending = Signal()    # a LOSS ended last cycle: decide now
        self.confident = Signal()  # batch_sum >= batch_tau, registered
        self.below = Signal()      # the next step's low bits < rate, registered

    def elaborate(self, platform):
        m = Module()
        policy, mode, sample = self.ctrl[:2], self.ctrl[2:4], self.ctrl[5:7]
        m.d.comb += self.config_error.eq((policy > max(BatchPolicy)) | (mode > max(ConfMode))
                                         | (sample > max(SamplePolicy))
                                         | (self.ctrl[SkipCtrl.NORM_BIT] & (not self._cfg.kept_norm)))

        m.submodules.lfsr = lfsr = self.lfsr
        ended = self.loss_done & ~self.loss_error
        random = policy == BatchPolicy.RANDOM
        # The LFSR steps in cycle 1, from the registered ``pending``, not in cycle 0 from
        # loss_done/loss_error: those come from the loss unit across the die, and as the
        # enable of the LFSR's 32 flip-flops they were ~32 late endpoints in every seed of
        # 98ce465. The draw the decision needs is the *stepped* value, so its compare with
        # ``rate`` is made every cycle on the value the next step gives (``below``); the value
        # stands still between steps, so in cycle 1 ``below`` holds the draw of the step that
        # lands in cycle 2. Seeds are loaded only while idle, never beside a LOSS's end.
        m.d.comb += [lfsr.seed.eq(self.seed), lfsr.load.eq(self.seed_load),
                     lfsr.step.eq(self.pending & random)]

        # cycle 1: the sum compare and the next draw's compare are registered; cycle 2: decide
        pending, confident, below = self.pending, self.confident, self.below
        m.d.sync += [pending.eq(ended), confident.eq(self.batch_sum >= self.batch_tau),
                     below.eq(lfsr.next_value[:RATE_BITS] < self.rate), self.skipped.eq(0)]
        with m.If(self.start):
            m.d.sync += self.skip.eq(0)
        with m.Elif(pending):
            decision = (((policy == BatchPolicy.CONFIDENCE) & confident) | (random & below))
            m.d.sync += [self.skip.eq(decision), self.skipped.eq(decision)]
        return m


def skip_controller_signature(cfg: Config) -> wiring.Signature:
    """The skip controller's ports (top builds them alone when the training hardware is left out)."""
    return wiring.Signature({
        "ctrl": In(SkipCtrl.WIDTH), "batch_tau": In(batch_tau_width(cfg)),
        "rate": In(RATE_BITS + 1), "seed": In(LFSR_WIDTH), "seed_load": In(1),
        "start": In(1), "loss_done": In(1), "loss_error": In(1),
        "batch_sum": In(batch_tau_width(cfg)),
        "config_error": Out(1), "skip": Out(1), "skipped": Out(1),
    })
