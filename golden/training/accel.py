"""The ``accel`` backend: training with the accelerator's exact arithmetic (the golden model).

:class:`AccelTrainer` trains the same network from the same initialisation and the same data
order as :class:`~golden.training.trainer.Trainer`, but every step is the accelerator's
training program (:func:`skiptrain.program.build_mlp`) run on the golden model
(:class:`golden.mlp.MlpOnChip`): fixed-point forward with bias and ReLU, the loss unit's
softmax error, input and weight gradients, and the fused SGD update of the master weights,
bit for bit as the RTL computes them. The test accuracy comes from the accelerator too (its
inference program and CORRECT counter).

What differs from the float backend, by construction of the hardware:

- plain SGD, lr = 2**-k (``LR_SHIFT``), no momentum, no weight decay; the update rounded half
  to even or stochastically (``rounding``; the LFSRs seeded with the run's seed);
- a batch is a power of two, and the last partial batch of an epoch is dropped (the float
  backend trains on it);
- MLPs only (linear layers with ReLU between them); policies ``none``, ``conf_sample``,
  ``random_sample``, ``conf_batch`` and ``random_batch``, or one per-sample and one batch
  policy stacked (``conf_sample+conf_batch``: SKIP_CTRL holds both), decided by the accelerator itself
  (the confidence comparator, the loss unit's per-sample decision and the skip controller,
  :mod:`skiptrain.skip`): the host only writes the policy's registers
  (:func:`skip_registers`), per epoch, from the same policy objects the float backend runs,
  and records the hardware's decisions into them (so logs, rates and matched baselines work
  alike). The per-sample confidence test is any mode (``true_class_prob`` in the exp table's
  index domain, with TCP_BOUND: :func:`skiptrain.skip.tcp_bound`). The per-sample skip
  normalises by the batch (``normalize="batch"``), or, on an accelerator built with the
  kept-count normaliser (``Config.kept_norm``, e.g. ``configs/default_kept_norm.json``), by
  the kept samples (``normalize="kept"``: SKIP_CTRL's norm_kept).

It returns a :class:`~golden.training.trainer.RunResult`, so tables, JSON and plots are the
float backend's; every epoch record also has ``accel``: the accelerator's cycles of the
epoch's steps, per phase.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skiptrain.config import Config, preset
from skiptrain.hostmap import PHASE_NAMES
from skiptrain.program import MlpSpec, ProgramError, lr_shift_of
from skiptrain.skip import (CONF_MODE_NAMES, CONF_TAU_WIDTH, BatchPolicy, SamplePolicy, SkipCtrl,
                            batch_tau_width, batch_threshold, conf_threshold, rate_register,
                            tcp_bound)

from ..mlp import MlpOnChip, quantize
from .counting import COUNTERS
from .datasets import Dataset
from .errors import OptionError
from .distributed import Dist
from .policies import (DEFAULT_SAMPLE_TAU, ConfidenceBatchSkip, ConfidenceSampleSkip, RandomBatchSkip,
                       RandomSampleSkip, RunContext, StepInfo, _margin_of, _rate_at)
from .registry import make_policy, split_spec
from .trainer import RunResult, TrainConfig

__all__ = ["AccelTrainer", "check_accel", "check_stack", "check_thresholds", "mlp_sizes", "skip_registers", "stack_registers", "CYCLE_KEYS",
           "ACCEL_POLICIES"]

#: accelerator counters summed per epoch into ``epochs[i]["accel"]``
CYCLE_KEYS = (["cycles"] + [f"phase_cycles_{p}" for p in PHASE_NAMES]
              + ["loss_cycles"] + [f"phase_macs_{p}" for p in PHASE_NAMES]
              + ["confident", "skipped_batches"] + [f"skipped_macs_{p}" for p in PHASE_NAMES]
              + ["skipped_samples"])
#: the policies the accelerator decides itself
ACCEL_POLICIES = ("none", "conf_sample", "random_sample", "conf_batch", "random_batch")


def _check_skip_hardware(spec: str, cfg: Config) -> None:
    """ValueError naming the policy, the config and the field when ``cfg`` has no skip hardware."""
    if not cfg.has_skip:
        raise ValueError(f"policy {spec!r}: the accelerator {cfg.name!r} is built without the skip "
                         "hardware (Config.gradient_skip=False); it trains with policy 'none' only; "
                         "use an accelerator config with gradient_skip=true (the default)")


def skip_registers(policy, epoch: int, batch: int, cfg: Config, seed: int) -> dict:
    """The skip registers (golden Scenario.SKIP_KEYS) that make the accelerator decide as
    ``policy`` (a NoSkip, ConfidenceSampleSkip, RandomSampleSkip, ConfidenceBatchSkip or
    RandomBatchSkip) does in ``epoch``; ValueError for what the hardware does not do."""
    if type(policy).name != "none":
        _check_skip_hardware(type(policy).name, cfg)
    if isinstance(policy, ConfidenceBatchSkip):
        on = epoch >= policy.warmup_epochs  # the warm-up: the policy register says OFF
        ctrl = SkipCtrl(BatchPolicy.CONFIDENCE if on else BatchPolicy.OFF, CONF_MODE_NAMES[policy.confidence])
        # CONF_TAU at the per-sample default: the CONFIDENT counter then tells how many samples
        # a per-sample skip would have skipped
        tau = _margin_of(DEFAULT_SAMPLE_TAU) if policy.confidence == "margin" else DEFAULT_SAMPLE_TAU
        return {"ctrl": ctrl.encode(), "conf_tau": conf_threshold(policy.confidence, tau, cfg),
                "batch_tau": batch_threshold(policy.confidence, policy.threshold, batch, cfg)}
    if isinstance(policy, RandomBatchSkip):
        return {"ctrl": SkipCtrl(BatchPolicy.RANDOM).encode(),
                "rate": rate_register(_rate_at(policy.rate, epoch)), "seed": seed}
    norm_kept = isinstance(policy, (ConfidenceSampleSkip, RandomSampleSkip)) and policy.normalize == "kept"
    if norm_kept and not cfg.kept_norm:
        raise ValueError(f"normalize='kept': the accelerator {cfg.name!r} is built without the kept-count "
                         "normaliser (Config.kept_norm=False); use --accel-config "
                         "configs/default_kept_norm.json, or normalize='batch'")
    if isinstance(policy, ConfidenceSampleSkip):
        on = epoch >= policy.warmup_epochs  # the warm-up: the sample policy register says OFF
        ctrl = SkipCtrl(BatchPolicy.OFF, CONF_MODE_NAMES[policy.confidence], policy.require_correct,
                        SamplePolicy.CONFIDENCE if on else SamplePolicy.OFF, norm_kept)
        conf_tau = conf_threshold(policy.confidence, policy.threshold, cfg)
        regs = {"ctrl": ctrl.encode(), "conf_tau": conf_tau}
        if policy.confidence == "true_class_prob":
            # the per-sample test in the table's index domain (skiptrain.skip.tcp_bound)
            regs["tcp_bound"] = tcp_bound(conf_tau, cfg)
        return regs
    if isinstance(policy, RandomSampleSkip):
        return {"ctrl": SkipCtrl(sample=SamplePolicy.RANDOM, norm_kept=norm_kept).encode(),
                "rate": rate_register(_rate_at(policy.rate, epoch)), "seed": seed}
    if type(policy).name == "none":
        return {"ctrl": SkipCtrl(BatchPolicy.OFF).encode()}
    raise ValueError(f"policy {type(policy).name!r}: backend accel decides {', '.join(ACCEL_POLICIES)} "
                     "in hardware; the other policies are not built into the accelerator yet")


_SAMPLE_KINDS = (ConfidenceSampleSkip, RandomSampleSkip)
_BATCH_KINDS = (ConfidenceBatchSkip, RandomBatchSkip)


def check_stack(names: list[str]) -> None:
    """ValueError unless ``names`` is one policy of ACCEL_POLICIES, or one per-sample and one
    batch policy: SKIP_CTRL holds one batch policy and one sample policy side by side."""
    bad = [n for n in names if n not in ACCEL_POLICIES]
    if bad:
        raise ValueError(f"policies {bad}: backend accel runs {', '.join(ACCEL_POLICIES)} (decided "
                         "by the accelerator's skip hardware); the weight, layer and resolution "
                         "policies are not in hardware yet")
    if len(names) == 1:
        return
    samples = [n for n in names if n.endswith("_sample")]
    batches = [n for n in names if n.endswith("_batch")]
    if len(names) != 2 or len(samples) != 1 or len(batches) != 1:
        raise ValueError(f"policy {'+'.join(names)!r}: backend accel stacks at most one per-sample "
                         "policy (conf_sample, random_sample) with one batch policy (conf_batch, "
                         "random_batch): SKIP_CTRL holds one of each")


def stack_registers(policies, epoch: int, batch: int, cfg: Config, seed: int) -> dict:
    """The skip registers of one policy (:func:`skip_registers`), or of a per-sample policy and a
    batch policy together: the batch policy's field and BATCH_TAU from the batch policy, the
    sample policy's field, require_correct, norm_kept, CONF_TAU and TCP_BOUND from the sample
    policy. The two share the confidence mode (one field: the comparator computes one c_i per
    sample), SKIP_RATE and SKIP_SEED (the random ones): ValueError where they would differ."""
    policies = list(policies)
    if len(policies) == 1:
        return skip_registers(policies[0], epoch, batch, cfg, seed)
    check_stack([type(p).name for p in policies])
    s = next(p for p in policies if isinstance(p, _SAMPLE_KINDS))
    b = next(p for p in policies if isinstance(p, _BATCH_KINDS))
    name = f"{type(s).name}+{type(b).name}"
    if isinstance(s, ConfidenceSampleSkip) and isinstance(b, ConfidenceBatchSkip) \
            and s.confidence != b.confidence:
        raise ValueError(f"policy {name}: confidence {s.confidence!r} and {b.confidence!r}: the "
                         "accelerator has one confidence mode (SKIP_CTRL bits 2-3) for both tests")
    if isinstance(s, RandomSampleSkip) and isinstance(b, RandomBatchSkip) \
            and _rate_at(s.rate, epoch) != _rate_at(b.rate, epoch):
        raise ValueError(f"policy {name}: rates {_rate_at(s.rate, epoch)} and {_rate_at(b.rate, epoch)} "
                         f"in epoch {epoch}: the accelerator has one SKIP_RATE for both random draws")
    rs, rb = skip_registers(s, epoch, batch, cfg, seed), skip_registers(b, epoch, batch, cfg, seed)
    cs, cb = SkipCtrl.decode(rs["ctrl"]), SkipCtrl.decode(rb["ctrl"])
    mode = cs.mode if isinstance(s, ConfidenceSampleSkip) else cb.mode
    regs = {**rb, **rs}
    regs["ctrl"] = SkipCtrl(cb.policy, mode, cs.require_correct, cs.sample, cs.norm_kept).encode()
    return regs


def mlp_sizes(model: nn.Module) -> tuple[list[nn.Linear], tuple]:
    """The linear layers and (inputs, hidden..., classes) of an MLP, or ValueError."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    others = [type(m).__name__ for m in model.modules()
              if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    if others or not linears:
        raise ValueError(f"backend accel trains MLPs only (linear layers with ReLU); model "
                         f"{getattr(model, 'name', type(model).__name__)!r} has {sorted(set(others))}")
    sizes = [linears[0].in_features] + [m.out_features for m in linears]
    return linears, tuple(sizes)


def check_accel(config: TrainConfig, policies, accel_cfg: Config) -> int:
    """Checks of the hyper-parameters the accelerator can run; returns LR_SHIFT. The errors
    name the parameter (OptionError) where one is to blame."""
    if not accel_cfg.training:
        raise ValueError(f"the accelerator {accel_cfg.name!r} has no training hardware "
                         "(training=false): it runs inference only; use an accelerator with "
                         "training=true (e.g. the default preset)")
    if config.momentum != 0:
        raise OptionError("momentum", config.momentum, "0 with {backend} accel (it runs plain SGD)")
    if config.weight_decay != 0:
        raise OptionError("weight_decay", config.weight_decay,
                          "0 with {backend} accel (it has no weight decay)")
    b, most = config.batch_size, accel_cfg.max_batch
    if b & (b - 1) or b > most:
        raise OptionError("batch_size", b, f"a power of two <= {most} with {{backend}} accel: the "
                          f"accelerator {accel_cfg.name!r} has max_batch={most} (the loss unit "
                          "divides by the batch with a shift; the per-sample gates hold max_batch "
                          "samples)")
    for spec in policies:
        check_stack(split_spec(spec))
        if any(name != "none" for name in split_spec(spec)):
            _check_skip_hardware(spec, accel_cfg)
    try:
        return lr_shift_of(config.lr, accel_cfg)
    except ProgramError as e:
        raise OptionError("lr", config.lr, f"a power of two in 2**-{accel_cfg.acc_width - 1}..1 "
                          "with {backend} accel (its learning rate is 2**-LR_SHIFT; e.g. 0.125, "
                          "0.0625)", text=str(e)) from None


def _at_most(limit: Fraction) -> str:
    """``limit`` written as the largest float <= it."""
    f = float(limit)
    if Fraction(f) > limit:
        f = math.nextafter(f, 0.0)
    return repr(f)


def check_thresholds(policies, batch: int, cfg: Config) -> None:
    """OptionError naming the option (``tau``, ``batch_tau``) when a logit-margin threshold is
    too large for the register that holds it (CONF_TAU, BATCH_TAU): the rule says the largest
    value that fits. The probability thresholds, in (0, 1], always fit."""
    for p in policies:
        if isinstance(p, ConfidenceSampleSkip) and p.confidence == "margin":
            limit = Fraction((1 << CONF_TAU_WIDTH) - 1, 1 << cfg.frac_bits)
            if Fraction(p.threshold) > limit:
                raise OptionError("tau", p.threshold, f"a number in (0.0, {_at_most(limit)}] with "
                                  f"{{confidence}} margin on the accelerator {cfg.name!r}: the "
                                  f"largest that its {CONF_TAU_WIDTH}-bit CONF_TAU holds with "
                                  f"{cfg.frac_bits} fraction bits", where="policy conf_sample")
        if isinstance(p, ConfidenceBatchSkip) and p.confidence == "margin":
            width = batch_tau_width(cfg)
            limit = Fraction((1 << width) - 1, batch << cfg.frac_bits)
            if Fraction(p.threshold) > limit:
                raise OptionError("batch_tau", p.threshold, f"a number in (0.0, {_at_most(limit)}] "
                                  f"with {{confidence}} margin and batch {batch} on the accelerator "
                                  f"{cfg.name!r}: the largest that its {width}-bit BATCH_TAU "
                                  "holds (batch x tau)", where="policy conf_batch")


class AccelTrainer:
    def __init__(self, dataset: Dataset, model: nn.Module, config: TrainConfig,
                 accel_cfg: Config | None = None, policy="none",
                 rounding: str = "nearest"):
        """``policy``: a PolicyStack (one policy of ACCEL_POLICIES, or a per-sample and a batch
        policy), or its spec."""
        self.data, self.model, self.config = dataset, model, config
        self.cfg = accel_cfg or preset("default")
        self.stack = make_policy(policy) if isinstance(policy, str) else policy
        self.policies = list(self.stack.policies)
        self.policy_name = self.stack.name
        self.rounding = rounding
        check_accel(config, [self.stack.name], self.cfg)
        check_thresholds(self.policies, config.batch_size, self.cfg)
        for epoch in range(config.epochs):  # every epoch's registers, before any step runs
            stack_registers(self.policies, epoch, config.batch_size, self.cfg, config.seed)
        self.linears, self.sizes = mlp_sizes(model)
        self.spec = MlpSpec(self.sizes, config.batch_size)
        n_test = dataset.x_test.shape[0]
        try:
            self.chip = MlpOnChip(self.spec, self.cfg, config.lr,
                                  test_batch_last=n_test % config.batch_size,
                                  rounding=rounding, seed=config.seed)
        except ProgramError as e:
            raise ValueError(f"backend accel: {e}") from None
        self.chip.load_float_weights([(m.weight, m.bias) for m in self.linears])
        names = list(getattr(model, "unit_names", []) or [])
        self.names = names if len(names) == len(self.linears) else \
            [f"fc{l}" for l in range(1, len(self.sizes))]

    def _x(self, split: str, idx: torch.Tensor):
        x, y = self.data.fetch(split, idx, "cpu")
        return quantize(x.reshape(x.shape[0], -1), self.cfg.frac_bits, self.cfg), y

    def _per_step_macs(self) -> np.ndarray:
        """layers x 5 (F, B, G, U, R) of one step, counted as the float library counts them."""
        B, s = self.spec.batch, self.sizes
        out = np.zeros((len(s) - 1, len(COUNTERS)), dtype=np.int64)
        for l in range(len(s) - 1):
            macs = B * s[l] * s[l + 1]
            out[l] = [macs, macs if l > 0 else 0, macs, s[l] * s[l + 1] + s[l + 1], 0]
        return out

    def evaluate(self) -> float:
        n = self.data.x_test.shape[0]
        correct = 0
        for start in range(0, n, self.spec.batch):
            x, y = self._x("test", torch.arange(start, min(start + self.spec.batch, n)))
            correct += self.chip.infer(x, y).counters["correct"]
        return correct / n

    def run(self) -> RunResult:
        cfg, chip = self.config, self.chip
        n = self.data.x_train.shape[0]
        B = self.spec.batch
        steps_per_epoch = n // B
        if steps_per_epoch == 0:
            raise ValueError(f"backend accel: {n} training samples make no full batch of {B}")
        order = torch.Generator().manual_seed(cfg.seed)
        frac = float(1 << self.cfg.frac_bits)
        per_step = self._per_step_macs()
        # the policy object logs the hardware's decisions as the float trainer's would
        self.stack.bind(RunContext(self.model, steps_per_epoch, cfg.epochs, cfg.seed, Dist(), None))
        epochs, step_rows, step_wall, step_ex = [], [], [], []
        total_wall, target = 0.0, None
        for epoch in range(cfg.epochs):
            perm = torch.randperm(n, generator=order)
            sums = dict(correct=0, loss=0.0, seen=0)
            accel = {k: 0 for k in CYCLE_KEYS}
            self.stack.start_epoch(epoch)
            # the seed goes in once: the skip LFSR runs on across epochs
            regs = stack_registers(self.policies, epoch, B, self.cfg, cfg.seed)
            if epoch > 0:
                regs.pop("seed", None)
            chip.acc.set_skip(**regs)
            t_epoch = time.perf_counter()
            for s in range(steps_per_epoch):
                t0 = time.perf_counter()
                x, y = self._x("train", perm[s * B:(s + 1) * B])
                res = chip.train_step(x, y)
                info = StepInfo(epoch, epoch * steps_per_epoch + s, s, B, B)
                # the rows B and G ran over: the kept samples, none when the batch was skipped
                kept = 0 if res.batch_skipped else res.kept
                for policy in self.policies:
                    if isinstance(policy, _SAMPLE_KINDS):
                        # the loss unit decides per sample in a skipped batch too
                        policy._count(torch.arange(B) < res.kept, info)
                    elif isinstance(policy, _BATCH_KINDS):
                        policy._count(res.batch_skipped, info)
                step_macs = per_step.copy()
                step_macs[:, 1:3] = step_macs[:, 1:3] // B * kept
                if kept == 0:  # B, G and U did not run
                    step_macs[:, 1:4] = 0
                z = chip.acc.load(chip.prog.z).to(torch.float64) / frac
                sums["loss"] += float(F.cross_entropy(z.t(), y, reduction="sum"))
                sums["correct"] += res.counters["correct"]
                sums["seen"] += B
                for k in CYCLE_KEYS:
                    accel[k] += res.counters[k]
                step_rows.append(kept)
                step_ex.append(step_macs)
                step_wall.append(time.perf_counter() - t0)
            self.stack.end_epoch(epoch)
            wall = time.perf_counter() - t_epoch
            total_wall += wall
            acc = self.evaluate()
            epoch_steps = np.stack(step_ex[-steps_per_epoch:])
            ex = epoch_steps.sum((0, 1))
            ref = per_step.sum(0) * steps_per_epoch
            skipped = sum(1 for r in step_rows[-steps_per_epoch:] if r == 0)
            rows = sum(step_rows[-steps_per_epoch:])
            epochs.append({
                "epoch": epoch, "test_accuracy": acc,
                "train_accuracy": sums["correct"] / sums["seen"],
                "train_loss": sums["loss"] / sums["seen"], "wall_s": wall, "lr": cfg.lr,
                "steps": steps_per_epoch, "updates": steps_per_epoch - skipped,
                "rows_backpropagated": rows, "low_res_steps": 0,
                "weight_skip_steps": 0,
                "executed": {c: int(ex[i]) for i, c in enumerate(COUNTERS)},
                "reference": {c: int(ref[i]) for i, c in enumerate(COUNTERS[:4])},
                "decisions": self.stack.epoch_logs(), "accel": accel,
            })
            if target is None and cfg.target_accuracy is not None and acc >= cfg.target_accuracy:
                done = sum(sum(e["executed"][c] for c in "FBGU") for e in epochs)
                target = (total_wall, done, epoch)
        steps = np.stack(step_ex) if step_ex else np.zeros((0, len(self.names), len(COUNTERS)), np.int64)
        layer_ex = steps.sum(0)
        layer_ref = per_step[:, :4] * len(step_ex)
        state = {}
        for name, (w, b) in zip(self.names, chip.float_weights()):
            state[f"{name}.weight"], state[f"{name}.bias"] = w.float(), b.float()
        return RunResult(
            policy=self.policy_name, params=self.stack.params(), seed=cfg.seed, dataset=self.data.name,
            model=getattr(self.model, "name", "mlp"),
            config=dict(asdict(cfg), backend="accel", accel_config=self.cfg.name,
                        accel_rounding=self.rounding),
            world=1, layers=self.names, epochs=epochs, layer_executed=layer_ex,
            layer_reference=layer_ref, step_executed=steps, step_rows=np.asarray(step_rows),
            step_wall_s=np.asarray(step_wall), wall_s=total_wall,
            final_accuracy=epochs[-1]["test_accuracy"] if epochs else 0.0,
            time_to_target_s=target[0] if target else None,
            macs_to_target=target[1] if target else None,
            epoch_to_target=target[2] if target else None, final_state=state)
