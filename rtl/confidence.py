"""The confidence comparator's decision: per sample, is it confident (skiptrain.skip, ConfMode)?"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain.skip import CONF_TAU_WIDTH, ConfMode


class Confidence(wiring.Component):
    """The per-sample test of the confidence comparator, V lanes, without a divider.

    Per lane the loss unit hands in S = sum_j EXP[z_max - z_j] (``s``), the mode's c_i (``c``:
    p_max, p_y or the logit margin), whether argmax == label (``hit``) and whether the lane holds
    a sample (``sample``); with ``valid`` (a group's values are final) the unit registers

    - ``confident[l]``: the lane holds a sample, passes the mode's test and, with
      ``require_correct``, its argmax is its label. The tests, against CONF_TAU (``conf_tau``):
      max_prob S <= CONF_TAU (the host writes floor(2**16 / tau)); true_class_prob p_y >= CONF_TAU;
      margin z(1) - z(2) >= CONF_TAU;
    - ``c_out[l]``: c_i, or 0 for a lane without a sample or a cycle without ``valid``.

    One compare per lane, x >= threshold, serves every mode: max_prob passes when *not*
    S >= CONF_TAU + 1. The threshold (CONF_TAU, + 1 in max_prob) is computed once, registered,
    and split into the operands' width and an "above every operand" bit: ``conf_tau`` and
    ``mode`` must hold for ``threshold_latency`` cycles before ``valid`` (they are registers
    the host writes while the accelerator is idle). Mode 3 is refused before a LOSS runs
    (SKIP_CONFIG); here it tests like true_class_prob.
    """

    #: cycles ``conf_tau`` and ``mode`` must be stable before ``valid``
    threshold_latency = 1
    #: cycles from ``valid`` to ``confident`` and ``c_out``
    latency = 1

    def __init__(self, lanes: int, s_bits: int, c_bits: int):
        for name, value in (("lanes", lanes), ("s_bits", s_bits), ("c_bits", c_bits)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive integer")
        self._lanes, self._s_bits, self._c_bits = lanes, s_bits, c_bits
        super().__init__({
            "mode": In(2), "require_correct": In(1), "conf_tau": In(CONF_TAU_WIDTH),
            "valid": In(1),
            "s": In(s_bits).array(lanes), "c": In(c_bits).array(lanes),
            "hit": In(lanes), "sample": In(lanes),
            "confident": Out(lanes), "c_out": Out(c_bits).array(lanes),
        })

    @staticmethod
    def _threshold(conf_tau, is_max_prob):
        """The threshold of x >= threshold: S <= T is not S >= T + 1."""
        return conf_tau + is_max_prob

    def elaborate(self, platform):
        m = Module()
        x_bits = max(self._s_bits, self._c_bits)
        is_max_prob = self.mode == ConfMode.MAX_PROB
        wide = Signal(CONF_TAU_WIDTH + 1)
        m.d.comb += wide.eq(self._threshold(self.conf_tau, is_max_prob))
        tau_sel, tau_big = Signal(x_bits), Signal()
        # the mode's decode registered with the threshold (the mode is as stable as CONF_TAU):
        # decoded in front of every lane's operand multiplexer it was the critical path of
        # 91aa52b's seed 2 (the loss unit's mode register into confident, 8.37 ns)
        max_prob_q = Signal(name="is_max_prob_q")
        m.d.sync += [tau_sel.eq(wide[:x_bits]), tau_big.eq(wide[x_bits:].any()),
                     max_prob_q.eq(is_max_prob)]
        for lane in range(self._lanes):
            x = Mux(max_prob_q, self.s[lane], self.c[lane])
            passed = (~tau_big & (x >= tau_sel)) ^ max_prob_q
            ok = self.valid & self.sample[lane]
            m.d.sync += [self.confident[lane].eq(ok & passed & (self.hit[lane] | ~self.require_correct)),
                         self.c_out[lane].eq(Mux(ok, self.c[lane], 0))]
        return m
