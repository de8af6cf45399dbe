"""A 32-bit xorshift LFSR: the random bits of stochastic rounding."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain.numerics import LFSR_LANE_MIX, LFSR_WIDTH, lfsr_seed


class Lfsr(wiring.Component):
    """Marsaglia's xorshift32 (x ^= x << 13; x ^= x >> 17; x ^= x << 5): a linear feedback shift
    register over GF(2) with period 2**32 - 1 through every non-zero state.

    ``load`` sets the state to :func:`skiptrain.numerics.lfsr_seed` (``seed``, ``lane``), which
    is never zero, so the register cannot lock up: ``value`` holds it ``load_latency`` cycles
    after ``load`` (``seed`` is taken in the cycle of ``load``); ``step`` advances it once, a
    cycle later. ``value`` is the current state and ``next_value`` the state one step after it
    (combinational). The golden model steps
    :func:`skiptrain.numerics.lfsr_step` alike.

    The seed comes from the host's registers across the die: it is registered here as it
    arrives (``seed_q``, with ``load`` as ``load_q``), then mixed with the lane's constant
    (``mixed_q``) beside its zero test (``zero_q``, a 32-bit compare), then ``loaded`` is the
    mixed seed or 1, and the state takes it a cycle later. Each stage is one hop: the seed
    through the compare into ``loaded`` was 9.04 ns from the host's registers (the critical
    path of the static placer's seed 1 at 70ed4be) and 10.01 ns from ``seed_q`` (5096382's
    seed 1: the lane LFSRs sit beside their lanes across the writer). The host loads only
    while the accelerator is idle, and the first step comes many cycles after a START, so the
    extra cycles are never seen; a ``step`` in the cycle the load lands loses to the load.
    """

    load_latency = 4

    def __init__(self, lane: int):
        self._lane = lane
        super().__init__({"seed": In(LFSR_WIDTH), "load": In(1), "step": In(1),
                          "value": Out(LFSR_WIDTH, init=lfsr_seed(0, lane)),
                          "next_value": Out(LFSR_WIDTH)})
        # the registered load (made here, so a formal harness can state invariants over it)
        self.seed_q = Signal(LFSR_WIDTH)
        self.load_q = Signal()
        self.mixed_q = Signal(LFSR_WIDTH, init=self._mix(0, lane))
        self.zero_q = Signal(init=int(self._mix(0, lane) == 0))
        self.load_qq = Signal()
        self.loaded = Signal(LFSR_WIDTH, init=lfsr_seed(0, lane))
        self.loading = Signal()

    def elaborate(self, platform):
        m = Module()
        x = self.value
        a = x ^ (x << 13)[:LFSR_WIDTH]
        b = a ^ (a >> 17)
        c = b ^ (b << 5)[:LFSR_WIDTH]
        m.d.comb += self.next_value.eq(c)
        m.d.sync += [self.seed_q.eq(self.seed), self.load_q.eq(self.load)]
        mixed = self._mix(self.seed_q, self._lane)
        m.d.sync += [self.mixed_q.eq(mixed), self.zero_q.eq(mixed == 0), self.load_qq.eq(self.load_q)]
        m.d.sync += [self.loaded.eq(self._loaded(self.mixed_q, self.zero_q)),
                     self.loading.eq(self.load_qq)]
        with m.If(self.loading):
            m.d.sync += x.eq(self.loaded)
        with m.Elif(self.step):
            m.d.sync += x.eq(c)
        return m


    @staticmethod
    def _mix(seed, lane: int):
        """The seed mixed with the lane's constant (``lfsr_seed`` before its zero test)."""
        return seed ^ ((LFSR_LANE_MIX * (lane + 1)) & ((1 << LFSR_WIDTH) - 1))

    @staticmethod
    def _loaded(mixed, zero):
        """The state a load writes: the mixed seed, 1 in place of 0 (``zero``: the mixed
        seed is 0), so it cannot lock up."""
        return Mux(zero, 1, mixed)
