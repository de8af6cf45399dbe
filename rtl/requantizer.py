"""Requantization of accumulators to the operand format: shift, round half to even, saturate."""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .arith import round_saturate


class Requantizer(wiring.Component):
    """``lanes`` accumulators in, ``lanes`` results out, ``latency`` = 3 cycles later.

    With ``quant`` = 1 each value becomes round_half_even(value / 2**shift) saturated to
    [data_min, data_max], and ``saturated`` marks the lanes that were clamped. ``out_wide``
    is the same rounded value in the accumulator's width, not saturated (the weight update's
    step; it cannot overflow: shifting by s >= 1 leaves acc_width - s + 1 bits), a register
    of its own so the saturation path stays as short as it was. ``floor`` rounds down instead
    (stochastic rounding: the caller has added the noise). With ``quant`` = 0 the values pass unchanged (full-accumulator
    write-back), with the same latency.

    Rounding without a divider: q = value >> shift in two registered steps (by the multiple of
    8 in ``shift``, then by the rest: one 40-bit barrel shifter in one cycle was too deep), the
    half bit (bit shift-1) beside it, and the bits below that tested with a mask computed once
    per command; round up when the half bit is set and either a lower bit is set or q is odd.

    Members
    -------
    value : In(ArrayLayout(signed(acc_width), lanes))
    valid, quant, floor : In(1)
    shift : In(unsigned(shift_width))
    out, out_wide : Out(ArrayLayout(signed(acc_width), lanes))
    out_valid : Out(1)
    saturated : Out(lanes)
    """

    latency = 3

    #: lanes that share one copy of the per-command constants
    lanes_per_copy = 2

    @property
    def settle_cycles(self) -> int:
        """Cycles after ``shift``, ``quant`` or ``floor`` change before values may enter: they
        are registered as they arrive, then the per-command constants are computed from them and
        copied once per ``lanes_per_copy`` lanes down a register chain (copies fed by one
        register would be merged by Yosys into one flip-flop driving every lane's shifter)."""
        return self.settle_cycles_for(self._lanes)

    @classmethod
    def settle_cycles_for(cls, lanes: int) -> int:
        return 2 + -(-lanes // cls.lanes_per_copy)

    def __init__(self, cfg: Config, lanes: int):
        self._cfg, self._lanes = cfg, lanes
        aw = cfg.acc_width
        super().__init__({
            "value": In(data.ArrayLayout(signed(aw), lanes)),
            "valid": In(1), "quant": In(1), "floor": In(1),
            "shift": In(unsigned(cfg.shift_width)),
            "out": Out(data.ArrayLayout(signed(aw), lanes)),
            "out_wide": Out(data.ArrayLayout(signed(aw), lanes)),
            "out_valid": Out(1), "saturated": Out(lanes),
        })

    def elaborate(self, platform):
        cfg, aw = self._cfg, self._cfg.acc_width
        m = Module()
        # constants of the command (shift and mode are fixed while a command runs), one copy
        # per lanes_per_copy lanes: the first computed, each next copied from the one before.
        # In ACC mode (quant = 0) both shift amounts are 0, so the value passes unchanged.
        n_coarse = ((aw - 1) >> 3) + 1
        dw = cfg.data_width
        # the saturation's wide tests, a stage early: q = x >> shift has its bits from p up all
        # equal iff x has them from min(p + shift, aw - 1) up. Stage 1 registers, per lane, x's
        # "all equal from bit dw - 1 + i up" for every i (n_eq of them); stage 2 picks the two
        # the shift needs (one-hot selects, per command) for stage 3, which had the two
        # reductions of 25 and 24 bits in front of its clamp (the requantizer's output was the
        # writer's most common late endpoint at 98ce465)
        n_eq = aw - dw + 1
        consts = data.StructLayout({"below_half": aw,  # mask of the bits below the half bit
                                    "coarse": range(n_coarse), "fine": 3, "rounding": 1, "quant": 1,
                                    "fits_sel": n_eq, "top_sel": n_eq})
        # the command's shift and mode registered here first (they come from the writer's
        # command registers), then the selects' shift amounts clamped into registers of their
        # own, then the constants: the one-hot selects were a compare's carry chain and a
        # 25-way decode behind the route from the writer (8.45 ns into consts0, the critical
        # path of the static placer's seed 2 at 70ed4be)
        shift, quant, floor = Signal.like(self.shift), Signal(), Signal()
        m.d.sync += [shift.eq(self.shift), quant.eq(self.quant), floor.eq(self.floor)]
        shift_1, quant_1, floor_1 = Signal.like(self.shift), Signal(), Signal()
        fits_at, top_at = Signal(range(n_eq)), Signal(range(n_eq))
        m.d.sync += [shift_1.eq(shift), quant_1.eq(quant), floor_1.eq(floor),
                     fits_at.eq(Mux(shift >= n_eq - 1, n_eq - 1, shift)),
                     top_at.eq(Mux(shift >= n_eq - 2, n_eq - 1, shift + 1))]
        copies = [Signal(consts, name=f"consts{n}") for n in range(self.settle_cycles - 2)]
        m.d.sync += [copies[0].below_half.eq(((Const(1, aw + 1) << shift_1) - 1) >> 1),
                     copies[0].coarse.eq(Mux(quant_1, shift_1 >> 3, 0)),
                     copies[0].fine.eq(Mux(quant_1, shift_1[:3], 0)),
                     copies[0].rounding.eq(quant_1 & (shift_1 != 0) & ~floor_1),
                     copies[0].quant.eq(quant_1),
                     copies[0].fits_sel.eq((Const(1, n_eq) << fits_at)[:n_eq]),
                     copies[0].top_sel.eq((Const(1, n_eq) << top_at)[:n_eq])]
        m.d.sync += [copies[n].eq(copies[n - 1]) for n in range(1, len(copies))]
        lane_consts = [copies[l // self.lanes_per_copy] for l in range(self._lanes)]

        # stage 1: shift by 8 * coarse; keep the bit just below the cut, and the sticky bits
        xa = [Signal(signed(aw), name=f"xa{l}") for l in range(self._lanes)]
        below_a, sticky_a = Signal(self._lanes), Signal(self._lanes)
        eq_a = [Signal(n_eq, name=f"eq_from_a{l}") for l in range(self._lanes)]
        va = Signal()
        m.d.sync += va.eq(self.valid)
        for l in range(self._lanes):
            x, k = self.value[l], lane_consts[l]
            ux = x.as_unsigned()
            m.d.sync += [eq_a[l][i].eq((ux[dw - 1 + i:] == 0) | (ux[dw - 1 + i:] == (1 << (aw - dw + 1 - i)) - 1))
                         for i in range(n_eq)]
            m.d.sync += [xa[l].eq(Array([x >> (8 * i) for i in range(n_coarse)])[k.coarse]),
                         below_a[l].eq(Array([Const(0, 1)] + [x[8 * i - 1] for i in range(1, n_coarse)])[k.coarse]),
                         sticky_a[l].eq((ux & k.below_half) != 0)]

        # stage 2: shift by fine; the half bit is bit fine-1 of xa (or the bit below the cut)
        q1 = [Signal(signed(aw), name=f"q{l}") for l in range(self._lanes)]
        half1 = Signal(self._lanes)
        sticky1 = Signal(self._lanes)
        fits1, top1 = Signal(self._lanes), Signal(self._lanes)
        v1 = Signal()
        m.d.sync += [v1.eq(va), sticky1.eq(sticky_a)]
        for l in range(self._lanes):
            k = lane_consts[l]
            halves = Array([below_a[l]] + [xa[l][i] for i in range(7)])
            m.d.sync += [q1[l].eq(xa[l] >> k.fine), half1[l].eq(k.rounding & halves[k.fine]),
                         fits1[l].eq((eq_a[l] & k.fits_sel).any()),
                         top1[l].eq((eq_a[l] & k.top_sel).any())]

        # Saturation without a carry chain (rtl.arith.round_saturate)
        for l in range(self._lanes):
            q = q1[l]
            up = half1[l] & (sticky1[l] | q[0])
            value, sat = round_saturate(q, up, dw, fits=fits1[l], top_ones=top1[l])
            quant = lane_consts[l].quant
            m.d.sync += [self.out[l].eq(Mux(quant, value, q)),
                         self.out_wide[l].eq(q + up),
                         self.saturated[l].eq(quant & sat)]
        m.d.sync += self.out_valid.eq(v1)
        return m
