"""The training hardware: exp/log tables, the loss unit, the fused epilogues, training programs.

Fast tier: the shared tables, the golden loss unit against float softmax, the program builder's
and the accel backend's checks, a short accel training run. Amaranth-simulator tier: programs
of epilogues and LOSS commands aimed at their edges, every training error followed by a good
program, and whole training steps of small MLPs, each compared with the golden model in every
line, status bit, counter and cycle.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from amaranth_bus import run_scenarios, simulate
from golden import loss_unit as gloss
from golden.mlp import MlpOnChip, StepError, quantize
from golden.scenario import Scenario, random_gemm_scenario
from golden.train_scenario import epilogue_scenario, loss_scenario, train_error_scenarios
from rtl.loss_unit import LossUnit
from rtl.top import Accelerator
from skiptrain import numerics
from skiptrain.config import Config, preset
from skiptrain.hostmap import Csr
from skiptrain.isa import Command, ErrorCode, OutMode, Phase
from skiptrain.layout import Region
from skiptrain.program import MlpSpec, ProgramError, build_mlp, lr_shift_of, words_of
from skiptrain.skip import CONF_MODE_NAMES, BatchPolicy, SamplePolicy, SkipCtrl, conf_threshold, tcp_bound

CONFIGS = {
    "tiny": preset("tiny"),
    "3x5": Config(rows=3, cols=5, spad_depth=512, acc_depth=128, prog_depth=16, name="3x5"),
    "5x2": Config(rows=5, cols=2, spad_depth=512, acc_depth=128, prog_depth=16, name="5x2"),
}


# ---- the shared tables --------------------------------------------------------------------------
@pytest.mark.parametrize("frac_bits", [0, 4, 8])
def test_exp_table(frac_bits):
    t = numerics.exp_table(frac_bits)
    one = 1 << numerics.EXP_FRAC
    assert len(t) == numerics.exp_table_size(frac_bits) == 16 << frac_bits
    assert t[0] == one, f"EXP[0] = {t[0]}, expected {one}"
    assert all(a >= b for a, b in zip(t, t[1:])), "the exp table must not increase"
    for d in (1, len(t) // 3, len(t) - 1):
        exact = math.exp(-d / (1 << frac_bits)) * one
        assert abs(t[d] - exact) <= 0.5 + 1e-9, f"EXP[{d}] = {t[d]}, exact {exact}"
    assert t[-1] == 0 or frac_bits == 0, "exp(-16) * 2**16 rounds to 0 at the table's end"


def test_log_table_and_index():
    f = 8
    log = numerics.log_table(f)
    one = 1 << numerics.EXP_FRAC
    assert len(log) == numerics.LOG_EXPONENTS << numerics.LOG_MANT_BITS
    for s in (one, one + 1, 3 * one // 2, 2 * one - 1, 2 * one, 10 * one + 12345,
              (numerics.MAX_CLASSES + 1) * one - 1):
        got = log[numerics.log_index(s)]
        exact = math.log(s / one) * (1 << f)
        # the mantissa keeps LOG_MANT_BITS bits: ln errs by at most 2**-(LOG_MANT_BITS+1)
        bound = (1 << f) * 2.0 ** -(numerics.LOG_MANT_BITS + 1) + 0.5
        assert abs(got - exact) <= bound, f"ln({s}/2**16) * 2**8: table {got}, exact {exact:.2f}"
    with pytest.raises(ValueError, match="exp sum"):
        numerics.log_index(one - 1)


def test_round_shift_is_round_half_even():
    for x in range(-70, 71):
        for s in range(0, 5):
            exact = Fraction(x, 1 << s)
            fl = math.floor(exact)
            rest = exact - fl
            want = fl + 1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and fl % 2) else fl
            assert numerics.round_shift(x, s) == want, (x, s)


# ---- the golden loss unit -----------------------------------------------------------------------
def test_golden_softmax_is_close_to_float():
    """p = EXP[d + L] (no divider) is the softmax to within the rounding of L and the table."""
    cfg = preset("default")
    g = torch.Generator().manual_seed(0)
    z = torch.randint(-6 << 8, 6 << 8, (10, 64), generator=g)
    exp, _ = gloss.tables(cfg.frac_bits)
    _, argmax, d, L = gloss.softmax_parts(z, cfg)
    p = gloss.exp_lookup(d + L.unsqueeze(0), exp).double() / (1 << numerics.EXP_FRAC)
    ref = torch.softmax(z.double() / 256, dim=0)
    # L = ln S errs by half its LSB and by half the mantissa's LSB: a relative error of p
    rel = 2.0 ** -(numerics.LOG_MANT_BITS + 1) + 2.0 ** -(cfg.frac_bits + 1)
    err = (p - ref).abs() - (1.01 * rel * ref + 2 ** -16)
    assert (err <= 0).all(), f"largest excess over the bound: {float(err.max()):.2e}"
    assert torch.equal(argmax, z.argmax(0))


def test_golden_loss_edges():
    cfg = preset("tiny")  # V = 2: groups of two samples
    z = torch.tensor([[5, 5, -128, 0, 3], [5, 7, 127, 0, 3], [1, 7, 127, 0, 9]])
    labels = torch.tensor([0, 2, 1, 0, 2])
    r = gloss.loss_error(z, labels, 0, cfg)
    assert r.bad_group is None and r.columns == 5
    # argmax ties go to the first maximum: columns 0 (class 0), 1 (class 1), 2 (1), 3 (0), 4 (2)
    assert r.correct == 4, f"correct: got {r.correct}, expected 4 (column 1's tie goes to class 1)"
    bad = gloss.loss_error(z, torch.tensor([0, 2, 1, 3, 2]), 0, cfg)
    assert (bad.bad_group, bad.columns) == (1, 2), (bad.bad_group, bad.columns)
    assert bad.correct == 1, f"only the written columns count: got {bad.correct}"


# ---- the program builder and the accel backend's checks -----------------------------------------
def test_program_builder_rejects_with_the_rule():
    cfg = preset("default")
    cases = [(MlpSpec((64, 128, 10), 24), "power of two"),
             (MlpSpec((64, 10), 32, grad_frac_bits=3), "frac_bits"),
             (MlpSpec((64,), 32), "two or more"),
             (MlpSpec((64, 1), 32), "classes=1"),
             (MlpSpec((64, 128, 128, 10), 32), "does not fit the spad")]
    for spec, rule in cases:
        with pytest.raises(ProgramError, match=rule):
            build_mlp(spec, cfg)
    # on 8-bit data the labels are signed bytes: 128 classes at most
    with pytest.raises(ProgramError, match=re.escape("classes=129: must be in 2..128 (a LOSS's "
                                                     "limit on 8-bit data, whose labels are signed words)")):
        build_mlp(MlpSpec((4, 129), 2), preset("tiny"))
    for lr, ok in ((0.25, 2), (1.0, 0), (0.3, None), (0.0, None), (2.0, None)):
        if ok is None:
            with pytest.raises(ProgramError, match="lr="):
                lr_shift_of(lr, cfg)
        else:
            assert lr_shift_of(lr, cfg) == ok


def test_program_of_digits_mlp_fits_default():
    p = build_mlp(MlpSpec((64, 128, 10), 32), preset("default"), test_batch_last=8)
    names = [(c.opcode, c.epilogue, c.phase) for c in p.program()]
    assert len(p.train) == 7 and p.infer_pc == 7 and p.infer_last_pc == 11, names


def test_accel_backend_trains_digits(tmp_path):
    """Three epochs of the digits MLP on the accelerator's arithmetic learn (the full 20-epoch,
    3-seed measurement is in the README, from skiptrain train --backend accel)."""
    from golden.training import cli
    with open(tmp_path / "log", "w") as log:
        rc = cli.run("train", ["none"], dataset="digits", model="mlp1", seeds=1, epochs=3,
                     lr=0.25, momentum=0.0, out=tmp_path, backend="accel", stdout=log)
    assert rc == 0
    import json
    doc = json.loads((tmp_path / "results.json").read_text())
    run = doc["policies"][0]["runs"][0]
    acc = run["final_accuracy"]
    assert acc >= 0.85, f"test accuracy after 3 epochs: {acc:.3f}, expected >= 0.85"
    ep = run["epochs"][0]
    # the step's cycles from the cycle model, command by command: 5 GEMMs, the LOSS, the HALT
    from golden.loss_unit import loss_cycles
    from golden.sequencer import CHECK_CYCLES, FETCH_CYCLES, gemm_cycles
    from skiptrain.isa import Opcode
    cfg = preset("default")
    prog = build_mlp(MlpSpec((64, 128, 10), 32), cfg)
    step = sum(gemm_cycles(c, cfg)["total"] if c.opcode == Opcode.GEMM else
               FETCH_CYCLES + CHECK_CYCLES + loss_cycles(c.m, c.n, cfg) if c.opcode == Opcode.LOSS
               else FETCH_CYCLES + 1 for c in prog.train)
    assert ep["accel"]["cycles"] == ep["steps"] * step, (ep["accel"], step)
    assert doc["config"]["backend"] == "accel"


def test_accel_backend_batch_skip_and_its_baseline(tmp_path):
    """conf_batch on the accelerator: the hardware decides, the policy object logs its decisions
    (so compare's matched random baseline gets the same per-epoch rate, drawn by the on-chip
    LFSR), and every epoch's cycles are the kept steps' full cycles plus the skipped steps'
    forward, LOSS and three skipped commands."""
    import json

    from golden.training import cli
    from golden.mlp import MlpOnChip
    with open(tmp_path / "log", "w") as log:
        rc = cli.run("compare", ["conf_batch"], {"batch_tau": 0.6, "warmup": 0}, dataset="digits",
                     model="mlp1", seeds=1, epochs=3, lr=0.25, momentum=0.0, out=tmp_path,
                     backend="accel", stdout=log)
    assert rc == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    runs = {p["name"]: p["runs"][0] for p in doc["policies"]}
    params = {p["name"]: p["params"] for p in doc["policies"]}
    conf, rand = runs["conf_batch"], runs["random_batch~conf_batch"]
    cfg = preset("default")
    from golden.loss_unit import loss_cycles
    from golden.sequencer import CHECK_CYCLES, FETCH_CYCLES, gemm_cycles, skip_cycles
    from skiptrain.isa import Opcode
    chip = MlpOnChip(MlpSpec((64, 128, 10), 32), cfg, 0.25)

    def cycles(c, skipped):
        if c.opcode == Opcode.GEMM:
            return FETCH_CYCLES + CHECK_CYCLES + skip_cycles(cfg) if skipped and c.gate else \
                gemm_cycles(c, cfg)["total"]
        if c.opcode == Opcode.LOSS:
            return FETCH_CYCLES + CHECK_CYCLES + loss_cycles(c.m, c.n, cfg)
        return FETCH_CYCLES + 1
    full = sum(cycles(c, False) for c in chip.prog.train)
    short = sum(cycles(c, True) for c in chip.prog.train)
    assert sum(c.gate != 0 for c in chip.prog.train) == 3  # B2, G2, G1
    for name, run in runs.items():
        for ep in run["epochs"]:
            skipped = ep["accel"]["skipped_batches"]
            assert ep["steps"] - ep["updates"] == skipped, (name, ep["epoch"])
            # the skipped steps' B and G MACs are counted as skipped by the hardware
            assert ep["accel"]["skipped_macs_bwd_input"] == skipped * 128 * 10 * 32
            assert ep["accel"]["phase_macs_bwd_input"] == (ep["steps"] - skipped) * 128 * 10 * 32
            assert ep["accel"]["cycles"] == (ep["steps"] - skipped) * full + skipped * short
    # both runs skipped some batches and kept some; the baseline was asked for the same rate
    rates = [ep["decisions"]["conf_batch"]["rate"] for ep in conf["epochs"]]
    assert any(0 < ep["accel"]["skipped_batches"] < ep["steps"] for ep in conf["epochs"]), rates
    assert params["random_batch~conf_batch"]["random_batch"]["rate"] == rates
    assert "cycles/epoch" in (tmp_path / "table.txt").read_text()


def test_accel_backend_repeats_bit_for_bit_across_thread_counts():
    """Integer arithmetic: the accel backend's weights, decisions and cycles do not depend on how
    torch splits its work (the float backend's do, across CPUs; README "Measured on digits")."""
    from golden.training.accel import AccelTrainer
    from golden.training.datasets import load_digits
    from golden.training.models import build_model
    from golden.training.registry import make_policy
    from golden.training.trainer import TrainConfig
    data = load_digits()
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(0)
            net = build_model("mlp1", data.input_shape, data.num_classes, 64)
            cfg = TrainConfig(seed=0, epochs=1, batch_size=32, lr=0.25, momentum=0.0)
            pol = make_policy("conf_batch", {"warmup": 0, "batch_tau": 0.3})
            r = AccelTrainer(data, net, cfg, preset("default"), pol).run()
            outs.append((r.final_state, r.epochs[0]["accel"], r.final_accuracy))
    finally:
        torch.set_num_threads(threads)
    (s1, c1, a1), (s2, c2, a2) = outs
    assert c1 == c2 and a1 == a2, (c1, c2, a1, a2)
    assert c1["skipped_batches"] > 0, c1
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


@pytest.mark.parametrize("kwargs,rule", [
    (dict(momentum=0.9, lr=0.25), "momentum"),
    (dict(momentum=0.0, lr=0.2), "power of two"),
    (dict(momentum=0.0, lr=0.25, model="cnn"), "MLPs only"),
    (dict(momentum=0.0, lr=0.25, policies=["wus"]), "not in hardware yet"),
    (dict(momentum=0.0, lr=0.25, policies=["conf_batch+wus"]), "not in hardware yet"),
    (dict(momentum=0.0, lr=0.25, model="mlp"), "does not fit"),
    (dict(momentum=0.0, lr=0.25, policies=["conf_sample+random_sample"]), "at most one per-sample"),
    (dict(momentum=0.0, lr=0.25, policies=["conf_batch+random_batch"]), "at most one per-sample"),
    (dict(momentum=0.0, lr=0.25, policies=["conf_sample+conf_batch"], command="compare"),
     "one SKIP_RATE.*--no-match"),
])
def test_accel_backend_rejects(tmp_path, kwargs, rule):
    from golden.training import cli
    policies = kwargs.pop("policies", ["none"])
    model = kwargs.pop("model", "mlp1")
    command = kwargs.pop("command", "train")
    with pytest.raises(ValueError, match=rule):
        cli.run(command, policies, dataset="digits", model=model, seeds=1, epochs=1,
                out=tmp_path, backend="accel", limit=64, **kwargs)


def test_accel_stacked_policies_share_skip_ctrl():
    """A per-sample and a batch policy together: SKIP_CTRL's batch field from the batch
    policy, the sample field, require_correct and CONF_TAU from the sample policy, the one
    confidence mode from whichever tests confidence; what the two would need twice (two modes,
    two random rates) is refused, naming the register."""
    from golden.training.accel import skip_registers, stack_registers
    from golden.training.registry import make_policy
    from skiptrain.skip import BatchPolicy, ConfMode, SamplePolicy, SkipCtrl
    cfg = preset("default")
    pols = make_policy("conf_sample+conf_batch", {"tau": 0.8, "batch_tau": 0.9, "confidence": "margin",
                                                  "warmup": 1}).policies
    regs = stack_registers(pols, 1, 32, cfg, 7)
    assert SkipCtrl.decode(regs["ctrl"]) == SkipCtrl(BatchPolicy.CONFIDENCE, ConfMode.MARGIN, True,
                                                     SamplePolicy.CONFIDENCE)
    assert regs["conf_tau"] == skip_registers(pols[0], 1, 32, cfg, 7)["conf_tau"]
    assert regs["batch_tau"] == skip_registers(pols[1], 1, 32, cfg, 7)["batch_tau"]
    # in the warm-up both fields say OFF
    assert SkipCtrl.decode(stack_registers(pols, 0, 32, cfg, 7)["ctrl"]).policy == BatchPolicy.OFF
    assert SkipCtrl.decode(stack_registers(pols, 0, 32, cfg, 7)["ctrl"]).sample == SamplePolicy.OFF
    # a random batch skip beside the confidence sample skip: its rate and seed, the sample's mode
    mixed = make_policy("conf_sample+random_batch", {"rate": 0.25, "confidence": "true_class_prob",
                                                     "warmup": 0}).policies
    regs = stack_registers(mixed, 0, 32, cfg, 7)
    assert SkipCtrl.decode(regs["ctrl"]) == SkipCtrl(BatchPolicy.RANDOM, ConfMode.TRUE_CLASS_PROB, True,
                                                     SamplePolicy.CONFIDENCE)
    assert regs["rate"] == 1 << 14 and regs["seed"] == 7 and "tcp_bound" in regs
    with pytest.raises(ValueError, match="one confidence mode"):
        stack_registers([make_policy("conf_sample", {"confidence": "margin"}).policies[0],
                         make_policy("conf_batch", {"confidence": "max_prob"}).policies[0]], 5, 32, cfg, 0)
    with pytest.raises(ValueError, match="one SKIP_RATE"):
        stack_registers([make_policy("random_sample", {"rate": 0.5}).policies[0],
                         make_policy("random_batch", {"rate": 0.25}).policies[0]], 0, 32, cfg, 0)
    both = stack_registers(make_policy("random_sample+random_batch", {"rate": 0.5}).policies, 0, 32, cfg, 0)
    assert SkipCtrl.decode(both["ctrl"]) == SkipCtrl(BatchPolicy.RANDOM, sample=SamplePolicy.RANDOM)


def test_accel_trains_with_the_sample_and_batch_skip_stacked(tmp_path):
    """conf_sample+conf_batch on the accel backend: the hardware skips whole batches and
    samples of the kept ones; each policy logs its own decisions, and the MACs and cycles follow
    (a skipped batch runs no B, G or U)."""
    from golden.training import cli
    assert cli.run("train", ["conf_sample+conf_batch"], dataset="digits", model="mlp1", seeds=1,
                   epochs=2, out=tmp_path, backend="accel", limit=512, momentum=0.0, lr=0.25,
                   options={"warmup": 0, "tau": 0.3, "batch_tau": 0.25, "require_correct": False},
                   stdout=io.StringIO()) == 0
    run = json.loads((tmp_path / "results.json").read_text())["policies"][0]["runs"][0]
    for ep in run["epochs"]:
        dec, acc = ep["decisions"], ep["accel"]
        assert acc["skipped_batches"] == ep["steps"] - ep["updates"] \
            == dec["conf_batch"]["skipped_batches"], ep
        assert acc["skipped_samples"] == dec["conf_sample"]["skipped_rows"], ep
    last = run["epochs"][-1]
    assert 0 < last["accel"]["skipped_batches"] < last["steps"], last["accel"]
    assert 0 < last["accel"]["skipped_samples"] < last["steps"] * 32, last["accel"]


@pytest.mark.parametrize("name", ["conf_sample", "random_sample"])
def test_accel_kept_normalisation_needs_the_normaliser(name):
    """normalize='kept' sets SKIP_CTRL's norm_kept on an accelerator built with kept_norm, and
    is refused, naming the config file that has it, on one without."""
    from golden.training.accel import skip_registers
    from golden.training.registry import make_policy
    from skiptrain.skip import SkipCtrl
    pol = make_policy(name, {"normalize": "kept"}).policies[0]
    with pytest.raises(ValueError, match="built without the kept-count normaliser.*default_kept_norm.json"):
        skip_registers(pol, 5, 32, preset("default"), 0)
    regs = skip_registers(pol, 5, 32, preset("default").replace(kept_norm=True), 0)
    assert SkipCtrl.decode(regs["ctrl"]).norm_kept
    batch = make_policy(name, {"normalize": "batch"}).policies[0]
    regs = skip_registers(batch, 5, 32, preset("default").replace(kept_norm=True), 0)
    assert not SkipCtrl.decode(regs["ctrl"]).norm_kept


def test_accel_backend_on_the_accelerator_without_skip_hardware(tmp_path):
    """configs/default_no_skip.json: every skip policy is refused naming the config and the
    field; 'none' trains, in the same cycles and to the same weights as on the default."""
    from golden.training import cli
    from golden.training.accel import skip_registers
    from golden.training.registry import make_policy
    cfg = Config.from_json(Path(__file__).resolve().parents[1] / "configs" / "default_no_skip.json")
    assert not cfg.has_skip and cfg.replace(gradient_skip=True, name="default") == preset("default")
    for name in ("conf_sample", "random_sample", "conf_batch", "random_batch"):
        with pytest.raises(ValueError, match=f"policy '{name}': the accelerator 'default_no_skip' is built "
                                             r"without the skip hardware \(Config.gradient_skip=False\)"):
            skip_registers(make_policy(name, {}).policies[0], 5, 32, cfg, 0)
        with pytest.raises(ValueError, match=f"policy '{name}': the accelerator 'default_no_skip'"):
            cli.run("train", [name], dataset="digits", model="mlp1", seeds=1, epochs=1, out=tmp_path,
                    backend="accel", limit=64, momentum=0.0, lr=0.25,
                    accel_config=Path(__file__).resolve().parents[1] / "configs" / "default_no_skip.json")
    epochs = {}
    for label, path in (("default", None), ("no_skip", "configs/default_no_skip.json")):
        extra = {} if path is None else {"accel_config": str(Path(__file__).resolve().parents[1] / path)}
        assert cli.run("train", ["none"], dataset="digits", model="mlp1", seeds=1, epochs=2,
                       out=tmp_path / label, backend="accel", limit=64, momentum=0.0, lr=0.25, **extra) == 0
        run = json.loads((tmp_path / label / "results.json").read_text())["policies"][0]["runs"][0]
        epochs[label] = [(e["test_accuracy"], e["accel"]) for e in run["epochs"]]
    assert epochs["no_skip"] == epochs["default"], epochs
    assert epochs["default"][0][1]["cycles"] == 2 * 12_023  # two steps of 32, the README's step
    # bench train reports the step and no skip rows (nothing to skip, not "100 % of the ideal")
    from skiptrain.cli import main
    out = tmp_path / "bench.json"
    assert main(["bench", "train", "--config", str(Path(__file__).resolve().parents[1] / "configs" / "default_no_skip.json"), "--steps", "0",
                 "--golden-steps", "1", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert (rep["cycles_per_step"], rep["batch_skip"], rep["sample_skip"]) == (12_023, None, []), rep


def test_accel_kept_normalisation_trains_and_differs_from_the_batch_one(tmp_path):
    """Two epochs of random_sample (rate 0.5) on the accelerator with the normaliser:
    normalize='kept' runs, skips samples, and trains otherwise than normalize='batch' (the step
    is scaled by B / KEPT); with the default preset it is refused."""
    from golden.training import cli
    cfg_file = Path(__file__).resolve().parent.parent / "configs" / "default_kept_norm.json"
    runs = {}
    for norm in ("batch", "kept"):
        assert cli.run("train", ["random_sample"], dataset="digits", model="mlp1", seeds=1, epochs=2,
                       out=tmp_path / norm, backend="accel", accel_config=str(cfg_file), limit=256,
                       momentum=0.0, lr=0.25, options={"rate": 0.5, "normalize": norm},
                       stdout=io.StringIO()) == 0
        run = json.loads((tmp_path / norm / "results.json").read_text())["policies"][0]["runs"][0]
        assert all(e["accel"]["skipped_samples"] > 0 for e in run["epochs"]), run["epochs"]
        runs[norm] = [e["train_loss"] for e in run["epochs"]]
    assert runs["batch"] != runs["kept"], runs
    with pytest.raises(ValueError, match="built without the kept-count normaliser"):
        cli.run("train", ["conf_sample"], dataset="digits", model="mlp1", seeds=1, epochs=1,
                out=tmp_path / "d", backend="accel", limit=64, momentum=0.0, lr=0.25,
                options={"normalize": "kept"})


def test_bench_train_on_a_config_file_that_holds_batch_128(tmp_path, capsys):
    """bench train --config: the default array with the memories of configs/default_batch128.json
    runs the whole batch-128 step, and keeping fewer samples
    never costs more cycles."""
    import json
    from pathlib import Path
    from skiptrain.cli import main
    cfg_file = Path(__file__).resolve().parent.parent / "configs" / "default_batch128.json"
    out = tmp_path / "b128.json"
    assert main(["bench", "train", "--config", str(cfg_file), "--batch", "128", "--steps", "0",
                 "--golden-steps", "1", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["preset"] == "default_batch128" and rep["batch"] == 128, rep
    # every GEMM ran over the whole batch: F and G (M x K x N, the bias row and column included)
    # and B of the second layer
    full = (128 * 65 + 10 * 129) * 128
    assert rep["phase_macs"] == {"F": full, "B": 128 * 10 * 128, "G+U": full}, rep["phase_macs"]
    rows = rep["sample_skip"]
    assert [r["kept"] for r in rows] == sorted(r["kept"] for r in rows), rows
    assert all(a["cycles"] <= b["cycles"] for a, b in zip(rows, rows[1:])), rows
    with pytest.raises(SystemExit) as e:
        main(["bench", "train", "--preset", "default", "--config", str(cfg_file), "--json", str(out)])
    assert e.value.code == 2 and "give --preset or --config, not both" in capsys.readouterr().err


# ---- Amaranth simulator: epilogues, LOSS, errors ------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_epilogue_and_loss_programs(name):
    cfg = CONFIGS[name]
    scs = ([epilogue_scenario(cfg, s) for s in range(4)] + [loss_scenario(cfg, s) for s in range(4)]
           + [loss_scenario(cfg, s, bad_label=True) for s in range(2)])
    errors = run_scenarios(Accelerator(cfg), cfg, scs)
    assert not errors, "\n".join(errors[:20])


def test_loss_class_limit_follows_the_labels_width():
    """tiny (8-bit data): labels are signed bytes, so a LOSS takes 128 classes at most. 128
    classes with labels 127 and 0 run; 129 stop with LOSS_CLASSES (RTL against golden)."""
    cfg = CONFIGS["tiny"]
    assert numerics.max_classes(cfg.data_width) == 128
    assert numerics.max_classes(preset("default").data_width) == numerics.MAX_CLASSES == 256
    V = cfg.banks
    Z = Region.packed(0, 128, 2, V)
    Y = Region.packed(Z.end(V), 1, 2, V)
    D = Region.packed(Y.end(V), 128, 2, V)
    big = Region.packed(D.end(V), 129, 1, V)
    rng = torch.Generator().manual_seed(3)
    scs = []
    for m, z, labels, code in ((128, Z, [127, 0], ErrorCode.NONE), (129, big, [0], ErrorCode.LOSS_CLASSES)):
        sc = Scenario(cfg, name=f"loss of {m} classes")
        n = len(labels)
        sc.inputs += [("spad", z, torch.randint(cfg.data_min, cfg.data_max + 1, (m, n), generator=rng)),
                      ("spad", Y, torch.tensor([labels])),
                      ("spad", D, torch.zeros((128, 2), dtype=torch.int64))]
        sc.commands += [Command.loss(m, n, z, Y, D, shift=6), Command()]
        sc.outputs.append(("spad", D))
        got = sc.expected()[1].error_code
        assert got == code, f"{m} classes: golden stops with {got.name}, expected {code.name}"
        scs.append(sc)
    errors = run_scenarios(Accelerator(cfg), cfg, scs)
    assert not errors, "\n".join(errors[:20])


def test_loss_ignores_the_fields_the_readme_says_it_ignores():
    """README, "Commands": LOSS ignores phase, the transposes, out_mode and k. The same LOSS
    programs with those fields set run identically (lines, status, every counter, cycles) in
    the golden model and on the RTL."""
    cfg = CONFIGS["tiny"]
    scs = []
    for s in range(3):
        plain = loss_scenario(cfg, s)
        noisy = loss_scenario(cfg, s)
        noisy.name += ", ignored fields set"
        noisy.commands = [dataclasses.replace(c, phase=Phase.BWD_WEIGHT, trans_a=1, trans_b=1,
                                              out_mode=OutMode.ACC, k=(3 * i) % 5)
                          if c.opcode == 2 else c for i, c in enumerate(noisy.commands)]
        (acc_p, res_p), (acc_n, res_n) = plain.expected(), noisy.expected()
        assert res_n == res_p, f"seed {s}: got {res_n}, expected {res_p}"
        assert torch.equal(acc_n.image("spad"), acc_p.image("spad")), f"seed {s}: dY differs"
        scs.append(noisy)
    errors = run_scenarios(Accelerator(cfg), cfg, scs)
    assert not errors, "\n".join(errors[:20])


@pytest.mark.parametrize("name", ["tiny", "3x5"])
def test_training_errors_then_recovery(name):
    cfg = CONFIGS[name]
    scs = []
    for err, (sc, code) in train_error_scenarios(cfg).items():
        got = sc.expected()[1].error_code
        assert got == code, f"{err}: golden stops with {got.name}, expected {code.name}"
        scs += [sc, random_gemm_scenario(cfg, len(scs), n_commands=1, max_dim=5)]
    errors = run_scenarios(Accelerator(cfg), cfg, scs)
    assert not errors, "\n".join(errors[:20])


def test_loss_unit_latency_constants():
    """The golden cycle model's LOSS constants are the RTL's."""
    assert gloss.GAP_CYCLES == LossUnit.gap_cycles
    assert gloss.RUN_EXTRA_CYCLES == 1 + LossUnit.drain_cycles + 1
    assert gloss.ERROR_EXTRA_CYCLES == 1 + LossUnit.label_check_delay + 1 + LossUnit.drain_cycles + 2


# ---- Amaranth simulator: whole training steps ---------------------------------------------------
def _steps_on_rtl(cfg, sizes, batch, steps, seed, lr, skip=None):
    """Train ``steps`` steps on the golden model and on the RTL; every line of every region of
    the program, status, counters and cycles compared after each step. ``skip``: the skip
    registers (golden Scenario.SKIP_KEYS) written before the first step. Returns the golden
    results of the steps."""
    g = torch.Generator().manual_seed(seed)
    chip = MlpOnChip(MlpSpec(sizes, batch), cfg, lr)
    skip = skip or {}
    chip.acc.set_skip(**skip)
    chip.load_float_weights([(torch.randn(sizes[l], sizes[l - 1], generator=g) * 0.7,
                              torch.randn(sizes[l], generator=g) * 0.3) for l in range(1, len(sizes))])
    p, V = chip.prog, cfg.banks
    lines = {"spad": sorted({w for r in p.act + [p.z, p.labels] + p.err[1:] + p.w[1:]
                             for w in words_of(r, V)}),
             "acc": sorted({w for r in p.master[1:] + p.relu[1:] for w in words_of(r, V)})}
    init = {m: chip.acc.image(m).clone() for m in lines}
    batch_lines = words_of(p.x_rows(), V) + words_of(p.labels, V)
    expected = []
    for _ in range(steps):
        x = quantize(torch.rand(batch, sizes[0], generator=g) * 4 - 2, cfg.frac_bits, cfg)
        y = torch.randint(0, sizes[-1], (batch,), generator=g)
        res = chip.train_step(x, y)
        expected.append((res, {m: chip.acc.image(m).clone() for m in lines}))

    async def body(drv, bus):
        for m in lines:
            await drv.write_lines(m, init[m].numpy(), lines[m])
        await drv.load_program(p.program())
        await drv.write_csr(Csr.LR_SHIFT, chip.acc.lr_shift)
        await drv.write_skip(skip)
        for s, (res, img) in enumerate(expected):
            await drv.write_lines("spad", img["spad"].numpy(), batch_lines)
            start = bus.cycle
            hw = await drv.run(p.train_pc)
            assert hw["error"] == 0 and hw["saturated"] == int(res.saturated), f"step {s}: {hw}"
            for k, v in res.counters.items():
                assert hw["counters"][k] == v, f"step {s}: counter {k}: got {hw['counters'][k]}, expected {v}"
            assert bus.cycle - start > res.cycles
            for m in lines:
                got = await drv.read_lines(m, lines[m])
                for w, vals in got.items():
                    exp = [int(v) for v in img[m][:, w]]
                    assert vals == exp, f"step {s}: {m} line {w}: got {vals}, expected {exp}"
        return True

    assert simulate(Accelerator(cfg), cfg, body)
    w0 = init["acc"]
    assert not torch.equal(w0, expected[-1][1]["acc"]), "the master weights did not change"
    return [res for res, _ in expected]


@pytest.mark.parametrize("name,sizes,batch", [("tiny", (3, 5, 3), 4), ("3x5", (7, 9, 4), 8),
                                              ("5x2", (6, 10, 5), 16)])
def test_training_steps_on_rtl(name, sizes, batch):
    cfg = CONFIGS[name].replace(spad_depth=1024, acc_depth=512)
    _steps_on_rtl(cfg, sizes, batch, steps=2, seed=len(sizes) + batch, lr=0.5)


@pytest.mark.parametrize("name,sizes,batch,policy,mode", [
    ("tiny", (3, 5, 3), 4, SamplePolicy.RANDOM, "max_prob"),
    ("3x5", (7, 9, 4), 8, SamplePolicy.CONFIDENCE, "max_prob"),
    ("tiny", (3, 5, 3), 8, SamplePolicy.CONFIDENCE, "margin"),
    ("3x5", (7, 9, 4), 8, SamplePolicy.CONFIDENCE, "true_class_prob"),
    ("5x2", (6, 10, 5), 16, SamplePolicy.RANDOM, "max_prob")])
def test_sample_skip_training_steps_on_rtl(name, sizes, batch, policy, mode):
    """The per-sample skip in whole steps: B and G over the kept samples (compacted dY, the
    kept list gathering act and the ReLU mask), every line, counter and cycle as golden."""
    cfg = CONFIGS[name].replace(spad_depth=1024, acc_depth=512)
    tau = {"max_prob": 0.9, "margin": 1.0, "true_class_prob": 0.5}[mode]
    conf_tau = conf_threshold(mode, tau, cfg)
    skip = {"ctrl": SkipCtrl(mode=CONF_MODE_NAMES[mode], sample=policy).encode(), "rate": 1 << 15,
            "seed": 3, "conf_tau": conf_tau, "tcp_bound": tcp_bound(conf_tau, cfg)}
    results = _steps_on_rtl(cfg, sizes, batch, steps=3, seed=len(sizes) + batch, lr=0.5, skip=skip)
    skipped = [r.counters["skipped_samples"] for r in results]
    assert any(0 < s < batch for s in skipped), f"no step kept some samples and skipped others: {skipped}"


def test_training_without_the_skip_hardware_keeps_every_sample_in_the_same_cycles():
    """Config.gradient_skip=False (configs/default_no_skip.json in small): the same training
    program runs, every sample kept and no batch skipped whatever the skip registers are
    written with (they are not there), every line, counter and cycle as golden; the cycles
    and weights equal the skip hardware's with the policy off."""
    base = CONFIGS["3x5"].replace(spad_depth=1024, acc_depth=512)
    cfg = base.replace(gradient_skip=False)
    assert not cfg.has_skip and base.has_skip
    # what would skip samples and batches on the skip hardware: ignored here
    skip = {"ctrl": SkipCtrl(policy=BatchPolicy.RANDOM, sample=SamplePolicy.RANDOM).encode(),
            "rate": 1 << 15, "seed": 3, "batch_tau": 1, "conf_tau": 5}
    results = _steps_on_rtl(cfg, (7, 9, 4), 8, steps=2, seed=12, lr=0.5, skip=skip)
    for r in results:
        assert (r.kept, r.batch_skipped, r.counters["skipped_samples"], r.counters["skipped_batches"],
                r.counters["confident"]) == (8, False, 0, 0, 0), r
    # the skip hardware with the policy off: the same step, the same cycles
    golden = [MlpOnChip(MlpSpec((7, 9, 4), 8), c, 0.5) for c in (cfg, base)]
    g = torch.Generator().manual_seed(5)
    x = quantize(torch.rand(8, 7, generator=g) * 4 - 2, cfg.frac_bits, cfg)
    y = torch.randint(0, 4, (8,), generator=g)
    without, with_ = (chip.train_step(x, y) for chip in golden)
    assert without.cycles == with_.cycles, (without.cycles, with_.cycles)
    assert torch.equal(golden[0].acc.acc, golden[1].acc.acc)


def test_training_step_16bit_deeper_mlp_on_rtl():
    cfg = Config(rows=2, cols=2, spad_depth=1024, acc_depth=512, prog_depth=16, name="2x2")
    _steps_on_rtl(cfg, (9, 12, 7, 10), 8, steps=2, seed=4, lr=0.125)


def test_step_error_is_reported():
    cfg = CONFIGS["tiny"]
    chip = MlpOnChip(MlpSpec((3, 5, 3), 4), cfg, 0.25)
    x = quantize(torch.zeros(4, 3), cfg.frac_bits, cfg)
    with pytest.raises(StepError, match="BAD_LABEL at slot 2"):
        chip.train_step(x, torch.tensor([0, 1, 2, 3]))


# ---- without the training hardware (the iCE40 preset) -----------------------------------------
def test_gemm_only_config_runs_gemms_and_refuses_training_commands():
    """tiny_gemm: GEMM programs exact, with the 7-cycle-shorter writer; a LOSS stops with
    BAD_OPCODE after one CHECK cycle, an epilogue with BAD_EPILOGUE, each followed by a good
    program."""
    import dataclasses

    from golden.scenario import Scenario, error_scenarios
    from skiptrain.isa import Command, Epilogue
    cfg = preset("tiny_gemm")
    assert not cfg.training
    scs = [random_gemm_scenario(cfg, s, n_commands=3, max_dim=9) for s in range(3)]
    # every training-error program starts with a LOSS: here an unknown opcode at slot 0
    for name, (sc, _) in train_error_scenarios(cfg).items():
        got = sc.expected()[1]
        assert (got.error_code, got.pc, got.cycles) == (ErrorCode.BAD_OPCODE, 0, 5), \
            f"{name}: golden stops with {got.error_code.name} at slot {got.pc} after {got.cycles}"
        scs += [sc, random_gemm_scenario(cfg, 11, n_commands=1, max_dim=5)]
    # an epilogue on a good QUANT GEMM
    good = next(iter(error_scenarios(cfg).values()))[0]
    relu = dataclasses.replace(good.commands[0], epilogue=Epilogue.RELU)
    bad = Scenario(cfg, inputs=good.inputs, outputs=good.outputs, name="gemm-only relu",
                   commands=[good.commands[0], relu, Command()])
    got = bad.expected()[1]
    assert (got.error_code, got.pc) == (ErrorCode.BAD_EPILOGUE, 1), (got.error_code, got.pc)
    scs += [bad, random_gemm_scenario(cfg, 12, n_commands=1, max_dim=5)]
    errors = run_scenarios(Accelerator(cfg), cfg, scs)
    assert not errors, "\n".join(errors[:20])


def test_of_ideal_is_cycles_saved_over_the_skipped_share_of_the_baselines_bgu_cycles():
    """compare --backend accel's "of ideal" column: per epoch and seed, the cycles saved against
    the no-skip run over (skipped B+G MAC share x its B, G and U cycles)."""
    from types import SimpleNamespace

    from golden.training.report import PolicyRuns, accel_of_ideal

    def epoch(cycles, bwd, skipped):
        return {"accel": {"cycles": cycles, "phase_cycles_bwd_input": 100, "phase_cycles_bwd_weight": bwd,
                          "phase_cycles_update": 0, "phase_macs_bwd_input": 30, "phase_macs_bwd_weight": 50,
                          "skipped_macs_bwd_input": 10 * skipped, "skipped_macs_bwd_weight": 10 * skipped}}

    def group(name, seeds_epochs):
        g = PolicyRuns(name, name)
        g.runs = [SimpleNamespace(seed=s, epochs=eps) for s, eps in seeds_epochs]
        return g
    # the baseline: 1000 cycles an epoch, of them 100 + 300 B, G and U
    base = group("none", [(0, [epoch(1000, 300, 0)] * 2)])
    # skipped 20 of 100 B+G MACs: ideal 80 cycles; saved 80 in one epoch, 40 in the other
    half = group("p", [(0, [epoch(920, 240, 1), epoch(960, 240, 1)])])
    assert accel_of_ideal(half, base) == pytest.approx(120 / 160)
    assert accel_of_ideal(group("q", [(1, [epoch(920, 240, 1)] * 2)]), base) is None  # other seed
    assert accel_of_ideal(group("r", [(0, [epoch(1000, 300, 0)] * 2)]), base) is None  # none skipped
