"""Requantization of accumulators to the operand format: shift, round half to even, saturate."""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config


class Requantizer(wiring.Component):
    """``lanes`` accumulators in, ``lanes`` results out, ``latency`` = 2 cycles later.

    With ``quant`` = 1 each value becomes round_half_even(value / 2**shift) saturated to
    [data_min, data_max], and ``saturated`` marks the lanes that were clamped. With ``quant``
    = 0 the values pass unchanged (full-accumulator write-back), with the same latency.

    Rounding without a divider: t = value >> (shift - 1) keeps the half bit in t[0]; the bits
    below it are tested with a mask computed once per command; round up when the half bit is
    set and either a lower bit is set or the truncated value is odd.

    Members
    -------
    value : In(ArrayLayout(signed(acc_width), lanes))
    valid, quant : In(1)
    shift : In(unsigned(shift_width))
    out : Out(ArrayLayout(signed(acc_width), lanes))
    out_valid : Out(1)
    saturated : Out(lanes)
    """

    latency = 2

    #: lanes that share one copy of the per-command constants
    lanes_per_copy = 2

    @property
    def settle_cycles(self) -> int:
        """Cycles after ``shift`` or ``quant`` change before values may enter: the per-command
        constants are copied once per ``lanes_per_copy`` lanes down a register chain (copies
        fed by one register would be merged by Yosys into one flip-flop driving every lane's
        shifter)."""
        return -(-self._lanes // self.lanes_per_copy)

    def __init__(self, cfg: Config, lanes: int):
        self._cfg, self._lanes = cfg, lanes
        aw = cfg.acc_width
        super().__init__({
            "value": In(data.ArrayLayout(signed(aw), lanes)),
            "valid": In(1), "quant": In(1), "shift": In(unsigned(cfg.shift_width)),
            "out": Out(data.ArrayLayout(signed(aw), lanes)),
            "out_valid": Out(1), "saturated": Out(lanes),
        })

    def elaborate(self, platform):
        cfg, aw = self._cfg, self._cfg.acc_width
        m = Module()
        # constants of the command (shift and mode are fixed while a command runs), one copy
        # per lane: lane 0's computed, lane l's copied from lane l-1's
        consts = data.StructLayout({"below_half": aw,  # mask of the bits below the half bit
                                    "shift_m1": self.shift.shape(), "rounding": 1, "quant": 1})
        copies = [Signal(consts, name=f"consts{n}") for n in range(self.settle_cycles)]
        m.d.sync += [copies[0].below_half.eq(((Const(1, aw + 1) << self.shift) - 1) >> 1),
                     copies[0].shift_m1.eq(self.shift - 1),
                     copies[0].rounding.eq(self.quant & (self.shift != 0)),
                     copies[0].quant.eq(self.quant)]
        m.d.sync += [copies[n].eq(copies[n - 1]) for n in range(1, len(copies))]
        lane_consts = [copies[l // self.lanes_per_copy] for l in range(self._lanes)]

        q1 = [Signal(signed(aw), name=f"q{l}") for l in range(self._lanes)]
        half1 = Signal(self._lanes)
        sticky1 = Signal(self._lanes)
        v1 = Signal()
        m.d.sync += v1.eq(self.valid)
        for l in range(self._lanes):
            x, k = self.value[l], lane_consts[l]
            t = x >> k.shift_m1
            m.d.sync += [q1[l].eq(Mux(k.rounding, t >> 1, x)),
                         half1[l].eq(k.rounding & t[0]),
                         sticky1[l].eq((x.as_unsigned() & k.below_half) != 0)]

        # Saturation without a carry chain: q fits the operand format iff its bits from
        # data_width-1 up are all equal; rounding (at most +1) can only push q = data_max over.
        # The increment itself then needs data_width+1 bits, not acc_width.
        dw, lo, hi = cfg.data_width, cfg.data_min, cfg.data_max
        for l in range(self._lanes):
            q = q1[l]
            up = half1[l] & (sticky1[l] | q[0])
            top = q[dw - 1:]
            fits = (top == 0) | (top == (1 << (aw - dw + 1)) - 1)
            sign = q[aw - 1]
            is_max = fits & ~sign & (q[:dw - 1] == (1 << (dw - 1)) - 1)
            over = (~fits & ~sign) | (is_max & up)
            under = ~fits & sign
            rounded = Signal(signed(dw + 1), name=f"rounded{l}")
            m.d.comb += rounded.eq(q[:dw].as_signed() + up)
            quant = lane_consts[l].quant
            m.d.sync += [self.out[l].eq(Mux(quant, Mux(over, hi, Mux(under, lo, rounded)), q)),
                         self.saturated[l].eq(quant & (over | under))]
        m.d.sync += self.out_valid.eq(v1)
        return m
