"""``skiptrain train`` and ``skiptrain compare``: the skip policies on real training.

The options are declared here so ``skiptrain --help`` needs neither torch nor the training
library; their meaning, checks and defaults live in :mod:`golden.training` (imported when a
command runs). Policy options default to None: only the options given reach the policies.
"""

from __future__ import annotations

import argparse
import sys

#: policy options: (flag, parameter name in golden.training.registry.OPTIONS, argparse kwargs)
_POLICY_OPTIONS = [
    ("--confidence", "confidence", dict(
        choices=("max_prob", "true_class_prob", "margin"),
        help="confidence of conf_sample / conf_batch (default max_prob)")),
    ("--tau", "tau", dict(type=float, help="conf_sample: fixed threshold (default 0.9; in "
                                           "margin mode a logit margin, default ln 9)")),
    ("--eps", "eps", dict(type=float, help="conf_sample: error bound instead of --tau, "
                                           "tau = 1 - sqrt(eps/2)")),
    ("--require-correct", "require_correct", dict(
        action=argparse.BooleanOptionalAction,
        help="conf_sample: skip only correctly classified samples (default on)")),
    ("--normalize", "normalize", dict(
        choices=("batch", "kept"), help="conf_sample / random_sample: divide the loss by the "
                                        "batch size or by the kept count (default batch)")),
    ("--batch-tau", "batch_tau", dict(type=float, help="conf_batch: skip when the mean "
                                                       "confidence >= this (default 0.95)")),
    ("--warmup", "warmup", dict(type=int, help="epochs without skipping (conf_*: default 2, "
                                               "wus*: 1, layer_*: 2)")),
    ("--wus-eps", "wus_eps", dict(type=float, help="wus / wus_lr: plateau threshold on the "
                                                   "training-accuracy change (default 0.005)")),
    ("--wus-period", "wus_period", dict(type=int, help="wus / wus_lr: steps between accuracy "
                                                       "checks (default one epoch)")),
    ("--wus-window", "wus_window", dict(type=int, help="wus / wus_lr: steps a skip window "
                                                       "lasts (default one period)")),
    ("--lr-gamma", "lr_gamma", dict(type=float, help="wus_lr: learning-rate factor when a "
                                                     "window starts (default 0.5)")),
    ("--theta", "theta", dict(type=float, help="layer_*: score threshold, relative parameter "
                                               "change per epoch (default 0.03)")),
    ("--patience", "patience", dict(type=int, help="layer_*: epochs under theta (default 2)")),
    ("--continuation", "continuation", dict(
        action=argparse.BooleanOptionalAction,
        help="layer_*: also require the score not to rise over the patience (default on)")),
    ("--layer-mode", "layer_mode", dict(choices=("freeze", "drop"),
                                        help="random_layer: freeze or drop (default freeze)")),
    ("--low-prob", "low_prob", dict(type=float, help="downsample: each batch low-resolution "
                                                     "with this probability (default 0.5)")),
    ("--low-every", "low_every", dict(type=int, help="downsample: every n-th batch instead")),
    ("--low-epochs", "low_epochs", dict(type=int, help="downsample: all batches of the first "
                                                       "E epochs instead")),
    ("--factor", "factor", dict(type=int, help="downsample: input pooling factor (default 2)")),
    ("--pool-kernels", "pool_kernels", dict(
        action=argparse.BooleanOptionalAction,
        help="downsample: pool k x k filters to (k-1) x (k-1) (default on)")),
    ("--kernel-gain", "kernel_gain", dict(choices=("area", "none"),
                                          help="downsample: pooled-kernel gain (default area)")),
    ("--rate", "rate", dict(type=str, help="random_*: skip rate in [0, 1], or a per-epoch "
                                           "comma list (the last value repeats)")),
]

_DATASETS = ("digits", "cifar10", "synthetic")
_MODELS = ("mlp", "mlp1", "cnn", "resnet")
_METHODS = "none,conf_sample,conf_batch,wus,wus_lr,layer_freeze,layer_drop,downsample"


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", default="digits", choices=_DATASETS,
                   help="digits (scikit-learn, bundled), cifar10 (local folder), synthetic")
    g.add_argument("--data-dir", help="cifar10: folder of the python version "
                                      "(data_batch_1..5, test_batch); nothing is downloaded")
    g.add_argument("--limit", type=int, help="use the first N training images only")
    g.add_argument("--model", default="mlp", choices=_MODELS)
    g.add_argument("--backend", default="float", choices=("float", "accel"),
                   help="float: PyTorch; accel: the accelerator's exact fixed-point arithmetic "
                        "(golden model): MLPs, plain SGD (--momentum 0), lr a power of two, "
                        "batch a power of two, policy none")
    g.add_argument("--accel-preset", default=None, metavar="NAME",
                   help="backend accel: the accelerator preset (default: default)")
    g.add_argument("--accel-config", default=None, metavar="FILE.json",
                   help="backend accel: a config as JSON instead of --accel-preset (e.g. "
                        "configs/default_batch128.json)")
    g.add_argument("--accel-rounding", default=None, choices=("nearest", "stochastic"),
                   help="backend accel: round the weight update half to even (default) or "
                        "stochastically (on-chip LFSRs seeded with the run's seed)")
    g.add_argument("--width", type=int, help="model width (default: mlp 128, cnn/resnet 16)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=20, help="default 20")
    g.add_argument("--batch-size", type=int, default=32, help="global batch (default 32)")
    g.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="default 0")
    g.add_argument("--seeds", type=int, default=3, help="run seeds 0..N-1 (default 3)")
    g.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice)")
    g.add_argument("--bn-replay", default="kept", choices=("kept", "full"),
                   help="per-sample skip with batch norm: the kept rows' gradient reduces over "
                        "the kept rows (default) or over the whole batch")
    g.add_argument("--target-acc", type=float,
                   help="test accuracy for time-to-target (default digits 0.95, "
                        "synthetic 0.9, cifar10 0.5)")
    g.add_argument("--out", help="output folder (default runs/<command>-<dataset>-<model>)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("policy options (each applies to the policies it names)")
    for flag, dest, kw in _POLICY_OPTIONS:
        if "type" in kw:
            kw = dict(kw, metavar=dest.upper())
        g.add_argument(flag, dest=f"opt_{dest}", default=None, **kw)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train with one skip policy over several seeds",
        description="Train a model with a skip policy (names joined by '+' stack, e.g. "
                    "conf_sample+wus) and report accuracy, MACs skipped and wall time.")
    p.add_argument("--policy", default="none",
                   help="none, conf_sample, conf_batch, wus, wus_lr, layer_freeze, layer_drop, "
                        "downsample, random_sample, random_batch, random_wus, random_layer, or "
                        "several joined by '+'")
    _common(p)
    p.set_defaults(func=lambda args: _run("train", [args.policy], args))

    p = subparsers.add_parser(
        "compare", help="train several policies on the same seeds, side by side",
        description="Train several policies on the same seeds; by default each method is "
                    "followed by its random baseline at the rate the method reached on that "
                    "seed (per epoch for conf_sample, conf_batch and downsample; over the "
                    "run for wus, wus_lr and the layer policies).")
    p.add_argument("--policies", default=_METHODS,
                   help=f"comma-separated policy specs (default {_METHODS})")
    p.add_argument("--match", action=argparse.BooleanOptionalAction, default=True,
                   help="add each method's matched random baseline (default on)")
    _common(p)
    p.set_defaults(func=lambda args: _run("compare", args.policies.split(","), args))


def _parse_rate(text: str):
    from skiptrain.cli import CliError
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CliError(f"--rate={text}: must be a number in [0, 1] or a comma list of "
                       "numbers in [0, 1]") from None
    return values[0] if len(values) == 1 else tuple(values)


#: library parameter -> flag, where it is not "--" + the name with "-" for "_"
_RENAMED = {"target_accuracy": "--target-acc"}
#: the library parameters that are flags of train / compare (the policy options aside)
_PARAMS = ("dataset", "data_dir", "limit", "model", "backend", "accel_preset", "accel_config",
           "accel_rounding", "width", "epochs", "batch_size", "lr", "momentum", "weight_decay",
           "seeds", "device", "threads", "bn_replay", "target_accuracy", "out")


def _flag(name: str, command: str) -> str | None:
    """The flag of the library parameter or policy option ``name`` (None: not a flag)."""
    if name == "policies":
        return "--policies" if command == "compare" else "--policy"
    for flag, dest, _ in _POLICY_OPTIONS:
        if dest == name:
            return flag
    if name in _PARAMS:
        return _RENAMED.get(name, "--" + name.replace("_", "-"))
    return None


def _show(value) -> str:
    return ",".join(map(_show, value)) if isinstance(value, (list, tuple)) else str(value)


def _message(e: ValueError, command: str) -> str:
    """The library's error as the command line says it: the parameter named by its flag,
    ``--flag=VALUE: must be RULE`` (where the error is of one parameter with a flag)."""
    from golden.training.errors import OptionError
    flag = _flag(e.name, command) if isinstance(e, OptionError) else None
    if flag is None:
        return str(e)
    rule = e.rule_text(lambda n: _flag(n, command) or n)
    head = f"{flag}={_show(e.value)}" if e.index is None else \
        f"{flag} entry {e.index + 1}={_show(e.value)}"
    return f"{head}: must be {rule}" + (f" ({e.where})" if e.where else "")


def _run(command: str, policies: list[str], args) -> int:
    from skiptrain.cli import CliError
    options = {dest: getattr(args, f"opt_{dest}") for _, dest, _ in _POLICY_OPTIONS}
    if options["rate"] is not None:
        options["rate"] = _parse_rate(options["rate"])
    if args.accel_preset is not None and args.accel_config is not None:
        raise CliError("give --accel-preset or --accel-config, not both")
    out = args.out or f"runs/{command}-{args.dataset}-{args.model}"
    from golden.training import cli
    try:
        return cli.run(command, [p.strip() for p in policies], options,
                       dataset=args.dataset, data_dir=args.data_dir, model=args.model,
                       seeds=args.seeds, out=out, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                       weight_decay=args.weight_decay, width=args.width, device=args.device,
                       target_acc=args.target_acc, limit=args.limit, threads=args.threads,
                       bn_replay=args.bn_replay, backend=args.backend,
                       accel_preset=args.accel_preset, accel_config=args.accel_config,
                       accel_rounding=args.accel_rounding,
                       match=getattr(args, "match", False),
                       progress=not args.no_progress and sys.stderr.isatty())
    except ValueError as e:
        raise CliError(_message(e, command)) from None
