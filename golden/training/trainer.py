"""The training loop that runs a :class:`~golden.training.policies.PolicyStack` and counts its work.

One step, in the order the hooks are called:

1. the policies choose the resolution of the batch and whether weights skip their update (WUS);
   the trainer sets ``requires_grad`` of every parameter from that and from the unit states, so
   autograd computes exactly the gradients that are still needed;
2. forward over the whole batch. When a per-sample policy decides rows this epoch, the forward
   runs without an autograd graph (batch norm records its batch statistics); otherwise with one;
3. the policies see the logits: rows to keep, skip of the whole batch;
4. unless the batch is skipped (or no row is kept on any rank), back-propagation: with row
   decisions, the kept rows alone are run again with a graph (batch norm replays the full
   batch's statistics, so they see the same activations) and only they enter B and G; the loss is
   the summed cross-entropy of the back-propagated rows divided by the batch size (or by the
   kept count, a policy flag); then the optimizer steps (SGD with momentum; parameters without
   a gradient are not touched);
5. the policies see what the step did (accuracy for WUS); at the end of an epoch they score
   layers (freezing), and the test accuracy is measured.

The MAC meter counts F, B, G, U (and R, the recomputed forward of the kept rows) from the shapes
that ran, per step and per layer.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .counting import COUNTERS, MacMeter
from .datasets import Dataset
from .errors import OptionError, number_rule
from .distributed import Dist
from .models import UNIT_TRAIN, SkipBatchNorm2d, SkipNet, build_model
from .policies import Policy, PolicyStack, RunContext, StepInfo, StepOutcome

__all__ = ["TrainConfig", "RunResult", "Trainer", "train", "resolve_device", "DEVICE_RULE"]


#: what ``device`` may be (the rule of :func:`resolve_device`'s errors)
DEVICE_RULE = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; otherwise a torch device string of a
    kind the trainer runs on (cpu, cuda, cuda:N, mps) that torch sees here. OptionError names
    the value and the rule."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise OptionError("device", device, f"{DEVICE_RULE} (a device string torch knows)") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("device", device, f"{DEVICE_RULE} where torch sees the device; it sees "
                              "no CUDA GPU", text=f"device {device!r} asked for, but torch sees no CUDA GPU")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise OptionError("device", device, f"cuda or cuda:0..cuda:{n - 1}: torch sees {n} CUDA GPU(s)")
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise OptionError("device", device, f"{DEVICE_RULE} where torch sees the device; "
                              "MPS is not available here")
        return dev
    raise OptionError("device", device, f"{DEVICE_RULE} (the devices the trainer runs on)")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run.

    Members
    -------
    epochs, batch_size:
        Training length; ``batch_size`` is the global batch (split over ranks).
    lr, momentum, weight_decay:
        SGD. The learning rate is constant unless a policy (WUS+LR) scales it.
    seed:
        Model initialisation, data order and the policies' random streams.
    width:
        Model width (None: the model's default).
    device:
        ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
    target_accuracy:
        Test accuracy for time-to-target (None: not measured).
    bn_replay:
        How batch norm back-propagates the kept rows of a per-sample skip: ``kept`` (its batch
        reductions over the kept rows) or ``full`` (over the whole batch, the skipped rows held
        constant); see :class:`~golden.training.models.SkipBatchNorm2d`.
    progress:
        Show a progress bar over epochs.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    width: int | None = None
    device: str = "cpu"
    target_accuracy: float | None = None
    bn_replay: str = "kept"
    progress: bool = False

    def __post_init__(self):
        def bad(name, rule, text=None):
            raise OptionError(name, getattr(self, name), rule, text=text)

        def real(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, "an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", "an integer >= 0")
        if not (real(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            bad("lr", number_rule(self.lr, "a number > 0"))
        if not (real(self.momentum) and 0 <= self.momentum < 1):
            bad("momentum", "a number in [0, 1)")
        if not (real(self.weight_decay) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            bad("weight_decay", number_rule(self.weight_decay, "a number >= 0"))
        if self.width is not None and (isinstance(self.width, bool) or not isinstance(self.width, int)
                                       or self.width < 1):
            bad("width", "an integer >= 1", f"width must be None or an integer >= 1, got {self.width!r}")
        if self.target_accuracy is not None and not (real(self.target_accuracy)
                                                     and 0 < self.target_accuracy <= 1):
            bad("target_accuracy", "a number in (0, 1]",
                f"target_accuracy must be None or a number in (0, 1], got {self.target_accuracy!r}")
        if self.bn_replay not in SkipBatchNorm2d.REPLAY_REDUCTIONS:
            bad("bn_replay", f"one of {', '.join(SkipBatchNorm2d.REPLAY_REDUCTIONS)}")


@dataclass
class RunResult:
    """Everything one run measured.

    ``epochs``: one dict per epoch (test/train accuracy, loss, wall time, executed and
    reference work per counter, policy decisions). ``layer_executed`` (layers x 5: F, B, G, U,
    R) and ``layer_reference`` (layers x 4) are totals over the run, summed over ranks;
    ``step_executed`` (steps x layers x 5), ``step_rows`` and ``step_wall_s`` are per step (of
    rank 0 under torch.distributed).
    """

    policy: str
    params: dict
    seed: int
    dataset: str
    model: str
    config: dict
    world: int
    layers: list[str]
    epochs: list[dict]
    layer_executed: np.ndarray
    layer_reference: np.ndarray
    step_executed: np.ndarray
    step_rows: np.ndarray
    step_wall_s: np.ndarray
    wall_s: float
    final_accuracy: float
    time_to_target_s: float | None = None
    macs_to_target: int | None = None
    epoch_to_target: int | None = None
    final_state: dict = field(default_factory=dict, repr=False)

    def totals(self) -> dict:
        """Executed and reference MACs per counter over the run (``BG`` = B + G, ``total`` =
        F + B + G + U; R is beside the work)."""
        ex = self.layer_executed.sum(0)
        ref = self.layer_reference.sum(0)
        out = {"executed": {c: int(ex[i]) for i, c in enumerate(COUNTERS)},
               "reference": {c: int(ref[i]) for i, c in enumerate(COUNTERS[:4])}}
        for d in (out["executed"], out["reference"]):
            d["BG"] = d["B"] + d["G"]
            d["total"] = d["F"] + d["B"] + d["G"] + d["U"]
        return out

    def skip_fractions(self) -> dict:
        """Share of the reference work skipped, per counter and for B+G and the total."""
        t = self.totals()
        return {k: 1.0 - t["executed"][k] / t["reference"][k] if t["reference"][k] else 0.0
                for k in ("F", "B", "G", "U", "BG", "total")}


def _shard(rows: int, rank: int, world: int) -> tuple[int, int]:
    base, extra = divmod(rows, world)
    return rank * base + min(rank, extra), base + (rank < extra)


class Trainer:
    """Trains ``model`` on ``dataset`` under ``policy``; :meth:`run` returns a :class:`RunResult`."""

    def __init__(self, dataset: Dataset, model: SkipNet, policy: PolicyStack,
                 config: TrainConfig, dist: Dist | None = None):
        self.data = dataset
        self.model = model
        self.policy = policy
        self.config = config
        self.dist = dist or Dist()
        self.device = resolve_device(config.device)
        model.to(self.device)
        for m in model.modules():
            if isinstance(m, SkipBatchNorm2d):
                m.replay_reduction = config.bn_replay
        self.meter = MacMeter(model)
        self.reference = self.meter.reference()
        n = dataset.x_train.shape[0]
        b = config.batch_size
        if b < self.dist.world:
            raise ValueError(f"batch_size {b} must be >= the number of ranks {self.dist.world}")
        # a last batch smaller than the world would leave a rank without rows: it is dropped
        self.steps_per_epoch = n // b + (1 if n % b >= self.dist.world else 0)
        self.ctx = RunContext(model, self.steps_per_epoch, config.epochs, config.seed, self.dist,
                              self.meter.reference)
        policy.bind(self.ctx)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr,
                                         momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self._net = None

    # -- pieces of a step ---------------------------------------------------------------------

    def _apply_trainable(self, weight_skip: bool) -> bool:
        """Set requires_grad from the unit states and the weight skip; True if anything changed."""
        changed = False
        for unit, state in zip(self.model.units.values(), self.model.unit_state):
            for p in unit.parameters():
                want = state == UNIT_TRAIN and not (weight_skip and p.ndim >= 2)
                if p.requires_grad != want:
                    p.requires_grad_(want)
                    changed = True
        return changed

    def _set_resolution(self, low: bool) -> None:
        res = self.policy.resolution
        if res is None:
            return
        self.model.set_low_res(res.factor if low else None, res.pool_kernels, res.kernel_gain)

    def step(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> tuple[StepOutcome, float]:
        """One training step on this rank's rows; returns its outcome and summed loss."""
        model, policy, meter, dist = self.model, self.policy, self.meter, self.dist
        low = policy.low_res(info)
        self._set_resolution(low)
        weight_skip = policy.skip_weights(info)
        if self._apply_trainable(weight_skip) or self._net is None:
            self._net = dist.wrap(model)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * policy.lr_factor()
        by_rows = policy.decides_rows(info.epoch)

        meter.begin_step(info.rows)
        meter.phase = "F"
        if by_rows:
            model.set_bn_mode("record")
            with torch.no_grad():
                logits = model(x)
        else:
            logits = self._net(x)
        meter.phase = None
        keep = policy.keep_rows(logits, y, info) if by_rows else None
        skip = policy.skip_batch(logits.detach(), y, info)

        with torch.no_grad():
            loss_all = F.cross_entropy(logits.detach(), y, reduction="sum")
            correct = (logits.detach().argmax(1) == y).sum()
            kept = keep.sum() if keep is not None else torch.tensor(info.rows, device=y.device)
            g = dist.all_reduce_sum(torch.stack([correct.double(), kept.double(),
                                                 loss_all.double()]))
        g_correct, g_kept, g_loss = int(g[0]), int(g[1]), float(g[2])
        update = not skip and g_kept > 0
        if update:
            if by_rows:
                index = keep.nonzero().flatten()
                model.set_bn_mode("replay")
                meter.phase = "R"
                out, labels = self._net(x[index]), y[index]
                meter.phase = None
            else:
                out, labels = logits, y
            denom = info.global_rows if policy.normalize == "batch" else g_kept
            # DDP averages gradients over ranks: scale by the world to get sum / denom
            loss = F.cross_entropy(out, labels, reduction="sum") * (dist.world / denom)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            meter.count_update()
            self.optimizer.step()
        model.set_bn_mode("normal")
        meter.end_step()
        outcome = StepOutcome(correct=g_correct, seen=info.global_rows,
                              kept=g_kept if update else 0, updated=update, low_res=low,
                              weight_skip=weight_skip)
        policy.end_step(info, outcome)
        return outcome, g_loss

    def evaluate(self) -> float:
        """Test accuracy (full resolution, eval mode), sharded over ranks."""
        model = self.model
        saved_low = model.low_res
        self._set_resolution(False)
        model.eval()
        n = self.data.x_test.shape[0]
        off, rows = _shard(n, self.dist.rank, self.dist.world)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for s in range(off, off + rows, 1024):
                idx = torch.arange(s, min(s + 1024, off + rows))
                x, y = self.data.fetch("test", idx, self.device)
                correct += (model(x).argmax(1) == y).sum()
        correct = float(self.dist.all_reduce_sum(correct))
        if saved_low is not None:
            self._set_resolution(True)
        return correct / n

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        cfg, model, policy, dist = self.config, self.model, self.policy, self.dist
        n = self.data.x_train.shape[0]
        order = torch.Generator().manual_seed(cfg.seed)
        epochs, step_wall = [], []
        total_wall, target = 0.0, None
        step_index = 0
        bar = None
        if cfg.progress and dist.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=cfg.epochs, desc=policy.name, unit="epoch", leave=False)
        try:
            for epoch in range(cfg.epochs):
                policy.start_epoch(epoch)
                model.train()
                model.apply_unit_modes()
                perm = torch.randperm(n, generator=order)
                first_step = len(self.meter.steps)
                sums = dict(correct=0, loss=0.0, seen=0, kept=0, updates=0, low_res=0,
                            weight_skip=0)
                t_epoch = time.perf_counter()
                for s in range(self.steps_per_epoch):
                    t0 = time.perf_counter()
                    gidx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                    off, rows = _shard(len(gidx), dist.rank, dist.world)
                    x, y = self.data.fetch("train", gidx[off:off + rows], self.device)
                    info = StepInfo(epoch, step_index, s, rows, len(gidx), off)
                    out, loss = self.step(x, y, info)
                    step_index += 1
                    sums["correct"] += out.correct
                    sums["loss"] += loss
                    sums["seen"] += out.seen
                    sums["kept"] += out.kept
                    sums["updates"] += out.updated
                    sums["low_res"] += out.low_res
                    sums["weight_skip"] += out.weight_skip
                    step_wall.append(time.perf_counter() - t0)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                wall = time.perf_counter() - t_epoch
                total_wall += wall
                policy.end_epoch(epoch)
                dist.broadcast_buffers(model)
                acc = self.evaluate()
                ex = np.sum(self.meter.steps[first_step:], axis=(0, 1))
                ref = sum(self.reference.per_step(r).sum(0)
                          for r in self.meter.rows[first_step:])
                ex = dist.all_reduce_sum(torch.from_numpy(ex)).numpy()
                ref = dist.all_reduce_sum(torch.from_numpy(np.asarray(ref))).numpy()
                record = {
                    "epoch": epoch,
                    "test_accuracy": acc,
                    "train_accuracy": sums["correct"] / max(sums["seen"], 1),
                    "train_loss": sums["loss"] / max(sums["seen"], 1),
                    "wall_s": wall,
                    "lr": cfg.lr * policy.lr_factor(),
                    "steps": self.steps_per_epoch,
                    "updates": sums["updates"],
                    "rows_backpropagated": sums["kept"],
                    "low_res_steps": sums["low_res"],
                    "weight_skip_steps": sums["weight_skip"],
                    "executed": {c: int(ex[i]) for i, c in enumerate(COUNTERS)},
                    "reference": {c: int(ref[i]) for i, c in enumerate(COUNTERS[:4])},
                    "decisions": policy.epoch_logs(),
                }
                epochs.append(record)
                if target is None and cfg.target_accuracy is not None \
                        and acc >= cfg.target_accuracy:
                    done = sum(sum(e["executed"][c] for c in "FBGU") for e in epochs)
                    target = (total_wall, done, epoch)
                if bar is not None:
                    bar.set_postfix(acc=f"{acc:.3f}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            dist.close()
            self._net = None

        steps = np.stack(self.meter.steps) if self.meter.steps else np.zeros(
            (0, len(self.meter.names), len(COUNTERS)), dtype=np.int64)
        rows = np.asarray(self.meter.rows, dtype=np.int64)
        layer_ex = dist.all_reduce_sum(torch.from_numpy(steps.sum(0))).numpy()
        layer_ref = self.reference.per_step(int(rows.sum())).copy()
        layer_ref[:, 3] = self.reference.params * len(rows)
        layer_ref = dist.all_reduce_sum(torch.from_numpy(layer_ref)).numpy()
        self.meter.close()
        return RunResult(
            policy=policy.name, params=policy.params(), seed=cfg.seed, dataset=self.data.name,
            model=model.name, config=asdict(cfg), world=dist.world, layers=list(self.meter.names),
            epochs=epochs, layer_executed=layer_ex, layer_reference=layer_ref,
            step_executed=steps, step_rows=rows, step_wall_s=np.asarray(step_wall),
            wall_s=total_wall, final_accuracy=epochs[-1]["test_accuracy"],
            time_to_target_s=target[0] if target else None,
            macs_to_target=target[1] if target else None,
            epoch_to_target=target[2] if target else None,
            final_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})


def train(dataset: Dataset, model: str | SkipNet = "mlp",
          policy: str | Policy | PolicyStack = "none", config: TrainConfig | None = None,
          dist: Dist | None = None, options: dict | None = None) -> RunResult:
    """Train one model under one policy and return what was measured.

    ``model``: a name from :data:`~golden.training.models.MODELS` (built here after seeding, so
    the seed fixes the initialisation) or a :class:`SkipNet`. ``policy``: a spec such as
    ``"conf_sample+wus"`` (with ``options``, see :mod:`golden.training.registry`), a policy or a
    stack. Policies keep state: pass a fresh one per run.
    """
    from .registry import make_policy
    config = config or TrainConfig()
    if options and not isinstance(policy, str):
        raise ValueError("options apply to a policy spec string only; configure a Policy "
                         "object through its parameters")
    if isinstance(policy, str):
        policy = make_policy(policy, options)
    elif isinstance(policy, Policy):
        policy = PolicyStack([policy])
    elif not isinstance(policy, PolicyStack):
        raise ValueError(f"policy must be a spec string, a Policy or a PolicyStack, got "
                         f"{type(policy).__name__}")
    torch.manual_seed(config.seed)
    if isinstance(model, str):
        model = build_model(model, dataset.input_shape, dataset.num_classes, config.width)
    return Trainer(dataset, model, policy, config, dist).run()
