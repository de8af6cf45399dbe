"""The trainer: determinism per seed, every policy on every model, counts add up, time to target."""

import numpy as np
import pytest
import torch

from golden.training.datasets import make_synthetic
from golden.training.registry import POLICIES
from golden.training.trainer import TrainConfig, train
from training_support import one_thread  # noqa: F401 (autouse fixture)

OPTIONS = {  # make every policy act within two epochs
    "conf_sample": {"warmup": 0, "tau": 0.3},  # 4 classes: chance is 0.25
    "conf_batch": {"warmup": 0, "batch_tau": 0.26},
    "wus": {"warmup": 0, "wus_eps": 1.0, "wus_period": 1},
    "wus_lr": {"warmup": 0, "wus_eps": 1.0, "wus_period": 1},
    "layer_freeze": {"warmup": 0, "theta": 100.0, "patience": 1},
    "layer_drop": {"warmup": 0, "theta": 100.0, "patience": 1},
    "random_sample": {"rate": 0.5}, "random_batch": {"rate": 0.5},
    "random_wus": {"rate": 0.5}, "random_layer": {"rate": 0.5},
}


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_train=64, n_test=32)


def run(data, model, spec, seed=0, epochs=2, **kw):
    opts = {}
    for name in spec.split("+"):
        opts.update(OPTIONS.get(name, {}))
    return train(data, model, spec, TrainConfig(epochs=epochs, seed=seed, batch_size=16, **kw),
                 options=opts)


MATRIX = [("mlp", spec) for spec in POLICIES] + [
    (model, spec) for model in ("cnn", "resnet")
    for spec in ("none", "conf_sample", "conf_batch", "wus_lr", "layer_drop", "downsample",
                 "random_layer")]


@pytest.mark.parametrize("model, spec", MATRIX)
def test_every_policy_trains(data, model, spec):
    r = run(data, model, spec)
    sk = r.skip_fractions()
    assert 0.0 <= r.final_accuracy <= 1.0 and np.isfinite(r.epochs[-1]["train_loss"])
    assert all(-1e-12 <= v <= 1.0 for v in sk.values()), sk
    if spec == "none":
        assert sk == dict.fromkeys(sk, 0.0) and r.totals()["executed"]["R"] == 0
    else:
        assert sk["total"] > 0, f"{spec} skipped nothing on {model}"
    # per-epoch sums equal the run totals
    ex = sum(np.array([e["executed"][c] for c in "FBGUR"]) for e in r.epochs)
    assert ex.tolist() == r.layer_executed.sum(0).tolist()


def test_same_seed_same_run_other_seed_other_run(data):
    a = run(data, "mlp", "conf_sample+random_batch+downsample", seed=3)
    b = run(data, "mlp", "conf_sample+random_batch+downsample", seed=3)
    c = run(data, "mlp", "conf_sample+random_batch+downsample", seed=4)
    assert [e["test_accuracy"] for e in a.epochs] == [e["test_accuracy"] for e in b.epochs]
    assert np.array_equal(a.step_executed, b.step_executed)
    assert a.epochs[-1]["decisions"] == b.epochs[-1]["decisions"]
    assert all(torch.equal(a.final_state[k], b.final_state[k]) for k in a.final_state)
    assert not all(torch.equal(a.final_state[k], c.final_state[k]) for k in a.final_state)


def test_stacked_policies_skip_more_than_each(data):
    s = run(data, "mlp", "random_sample").skip_fractions()
    w = run(data, "mlp", "wus").skip_fractions()
    both = run(data, "mlp", "random_sample+wus").skip_fractions()
    assert both["total"] > max(s["total"], w["total"])
    assert both["G"] > max(s["G"], w["G"]) and both["B"] > w["B"]


def test_time_to_target_and_kept_normalisation(data):
    r = train(data, "mlp", "conf_sample", TrainConfig(epochs=3, target_accuracy=0.3),
              options={"warmup": 0, "normalize": "kept"})
    assert r.epoch_to_target is not None and r.time_to_target_s <= r.wall_s
    assert 0 < r.macs_to_target <= r.totals()["executed"]["total"]
    never = train(data, "mlp", "none", TrainConfig(epochs=1, target_accuracy=1.0, lr=1e-6))
    assert never.time_to_target_s is None


def test_config_errors():
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be a number > 0, got -1"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match=r"target_accuracy must be None or a number in \(0, 1\]"):
        TrainConfig(target_accuracy=2)
    with pytest.raises(ValueError, match="bn_replay must be one of kept, full, got 'half'"):
        TrainConfig(bn_replay="half")
    with pytest.raises(ValueError, match="device 'cuda' asked for, but torch sees no CUDA GPU"):
        if torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU (skipped)")
        train(make_synthetic(n_train=8, n_test=8), "mlp", "none", TrainConfig(device="cuda"))
