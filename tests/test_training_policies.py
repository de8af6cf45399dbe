"""Each policy's decisions on crafted inputs, stacking, matched baselines and parameter errors."""

import math

import pytest
import torch

from golden.training.distributed import Dist
from golden.training.models import UNIT_DROPPED, UNIT_FROZEN, UNIT_TRAIN, build_model
from golden.training.counting import MacMeter
from golden.training.policies import (ConfidenceBatchSkip, ConfidenceSampleSkip, Downsample,
                                      LayerFreeze, PolicyStack, RandomBatchSkip,
                                      RandomLayerFreeze, RandomSampleSkip,
                                      RandomWeightUpdateSkip, RunContext, StepInfo, StepOutcome,
                                      WeightUpdateSkip, confidence, tau_from_eps)
from golden.training.registry import make_policy
from training_support import one_thread  # noqa: F401 (autouse fixture)


def ctx_for(model=None, steps=10, epochs=5, seed=0):
    model = model or build_model("mlp", (1, 2, 2), 3, width=3)
    meter = MacMeter(model)
    return RunContext(model, steps, epochs, seed, Dist(), meter.reference)


def info(epoch=0, step=0, rows=4):
    return StepInfo(epoch, step, step, rows, rows, 0)


def logits_with_pmax(ps, classes=3):
    """Logits whose softmax has max p at class 0 and the rest spread evenly."""
    rows = []
    for p in ps:
        rest = (1 - p) / (classes - 1)
        rows.append([math.log(p)] + [math.log(rest)] * (classes - 1))
    return torch.tensor(rows)


def test_confidence_modes():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([1, 2])
    p = torch.softmax(z, 1)
    torch.testing.assert_close(confidence(z, y, "max_prob"), p.amax(1))
    torch.testing.assert_close(confidence(z, y, "true_class_prob"), torch.stack([p[0, 1], p[1, 2]]))
    torch.testing.assert_close(confidence(z, y, "margin"), torch.tensor([1.0, 3.0]))


def test_sample_skip_keeps_exactly_the_unconfident_rows():
    pol = ConfidenceSampleSkip(tau=0.9, warmup_epochs=0)
    pol.bind(ctx_for())
    pol.start_epoch(0)
    z = logits_with_pmax([0.95, 0.5, 0.9, 0.99, 0.3])
    y = torch.tensor([0, 0, 0, 1, 0])  # row 3 is confident but wrong: kept
    keep = pol.keep_rows(z, y, info(rows=5))
    assert keep.tolist() == [False, True, False, True, True]
    pol.end_epoch(0)
    assert pol.epoch_log()["rate"] == pytest.approx(2 / 5)


def test_sample_skip_modes_threshold_from_eps_and_warmup():
    assert tau_from_eps(0.02) == pytest.approx(0.9)
    pol = ConfidenceSampleSkip(eps=0.02, warmup_epochs=2)
    assert pol.threshold == pytest.approx(0.9)
    assert not pol.decides_rows(1) and pol.decides_rows(2)
    z = torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.5, 0.0]])
    y = torch.tensor([0, 0])
    m = ConfidenceSampleSkip(confidence="margin", tau=2.0, warmup_epochs=0)
    m.bind(ctx_for())
    m.start_epoch(0)
    assert m.keep_rows(z, y, info(rows=2)).tolist() == [False, True]
    t = ConfidenceSampleSkip(confidence="true_class_prob", tau=0.5, require_correct=False,
                             warmup_epochs=0)
    t.bind(ctx_for())
    t.start_epoch(0)
    # p_y of row 0 is high for label 0, low for label 1
    assert t.keep_rows(z[:1].repeat(2, 1), torch.tensor([0, 1]), info(rows=2)).tolist() == [
        False, True]
    assert ConfidenceSampleSkip(confidence="margin").threshold == pytest.approx(math.log(9))


def test_batch_skip_uses_the_sum_against_b_tau():
    pol = ConfidenceBatchSkip(tau_batch=0.9, warmup_epochs=0)
    pol.bind(ctx_for())
    pol.start_epoch(0)
    y = torch.zeros(4, dtype=torch.long)
    assert pol.skip_batch(logits_with_pmax([0.99, 0.99, 0.99, 0.65]), y, info())  # mean 0.905
    assert not pol.skip_batch(logits_with_pmax([0.99, 0.99, 0.99, 0.6]), y, info())  # 0.8925
    pol.end_epoch(0)
    assert pol.epoch_log()["rate"] == 0.5 and pol.epoch_log()["skipped_steps"] == [0]
    warm = ConfidenceBatchSkip(warmup_epochs=1)
    warm.bind(ctx_for())
    warm.start_epoch(0)
    assert not warm.skip_batch(logits_with_pmax([0.999] * 4), y, info())


def run_wus(pol, accs, steps_per_epoch=1):
    """Drive a WUS policy with one step per period and the given training accuracies; return
    the per-step skip decisions."""
    pol.bind(ctx_for(steps=steps_per_epoch))
    decisions = []
    for step, acc in enumerate(accs):
        epoch = step // steps_per_epoch
        if step % steps_per_epoch == 0:
            pol.start_epoch(epoch)
        skip = pol.skip_weights(info(epoch, step))
        decisions.append(skip)
        pol.end_step(info(epoch, step), StepOutcome(int(acc * 100), 100, 100, True, False, skip))
        if (step + 1) % steps_per_epoch == 0:
            pol.end_epoch(epoch)
    return decisions


def test_wus_plateau_starts_a_window_of_w_steps():
    pol = WeightUpdateSkip(eps=0.01, window=3, warmup_epochs=0, end_early=False)
    # accuracies per period: rising, then a plateau at step 3 (|0.905 - 0.90| < 0.01); the
    # window runs its 3 steps whatever the accuracy does; at its end a change restarts nothing
    d = run_wus(pol, [0.5, 0.7, 0.9, 0.905, 0.95, 0.99, 0.95, 0.999])
    assert d == [False, False, False, False, True, True, True, False]
    assert pol.logs[3]["windows_started"] == [4]
    # a plateau still there when a window ends starts the next one at once
    again = WeightUpdateSkip(eps=0.01, window=2, warmup_epochs=0, end_early=False)
    assert run_wus(again, [0.5, 0.9, 0.9, 0.9, 0.9, 0.9]) == [False, False, False, True, True,
                                                               True]


def test_wus_window_ends_early_and_lr_decays():
    pol = WeightUpdateSkip(eps=0.01, window=5, lr_gamma=0.5, warmup_epochs=0)
    assert pol.name == "wus_lr"
    d = run_wus(pol, [0.5, 0.9, 0.905, 0.95, 0.951, 0.952])
    # plateau at step 2 starts a window; the jump at step 3 ends it; plateau again at 4
    assert d == [False, False, False, True, False, True]
    assert pol.lr_factor() == 0.25
    assert [log["lr_factor"] for log in pol.logs] == [1, 1, 1, 0.5, 0.5, 0.25]


def test_wus_warmup_blocks_windows():
    pol = WeightUpdateSkip(eps=0.5, warmup_epochs=3, window=1)
    d = run_wus(pol, [0.5, 0.5, 0.5, 0.5, 0.5])
    assert d == [False, False, False, False, True]


def set_scores(model, factors):
    """Scale each unit's parameters by (1 + factor): its score becomes |factor|."""
    with torch.no_grad():
        for unit, f in zip(model.units.values(), factors):
            for p in unit.parameters():
                p.mul_(1 + f)


def test_layer_freezes_below_theta_for_k_epochs_earliest_first():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 2, 2), 3, width=4)
    pol = LayerFreeze(theta=0.1, patience=2, warmup_epochs=0)
    pol.bind(ctx_for(model))
    epochs = [[0.05, 0.3, 0.01],   # fc1 under theta once
              [0.04, 0.01, 0.01],  # fc1 twice -> frozen; fc2 only once
              [0.0, 0.009, 0.01]]  # fc2 twice -> frozen; fc3 (classifier) never
    states = []
    for e, f in enumerate(epochs):
        pol.start_epoch(e)
        set_scores(model, f)
        pol.end_epoch(e)
        states.append(list(model.unit_state))
    assert states == [[UNIT_TRAIN] * 3, [UNIT_FROZEN, UNIT_TRAIN, UNIT_TRAIN],
                      [UNIT_FROZEN, UNIT_FROZEN, UNIT_TRAIN]]
    assert pol.logs[1]["scores"][0] == pytest.approx(0.04, rel=1e-4)
    assert pol.logs[1]["frozen"] == ["fc1"]


def test_layer_waits_for_the_earlier_unit_and_continuation():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 2, 2), 3, width=4)
    pol = LayerFreeze(theta=0.1, patience=2, warmup_epochs=0)
    pol.bind(ctx_for(model))
    for e, f in enumerate([[0.02, 0.01, 0], [0.05, 0.01, 0]]):  # fc1 score rising: stays
        pol.start_epoch(e)
        set_scores(model, f)
        pol.end_epoch(e)
    assert model.unit_state == [UNIT_TRAIN] * 3  # fc2 is ready but fc1 is not: no freezing
    off = LayerFreeze(theta=0.1, patience=2, warmup_epochs=0, continuation=False, mode="drop")
    torch.manual_seed(0)
    model = build_model("mlp", (1, 2, 2), 3, width=4)
    off.bind(ctx_for(model))
    for e, f in enumerate([[0.02, 0.01, 0], [0.05, 0.01, 0]]):
        off.start_epoch(e)
        set_scores(model, f)
        off.end_epoch(e)
    # without the continuation test fc1 goes; its input (an image) and output differ in shape,
    # so drop mode freezes it; fc2 (4 -> 4) is dropped
    assert model.droppable == [False, True, False]
    assert model.unit_state == [UNIT_FROZEN, UNIT_DROPPED, UNIT_TRAIN]


def test_downsample_schedules():
    model = build_model("cnn", (1, 8, 8), 3, width=2)
    every = Downsample(schedule="every", every=3)
    every.bind(ctx_for(model))
    every.start_epoch(0)
    assert [every.low_res(info(0, s)) for s in range(6)] == [False, False, True] * 2
    first = Downsample(schedule="epochs", epochs=1)
    first.bind(ctx_for(model))
    first.start_epoch(0)
    assert first.low_res(info(0, 0)) and not first.low_res(info(1, 10))
    prob = Downsample(prob=0.3)
    prob.bind(ctx_for(model, seed=1))
    prob.start_epoch(0)
    draws = [prob.low_res(info(0, s)) for s in range(2000)]
    assert 0.27 < sum(draws) / 2000 < 0.33
    assert 0.5 < prob.bg_saving < 1.0


def test_random_policies_hit_their_rate_and_replay_per_epoch_rates():
    rs = RandomSampleSkip(rate=(0.0, 0.25))
    rs.bind(ctx_for())
    assert not rs.decides_rows(0) and rs.decides_rows(1) and rs.decides_rows(7)
    rs.start_epoch(1)
    kept = torch.cat([rs.keep_rows(torch.zeros(100, 3), torch.zeros(100, dtype=torch.long),
                                   info(1, s, rows=100)) for s in range(40)])
    assert 0.22 < 1 - kept.float().mean() < 0.28
    rb = RandomBatchSkip(rate=0.5)
    rb.bind(ctx_for())
    rb.start_epoch(0)
    assert 0.45 < sum(rb.skip_batch(None, None, info(0, s)) for s in range(2000)) / 2000 < 0.55
    rw = RandomWeightUpdateSkip(rate=1.0, lr_factors=(1.0, 0.5))
    rw.bind(ctx_for())
    rw.start_epoch(1)
    assert rw.skip_weights(info(1, 0)) and rw.lr_factor() == 0.5


def test_random_layer_draws_inactive_units_per_epoch():
    torch.manual_seed(0)
    model = build_model("resnet", (1, 8, 8), 3, width=2)
    pol = RandomLayerFreeze(rate=(0.0, 1.0, 0.5))
    pol.bind(ctx_for(model))
    states = []
    for e in range(42):
        pol.start_epoch(e)
        states.append(list(model.unit_state))
        pol.end_epoch(e)
    assert states[0] == [UNIT_TRAIN] * 5 and states[1] == [UNIT_FROZEN] * 4 + [UNIT_TRAIN]
    later = [s[:4] for s in states[2:]]
    share = sum(u == UNIT_FROZEN for s in later for u in s) / (4 * len(later))
    assert 0.35 < share < 0.65 and all(s[-1] == UNIT_TRAIN for s in states)
    assert pol.logs[1]["rate"] == 1.0
    drop = RandomLayerFreeze(rate=1.0, mode="drop")
    drop.bind(ctx_for(model))
    drop.start_epoch(0)
    assert model.unit_state == ["frozen", "dropped", "frozen", "dropped", "train"]


def test_matched_baselines_take_the_logged_rates():
    stack = make_policy("conf_sample+wus_lr+layer_drop", {"warmup": 0})
    stack.bind(ctx_for())
    sample, wus, layer = stack.policies
    sample.logs = [{"rate": 0.1}, {"rate": 0.6}]
    wus.logs = [{"rate": 0.0, "steps": 10, "skipped_steps": 0, "lr_factor": 1.0},
                {"rate": 0.5, "steps": 10, "skipped_steps": 5, "lr_factor": 0.5}]
    layer.logs = [{"rate": 0.0}, {"rate": 0.5}]
    base = stack.matched_baseline()
    assert [p.name for p in base.policies] == ["random_sample", "random_wus", "random_layer"]
    # per epoch for per-sample decisions, over the run for the per-epoch deciders
    assert base.policies[0].rate == (0.1, 0.6)
    assert base.policies[1].rate == 0.25 and base.policies[1].lr_factors == (1.0, 0.5)
    assert base.policies[2].rate == 0.25 and base.policies[2].mode == "drop"
    assert make_policy("none").matched_baseline() is None
    assert make_policy("random_batch").matched_baseline() is None


def test_stack_combines_masks_and_checks():
    a = RandomSampleSkip(rate=0.5)
    b = ConfidenceSampleSkip(warmup_epochs=0, normalize="kept")
    with pytest.raises(ValueError, match="disagree on normalize"):
        PolicyStack([a, b])
    with pytest.raises(ValueError, match="'wus' appears 2 times"):
        PolicyStack([WeightUpdateSkip(), WeightUpdateSkip()])
    with pytest.raises(ValueError, match="at most one layer policy"):
        PolicyStack([LayerFreeze(), RandomLayerFreeze()])
    s = PolicyStack([ConfidenceSampleSkip(tau=0.9, warmup_epochs=0), RandomSampleSkip(rate=0.0)])
    s.bind(ctx_for())
    s.start_epoch(0)
    keep = s.keep_rows(logits_with_pmax([0.95, 0.5]), torch.tensor([0, 0]), info(rows=2))
    assert keep.tolist() == [False, True]


@pytest.mark.parametrize("make, message", [
    (lambda: ConfidenceSampleSkip(tau=1.5), r"tau must be a number in \(0.0, 1.0\], got 1.5"),
    (lambda: ConfidenceSampleSkip(tau=0.9, eps=0.1), "give tau or eps, not both"),
    (lambda: ConfidenceSampleSkip(confidence="margin", eps=0.1), "does not apply to confidence"),
    (lambda: ConfidenceSampleSkip(confidence="entropy"),
     "confidence must be one of max_prob, true_class_prob, margin, got 'entropy'"),
    (lambda: ConfidenceSampleSkip(warmup_epochs=-1), "warmup_epochs must be an integer >= 0"),
    (lambda: ConfidenceBatchSkip(tau_batch=0.0), r"tau_batch must be a number in \(0.0, 1.0\]"),
    (lambda: WeightUpdateSkip(window=0), "window must be an integer >= 1, got 0"),
    (lambda: WeightUpdateSkip(lr_gamma=1.5), "lr_gamma must be a number in"),
    (lambda: LayerFreeze(theta=-1), "theta must be a number in"),
    (lambda: LayerFreeze(mode="prune"), "mode must be one of freeze, drop, got 'prune'"),
    (lambda: Downsample(factor=1), "factor must be an integer >= 2, got 1"),
    (lambda: RandomSampleSkip(rate=1.2), r"rate must be a number in \[0.0, 1.0\], got 1.2"),
    (lambda: RandomBatchSkip(rate=(0.1, -0.1)), r"rate\[1\] must be a number in"),
    (lambda: make_policy("conf_smaple"), "unknown policy 'conf_smaple' in 'conf_smaple'; known"),
    (lambda: make_policy("conf_sample", {"theta": 0.1}),
     "option 'theta' applies to layer_freeze, layer_drop, not to conf_sample"),
    (lambda: make_policy("downsample", {"low_every": 2, "low_prob": 0.1}),
     "give one downsampling schedule"),
    (lambda: make_policy("conf_batch", {"batch_tau": 2.0}), "policy conf_batch: tau_batch must"),
])
def test_parameter_errors_name_value_and_rule(make, message):
    with pytest.raises(ValueError, match=message):
        make()
