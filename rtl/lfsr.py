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
    arrives (``seed_q``, with ``load`` as ``load_q``), then mixed with the lane's constant and
    tested for zero into ``loaded`` (a 32-bit compare: the estimate's six-LUT path into every
    lane's state, and with the route from the host's registers in front of it 9.04 ns, the
    critical path of the static placer's seed 1 at 70ed4be), which the state takes a cycle
    later. The host loads only while the accelerator is idle, and the first step comes many
    cycles after a START, so the extra cycles are never seen; a ``step`` in the cycle the load
    lands loses to the load.
    """

    load_latency = 3

    def __init__(self, lane: int):
        self._lane = lane
        super().__init__({"seed": In(LFSR_WIDTH), "load": In(1), "step": In(1),
                          "value": Out(LFSR_WIDTH, init=lfsr_seed(0, lane)),
                          "next_value": Out(LFSR_WIDTH)})
        # the registered load (made here, so a formal harness can state invariants over it)
        self.seed_q = Signal(LFSR_WIDTH)
        self.load_q = Signal()
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
        mixed = self.seed_q ^ ((LFSR_LANE_MIX * (self._lane + 1)) & ((1 << LFSR_WIDTH) - 1))
        m.d.sync += [self.loaded.eq(self._loaded(mixed)), self.loading.eq(self.load_q)]
        with m.If(self.loading):
            m.d.sync += x.eq(self.loaded)
        with m.Elif(self.step):
            m.d.sync += x.eq(c)
        return m


    @staticmethod
    def _loaded(mixed):
        """The state a load writes: the mixed seed, 1 in place of 0 (so it cannot lock up)."""
        return Mux(mixed == 0, 1, mixed)
