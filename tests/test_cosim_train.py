"""Co-simulation of training: the generated Verilog trains the digits MLP step after step, and
every weight and bias line, status bit, counter and cycle count equals the golden model's after
every step; plus the epilogue, LOSS and training-error programs on both simulators."""

from __future__ import annotations

import pytest

from cocotb_tests import runner
from cocotb_tests.training_session import run_training, training_session
from golden.train_scenario import epilogue_scenario, loss_scenario, train_error_scenarios
from skiptrain.config import preset

from test_cosim import CONFIGS, run_and_check

pytestmark = pytest.mark.cosim


def _ready(sim):
    try:
        runner.check_simulator(sim)
    except runner.SimulatorNotFound as e:
        pytest.skip(str(e))


def test_verilator_100_training_steps_default():
    """The issue's bar: 100 consecutive steps of the 64-128-10 MLP (batch 32) on the default
    preset under Verilator, each checked exact."""
    _ready("verilator")
    r = run_training(preset("default"), "verilator", steps=100, log=lambda *a: None)
    assert r["errors"] == [] and r["passed"] == 100, "\n".join(r["errors"][:20])
    assert r["cycles"] == 100 * r["cycles_per_step"], (r["cycles"], r["cycles_per_step"])


def test_verilator_training_steps_stochastic_rounding():
    _ready("verilator")
    r = run_training(preset("default"), "verilator", steps=20, seed=5, rounding="stochastic",
                     log=lambda *a: None)
    assert r["errors"] == [] and r["passed"] == 20, "\n".join(r["errors"][:20])


@pytest.mark.parametrize("policy,options", [
    ("conf_batch", {"batch_tau": 0.7}),                                   # max_prob
    ("conf_batch", {"batch_tau": 0.6, "confidence": "true_class_prob"}),
    ("random_batch", {"rate": 0.5}),
], ids=["conf_batch-max_prob", "conf_batch-true_class_prob", "random_batch"])
def test_verilator_100_training_steps_with_batch_skip(policy, options):
    """The skip controller decides on the hardware, step by step, as the golden model does:
    every decision (the BATCH_SKIPPED status bit), the skipped and kept steps' weights, the
    confidence and skip counters, and the cycles. The thresholds are set so that both
    decisions happen (and change back and forth) within the 100 steps."""
    _ready("verilator")
    r = run_training(preset("default"), "verilator", steps=100, policy=policy, options=options,
                     log=lambda *a: None)
    assert r["errors"] == [] and r["passed"] == 100, "\n".join(r["errors"][:20])
    assert 5 <= r["skipped_steps"] <= 95, f"{policy}: {r['skipped_steps']} of 100 steps skipped"


@pytest.mark.parametrize("policy,options,steps", [("conf_sample", {"tau": 0.5}, 100),
                                                  ("conf_sample", {"tau": 0.5, "confidence": "margin"}, 40),
                                                  ("conf_sample", {"tau": 0.2, "confidence": "true_class_prob"}, 40),
                                                  ("random_sample", {"rate": 0.5}, 100)],
                         ids=["conf_sample-max_prob", "conf_sample-margin", "conf_sample-true_class_prob",
                              "random_sample"])
def test_verilator_training_steps_with_sample_skip(policy, options, steps):
    """The per-sample skip on the hardware, 100 steps (40 with the margin and true_class_prob
    tests, whose decisions differ from max_prob's only in the loss unit): the loss unit's decisions, the compacted
    dY, B and G over the kept samples through the kept list, every weight line, counter (KEPT,
    SKIPPED_SAMPLES, MACs executed and skipped) and cycle count equal to the golden model's."""
    _ready("verilator")
    r = run_training(preset("default"), "verilator", steps=steps, policy=policy, options=options,
                     log=lambda *a: None)
    assert r["errors"] == [] and r["passed"] == steps, "\n".join(r["errors"][:20])
    partial = sum(1 for s in r["skipped_samples"] if 0 < s < 32)
    assert partial >= steps // 2, f"{policy}: only {partial} of {steps} steps kept some samples and skipped others"


def test_verilator_100_training_steps_with_sample_and_batch_skip_stacked():
    """conf_sample+conf_batch: SKIP_CTRL holds both policies, one confidence mode for both
    tests. Per step the skip controller decides on the batch's mean confidence and the loss
    unit on each sample; a skipped batch runs no B, G or U whatever its samples decided, a kept
    one runs them over its kept samples. 100 steps, every decision, weight, counter and cycle
    count equal to the golden model's; the thresholds (tau 0.7, batch tau 0.65) make both
    decisions happen: 19 batches skipped, 43 kept batches with some samples skipped."""
    _ready("verilator")
    r = run_training(preset("default"), "verilator", steps=100, policy="conf_sample+conf_batch",
                     options={"tau": 0.7, "batch_tau": 0.65}, log=lambda *a: None)
    assert r["errors"] == [] and r["passed"] == 100, "\n".join(r["errors"][:20])
    assert 5 <= r["skipped_steps"] <= 95, f"{r['skipped_steps']} of 100 batches skipped"
    partial = sum(1 for b, k in zip(r["batch_skipped"], r["skipped_samples"]) if not b and 0 < k < 32)
    assert partial >= 20, f"only {partial} kept batches skipped some of their samples"


def test_verilator_training_steps_with_tau_changed_between_steps():
    """The host rewrites CONF_TAU between steps (0.12, then 0.9, 0.12, ... every 5 steps; no
    require_correct): the hardware's per-sample decisions follow the register from the next
    step on, as the golden model's (at 0.12 it skips some, all or none of a batch; at 0.9,
    this early in training, none)."""
    _ready("verilator")
    opts = {"require_correct": False}
    changes = {s: {**opts, "tau": 0.9 if (s // 5) % 2 else 0.12} for s in range(5, 30, 5)}
    r = run_training(preset("default"), "verilator", steps=30, policy="conf_sample",
                     options={**opts, "tau": 0.12}, changes=changes, log=lambda *a: None)
    assert r["errors"] == [] and r["passed"] == 30, "\n".join(r["errors"][:20])
    low = [r["skipped_samples"][s] for s in range(30) if (s // 5) % 2 == 0]
    high = [r["skipped_samples"][s] for s in range(30) if (s // 5) % 2 == 1]
    assert sum(high) == 0 and any(0 < k < 32 for k in low) and 32 in low, (low, high)


def test_skip_programs_tiny_both_simulators():
    from golden.train_scenario import (margin_scenario, sample_gather_scenario, skip_error_scenarios,
                                       skip_scenario)
    from skiptrain.skip import ConfMode, SamplePolicy
    cfg = preset("tiny")
    items = [(skip_scenario(cfg, s), "run", True) for s in range(6)]
    items += [(skip_scenario(cfg, 100 + s, sample=p), "run", True)
              for p in (SamplePolicy.CONFIDENCE, SamplePolicy.RANDOM) for s in range(2)]
    items += [(skip_scenario(cfg, 200, sample=SamplePolicy.CONFIDENCE, mode=m), "run", True)
              for m in (ConfMode.MARGIN, ConfMode.TRUE_CLASS_PROB)]
    items += [(sample_gather_scenario(cfg, 300 + c, classes=c), "run", True) for c in (1, 2)]
    items += [(margin_scenario(cfg, 400 + s), "run", True) for s in range(2)]
    items += [(sc, "run", True) for sc, _ in skip_error_scenarios(cfg).values()]
    for sim in ("icarus", "verilator"):
        run_and_check("tiny", sim, items)


def test_icarus_training_steps_small():
    _ready("icarus")
    r = run_training(preset("small"), "icarus", sizes=(64, 8, 10), batch=16, steps=3,
                     log=lambda *a: None)
    assert r["errors"] == [] and r["passed"] == 3, "\n".join(r["errors"][:20])


def test_verilator_training_steps_normalised_by_the_kept_count_small():
    """SKIP_CTRL's norm_kept on the small accelerator built with the normaliser: 30 steps of a
    random per-sample skip (rate 0.5: a different kept count, so another mantissa, nearly every
    step), every weight, counter and cycle equal to the golden model."""
    _ready("verilator")
    cfg = preset("small").replace(kept_norm=True, name="small_norm")
    r = run_training(cfg, "verilator", sizes=(64, 8, 10), batch=16, steps=30, policy="random_sample",
                     options={"rate": 0.5, "normalize": "kept"}, log=lambda *a: None)
    assert r["errors"] == [] and r["passed"] == 30, "\n".join(r["errors"][:20])
    kept = [16 - k for k in r["skipped_samples"]]
    assert len(set(kept)) >= 5 and all(0 < k < 16 for k in kept[:10]), kept


def test_a_wrong_weight_is_caught():
    """Negative control: the bench is told LR_SHIFT 3 but the golden model trained with 2, so
    every weight update differs; the run must fail at step 0 and name differing lines."""
    _ready("verilator")
    cfg = preset("default")
    doc, golden = training_session(cfg, steps=2, lr=0.25)
    doc["lr_shift"] = 3
    b = runner.build(cfg, "verilator", log=lambda *a: None)
    results = runner.run(b, doc, test_module="cocotb_tests.test_training")
    assert len(results) == 1 and results[0]["errors"], results
    assert any("weight and bias lines differ" in e for e in results[0]["errors"]), results[0]["errors"]
    from cocotb_tests.training_session import first_differences
    diffs = first_differences(golden, 0, results[0]["lines"])
    assert diffs and ("acc line" in diffs[0] or "spad line" in diffs[0]), diffs


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_kept_norm_programs_tiny(sim):
    """The kept-count normaliser's programs (every kept count class, stochastic rounding one
    time in four) and its refusals, on the Verilog of tiny with kept_norm, and norm_kept
    refused by tiny without it."""
    from golden.train_scenario import kept_norm_error_scenarios, kept_norm_scenario
    cfg = CONFIGS["tiny_norm"]
    items = [(kept_norm_scenario(cfg, s), "run", True) for s in range(10)]
    items += [(sc, "run", True) for sc, _ in kept_norm_error_scenarios(cfg).values()]
    run_and_check("tiny_norm", sim, items)
    run_and_check("tiny", sim, [(sc, "run", True) for sc, _ in kept_norm_error_scenarios(preset("tiny")).values()])


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_epilogue_loss_and_error_programs_tiny(sim):
    cfg = preset("tiny")
    items = [(epilogue_scenario(cfg, s), "run", True) for s in range(4)]
    items += [(loss_scenario(cfg, s, bad_label=s == 2), "run", True) for s in range(3)]
    items += [(sc, "run", True) for sc, _ in train_error_scenarios(cfg).values()]
    run_and_check("tiny", sim, items)


def test_flow_cosim_train_and_accel_training_small(tmp_path):
    """The main job's training steps on a preset whose memories hold the 64-8-10 MLP; tiny
    holds none and says so."""
    _ready("verilator")
    import json
    from skiptrain.cli import main
    rc = main(["flow", "--preset", "small", "--out", str(tmp_path / "small"),
               "--skip", "cosim,bench,synth,train"])
    summary = json.loads((tmp_path / "small" / "flow.json").read_text())
    assert rc == 0, summary
    assert summary["cosim_train"]["exit_code"] == 0 and summary["train_accel"]["exit_code"] == 0
    rc = main(["flow", "--preset", "tiny", "--out", str(tmp_path / "tiny"),
               "--skip", "cosim,bench,synth,train"])
    summary = json.loads((tmp_path / "tiny" / "flow.json").read_text())
    assert rc == 0 and summary["cosim_train"].startswith("skipped: the digits MLP does not fit")
