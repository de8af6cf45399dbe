"""torch.distributed: 2 gloo processes on the CPU agree on every batch, window and layer decision
and end with identical weights; without batch norm they equal the single-process run."""

import pytest
import torch

from golden.training.datasets import make_synthetic
from golden.training.distributed import agreement_worker, run_local
from golden.training.trainer import TrainConfig, train
from training_support import one_thread  # noqa: F401 (autouse fixture)

DATA = dict(n_train=128, n_test=64)
CONFIG = dict(epochs=3, batch_size=32, seed=0, lr=0.2)

CASES = [
    # per-sample and batch skips, WUS windows (each one re-wraps DDP), the matched kind of LR decay
    ("mlp", "conf_sample+conf_batch+wus_lr",
     {"warmup": 1, "tau": 0.4, "batch_tau": 0.5, "lr_gamma": 0.9, "wus_eps": 1.0,
      "wus_period": 3, "wus_window": 1}),
    # layer freezing decided on rank 0, shared low-resolution draws, random per-sample skip,
    # batch norm
    ("resnet", "layer_freeze+downsample+random_sample",
     {"theta": 100.0, "patience": 1, "warmup": 1, "rate": 0.3}),
]


def agreed(epoch):
    """The decisions that must be the same on every rank (per-sample ones are local)."""
    out = {"low_res_steps": epoch["low_res_steps"], "updates": epoch["updates"],
           "weight_skip_steps": epoch["weight_skip_steps"], "lr": epoch["lr"]}
    for name, log in epoch["decisions"].items():
        if name not in ("conf_sample", "random_sample"):
            out[name] = log
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model, spec, options", CASES)
def test_two_gloo_ranks_agree(tmp_path, model, spec, options):
    run_local(agreement_worker, 2, (str(tmp_path), DATA, model, spec, options, CONFIG),
              tmp_path, timeout=150)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for e0, e1 in zip(r0["epochs"], r1["epochs"]):
        assert agreed(e0) == agreed(e1), e0["epoch"]
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    assert r0["final_accuracy"] == r1["final_accuracy"]
    acted = [agreed(e) for e in r0["epochs"]]
    if model == "mlp":
        assert any(e["weight_skip_steps"] for e in acted) and acted[-1]["lr"] < acted[0]["lr"]
        assert any(e["conf_batch"]["skipped_batches"] for e in acted)
        assert any(e["decisions"]["conf_sample"]["skipped_rows"] for e in r0["epochs"])
        # data-parallel on the same global batches: the single-process result, up to rounding
        single = train(make_synthetic(**DATA), model, spec, TrainConfig(**CONFIG),
                       options=options)
        for k, v in single.final_state.items():
            torch.testing.assert_close(r0["params"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    else:
        assert acted[-1]["layer_freeze"]["unit_state"][:4] == ["frozen"] * 4
        assert any(e["low_res_steps"] for e in acted)
