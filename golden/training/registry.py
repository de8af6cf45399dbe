"""Policy names and options: what ``skiptrain train --policy NAME [options]`` understands.

A *spec* is one policy name or several joined by ``+`` (``conf_sample+wus``). Options are given
by their command-line names (``tau``, ``wus_eps``, ...), each mapped to a parameter of the
policies it applies to; an option that applies to none of the named policies is an error, so a
typo never passes silently.
"""

from __future__ import annotations

from .errors import OptionError
from .policies import (ConfidenceBatchSkip, ConfidenceSampleSkip, Downsample, LayerFreeze, NoSkip,
                       PolicyStack, RandomBatchSkip, RandomLayerFreeze, RandomSampleSkip,
                       RandomWeightUpdateSkip, WeightUpdateSkip)

__all__ = ["POLICIES", "OPTIONS", "make_policy", "split_spec", "check_options", "option_of"]

#: name -> (class, fixed parameters)
POLICIES = {
    "none": (NoSkip, {}),
    "conf_sample": (ConfidenceSampleSkip, {}),
    "conf_batch": (ConfidenceBatchSkip, {}),
    "wus": (WeightUpdateSkip, {}),
    "wus_lr": (WeightUpdateSkip, {"lr_gamma": 0.5}),
    "layer_freeze": (LayerFreeze, {"mode": "freeze"}),
    "layer_drop": (LayerFreeze, {"mode": "drop"}),
    "downsample": (Downsample, {}),
    "random_sample": (RandomSampleSkip, {}),
    "random_batch": (RandomBatchSkip, {}),
    "random_wus": (RandomWeightUpdateSkip, {}),
    "random_layer": (RandomLayerFreeze, {}),
}

_CONF = ("conf_sample", "conf_batch")
_WUS = ("wus", "wus_lr")
_LAYER = ("layer_freeze", "layer_drop")
_RANDOM = ("random_sample", "random_batch", "random_wus", "random_layer")

#: option -> {policy name: parameter}; a parameter given as (name, {extra}) also sets extra
OPTIONS = {
    "confidence": {p: "confidence" for p in _CONF},
    "tau": {"conf_sample": "tau"},
    "eps": {"conf_sample": "eps"},
    "require_correct": {"conf_sample": "require_correct"},
    "normalize": {"conf_sample": "normalize", "random_sample": "normalize"},
    "batch_tau": {"conf_batch": "tau_batch"},
    "warmup": {p: "warmup_epochs" for p in _CONF + _WUS + _LAYER},
    "wus_eps": {p: "eps" for p in _WUS},
    "wus_period": {p: "period" for p in _WUS},
    "wus_window": {p: "window" for p in _WUS},
    "lr_gamma": {"wus_lr": "lr_gamma"},
    "theta": {p: "theta" for p in _LAYER},
    "patience": {p: "patience" for p in _LAYER},
    "continuation": {p: "continuation" for p in _LAYER},
    "layer_mode": {"random_layer": "mode"},
    "low_prob": {"downsample": ("prob", {"schedule": "prob"})},
    "low_every": {"downsample": ("every", {"schedule": "every"})},
    "low_epochs": {"downsample": ("epochs", {"schedule": "epochs"})},
    "factor": {"downsample": "factor"},
    "pool_kernels": {"downsample": "pool_kernels"},
    "kernel_gain": {"downsample": "kernel_gain"},
    "rate": {p: "rate" for p in _RANDOM},
}

_SCHEDULE_OPTIONS = ("low_prob", "low_every", "low_epochs")


def split_spec(spec: str) -> list[str]:
    """The policy names of ``spec``; unknown names raise ValueError."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"policy must be a name like 'conf_sample' or 'conf_sample+wus', "
                         f"got {spec!r}")
    names = [n.strip() for n in spec.split("+")]
    for n in names:
        if n not in POLICIES:
            raise ValueError(f"unknown policy {n!r} in {spec!r}; known: {', '.join(POLICIES)}")
    return names


def check_options(specs: list[str], options: dict) -> None:
    """Raise ValueError for an option unknown or not used by any policy of ``specs``."""
    names = {n for spec in specs for n in split_spec(spec)}
    for opt in options:
        if opt not in OPTIONS:
            raise ValueError(f"unknown policy option {opt!r}; known: {', '.join(OPTIONS)}")
        if not names & set(OPTIONS[opt]):
            raise ValueError(f"option {opt!r} applies to {', '.join(OPTIONS[opt])}, not to "
                             f"{', '.join(sorted(names))}")
    given = [o for o in _SCHEDULE_OPTIONS if o in options]
    if len(given) > 1:
        raise ValueError(f"give one downsampling schedule, got {', '.join(given)}")


def make_policy(spec: str, options: dict | None = None, strict: bool = True) -> PolicyStack:
    """Build the :class:`PolicyStack` of ``spec`` with ``options`` (see :data:`OPTIONS`).

    With ``strict`` an option that no policy of ``spec`` uses is an error; ``compare`` passes
    the same options to every spec and checks them once over all specs instead.
    """
    options = {k: v for k, v in (options or {}).items() if v is not None}
    names = split_spec(spec)
    if strict:
        check_options([spec], options)
    policies = []
    for name in names:
        cls, fixed = POLICIES[name]
        kwargs = dict(fixed)
        for opt, value in options.items():
            target = OPTIONS.get(opt, {}).get(name)
            if target is None:
                continue
            if isinstance(target, tuple):
                target, extra = target
                kwargs.update(extra)
            kwargs[target] = value
        try:
            policies.append(cls(**kwargs))
        except OptionError as e:  # named by its option (batch_tau, not tau_batch)
            raise e.with_context(option_of(name, e.name), f"policy {name}",
                                 text=f"policy {name}: {e}") from None
        except ValueError as e:
            raise ValueError(f"policy {name}: {e}") from None
    return PolicyStack(policies)


def option_of(policy: str, param: str) -> str:
    """The option (a key of :data:`OPTIONS`) that sets ``param`` of the policy called
    ``policy``; ``param`` itself where no option does."""
    for opt, targets in OPTIONS.items():
        target = targets.get(policy)
        if (target[0] if isinstance(target, tuple) else target) == param:
            return opt
    return param
