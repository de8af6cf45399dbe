"""The skip policies: components the trainer calls at fixed hooks.

A policy is configured by its dataclass fields (checked on construction; every error names the
parameter, the value and the rule), bound to one training run with :meth:`Policy.bind`, and then
asked at each hook of the step:

- ``start_epoch(epoch)``: epoch-level decisions (random layer freezing);
- ``low_res(info)``: run this batch at low resolution? (method 5);
- ``decides_rows(epoch)``: will ``keep_rows`` be asked this epoch? (then the trainer runs the
  forward without a graph and back-propagates the kept rows only);
- ``keep_rows(logits, labels, info)``: boolean mask of this rank's rows to back-propagate (1);
- ``skip_batch(logits, labels, info)``: skip B, G and U of the whole batch? (method 2);
- ``skip_weights(info)``: skip G and the weight update of this step, biases still train (3);
- ``end_step(info, outcome)``: what the step did (training accuracy for WUS);
- ``end_epoch(epoch)``: epoch-level scores (layer freezing, method 4).

Layer policies change ``model.unit_state``; the trainer turns all decisions into
``requires_grad`` flags and batch compaction, so skipped work is never computed, and counts the
MACs from the shapes that ran. :class:`PolicyStack` combines several policies (per-sample skip
with WUS, ...). Decisions that must agree across ranks under torch.distributed are either
computed from all-reduced numbers (batch and window decisions), broadcast from rank 0 (layer
decisions), or drawn from a generator seeded identically on every rank (random policies,
downsampling); per-sample decisions are local to the rank that owns the sample.

Every policy logs its decisions per epoch (:meth:`Policy.epoch_log`), including ``rate``: the
share of its decision unit it skipped that epoch, from which :meth:`Policy.matched_baseline`
builds the random baseline: at the same rate per epoch for the per-sample and per-batch skips
and downsampling (they decide many times per epoch, so the baseline keeps the method's schedule
over training and randomises the choice within each epoch), at the same rate over the whole
run for WUS and layer freezing (they decide per epoch, so a per-epoch rate would copy them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Sequence

import numpy as np
import torch

from .errors import OptionError, number_rule
from .models import UNIT_DROPPED, UNIT_FROZEN, UNIT_TRAIN

__all__ = ["Policy", "PolicyStack", "StepInfo", "StepOutcome", "RunContext", "NoSkip",
           "ConfidenceSampleSkip", "ConfidenceBatchSkip", "WeightUpdateSkip", "LayerFreeze",
           "Downsample", "RandomSampleSkip", "RandomBatchSkip", "RandomWeightUpdateSkip",
           "RandomLayerFreeze", "CONFIDENCE_MODES", "NORMALIZATIONS", "confidence",
           "tau_from_eps"]

CONFIDENCE_MODES = ("max_prob", "true_class_prob", "margin")
#: gradient normalisation of the per-sample skip: by the batch size (the learning rate keeps its
#: meaning) or by the number of kept samples
NORMALIZATIONS = ("batch", "kept")
LAYER_MODES = ("freeze", "drop")
DOWNSAMPLE_SCHEDULES = ("prob", "every", "epochs")

#: default thresholds when neither ``tau`` nor ``eps`` is given: a probability for the
#: probability modes, for ``margin`` the logit margin at which a two-way softmax reaches the same
DEFAULT_SAMPLE_TAU = 0.9
DEFAULT_BATCH_TAU = 0.95


def _margin_of(p: float) -> float:
    return math.log(p / (1 - p))


def confidence(logits: torch.Tensor, labels: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-row confidence: ``max_prob`` (largest softmax output), ``true_class_prob`` (p_y) or
    ``margin`` (top-1 minus top-2 logit).

    The accelerator tests p_max ≥ τ as Σ_j exp(z_j − z_max) ≤ 1/τ (no divider); the two forms
    are the same decision up to rounding."""
    logits = logits.detach().float()
    if mode == "max_prob":
        return torch.softmax(logits, 1).amax(1)
    if mode == "true_class_prob":
        return torch.softmax(logits, 1).gather(1, labels[:, None])[:, 0]
    if mode == "margin":
        top = logits.topk(2, dim=1).values
        return top[:, 0] - top[:, 1]
    raise ValueError(f"confidence must be one of {', '.join(CONFIDENCE_MODES)}, got {mode!r}")


def tau_from_eps(eps: float) -> float:
    """τ(ε) = 1 − sqrt(ε/2): a correctly classified sample with p_y ≥ τ has an output-error
    energy ‖p − onehot(y)‖² ≤ 2(1 − p_y)² ≤ ε."""
    return 1.0 - math.sqrt(eps / 2.0)


# ---------------------------------------------------------------------------------------------
# parameter checks: every message names the parameter, the value and the rule

def _check_choice(name, value, choices):
    if value not in choices:
        raise OptionError(name, value, f"one of {', '.join(choices)}")


def _check_int(name, value, lo, hi=None, none_ok=False):
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (
            hi is not None and value > hi):
        rule = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise OptionError(name, value, f"an integer {rule}")


def _check_real(name, value, lo, hi, lo_open=False, hi_open=False, none_ok=False, index=None):
    """A finite number in the interval; ``hi`` None: no upper bound (and inf is refused: the
    message says "a finite number" for an infinite value)."""
    if value is None and none_ok:
        return
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (
            hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        left = "(" if lo_open else "["
        right = "inf)" if hi is None else (f"{hi})" if hi_open else f"{hi}]")
        raise OptionError(name, value, number_rule(value, f"a number in {left}{lo}, {right}"),
                          index=index)


def _check_rate(name, rate):
    """A rate is one number in [0, 1] or a per-epoch list of them (the last one repeats)."""
    if isinstance(rate, (list, tuple)):
        if not rate:
            raise OptionError(name, rate, "a number in [0, 1] or a non-empty per-epoch list",
                              text=f"{name} must be a number in [0, 1] or a non-empty per-epoch "
                                   "list, got an empty list")
        for i, r in enumerate(rate):
            _check_real(name, r, 0.0, 1.0, index=i)
        return tuple(float(r) for r in rate)
    _check_real(name, rate, 0.0, 1.0)
    return float(rate)


def _rate_at(rate, epoch: int) -> float:
    if isinstance(rate, tuple):
        return rate[min(epoch, len(rate) - 1)]
    return rate


# ---------------------------------------------------------------------------------------------
# what the trainer hands to the policies

@dataclass(frozen=True)
class StepInfo:
    """Where a step is. ``rows`` are this rank's rows, ``global_rows`` the whole batch over all
    ranks, ``row_offset`` the global index of this rank's first row."""

    epoch: int
    step: int
    step_in_epoch: int
    rows: int
    global_rows: int
    row_offset: int = 0


@dataclass(frozen=True)
class StepOutcome:
    """What a step did, summed over ranks: training predictions ``correct`` of ``seen`` rows
    (from the forward pass, which always runs), rows back-propagated (``kept``), whether the
    optimizer stepped, whether the batch ran at low resolution, whether weights were skipped."""

    correct: int
    seen: int
    kept: int
    updated: bool
    low_res: bool
    weight_skip: bool


class RunContext:
    """The run a policy is bound to: the model, the schedule, the seed and the collectives.

    ``dist`` provides ``rank``, ``world``, ``all_reduce_sum(tensor)`` and
    ``broadcast_object(obj)`` (identity and no-ops in a single process); ``reference(...)``
    the per-sample :class:`~golden.training.counting.ReferenceWork` of the model.
    """

    def __init__(self, model, steps_per_epoch: int, epochs: int, seed: int, dist, reference):
        self.model = model
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.seed = seed
        self.dist = dist
        self.reference = reference

    def generator(self, index: int) -> torch.Generator:
        """A CPU generator for policy ``index``: the same on every rank, independent of the data
        order and of the other policies."""
        return torch.Generator().manual_seed(1_000_003 * (self.seed + 1) + 7919 * (index + 1))


# ---------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Policy:
    """Base class: a policy that skips nothing. Subclasses override the hooks they need."""

    name: ClassVar[str] = "none"
    #: decision unit of the policy: None, "sample", "batch", "weights", "layer", "resolution"
    kind: ClassVar[str | None] = None

    def bind(self, ctx: RunContext, index: int = 0) -> None:
        self.ctx = ctx
        self.generator = ctx.generator(index)
        self.logs: list[dict] = []
        self._log: dict = {}

    def params(self) -> dict:
        """The configuration, JSON-able."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @property
    def normalize(self) -> str | None:
        return None

    def lr_factor(self) -> float:
        return 1.0

    def start_epoch(self, epoch: int) -> None:
        self._log = {"epoch": epoch, "rate": 0.0}

    def low_res(self, info: StepInfo) -> bool:
        return False

    def decides_rows(self, epoch: int) -> bool:
        return False

    def keep_rows(self, logits, labels, info: StepInfo) -> torch.Tensor | None:
        return None

    def skip_batch(self, logits, labels, info: StepInfo) -> bool:
        return False

    def skip_weights(self, info: StepInfo) -> bool:
        return False

    def end_step(self, info: StepInfo, outcome: StepOutcome) -> None:
        pass

    def end_epoch(self, epoch: int) -> None:
        self.logs.append(self._log)

    def epoch_log(self) -> dict:
        return self.logs[-1]

    def matched_baseline(self, logs: list[dict]) -> "Policy | None":
        """The random policy that skips the same share of the same unit per epoch as this one
        did (``logs``: this policy's epoch logs from a run), or None."""
        return None


@dataclass(eq=False)
class NoSkip(Policy):
    """No skipping: the reference run."""

    name: ClassVar[str] = "none"


class _RowSkip(Policy):
    """Shared bookkeeping of the per-sample policies."""

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        self._log.update(rows=0, skipped_rows=0)

    def _count(self, keep: torch.Tensor, info: StepInfo):
        # this rank's rows (per-sample decisions are local to the rank that owns the row)
        self._log["rows"] += int(keep.numel())
        self._log["skipped_rows"] += int((~keep).sum())

    def end_epoch(self, epoch):
        self._log["rate"] = self._log["skipped_rows"] / max(self._log["rows"], 1)
        super().end_epoch(epoch)

    def end_step(self, info, outcome):
        if not self.decides_rows(info.epoch):
            self._log["rows"] += info.rows


@dataclass(eq=False)
class ConfidenceSampleSkip(_RowSkip):
    """Method 1, per-sample gradient skip (Shin et al., DAC 2020).

    After the forward pass, a sample whose confidence reaches the threshold skips B and G: it is
    not back-propagated at all (the batch is compacted). U still runs.

    Members
    -------
    confidence:
        ``max_prob`` (default, as the patent), ``true_class_prob`` or ``margin``.
    tau:
        Fixed threshold: a probability in (0, 1], or in ``margin`` mode a logit margin, a finite
        number > 0. Default when neither ``tau`` nor ``eps`` is given: 0.9 (margin: ln 9, where a
        two-way softmax gives 0.9).
    eps:
        Error bound instead of ``tau``: τ = 1 − sqrt(ε/2), so every skipped sample has an
        output-error energy ≤ ε. Probability modes only.
    require_correct:
        Skip only correctly classified samples (argmax == label); the error bound needs it.
    warmup_epochs:
        Epochs of no skipping at the start.
    normalize:
        Divide the summed loss by the batch size (``batch``, the learning rate keeps its meaning)
        or by the number of kept samples (``kept``).
    """

    name: ClassVar[str] = "conf_sample"
    kind: ClassVar[str] = "sample"
    confidence: str = "max_prob"
    tau: float | None = None
    eps: float | None = None
    require_correct: bool = True
    warmup_epochs: int = 2
    normalize: str = "batch"

    def __post_init__(self):
        _check_choice("confidence", self.confidence, CONFIDENCE_MODES)
        _check_choice("normalize", self.normalize, NORMALIZATIONS)
        _check_int("warmup_epochs", self.warmup_epochs, 0)
        if self.tau is not None and self.eps is not None:
            raise ValueError(f"give tau or eps, not both (got tau={self.tau}, eps={self.eps})")
        if self.eps is not None:
            if self.confidence == "margin":
                raise ValueError("eps sets a probability threshold; it does not apply to "
                                 "confidence 'margin' (give tau, a logit margin)")
            _check_real("eps", self.eps, 0.0, 2.0, lo_open=True, hi_open=True)
        if self.tau is not None:
            if self.confidence == "margin":
                # a logit margin > 0, as on the accelerator (skiptrain.skip.conf_threshold: a
                # margin of 0 would pass every sample, and CONF_TAU takes no 0)
                _check_real("tau", self.tau, 0.0, None, lo_open=True)
            else:
                _check_real("tau", self.tau, 0.0, 1.0, lo_open=True)

    @property
    def threshold(self) -> float:
        if self.tau is not None:
            return float(self.tau)
        if self.eps is not None:
            return tau_from_eps(self.eps)
        return _margin_of(DEFAULT_SAMPLE_TAU) if self.confidence == "margin" else DEFAULT_SAMPLE_TAU

    def decides_rows(self, epoch):
        return epoch >= self.warmup_epochs

    def keep_rows(self, logits, labels, info):
        skip = confidence(logits, labels, self.confidence) >= self.threshold
        if self.require_correct:
            skip &= logits.detach().argmax(1) == labels
        keep = ~skip
        self._count(keep, info)
        return keep

    def matched_baseline(self, logs):
        return RandomSampleSkip(rate=tuple(log["rate"] for log in logs), normalize=self.normalize)


@dataclass(eq=False)
class RandomSampleSkip(_RowSkip):
    """Random per-sample skip: each sample skips B and G with probability ``rate`` (a number, or
    a per-epoch list whose last value repeats). Baseline of :class:`ConfidenceSampleSkip`."""

    name: ClassVar[str] = "random_sample"
    kind: ClassVar[str] = "sample"
    rate: float | tuple = 0.5
    normalize: str = "batch"

    def __post_init__(self):
        self.rate = _check_rate("rate", self.rate)
        _check_choice("normalize", self.normalize, NORMALIZATIONS)

    def decides_rows(self, epoch):
        return _rate_at(self.rate, epoch) > 0

    def keep_rows(self, logits, labels, info):
        # drawn for the whole global batch so every rank consumes the same stream
        u = torch.rand(info.global_rows, generator=self.generator)
        keep = (u[info.row_offset:info.row_offset + info.rows] >= _rate_at(self.rate, info.epoch))
        keep = keep.to(logits.device)
        self._count(keep, info)
        return keep


class _BatchSkip(Policy):
    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        self._log.update(batches=0, skipped_batches=0, skipped_steps=[])

    def _count(self, skip: bool, info: StepInfo):
        self._log["batches"] += 1
        if skip:
            self._log["skipped_batches"] += 1
            self._log["skipped_steps"].append(info.step_in_epoch)

    def end_epoch(self, epoch):
        self._log["rate"] = self._log["skipped_batches"] / max(self._log["batches"], 1)
        super().end_epoch(epoch)


@dataclass(eq=False)
class ConfidenceBatchSkip(_BatchSkip):
    """Method 2, mini-batch skip (Jo & Park, ISOCC 2020): the forward pass always runs; B, G and
    U of the batch are skipped when Σ_i c_i ≥ B·τ_b (mean confidence ≥ τ_b, no divider).

    Members
    -------
    confidence:
        As in :class:`ConfidenceSampleSkip`.
    tau_batch:
        τ_b; default 0.95 (margin: ln 19).
    warmup_epochs:
        Epochs of no skipping at the start.

    Under torch.distributed the sum and the count are all-reduced: every rank decides alike.
    """

    name: ClassVar[str] = "conf_batch"
    kind: ClassVar[str] = "batch"
    confidence: str = "max_prob"
    tau_batch: float | None = None
    warmup_epochs: int = 2

    def __post_init__(self):
        _check_choice("confidence", self.confidence, CONFIDENCE_MODES)
        _check_int("warmup_epochs", self.warmup_epochs, 0)
        if self.tau_batch is not None:
            if self.confidence == "margin":  # > 0 as on the accelerator (batch_threshold)
                _check_real("tau_batch", self.tau_batch, 0.0, None, lo_open=True)
            else:
                _check_real("tau_batch", self.tau_batch, 0.0, 1.0, lo_open=True)

    @property
    def threshold(self) -> float:
        if self.tau_batch is not None:
            return float(self.tau_batch)
        return _margin_of(DEFAULT_BATCH_TAU) if self.confidence == "margin" else DEFAULT_BATCH_TAU

    def skip_batch(self, logits, labels, info):
        if info.epoch < self.warmup_epochs:
            self._count(False, info)
            return False
        c = confidence(logits, labels, self.confidence)
        total = self.ctx.dist.all_reduce_sum(
            torch.stack([c.sum().double(), torch.tensor(float(c.numel()), dtype=torch.float64,
                                                        device=c.device)]))
        skip = bool(total[0] >= total[1] * self.threshold)
        self._count(skip, info)
        return skip

    def matched_baseline(self, logs):
        return RandomBatchSkip(rate=tuple(log["rate"] for log in logs))


@dataclass(eq=False)
class RandomBatchSkip(_BatchSkip):
    """Random mini-batch skip: each batch skips B, G and U with probability ``rate`` (number or
    per-epoch list). Baseline of :class:`ConfidenceBatchSkip` and of :class:`Downsample`."""

    name: ClassVar[str] = "random_batch"
    kind: ClassVar[str] = "batch"
    rate: float | tuple = 0.5

    def __post_init__(self):
        self.rate = _check_rate("rate", self.rate)

    def skip_batch(self, logits, labels, info):
        skip = bool(torch.rand(1, generator=self.generator) < _rate_at(self.rate, info.epoch))
        self._count(skip, info)
        return skip


class _WeightSkip(Policy):
    def bind(self, ctx, index=0):
        super().bind(ctx, index)
        self._lr = 1.0

    def lr_factor(self):
        return self._lr

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        self._log.update(steps=0, skipped_steps=0, lr_factor=self._lr)

    def _count(self, skip):
        self._log["steps"] += 1
        self._log["skipped_steps"] += int(skip)

    def end_epoch(self, epoch):
        self._log["rate"] = self._log["skipped_steps"] / max(self._log["steps"], 1)
        super().end_epoch(epoch)


@dataclass(eq=False)
class WeightUpdateSkip(_WeightSkip):
    """Method 3, weight-update skipping, WUS and WUS+LR (Safayenikoo & Akturk, 2021).

    Every ``period`` steps the training accuracy of that period (from the forward passes, which
    run anyway) is compared with the previous period's; when |Δacc| < ``eps`` a window of
    ``window`` steps starts in which G and the update of every weight matrix / filter are skipped
    while the biases and normalisation parameters (all 1-D parameters) keep training, so F and B
    still run. With ``end_early`` a period boundary inside a window with |Δacc| ≥ eps ends it.
    WUS+LR (``lr_gamma`` set) multiplies the learning rate by γ whenever a window starts.

    Members
    -------
    eps:
        Plateau threshold on the accuracy change, as a fraction (0.005 = half a point).
    period, window:
        In steps; None means one epoch (period) and one period (window).
    lr_gamma:
        None for WUS; the decay factor for WUS+LR.
    warmup_epochs:
        No window starts before this epoch.
    end_early:
        End a window when the accuracy moves by ≥ eps again.

    Under torch.distributed the accuracy is all-reduced first: every rank decides alike.
    """

    name: ClassVar[str] = "wus"
    kind: ClassVar[str] = "weights"
    eps: float = 0.005
    period: int | None = None
    window: int | None = None
    lr_gamma: float | None = None
    warmup_epochs: int = 1
    end_early: bool = True

    def __post_init__(self):
        _check_real("eps", self.eps, 0.0, 1.0, lo_open=True)
        _check_int("period", self.period, 1, none_ok=True)
        _check_int("window", self.window, 1, none_ok=True)
        _check_real("lr_gamma", self.lr_gamma, 0.0, 1.0, lo_open=True, none_ok=True)
        _check_int("warmup_epochs", self.warmup_epochs, 0)
        if self.lr_gamma is not None:
            self.name = "wus_lr"

    def bind(self, ctx, index=0):
        super().bind(ctx, index)
        self._period = self.period or ctx.steps_per_epoch
        self._window = self.window or self._period
        self._left = 0
        self._last = None
        self._correct = self._seen = 0

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        self._log.update(windows_started=[], windows_ended=[], period_accuracy=[])

    def skip_weights(self, info):
        self._skip = self._left > 0
        return self._skip

    def end_step(self, info, outcome):
        self._count(self._skip)
        if self._left > 0:
            self._left -= 1
        self._correct += outcome.correct
        self._seen += outcome.seen
        if (info.step + 1) % self._period:
            return
        acc = self._correct / max(self._seen, 1)
        self._correct = self._seen = 0
        self._log["period_accuracy"].append(acc)
        if self._last is not None and info.epoch >= self.warmup_epochs:
            delta = abs(acc - self._last)
            if self._left == 0 and delta < self.eps:
                self._left = self._window
                self._log["windows_started"].append(info.step + 1)
                if self.lr_gamma is not None:
                    self._lr *= self.lr_gamma
            elif self._left > 0 and self.end_early and delta >= self.eps:
                self._left = 0
                self._log["windows_ended"].append(info.step + 1)
        self._last = acc

    def matched_baseline(self, logs):
        """Random steps at the share of steps this run skipped over the whole run (its windows
        last epochs, so a per-epoch rate of 0 or 1 would copy the method's timing); with
        WUS+LR the per-epoch learning-rate factors are replayed."""
        rate = sum(log["skipped_steps"] for log in logs) / max(sum(log["steps"] for log in logs), 1)
        lr = tuple(log["lr_factor"] for log in logs) if self.lr_gamma is not None else None
        return RandomWeightUpdateSkip(rate=rate, lr_factors=lr)


@dataclass(eq=False)
class RandomWeightUpdateSkip(_WeightSkip):
    """Random weight-update skip: each step skips G and the weight updates (biases still train)
    with probability ``rate``. ``lr_factors``: per-epoch learning-rate factors to replay (the
    matched baseline of WUS+LR replays its decays, so only the choice of steps differs)."""

    name: ClassVar[str] = "random_wus"
    kind: ClassVar[str] = "weights"
    rate: float | tuple = 0.5
    lr_factors: tuple | None = None

    def __post_init__(self):
        self.rate = _check_rate("rate", self.rate)
        if self.lr_factors is not None:
            self.lr_factors = tuple(self.lr_factors)
            if not self.lr_factors:
                raise ValueError("lr_factors must be None or a non-empty per-epoch list")
            for i, f in enumerate(self.lr_factors):
                _check_real("lr_factors", f, 0.0, None, lo_open=True, index=i)

    def start_epoch(self, epoch):
        if self.lr_factors is not None:
            self._lr = self.lr_factors[min(epoch, len(self.lr_factors) - 1)]
        super().start_epoch(epoch)

    def skip_weights(self, info):
        self._skip = bool(torch.rand(1, generator=self.generator) < _rate_at(self.rate, info.epoch))
        return self._skip

    def end_step(self, info, outcome):
        self._count(self._skip)


class _LayerPolicy(Policy):
    def bind(self, ctx, index=0):
        super().bind(ctx, index)
        model = ctx.model
        self.freezable = list(range(len(model.unit_state) - 1))  # never the classifier

    def _set(self, unit: int):
        model = self.ctx.model
        drop = self.mode == "drop" and model.droppable[unit]
        model.unit_state[unit] = UNIT_DROPPED if drop else UNIT_FROZEN

    def _inactive(self):
        return [i for i, s in enumerate(self.ctx.model.unit_state) if s != UNIT_TRAIN]

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        states = self.ctx.model.unit_state
        self._log.update(unit_state=list(states))
        self._log["rate"] = sum(states[i] != UNIT_TRAIN for i in self.freezable) / max(
            len(self.freezable), 1)


@dataclass(eq=False)
class LayerFreeze(_LayerPolicy):
    """Method 4, layer freezing / dropping by parameter-change scores (after Learn & Drop).

    At the end of each epoch every trained unit gets s = ‖W(t) − W(t−1)‖ / (‖W(t−1)‖ + 1e-12)
    over all its parameters. Going up from the first unit, a unit is frozen (G and U skipped; B is
    cut below the lowest trained unit because nothing below needs a gradient) or, in ``drop``
    mode where its input and output shapes match, dropped (replaced by identity, nothing runs)
    when its score stayed under ``theta`` for the last ``patience`` epochs and, with
    ``continuation``, did not rise over them (a rising score means the layer is learning again).
    The scan stops at the first unit that stays; the classifier is never frozen.

    Members
    -------
    theta:
        Score threshold (relative parameter change per epoch).
    patience:
        K, epochs the score must stay under θ.
    continuation:
        Also require s(t) ≤ s(t−K+1).
    mode:
        ``freeze`` or ``drop`` (units whose shapes differ are frozen instead).
    warmup_epochs:
        No unit is frozen before the end of this epoch.

    Under torch.distributed rank 0 decides and broadcasts.
    """

    name: ClassVar[str] = "layer_freeze"
    kind: ClassVar[str] = "layer"
    theta: float = 0.03
    patience: int = 2
    continuation: bool = True
    mode: str = "freeze"
    warmup_epochs: int = 2

    def __post_init__(self):
        _check_real("theta", self.theta, 0.0, None, lo_open=True)
        _check_int("patience", self.patience, 1)
        _check_choice("mode", self.mode, LAYER_MODES)
        _check_int("warmup_epochs", self.warmup_epochs, 0)
        if self.mode == "drop":
            self.name = "layer_drop"

    def bind(self, ctx, index=0):
        super().bind(ctx, index)
        self._snap = [self._flat(u) for u in ctx.model.units.values()]
        self.scores: list[list[float | None]] = [[] for _ in self._snap]

    @staticmethod
    def _flat(unit):
        ps = [p.detach().flatten() for p in unit.parameters()]
        return torch.cat(ps).clone() if ps else None

    def end_epoch(self, epoch):
        model = self.ctx.model
        scores = []
        for i, unit in enumerate(model.units.values()):
            now = self._flat(unit)
            s = None
            if now is not None and model.unit_state[i] == UNIT_TRAIN:
                s = float((now - self._snap[i]).norm() / (self._snap[i].norm() + 1e-12))
            self._snap[i] = now
            self.scores[i].append(s)
            scores.append(s)
        frozen = []
        if epoch + 1 >= self.warmup_epochs:
            for i in self.freezable:
                if model.unit_state[i] != UNIT_TRAIN:
                    continue
                if not self._ready(i):
                    break
                frozen.append(i)
        frozen = self.ctx.dist.broadcast_object(frozen)
        for i in frozen:
            self._set(i)
        self._log.update(scores=scores, frozen=[model.unit_names[i] for i in frozen])
        super().end_epoch(epoch)

    def _ready(self, unit):
        hist = self.scores[unit][-self.patience:]
        if len(hist) < self.patience or any(s is None or s >= self.theta for s in hist):
            return False
        return not self.continuation or hist[-1] <= hist[0]

    def matched_baseline(self, logs):
        """Random per-epoch layer skips at the share of unit-epochs this run had inactive (a
        per-epoch count would pick the same units on a small network)."""
        rate = sum(log["rate"] for log in logs) / max(len(logs), 1)
        return RandomLayerFreeze(rate=rate, mode=self.mode)


@dataclass(eq=False)
class RandomLayerFreeze(_LayerPolicy):
    """Random per-layer skip: at the start of each epoch every unit but the classifier is, on its
    own, inactive for that epoch with probability ``rate`` (a number or a per-epoch list):
    frozen, or in ``drop`` mode dropped where its shapes allow; the other units train. Baseline
    of :class:`LayerFreeze`, matched to its share of inactive unit-epochs."""

    name: ClassVar[str] = "random_layer"
    kind: ClassVar[str] = "layer"
    rate: float | tuple = 0.5
    mode: str = "freeze"

    def __post_init__(self):
        self.rate = _check_rate("rate", self.rate)
        _check_choice("mode", self.mode, LAYER_MODES)

    def start_epoch(self, epoch):
        draws = torch.rand(len(self.freezable), generator=self.generator)
        for unit, u in zip(self.freezable, draws.tolist()):
            if u < _rate_at(self.rate, epoch):
                self._set(unit)
            else:
                self.ctx.model.unit_state[unit] = UNIT_TRAIN
        super().start_epoch(epoch)


@dataclass(eq=False)
class Downsample(Policy):
    """Method 5, dynamic input and kernel downsampling (after Poulos, Nouri, Moshovos).

    A low-resolution batch has its input average-pooled by ``factor`` and its k x k filters
    average-pooled to (k−1) x (k−1) (the first fully connected layer of an MLP pools its weight
    columns like the pixels); the pooling is differentiable, so the full filters get the
    gradient and a normal update. F, B and G shrink; U runs.

    Members
    -------
    schedule:
        ``prob`` (each batch with probability ``prob``), ``every`` (every ``every``-th batch) or
        ``epochs`` (all batches of the first ``epochs`` epochs).
    factor:
        r, the input pooling factor.
    pool_kernels:
        Pool the filters (otherwise they run unchanged on the smaller maps).
    kernel_gain:
        ``area`` (pooled kernels scaled by k²/(k−1)², pooled columns by r², so flat inputs keep
        their response) or ``none``.

    The random draw is identical on every rank. Its matched baseline is the random mini-batch
    skip at the B+G share this policy saved per epoch.
    """

    name: ClassVar[str] = "downsample"
    kind: ClassVar[str] = "resolution"
    schedule: str = "prob"
    prob: float = 0.5
    every: int = 2
    epochs: int = 5
    factor: int = 2
    pool_kernels: bool = True
    kernel_gain: str = "area"

    def __post_init__(self):
        _check_choice("schedule", self.schedule, DOWNSAMPLE_SCHEDULES)
        _check_real("prob", self.prob, 0.0, 1.0)
        _check_int("every", self.every, 1)
        _check_int("epochs", self.epochs, 0)
        _check_int("factor", self.factor, 2)
        _check_choice("kernel_gain", self.kernel_gain, ("area", "none"))

    def bind(self, ctx, index=0):
        super().bind(ctx, index)
        full = ctx.reference()
        low = ctx.reference(self.factor, pool_kernels=self.pool_kernels,
                            kernel_gain=self.kernel_gain)
        #: B+G saved by one low-resolution sample, as a share of a full-resolution one
        self.bg_saving = 1.0 - low.bg_per_sample() / max(full.bg_per_sample(), 1)

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        self._log.update(batches=0, low_res_batches=0)

    def low_res(self, info):
        if self.schedule == "prob":
            low = bool(torch.rand(1, generator=self.generator) < self.prob)
        elif self.schedule == "every":
            low = (info.step + 1) % self.every == 0
        else:
            low = info.epoch < self.epochs
        self._log["batches"] += 1
        self._log["low_res_batches"] += int(low)
        return low

    def end_epoch(self, epoch):
        share = self._log["low_res_batches"] / max(self._log["batches"], 1)
        self._log["rate"] = share * self.bg_saving
        super().end_epoch(epoch)

    def matched_baseline(self, logs):
        return RandomBatchSkip(rate=tuple(log["rate"] for log in logs))


# ---------------------------------------------------------------------------------------------

class PolicyStack:
    """Several policies as one: masks are AND-ed (a row is back-propagated only if every
    per-sample policy keeps it), batch and weight skips OR-ed, learning-rate factors multiplied.
    Every policy is asked at every hook, so each one's random stream does not depend on the
    others' decisions."""

    def __init__(self, policies: Sequence[Policy]):
        policies = list(policies)
        if not policies:
            raise ValueError("a PolicyStack needs at least one policy")
        names = [p.name for p in policies]
        for n in set(names):
            if names.count(n) > 1:
                raise ValueError(f"policy {n!r} appears {names.count(n)} times in the stack")
        norms = {p.normalize for p in policies} - {None}
        if len(norms) > 1:
            raise ValueError(f"the per-sample policies disagree on normalize: {sorted(norms)}")
        for kind in ("resolution", "layer"):
            if sum(p.kind == kind for p in policies) > 1:
                raise ValueError(f"at most one {kind} policy may be stacked")
        self.policies = policies
        self.normalize = norms.pop() if norms else "batch"

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.policies)

    @property
    def resolution(self) -> "Downsample | None":
        return next((p for p in self.policies if p.kind == "resolution"), None)

    def bind(self, ctx: RunContext) -> None:
        for i, p in enumerate(self.policies):
            p.bind(ctx, i)

    def lr_factor(self) -> float:
        return float(np.prod([p.lr_factor() for p in self.policies]))

    def start_epoch(self, epoch):
        for p in self.policies:
            p.start_epoch(epoch)

    def low_res(self, info):
        return any([p.low_res(info) for p in self.policies])

    def decides_rows(self, epoch):
        return any(p.decides_rows(epoch) for p in self.policies)

    def keep_rows(self, logits, labels, info):
        keep = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
        for p in self.policies:
            if p.decides_rows(info.epoch):
                keep &= p.keep_rows(logits, labels, info)
        return keep

    def skip_batch(self, logits, labels, info):
        return any([p.skip_batch(logits, labels, info) for p in self.policies])

    def skip_weights(self, info):
        return any([p.skip_weights(info) for p in self.policies])

    def end_step(self, info, outcome):
        for p in self.policies:
            p.end_step(info, outcome)

    def end_epoch(self, epoch):
        for p in self.policies:
            p.end_epoch(epoch)

    def epoch_logs(self) -> dict:
        return {p.name: p.epoch_log() for p in self.policies}

    def params(self) -> dict:
        return {p.name: p.params() for p in self.policies}

    def matched_baseline(self) -> "PolicyStack | None":
        """Each policy replaced by its random baseline at the rates it logged (policies without
        one stay); None when no policy has a baseline."""
        out, any_matched = [], False
        for p in self.policies:
            b = p.matched_baseline(getattr(p, "logs", []))
            any_matched |= b is not None
            out.append(b if b is not None else p)
        return PolicyStack(out) if any_matched else None
