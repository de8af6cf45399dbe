"""The kept-count normaliser: scales the update's step by batch / kept on its way to E1."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config, ConfigError
from skiptrain.numerics import NORM_FRAC, NORM_LO_BITS, norm_step_width

from .arith import round_saturate
from .multiplier import Multiplier

__all__ = ["Normaliser"]


class Normaliser(wiring.Component):
    """``out`` = ``round_half_even(clamp(step) * m / 2**16)`` per lane when ``norm`` is set,
    else ``step`` itself, :attr:`latency` cycles later (every cycle a new row).

    ``m`` is the mantissa of batch / kept (:func:`skiptrain.numerics.norm_mantissa`, in
    [2**16, 2**17)); the exponent of that ratio has already been taken off the requantizer's
    shift, so the step arrives 2**e times finer than it is needed and this product is at most
    twice it. ``clamp`` saturates the step to :func:`~skiptrain.numerics.norm_step_width`
    signed bits (35 on the default preset: a step of 2**34 in the master weights' units is
    2**18 in the operands'), so that the step splits into a 17-bit unsigned low part and an
    18-bit signed high part, each one 18x18 multiply (on ECP5 a MULT18X18D with its registers,
    :class:`~rtl.multiplier.Multiplier`), and the result fits ``acc_width``. With m = 2**16
    (every sample kept, or a kept count that divides the batch by a power of two) the result is
    the step itself, bit for bit.

    Pipeline: clamp, the multiplier (3), the two products summed and the round-up bit taken
    from the low product (the high one starts at bit 17, above the rounding), the increment
    and the select. golden/normaliser.py is the same arithmetic.

    Members
    -------
    step : In(ArrayLayout(signed(acc_width), lanes))
    norm : In(1)
        Constant over a command (the writer's registered command field).
    m : In(unsigned(17))
        Constant over a command.
    out : Out(ArrayLayout(signed(acc_width), lanes))
    """

    def __init__(self, cfg: Config, lanes: int):
        try:
            if not cfg.kept_norm:
                raise ConfigError("kept_norm=False: the normaliser is only built with kept_norm=True")
            if not isinstance(lanes, int) or lanes < 1:
                raise ConfigError(f"lanes={lanes!r}: must be an integer >= 1")
        except ConfigError:
            self._MustUse__silence = True  # refused: never elaborated
            raise
        self._cfg, self._lanes = cfg, lanes
        self._xw = norm_step_width(cfg.acc_width)
        lanes_of = data.ArrayLayout(signed(cfg.acc_width), lanes)
        super().__init__({"step": In(lanes_of), "norm": In(1), "m": In(unsigned(NORM_FRAC + 1)),
                          "out": Out(lanes_of)})

    @property
    def latency(self) -> int:
        """Cycles from ``step`` to ``out``: the clamp, the multiplier, the sum, the increment."""
        return 1 + self._cfg.multiplier_latency + 2

    @property
    def step_width(self) -> int:
        return self._xw

    def elaborate(self, platform):
        cfg, xw, lo_bits = self._cfg, self._xw, NORM_LO_BITS
        m = Module()
        hi_bits = xw - lo_bits
        assert 1 <= hi_bits <= 18 and lo_bits + 1 <= 18
        # the step itself, delayed alike for the commands that do not normalise
        through = self.step
        for stage in range(self.latency - 1):
            nxt = Signal.like(self.step, name=f"through_d{stage}")
            m.d.sync += nxt.eq(through)
            through = nxt
        norm = Signal()
        m.d.sync += norm.eq(self.norm)
        for j in range(self._lanes):
            x = Signal(signed(xw), name=f"x{j}")
            clamped, _ = round_saturate(self.step[j], 0, xw)
            m.d.sync += x.eq(clamped)
            m.submodules[f"mul_lo{j}"] = mul_lo = Multiplier(cfg, width=18)
            m.submodules[f"mul_hi{j}"] = mul_hi = Multiplier(cfg, width=18)
            m.d.comb += [mul_lo.a.eq(x[:lo_bits].as_unsigned()), mul_lo.b.eq(self.m),
                         mul_hi.a.eq(x[lo_bits:].as_signed()), mul_hi.b.eq(self.m)]
            # x * m = lo * m + (hi * m) << 17: bits below 17 come from the low product alone
            total = Signal(signed(xw + NORM_FRAC + 2), name=f"total{j}")
            up = Signal(name=f"up{j}")
            p_lo = mul_lo.p
            m.d.sync += [total.eq(p_lo + (mul_hi.p << lo_bits)),
                         up.eq(p_lo[NORM_FRAC - 1] & (p_lo[:NORM_FRAC - 1].any() | p_lo[NORM_FRAC]))]
            scaled = (total >> NORM_FRAC) + up
            m.d.sync += self.out[j].eq(Mux(norm, scaled, through[j]))
        return m
