"""Output-stationary processing element."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .multiplier import Multiplier


class PE(wiring.Component):
    """One multiply-accumulate cell of the systolic array.

    Operands and the two control flags move on to the right/lower neighbour after one
    register, so a wavefront crosses the array diagonally. The product of the operands seen at
    cycle t is added at cycle t + ``latency``; ``first`` (travelling with the operands) starts a
    new sum instead of adding to the old one, and ``last`` copies the finished sum into
    ``result`` one cycle later, where it stays until the next ``last``. Having a separate result
    register lets the next tile accumulate while the array drains the previous one.

    The accumulator wraps modulo 2**acc_width, exactly as the golden model does.

    Members
    -------
    a_in, b_in, first_in, last_in : In
        Operands and flags from the left (a, flags) and upper (b) neighbour.
    a_out, b_out, first_out, last_out : Out
        The same, one cycle later.
    result : Out(signed(acc_width))
        The sum of the last completed tile.
    """

    def __init__(self, cfg: Config):
        self._cfg = cfg
        dw, aw = cfg.data_width, cfg.acc_width
        super().__init__({
            "a_in": In(signed(dw)), "b_in": In(signed(dw)),
            "first_in": In(1), "last_in": In(1),
            "a_out": Out(signed(dw)), "b_out": Out(signed(dw)),
            "first_out": Out(1), "last_out": Out(1),
            "result": Out(signed(aw)),
        })

    @property
    def latency(self) -> int:
        """Cycles from operands at the inputs to their product being in the accumulator."""
        return self._cfg.multiplier_latency

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        # Data registers have no reset (the flags do): nothing reads them before a flag says
        # so, and 112 fewer loads per PE on the reset net leave the router room.
        a_q, b_q = Signal.like(self.a_in, reset_less=True), Signal.like(self.b_in, reset_less=True)
        m.d.sync += [a_q.eq(self.a_in), b_q.eq(self.b_in),
                     self.first_out.eq(self.first_in), self.last_out.eq(self.last_in)]
        m.d.comb += [self.a_out.eq(a_q), self.b_out.eq(b_q)]

        m.submodules.multiplier = mul = Multiplier(cfg)
        m.d.comb += [mul.a.eq(self.a_in), mul.b.eq(self.b_in)]

        # the flags wait in step with the multiplier pipeline
        first, last = self.first_in, self.last_in
        for stage in range(mul.latency):
            first_d, last_d = Signal(name=f"first_d{stage}"), Signal(name=f"last_d{stage}")
            m.d.sync += [first_d.eq(first), last_d.eq(last)]
            first, last = first_d, last_d

        acc = Signal(signed(cfg.acc_width), reset_less=True)
        result = Signal(signed(cfg.acc_width), reset_less=True)
        total = Signal(signed(cfg.acc_width))
        m.d.comb += total.eq(Mux(first, 0, acc) + mul.p)  # truncation to acc_width = the wrap
        m.d.sync += acc.eq(total)
        with m.If(last):
            m.d.sync += result.eq(total)
        m.d.comb += self.result.eq(result)
        return m
