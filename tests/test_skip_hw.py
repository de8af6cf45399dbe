"""The confidence comparator and the batch-skip controller: the shared register helpers, the
golden model's decisions against a float reference, and the RTL against the golden model in the
Amaranth simulator (decisions, skipped commands, counters, cycle counts, errors)."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from fractions import Fraction

import pytest
import torch
from amaranth_bus import run_scenarios

from golden.loss_unit import Comparator, confidence, exp_lookup, softmax_parts, tables
from golden.sequencer import CHECK_CYCLES, FETCH_CYCLES, skip_cycles
from golden.train_scenario import margin_scenario, sample_gather_scenario, skip_error_scenarios, skip_scenario
from rtl.top import Accelerator
from skiptrain import numerics
from skiptrain.config import Config, preset
from skiptrain.isa import Command, ErrorCode, Gate, Phase, decode, encode
from skiptrain.layout import Region
from skiptrain.skip import (CONF_TAU_WIDTH, BatchPolicy, ConfMode, SamplePolicy, SkipCtrl, batch_tau_width,
                            batch_threshold, conf_threshold, rate_register, tcp_bound)

TINY = preset("tiny")
CONFIGS = {
    "tiny": TINY,
    "3x5": Config(rows=3, cols=5, spad_depth=512, acc_depth=128, prog_depth=16, name="3x5"),
}


# ---- the shared register helpers ----------------------------------------------------------------
def test_skip_ctrl_round_trip_and_validity():
    for word in range(1 << SkipCtrl.WIDTH):
        c = SkipCtrl.decode(word)
        assert c.encode() == word
        policy, mode, sample = word & 3, (word >> 2) & 3, (word >> 5) & 3
        # every assigned policy, mode and sample policy, in every combination
        expected = policy != 3 and mode != 3 and sample != 3
        assert c.valid == expected, (word, c.valid, expected)
        # norm_kept (bit 7) needs the normaliser in the hardware
        assert c.norm_kept == bool(word >> 7)
        assert c.valid_on(TINY) == (expected and not c.norm_kept), word
        assert c.valid_on(TINY.replace(kept_norm=True)) == expected, word
    with pytest.raises(ValueError, match="policy=4"):
        SkipCtrl(4).encode()


def test_thresholds_are_exact():
    cfg = preset("default")
    one = 1 << numerics.EXP_FRAC
    # max_prob: S <= floor(2**16 / tau) <=> 2**16 / S >= tau, for every integer S
    for tau in (0.5, 0.9, 0.95, Fraction(2, 3)):
        t = conf_threshold("max_prob", tau, cfg)
        for s in (t - 1, t, t + 1):
            assert (s <= t) == (Fraction(one, s) >= Fraction(tau)), (tau, s)
        t = conf_threshold("true_class_prob", tau, cfg)
        for p in (t - 1, t, t + 1):
            assert (p >= t) == (Fraction(p, one) >= Fraction(tau)), (tau, p)
    assert conf_threshold("margin", math.log(9), cfg) == math.ceil(math.log(9) * 256)
    # a tau so small that 2**16 / tau passes the 32-bit register clamps to its largest value,
    # where every S still passes (S < 257 * 2**16), rather than wrapping to one that passes none
    top = (1 << CONF_TAU_WIDTH) - 1
    for tau in (Fraction(1, 1 << 16), Fraction(1, 1 << 17), 1e-30):
        assert conf_threshold("max_prob", tau, cfg) == top, tau
    assert conf_threshold("max_prob", Fraction(1, (1 << 16) - 1), cfg) == top - (1 << 16) + 1
    assert (numerics.MAX_CLASSES + 1) * one <= top
    assert batch_threshold("max_prob", 0.95, 32, cfg) == math.ceil(Fraction(0.95) * 32 * one)
    assert batch_threshold("margin", 2.0, 32, cfg) == 2 * 32 * 256
    assert rate_register(0) == 0 and rate_register(1) == one and rate_register(0.25) == one // 4


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_tcp_bound_is_the_true_class_test_in_the_index_domain(name):
    """d + L < tcp_bound(CONF_TAU) exactly when EXP[d + L] >= CONF_TAU (0 past the table), for
    every index up to past the table and CONF_TAU at every table value, one above and below it,
    0 and the largest; the golden loss unit's per-sample decision uses the bound."""
    from golden.loss_unit import exp_lookup, tables
    cfg = preset(name)
    exp, _ = tables(cfg.frac_bits)
    index = torch.arange(len(exp) + 3)
    p = exp_lookup(index, exp)
    taus = sorted({0, 1, (1 << 32) - 1} | {int(v) + k for v in exp.unique() for k in (-1, 0, 1) if int(v) + k >= 0})
    for conf_tau in taus:
        bound = tcp_bound(conf_tau, cfg)
        got, want = index < bound, p >= conf_tau
        assert torch.equal(got, want), f"CONF_TAU {conf_tau}: bound {bound}, first difference at index " \
            f"{int(torch.nonzero(got != want)[0, 0])}"
    with pytest.raises(ValueError, match="conf_tau=-1: must be a CONF_TAU register value"):
        tcp_bound(-1, cfg)


@pytest.mark.parametrize("call,match", [
    (lambda: conf_threshold("top5", 0.9, TINY), "confidence mode 'top5'"),
    (lambda: conf_threshold("max_prob", 1.5, TINY), r"tau=1.5: must be in \(0, 1\]"),
    (lambda: conf_threshold("max_prob", 0, TINY), r"tau=0: must be in \(0, 1\]"),
    (lambda: conf_threshold("margin", float("nan"), TINY), "tau=nan: must be a finite number"),
    (lambda: batch_threshold("max_prob", 0.9, 0, TINY), "batch=0"),
    (lambda: batch_threshold("margin", 1e9, 100, TINY), "BATCH_TAU=.*does not fit"),
    (lambda: rate_register(1.5), r"rate=1.5: must be a number in \[0, 1\]"),
])
def test_helpers_reject_bad_values(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- the golden comparator against a float reference ----------------------------------------------
def test_golden_confidence_matches_float_definitions():
    cfg = preset("default")
    g = torch.Generator().manual_seed(3)
    z = torch.randint(-3 * 256, 3 * 256, (10, 64), generator=g)
    z[:, 0] = 100           # every class tied
    z[2, 1] = z[5, 1] = 900  # two tied for the top: margin 0
    labels = torch.randint(0, 10, (64,), generator=g)
    zf = z.double() / 256
    p = torch.softmax(zf, 0)
    zmax, argmax, d, L = softmax_parts(z, cfg)
    for mode in ConfMode:
        _, c = confidence(z, labels, Comparator(mode, False, 0), cfg)
        if mode == ConfMode.MARGIN:
            top = zf.topk(2, dim=0).values
            assert torch.equal(c, ((top[0] - top[1]) * 256).round().long())
            assert c[0] == 0 and c[1] == 0
        else:
            ref = p.amax(0) if mode == ConfMode.MAX_PROB else p[labels, torch.arange(64)]
            # the unit's own softmax output: within the log table's and exp table's rounding
            assert (c.double() / 2 ** 16 - ref).abs().max() < 3e-3, mode
    # require_correct: only samples whose argmax is the label pass
    passed, _ = confidence(z, labels, Comparator(ConfMode.MARGIN, True, 0), cfg)
    assert torch.equal(passed, argmax == labels)


def test_skip_scenarios_cover_the_decision_edges():
    """What the generator below hands the RTL: every policy and mode, both decisions, the
    per-sample threshold exactly at a sample's value, skipped and kept gated GEMMs."""
    seen = Counter()
    for seed in range(40):
        sc = skip_scenario(TINY, seed)
        ctrl = SkipCtrl.decode(sc.skip["ctrl"])
        _, res = sc.expected()
        assert not res.error, sc.name
        seen[("policy", ctrl.policy)] += 1
        seen[("mode", ctrl.mode)] += 1
        seen[("skipped", res.counters["skipped_batches"] > 0)] += 1
        seen[("confident", res.counters["confident"] > 0)] += 1
        seen[("sample", ctrl.sample)] += 1
        if ctrl.sample == SamplePolicy.CONFIDENCE:
            seen[("per-sample mode", ctrl.mode)] += 1
        if ctrl.sample:
            # per-sample: none, some, or every sample of a LOSS skipped
            seen[("samples skipped", _share(res.counters["skipped_samples"], sc))] += 1
    for key in ([("policy", p) for p in BatchPolicy] + [("mode", m) for m in ConfMode]
                + [("sample", p) for p in SamplePolicy]
                + [("per-sample mode", m) for m in ConfMode]
                + [("samples skipped", s) for s in ("none", "some", "all")]
                + [("skipped", True), ("skipped", False), ("confident", True), ("confident", False)]):
        assert seen[key] > 0, f"no scenario with {key}: {dict(seen)}"


def _share(skipped: int, sc) -> str:
    total = sum(c.n for c in sc.commands if c.opcode == 2)
    return "none" if skipped == 0 else "all" if skipped == total else "some"


def test_golden_sample_skip_compacts_the_kept_columns():
    """The per-sample skip writes the kept samples' dY columns compacted, in order: here the
    confident samples (S <= CONF_TAU) are skipped; KEPT and SKIPPED_SAMPLES count them."""
    V = TINY.banks
    z = torch.tensor([[64, 0, 0, 64, 0], [0, 0, 64, 0, 1]])  # 0, 2, 3 are confident; 1 and 4 are not
    labels = torch.tensor([[0, 1, 1, 0, 1]])
    Z = Region.packed(0, 2, 5, V)
    Y = Region.packed(Z.end(V), 1, 5, V)
    D = Region.packed(Y.end(V), 2, 5, V)
    from golden.scenario import Scenario  # noqa: PLC0415
    inputs = [("spad", Z, z), ("spad", Y, labels), ("spad", D, torch.full((2, 5), 99))]
    cmds = [Command.loss(2, 5, Z, Y, D, shift=8), Command()]
    exp, _ = tables(TINY.frac_bits)
    s = exp_lookup(softmax_parts(z, TINY)[2], exp).sum(0)
    tau = int(s[0])  # sample 0's S exactly: S <= tau passes
    assert int(s[1]) > tau and int(s[4]) > tau and int(s[2]) <= tau and int(s[3]) <= tau, s
    plain = Scenario(TINY, inputs=inputs, commands=cmds, name="plain")
    gold_plain, _ = plain.expected()
    sc = Scenario(TINY, inputs=inputs, commands=cmds, name="sample skip",
                  skip={"ctrl": SkipCtrl(sample=SamplePolicy.CONFIDENCE).encode(), "conf_tau": tau})
    gold, res = sc.expected()
    assert res.kept == 2 and res.counters["kept"] == 2 and res.counters["skipped_samples"] == 3
    full, got = gold_plain.load(D), gold.load(D)
    assert torch.equal(got[:, :2], full[:, [1, 4]]), (got, full)
    assert torch.equal(got[:, 2:], torch.full((2, 3), 99)), "the columns past KEPT stay as they were"


def test_golden_skip_counts_cycles_and_macs():
    """A gated GEMM after a skipped batch costs FETCH + CHECK + SKIP and counts its MACs skipped."""
    V = TINY.banks
    Z = Region.packed(0, 2, 2, V)
    Y = Region.packed(Z.end(V), 1, 2, V)
    D = Region.packed(Y.end(V), 2, 2, V)
    B = Region.packed(D.end(V), 2, 3, V)
    C = Region.packed(B.end(V), 2, 3, V)
    from golden.scenario import Scenario  # noqa: PLC0415
    cmds = [Command.loss(2, 2, Z, Y, D, shift=8),
            Command.gemm(2, 2, 3, Z, B, C, phase=Phase.BWD_WEIGHT, gate=Gate.BATCH), Command()]
    inputs = [("spad", Z, torch.tensor([[16, 0], [0, 16]])), ("spad", Y, torch.tensor([[0, 1]]))]
    runs = {}
    for skip in (True, False):
        sc = Scenario(TINY, inputs=inputs, commands=cmds, name="skip",
                      skip={"ctrl": SkipCtrl(BatchPolicy.CONFIDENCE).encode(),
                            "batch_tau": 0 if skip else (1 << batch_tau_width(TINY)) - 1})
        runs[skip] = sc.expected()[1]
    on, off = runs[True], runs[False]
    assert on.batch_skipped and not off.batch_skipped
    assert on.counters["skipped_macs_bwd_weight"] == 2 * 2 * 3 and off.counters["skipped_macs_bwd_weight"] == 0
    assert on.counters["phase_macs_bwd_weight"] == 0 and off.counters["phase_macs_bwd_weight"] == 12
    assert on.counters["phase_cycles_bwd_weight"] == CHECK_CYCLES + skip_cycles(TINY)
    assert on.counters["commands"] == 1 and on.counters["skipped_batches"] == 1
    loss_cycles = on.counters["loss_cycles"]
    assert on.cycles == 3 * FETCH_CYCLES + loss_cycles + CHECK_CYCLES + skip_cycles(TINY) + 1


def test_gate_field_encodes_and_refuses_out_of_range():
    cfg = TINY
    r = Region(0, 1, 1, 1)
    cmd = Command.gemm(1, 1, 1, r, r, r, gate=Gate.BATCH)
    assert decode(encode(cmd, cfg), cfg).gate == Gate.BATCH
    with pytest.raises(ValueError, match="gate=4"):
        encode(dataclasses.replace(cmd, gate=4), cfg)


# ---- RTL against the golden model (Amaranth simulator) ------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_skip_scenarios_match_golden(name):
    cfg = CONFIGS[name]
    scs = [skip_scenario(cfg, seed) for seed in range(10 if name == "tiny" else 5)]
    errors = run_scenarios(Accelerator(cfg), cfg, scs)
    assert not errors, "\n".join(errors[:20])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sample_skip_scenarios_match_golden(name):
    """The per-sample skip on its own: compacted dY columns, KEPT, SKIPPED_SAMPLES, the lanes'
    LFSRs, with one class (the shortest group) and batches that end mid-group; the confidence
    policy with max_prob, margin (its margin taken in the SUM pass) and true_class_prob (d_y +
    L against TCP_BOUND, once L is known)."""
    cfg = CONFIGS[name]
    scs = [skip_scenario(cfg, 100 + seed, sample=policy, mode=mode)
           for policy, mode in ((SamplePolicy.CONFIDENCE, ConfMode.MAX_PROB),
                                (SamplePolicy.CONFIDENCE, ConfMode.MARGIN),
                                (SamplePolicy.CONFIDENCE, ConfMode.TRUE_CLASS_PROB), (SamplePolicy.RANDOM, None))
           for seed in range(3)]
    shares = Counter(_share(sc.expected()[1].counters["skipped_samples"], sc) for sc in scs)
    assert shares["some"] >= 2, f"too few runs that keep some samples and skip others: {dict(shares)}"
    errors = run_scenarios(Accelerator(cfg), cfg, scs)
    assert not errors, "\n".join(errors[:20])


def _margin_columns(sc) -> list[dict[int, int]]:
    """Per sample of a margin scenario's LOSS: row -> z_max - z over the rows other than the
    (first) argmax; the margin is the least."""
    loss = sc.commands[0]
    z = next(m for _, region, m in sc.inputs if region.base == loss.a_base)
    out = []
    for col in z.T.tolist():
        a = col.index(max(col))
        out.append({r: max(col) - v for r, v in enumerate(col) if r != a})
    return out


def test_margin_scenarios_cover_the_running_minimum():
    """What the margin scenarios hand the RTL: margins on even and on odd rows, on the last
    row, margins of 0 (a tie for the top), and the case a minimum per row parity gets wrong when
    it compares a row with the other parity's minimum: a row r2 whose difference lies between
    an earlier same-parity row's (below) and every earlier other-parity row's (above), so that
    comparing it with the other parity's minimum would overwrite its own parity's."""
    seen = Counter()
    for cfg in CONFIGS.values():
        for seed in range(4):
            sc = margin_scenario(cfg, seed)
            _, res = sc.expected()
            assert not res.error, sc.name
            seen["some kept", res.counters["skipped_samples"] < sc.commands[0].n] += 1
            for d in _margin_columns(sc):
                least = min(d.values())
                rows = [r for r in d if d[r] == least]
                seen["parity", rows[0] % 2] += 1
                seen["at the last row"] += max(d) in rows
                seen["tie for the top"] += least == 0
                seen["between its parity's minimum and the other's"] += any(
                    d[r1] < d[r2] < min((d[q] for q in d if q < r2 and q % 2 != r2 % 2), default=1 << 30)
                    for r1 in d for r2 in d if r1 < r2 and r2 % 2 == r1 % 2)
    for key in [("parity", 0), ("parity", 1), "at the last row", "tie for the top",
                "between its parity's minimum and the other's", ("some kept", True)]:
        assert seen[key] > 0, f"no margin scenario with {key}: {dict(seen)}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_margin_scenarios_match_golden(name):
    """The margin's running minimum (two, one per row parity, in the loss unit) against the
    golden model's top-two difference: the per-sample decisions at a margin exactly (the kept
    columns of dY), the batch decision at the sum of the margins exactly (the gated GEMM)."""
    cfg = CONFIGS[name]
    errors = run_scenarios(Accelerator(cfg), cfg, [margin_scenario(cfg, seed) for seed in range(4)])
    assert not errors, "\n".join(errors[:20])


def _golden_checked(error_scenarios: dict) -> list:
    """The scenarios of ``{name: (scenario, code)}``, each checked to stop the golden model
    with its code."""
    scs = []
    for name, (sc, code) in error_scenarios.items():
        _, res = sc.expected()
        assert res.error_code == code, f"{name}: golden stops with {res.error_code!r}, expected {code!r}"
        scs.append(sc)
    return scs


def test_skip_errors_match_golden():
    scs = _golden_checked(skip_error_scenarios(TINY))
    errors = run_scenarios(Accelerator(TINY), TINY, scs)
    assert not errors, "\n".join(errors[:20])


def test_without_training_hardware_gates_are_refused():
    cfg = preset("tiny_gemm")
    sc = skip_error_scenarios(preset("tiny"))["gate_on_loss"][0]
    r = Region(0, 1, 1, 1)
    gated = Command.gemm(1, 1, 1, r, Region(1, 1, 1, 1), Region(2, 1, 1, 1), gate=Gate.BATCH)
    sc = dataclasses.replace(sc, cfg=cfg, inputs=[], commands=[gated, Command()], outputs=[], skip={})
    _, res = sc.expected()
    assert res.error_code == ErrorCode.BAD_GATE and res.pc == 0
    errors = run_scenarios(Accelerator(cfg), cfg, [sc])
    assert not errors, "\n".join(errors)


def test_without_the_skip_hardware_the_policies_are_off():
    """Config.gradient_skip=False: the skip programs run with every sample kept and every gated
    command run whole (golden and RTL alike, each line, counter, KEPT and cycle), and the
    skip registers, written, read 0."""
    from amaranth_bus import run_scenario, simulate  # noqa: PLC0415

    from skiptrain.driver import SKIP_CSRS  # noqa: PLC0415
    cfg = TINY.replace(gradient_skip=False, name="tiny_no_skip")
    scs = [skip_scenario(cfg, seed) for seed in range(3)]
    scs += [skip_scenario(cfg, 100 + seed, sample=policy, mode=ConfMode.MAX_PROB)
            for seed, policy in enumerate((SamplePolicy.CONFIDENCE, SamplePolicy.RANDOM))]
    for sc in scs:
        assert sc.skip_registers(), f"{sc.name}: writes no skip register"
        res = sc.expected()[1]
        assert not res.batch_skipped and res.counters["skipped_samples"] == 0, sc.name
        assert all(res.counters[f"skipped_macs_{p}"] == 0 for p in ("fwd", "bwd_input", "bwd_weight", "update"))
    # the same scenarios on the skip hardware do skip: they test something here
    skipping = [skip_scenario(TINY, seed).expected()[1] for seed in range(3)]
    assert any(r.batch_skipped for r in skipping), "no scenario skips a batch on the skip hardware"

    async def body(drv, bus):
        errors = []
        for sc in scs:
            errors += await run_scenario(drv, sc)
            for key, csr in SKIP_CSRS.items():
                got = await drv.read_csr(csr)
                if got != 0:
                    errors.append(f"{sc.name}: {key} reads {got}, expected 0 (not built)")
        return errors
    errors = simulate(Accelerator(cfg), cfg, body)
    assert not errors, "\n".join(errors[:20])


@pytest.mark.parametrize("classes", [1, 2, 3])
def test_kept_list_holds_each_groups_samples_with_few_classes(classes):
    """A LOSS of 1 to 3 classes has its next group's SUM pass right behind a group's decision:
    the kept list must still name each kept sample of the right group (a GEMM gathers its B
    operand through it, as G does)."""
    cfg = CONFIGS["3x5"]
    scs = [sample_gather_scenario(cfg, seed, classes) for seed in range(2)]
    kept = [sc.expected()[1].counters["kept"] for sc in scs]
    assert all(0 < k for k in kept), kept
    errors = run_scenarios(Accelerator(cfg), cfg, scs)
    assert not errors, "\n".join(errors[:20])


# ---- the kept-count normaliser (Config.kept_norm) -----------------------------------------------
NORM = TINY.replace(kept_norm=True, name="tiny_norm")


def test_norm_factor_is_batch_over_kept_within_half_an_ulp():
    """m * 2**e / 2**16 is N / K to within 2**-17 relative, exactly for a power-of-two K, for
    every K of every power-of-two batch N up to 4096; K = 0 gives the factor 1."""
    for n in range(13):
        N = 1 << n
        for K in range(1, N + 1):
            m, e = numerics.norm_mantissa(K), numerics.norm_exponent(K, N)
            assert 1 << 16 <= m < 1 << 17, (N, K, m)
            exact, got = Fraction(N, K), Fraction(m << e, 1 << 16)
            assert abs(got - exact) <= exact / (1 << 17), (N, K, m, e)
            if K & (K - 1) == 0:
                assert got == exact, (N, K, m, e)
    assert numerics.norm_mantissa(0) == 1 << 16 and numerics.norm_exponent(0, 32) == 0
    assert numerics.norm_exponent(3, 5) == 0   # not a power of two: floor(log2 5) = ceil(log2 3)
    assert numerics.norm_table(8) == tuple(numerics.norm_mantissa(k) for k in range(9))


def _sim(dut, bench):
    from amaranth.sim import Simulator  # noqa: PLC0415
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cfg", [NORM, preset("default").replace(kept_norm=True)], ids=["tiny", "default"])
def test_normaliser_at_its_edges(cfg):
    """rtl Normaliser against golden.normaliser.normalise: steps at the clamp (one inside, on,
    one past, both signs, the accumulator's limits), ties of the rounding (m = 1.5 with odd
    steps, m = 1 + 2**-16 with steps of 2**15 mod 2**16), the identity m = 2**16, the largest
    mantissa; and with ``norm`` clear the step passes unchanged whatever its size."""
    from golden.normaliser import normalise  # noqa: PLC0415
    from rtl.normaliser import Normaliser  # noqa: PLC0415
    lanes = 4
    dut = Normaliser(cfg, lanes)
    lim = 1 << (dut.step_width - 1)
    top = 1 << (cfg.acc_width - 1)
    rng = random.Random(7)
    steps = [0, 1, -1, 3, -3, 5, -5, lim - 1, lim, -lim, -lim - 1, lim + 1, top - 1, -top,
             1 << 15, 3 << 15, -(1 << 15), -(3 << 15), (1 << 17) - 1, 1 << 17, -(1 << 17),
             (1 << 17) + 1, -(1 << 17) - 1] + [rng.randint(-lim, lim - 1) for _ in range(21)]
    rows = [steps[i:i + lanes] for i in range(0, len(steps), lanes)]
    cases = [(norm, m) for m in (1 << 16, 3 << 15, (1 << 16) + 1, (1 << 17) - 1, 87381) for norm in (1, 0)]

    async def bench(ctx):
        for norm, m in cases:
            ctx.set(dut.norm, norm)
            ctx.set(dut.m, m)
            got = []
            for t in range(len(rows) + dut.latency):
                if t < len(rows):
                    for j, v in enumerate(rows[t]):
                        ctx.set(dut.step[j], v)
                await ctx.tick()
                if t + 1 >= dut.latency:
                    got.append([ctx.get(dut.out[j]) for j in range(lanes)])
            for row, out in zip(rows, got[:len(rows)]):
                exp = normalise(torch.tensor(row), m, cfg).tolist() if norm else row
                assert out == exp, f"norm {norm} m {m} steps {row}: got {out}, expected {exp}"

    _sim(dut, bench)


def test_norm_factor_unit():
    """rtl NormFactor: m, e and batch_pow2 for kept 0..N of batches 0..2V+3 and max_batch."""
    from rtl.norm_factor import NormFactor  # noqa: PLC0415
    dut = NormFactor(NORM)
    batches = list(range(0, 2 * NORM.banks + 4)) + [NORM.max_batch]

    async def bench(ctx):
        for N in batches:
            for K in range(0, N + 1):
                ctx.set(dut.kept, K)
                ctx.set(dut.batch, N)
                for _ in range(dut.latency):
                    await ctx.tick()
                got = (ctx.get(dut.m), ctx.get(dut.e), ctx.get(dut.batch_pow2))
                exp = (numerics.norm_mantissa(K), numerics.norm_exponent(K, N),
                       int(N > 0 and N & (N - 1) == 0))
                assert got == exp, f"kept {K} batch {N}: got (m, e, pow2) {got}, expected {exp}"

    assert dut.exp_latency <= dut.latency
    _sim(dut, bench)


def _kept_norm_coverage(scs) -> dict:
    """What the normalised updates of these scenarios covered (golden model): the factor 1
    (every sample kept), a power of two (m = 2**16, e > 0), a mantissa other than 2**16, a
    single kept sample, no kept sample (the update skipped), and the batch normalisation."""
    from golden.accelerator import Accelerator as Golden  # noqa: PLC0415
    seen = Counter()
    for sc in scs:
        acc = sc.initial()
        real_loss = Golden._loss

        def spy(self, cmd, _real=real_loss):
            bad = _real(self, cmd)
            K, N = self.kept, cmd.n
            if not SkipCtrl.decode(self.skip_ctrl).norm_kept:
                seen["batch normalisation"] += 1
            elif K == 0:
                seen["none kept"] += 1
            elif K == N:
                seen["all kept (factor 1)"] += 1
            elif numerics.norm_mantissa(K) == 1 << 16:
                seen["power-of-two factor"] += 1
            else:
                seen["other mantissa"] += 1
            if K == 1:
                seen["one kept"] += 1
            return bad
        acc._loss = spy.__get__(acc)
        acc.run(sc.start_pc)
    return dict(seen)


def test_kept_norm_programs_match_golden():
    """Normalised updates over the kept samples (the scenarios aim at every kept count class
    and at master weights at the accumulator's limits), and the normaliser's errors, on the
    RTL in the Amaranth simulator against the golden model: every line, status bit, counter
    and cycle count."""
    from golden.train_scenario import kept_norm_error_scenarios, kept_norm_scenario  # noqa: PLC0415
    scs = [kept_norm_scenario(NORM, seed) for seed in range(16)]
    cover = _kept_norm_coverage(scs)
    for need in ("batch normalisation", "none kept", "all kept (factor 1)", "power-of-two factor",
                 "other mantissa", "one kept"):
        assert cover.get(need, 0) > 0, f"the kept_norm scenarios never had {need!r}: {cover}"
    scs += _golden_checked(kept_norm_error_scenarios(NORM))
    errors = run_scenarios(Accelerator(NORM), NORM, scs)
    assert not errors, "\n".join(errors[:20])


def test_norm_kept_without_the_normaliser_is_refused():
    from golden.train_scenario import kept_norm_error_scenarios  # noqa: PLC0415
    (sc, code), = kept_norm_error_scenarios(TINY).values()
    _, res = sc.expected()
    assert res.error_code == code == ErrorCode.SKIP_CONFIG and res.pc == 0
    errors = run_scenarios(Accelerator(TINY), TINY, [sc])
    assert not errors, "\n".join(errors)


def test_kept_norm_with_every_sample_kept_is_the_batch_normalisation():
    """Golden model: with every sample kept (rate 0) norm_kept changes nothing, bit for bit."""
    from golden.train_scenario import kept_norm_scenario  # noqa: PLC0415
    for seed in range(6):
        sc = kept_norm_scenario(NORM, seed)
        outs = []
        for norm in (False, True):
            s = dataclasses.replace(sc, skip={**sc.skip, "rate": 0,
                                              "ctrl": SkipCtrl(sample=SamplePolicy.RANDOM, norm_kept=norm).encode()})
            acc, res = s.expected()
            outs.append(([acc.load(r, mem).tolist() for mem, r in s.outputs], res.counters))
        assert outs[0] == outs[1], f"seed {seed}: norm_kept with every sample kept differs"
