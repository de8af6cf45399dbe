"""The signed multiplier of a PE: the only place the array multiplies.

Two netlists, one behaviour. ``behavioral`` is plain Amaranth (simulation, and iCE40 where
``synth_ice40 -dsp`` infers SB_MAC16 from it). ``ecp5`` instantiates MULT18X18D with its own
input and output registers, because Yosys does not pack fabric registers into that DSP and an
unregistered DSP roughly halves the array's clock (see /work/shared/toolchain.md).
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import ConfigError

__all__ = ["Multiplier"]

#: Operand width of MULT18X18D.
_DSP_WIDTH = 18

#: Register stages of the structure built here: operand registers, product register, and one
#: fabric register after the product (on ECP5: DSP input register, DSP output register, then a
#: fabric flip-flop, which is what lets the DSP-to-adder path route at ~180 MHz).
_STAGES = 3


class Multiplier(wiring.Component):
    """Free-running pipelined signed multiplier: ``p`` at cycle t+3 is ``a * b`` sampled at t.

    There is no enable: every cycle a new pair enters and a product leaves, so the PE keeps its
    operands and its accumulator enable delayed by :attr:`latency` cycles alongside.

    With ``cfg.multiplier == "ecp5"`` the DSP's registers and the fabric register after it have
    no reset (MULT18X18D's reset would need a routed net per DSP, for nothing): ``p`` is garbage
    for the first :attr:`latency` cycles after power-up, and a reset does not clear the
    pipeline. That is harmless because the PE never uses a product before ``latency`` cycles of
    valid input have entered: it delays its ``first``/``last`` flags by :attr:`latency` and
    starts each sum from the product (``Mux(first, 0, acc) + p``), never from a register that
    reset cleared. The ``behavioral`` version resets to 0, but a design must not rely on that,
    or it would behave differently on ECP5.

    Parameters
    ----------
    cfg : skiptrain.config.Config
        Reads ``data_width``, ``multiplier`` and ``multiplier_latency``.
    width : int, optional
        Operand width instead of ``cfg.data_width`` (the sequencer's extent multiplier).

    Members
    -------
    a : In(signed(cfg.data_width))
    b : In(signed(cfg.data_width))
    p : Out(signed(2 * cfg.data_width))
        ``a * b`` from :attr:`latency` cycles earlier; exact (the full-width product).
    """

    def __init__(self, cfg, width: int | None = None):
        try:
            width, kind = self._check(cfg, width)
        except ConfigError:
            # A component that failed its checks was never built; without this Amaranth
            # would also warn, at garbage collection, that it was never elaborated.
            self._MustUse__used = True
            raise
        self._width = width
        self._kind = kind
        super().__init__({
            "a": In(signed(width)),
            "b": In(signed(width)),
            "p": Out(signed(2 * width)),
        })

    @staticmethod
    def _check(cfg, width=None) -> tuple[int, str]:
        kind, latency = cfg.multiplier, cfg.multiplier_latency
        name = "data_width" if width is None else "width"
        width = cfg.data_width if width is None else width
        if kind not in ("behavioral", "ecp5"):
            raise ConfigError(f"multiplier={kind!r}: must be one of ('behavioral', 'ecp5')")
        if not isinstance(width, int) or width < 2:
            raise ConfigError(f"{name}={width!r}: must be an integer >= 2")
        if kind == "ecp5" and width > _DSP_WIDTH:
            raise ConfigError(f"{name}={width!r}: must be at most {_DSP_WIDTH} with "
                              f"multiplier='ecp5' (MULT18X18D is {_DSP_WIDTH}x{_DSP_WIDTH})")
        if latency != _STAGES:
            raise ConfigError(f"multiplier_latency={latency!r}: must be {_STAGES}, the depth "
                              "of the pipeline rtl/multiplier.py builds")
        return width, kind

    @property
    def latency(self) -> int:
        """Cycles from ``a``/``b`` to ``p``."""
        return _STAGES

    @property
    def kind(self) -> str:
        return self._kind

    def elaborate(self, platform):
        m = Module()
        if self._kind == "behavioral":
            self._elaborate_behavioral(m)
        else:
            self._elaborate_ecp5(m)
        return m

    def _elaborate_behavioral(self, m):
        w = self._width
        a_r = Signal(signed(w))
        b_r = Signal(signed(w))
        prod = Signal(signed(2 * w))
        m.d.sync += [
            a_r.eq(self.a),
            b_r.eq(self.b),
            prod.eq(a_r * b_r),
            self.p.eq(prod),
        ]

    def _elaborate_ecp5(self, m):
        w = self._width
        # Sign-extend to the DSP's width and let SIGNEDA/SIGNEDB make it a signed multiply;
        # zero-extending would turn negative operands into large positive ones.
        a18 = Signal(signed(_DSP_WIDTH))
        b18 = Signal(signed(_DSP_WIDTH))
        m.d.comb += [a18.eq(self.a), b18.eq(self.b)]
        p36 = Signal(2 * _DSP_WIDTH)
        ports = {}
        for i in range(_DSP_WIDTH):
            ports[f"i_A{i}"] = a18[i]
            ports[f"i_B{i}"] = b18[i]
            ports[f"i_C{i}"] = Const(0, 1)
        for i in range(2 * _DSP_WIDTH):
            ports[f"o_P{i}"] = p36[i]
        clk = ClockSignal("sync")
        zero, one = Const(0, 1), Const(1, 1)
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
            p_REG_INPUTC_CLK="NONE",
            # The DSP's pipeline register would add a fourth stage; the fabric register below
            # is worth more, because it cuts the long DSP-to-fabric route instead.
            p_REG_PIPELINE_CLK="NONE",
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
            p_CLK3_DIV="ENABLED", p_HIGHSPEED_CLK="NONE",
            # No global set/reset either: the registers are never read before they are written.
            p_GSR="DISABLED",
            p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
            p_RESETMODE="SYNC",
            i_SIGNEDA=one, i_SIGNEDB=one, i_SOURCEA=zero, i_SOURCEB=zero,
            # Only clock set 0 is used; the shift-chain inputs (SRIA/SRIB) and clock sets 1-3
            # stay unconnected, as in Yosys's own MULT18X18D mapping (dsp_map_18x18.v).
            i_CLK0=clk, i_CE0=one, i_RST0=zero,
            **ports,
        )
        # The product of two w-bit signed numbers fits 2w signed bits (min*min = 2**(2w-2)),
        # so the low 2w bits of the 36-bit result are exact.
        p_r = Signal(signed(2 * w), reset_less=True)
        m.d.sync += p_r.eq(p36[:2 * w])
        m.d.comb += self.p.eq(p_r)
