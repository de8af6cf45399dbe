"""Proof that skipped work is not computed: skipped samples never enter B or G and never reach
the weights; skipped batches, weight windows and frozen layers leave their gradients out."""

import pytest
import torch

from golden.training.datasets import make_synthetic
from golden.training.models import build_model
from golden.training.policies import Policy, PolicyStack, StepInfo
from golden.training.trainer import TrainConfig, Trainer, train
from training_support import one_thread  # noqa: F401 (autouse fixture)


class FixedRows(Policy):
    """Keeps exactly the rows of a given mask."""

    name = "fixed_rows"
    kind = "sample"

    def __init__(self, keep):
        self.keep = keep

    def decides_rows(self, epoch):
        return True

    def keep_rows(self, logits, labels, info):
        return self.keep.clone()


KEEP = torch.tensor([True, False, True, True, False, True, False, True])
SKIPPED = (~KEEP).nonzero().flatten()


def one_step(model_name, x, y, keep=KEEP, trace=False):
    torch.manual_seed(0)
    data = make_synthetic(n_train=8, n_test=8)
    model = build_model(model_name, data.input_shape, data.num_classes)
    trainer = Trainer(data, model, PolicyStack([FixedRows(keep)]), TrainConfig(seed=0))
    trainer.policy.start_epoch(0)
    model.train()
    if trace:
        trainer.meter.backward_trace = []
        rows_in = []
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.register_forward_hook(
                    lambda mod, inp, out: rows_in.append((trainer.meter.phase, inp[0].shape[0])))
    outcome, _ = trainer.step(x, y, StepInfo(0, 0, 0, len(y), len(y), 0))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    return trainer, outcome, params, (rows_in if trace else None)


def batch():
    g = torch.Generator().manual_seed(5)
    return torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)


def test_gradients_carry_only_the_kept_rows():
    x, y = batch()
    trainer, outcome, _, rows_in = one_step("mlp", x, y, trace=True)
    kept = int(KEEP.sum())
    trace = trainer.meter.backward_trace
    assert outcome.kept == kept and outcome.updated
    assert [n for n, _ in trace] == ["fc3.linear", "fc2.linear", "fc1.linear"]
    assert all(rows == kept for _, rows in trace), trace
    # the decision forward saw all 8 rows without a graph, the graph holds only the kept rows
    assert rows_in == [("F", 8)] * 3 + [("R", kept)] * 3
    ex = trainer.meter.steps[-1]
    names = trainer.meter.names
    fc1 = names.index("fc1.linear")
    assert ex[fc1, 0] == 8 * 64 * 128 and ex[fc1, 2] == kept * 64 * 128  # F all rows, G kept


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_skipped_samples_with_poisoned_labels_and_inputs_change_nothing(model_name):
    x, y = batch()
    _, _, clean, _ = one_step(model_name, x, y)
    xp, yp = x.clone(), y.clone()
    yp[SKIPPED] = (yp[SKIPPED] + 1) % 4
    xp[SKIPPED] = torch.rand(len(SKIPPED), 1, 8, 8) * 50 - 25
    _, _, poisoned, _ = one_step(model_name, xp, yp)
    for k in clean:
        assert torch.equal(clean[k], poisoned[k]), k
    # control: the same poison on a kept row does change the weights
    yk = y.clone()
    yk[0] = (yk[0] + 1) % 4
    _, _, changed, _ = one_step(model_name, x, yk)
    assert any(not torch.equal(clean[k], changed[k]) for k in clean)


def test_resnet_skipped_labels_change_nothing():
    # with batch norm the skipped rows' inputs are part of the batch statistics of the forward
    # pass (as in the accelerator), so only their labels are poisoned here
    x, y = batch()
    _, _, clean, _ = one_step("resnet", x, y)
    yp = y.clone()
    yp[SKIPPED] = (yp[SKIPPED] + 2) % 4
    _, _, poisoned, _ = one_step("resnet", x, yp)
    for k in clean:
        assert torch.equal(clean[k], poisoned[k]), k


def test_no_kept_row_means_no_backward_and_no_update():
    x, y = batch()
    trainer, outcome, params, _ = one_step("mlp", x, y, keep=torch.zeros(8, dtype=torch.bool),
                                           trace=True)
    assert not outcome.updated and trainer.meter.backward_trace == []
    ex = trainer.meter.steps[-1]
    assert ex[:, 1:5].sum() == 0 and ex[:, 0].sum() > 0  # F ran, B G U R did not


def small():
    return make_synthetic(n_train=128, n_test=64)


def test_weight_update_skip_window_skips_g_and_weight_updates():
    # eps = 1: every period is a plateau; the first comparison ends epoch 1, so epoch 2 on
    # is one window after another
    r = train(small(), "mlp", "wus", TrainConfig(epochs=3, seed=0),
              options={"wus_eps": 1.0, "warmup": 0})
    steps = r.step_executed
    per_epoch = len(steps) // 3
    assert steps[:2 * per_epoch, :, 2].all()  # G everywhere before
    window = steps[2 * per_epoch:]
    assert window[:, :, 2].sum() == 0  # no G
    assert (window[:, :, 1].sum(1) > 0).all()  # B still runs (biases below need dY)
    bias_params = 128 + 128 + 4
    assert (window[:, :, 3].sum(1) == bias_params).all()  # U: biases only
    assert r.epochs[2]["weight_skip_steps"] == per_epoch


def test_frozen_layers_have_no_g_no_u_and_b_is_cut_below():
    r = train(small(), "mlp", "layer_freeze", TrainConfig(epochs=2, seed=0),
              options={"theta": 100.0, "patience": 1, "warmup": 0})
    assert r.epochs[0]["decisions"]["layer_freeze"]["frozen"] == ["fc1", "fc2"]
    steps = r.step_executed[len(r.step_executed) // 2:]
    fc3 = r.layers.index("fc3.linear")
    assert steps[:, :, 1].sum() == 0  # nothing below the classifier needs an input gradient
    assert steps[:, :fc3, 2].sum() == 0 and (steps[:, fc3, 2] > 0).all()
    assert (steps[:, :, 3].sum(1) == 128 * 4 + 4).all()


def test_dropped_layers_do_not_run():
    r = train(small(), "mlp", "layer_drop", TrainConfig(epochs=2, seed=0),
              options={"theta": 100.0, "patience": 1, "warmup": 0})
    assert r.epochs[1]["decisions"]["layer_drop"]["unit_state"] == ["frozen", "dropped", "train"]
    steps = r.step_executed[len(r.step_executed) // 2:]
    fc2 = r.layers.index("fc2.linear")
    assert steps[:, fc2].sum() == 0


def test_skipped_batches_run_forward_only():
    r = train(small(), "mlp", "random_batch", TrainConfig(epochs=1, seed=0),
              options={"rate": 0.5})
    skipped = r.epochs[0]["decisions"]["random_batch"]["skipped_steps"]
    assert 0 < len(skipped) < 4
    for s, ex in enumerate(r.step_executed):
        assert ex[:, 0].sum() > 0
        assert (ex[:, 1:].sum() == 0) == (s in skipped), s


def test_low_resolution_batches_run_smaller_gemms():
    r = train(make_synthetic(n_train=128, n_test=64), "cnn", "downsample",
              TrainConfig(epochs=1, seed=0), options={"low_every": 2})
    f = r.step_executed[:, :, 0].sum(1)
    assert (f[1::2] < f[0::2] / 3).all()  # a quarter of the pixels, 4/9 of the kernel


def test_skipped_parameters_really_stay_put():
    """Momentum and weight decay must not move a frozen layer or a skipped weight: one epoch
    more under the skip leaves those parameters bit-identical."""
    opts = {"theta": 100.0, "patience": 1, "warmup": 0}
    cfg = dict(seed=0, weight_decay=1e-3)
    a = train(small(), "mlp", "layer_freeze", TrainConfig(epochs=1, **cfg), options=opts)
    b = train(small(), "mlp", "layer_freeze", TrainConfig(epochs=3, **cfg), options=opts)
    for k in a.final_state:
        same = torch.equal(a.final_state[k], b.final_state[k])
        assert same == (not k.startswith("units.fc3")), k
    opts = {"wus_eps": 1.0, "warmup": 0}
    a = train(small(), "mlp", "wus", TrainConfig(epochs=2, **cfg), options=opts)
    b = train(small(), "mlp", "wus", TrainConfig(epochs=3, **cfg), options=opts)
    for k in a.final_state:
        same = torch.equal(a.final_state[k], b.final_state[k])
        assert same == k.endswith("weight"), k  # weights skip, biases train
