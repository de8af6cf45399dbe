"""What ``skiptrain train`` and ``skiptrain compare`` do, callable from Python.

:func:`run` validates everything before any training starts (policy names and options, the
data set, the hyper-parameters), trains every policy on the same seeds — with ``match``, each
method is followed by its random baseline at the rates the method logged on that seed — then
prints the table and writes ``results.json``, the per-step ``runs/*.npz`` and the plots.
Errors are ValueError with a message that names the value and the rule.

Under torchrun (WORLD_SIZE > 1) every rank trains its shard; rank 0 prints and writes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import OptionError

__all__ = ["run", "check_out", "METHODS", "DEFAULT_TARGET", "FOLDER_DATASETS"]

#: the methods of methods.md and the no-skip reference: the default of ``compare``
METHODS = ("none", "conf_sample", "conf_batch", "wus", "wus_lr", "layer_freeze", "layer_drop",
           "downsample")

#: default test accuracy for time-to-target, per data set
DEFAULT_TARGET = {"digits": 0.95, "synthetic": 0.9, "cifar10": 0.5}

#: the data sets read from a folder (``data_dir``)
FOLDER_DATASETS = ("cifar10",)


def check_out(out: str | Path) -> Path:
    """``out`` as a Path, or OptionError when it cannot be a folder: an existing file, a path
    under a file, or a new folder in a folder that cannot be written. Nothing is created."""
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise OptionError("out", str(out), "a folder (it is an existing file)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OptionError("out", str(out), "a folder this user can write")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OptionError("out", str(out), f"a folder or a new folder's path ({str(parent)!r} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError("out", str(out), f"a folder that can be created ({str(parent)!r} is not "
                          "writable)")
    return path


def run(command: str, policies: list[str], options: dict | None = None, *,
        dataset: str = "digits", data_dir: str | None = None, model: str = "mlp",
        seeds: int = 3, out: str | Path = "runs/train", epochs: int = 20, batch_size: int = 32,
        lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0,
        width: int | None = None, device: str = "auto", target_acc: float | None = None,
        limit: int | None = None, threads: int | None = None, bn_replay: str = "kept",
        match: bool = True, progress: bool = False, backend: str = "float",
        accel_preset: str | None = None, accel_config: str | Path | None = None,
        accel_rounding: str | None = None, stdout=None) -> int:
    """Train ``policies`` (specs) over ``seeds`` and write the report to ``out``.

    ``accel_preset`` (default: ``default``), ``accel_config`` and ``accel_rounding`` (default
    ``nearest``) are for ``backend="accel"`` only, ``data_dir`` for the data set that reads a
    folder (cifar10): given otherwise they are errors, not ignored. Errors are ValueError; those
    of one parameter are :class:`~golden.training.errors.OptionError` (name, value, rule)."""
    import torch

    from .datasets import DATASETS, Dataset, load_dataset
    from .distributed import init_from_env
    from .models import MODELS
    from .registry import OPTIONS, check_options, make_policy, split_spec
    from .report import PolicyRuns, format_table, write_plots, write_results
    from .trainer import TrainConfig, Trainer, resolve_device
    from .models import build_model

    stdout = stdout or sys.stdout
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if command not in ("train", "compare"):
        raise ValueError(f"command must be 'train' or 'compare', got {command!r}")
    if not policies:
        raise ValueError("give at least one policy")
    empty = [i for i, p in enumerate(policies, 1) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise OptionError("policies", ",".join(map(str, policies)),
                          f"a list of policy specs without empty entries (entry {empty[0]} of "
                          f"{len(policies)} is empty)")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if data_dir is not None and dataset not in FOLDER_DATASETS:
        raise OptionError("data_dir", str(data_dir), f"given only with {{dataset}} "
                          f"{' or '.join(FOLDER_DATASETS)} ({dataset} reads no folder)")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if backend not in ("float", "accel"):
        raise OptionError("backend", backend, "'float' or 'accel'")
    if backend != "accel":
        for name, value in (("accel_preset", accel_preset), ("accel_config", accel_config),
                            ("accel_rounding", accel_rounding)):
            if value is not None:
                raise OptionError(name, str(value), f"given only with {{backend}} accel (the "
                                  f"{backend} backend has no accelerator)")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise OptionError("seeds", seeds, "an integer >= 1")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise OptionError("limit", limit, "an integer >= 1", text=f"limit must be >= 1, got {limit}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise OptionError("threads", threads, "an integer >= 1",
                          text=f"threads must be >= 1, got {threads}")
    twice = sorted({p for p in policies if policies.count(p) > 1})
    if twice:
        raise OptionError("policies", ",".join(policies), f"a list of distinct policy specs "
                          f"({', '.join(twice)} listed twice)",
                          text=f"a policy is listed twice in {','.join(policies)}: {', '.join(twice)}")
    check_options(policies, options)
    stacks = {spec: make_policy(spec, options, strict=False) for spec in policies}
    target = DEFAULT_TARGET.get(dataset) if target_acc is None else target_acc
    base = dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                weight_decay=weight_decay, width=width, target_accuracy=target,
                bn_replay=bn_replay)
    TrainConfig(**base)  # checks the hyper-parameters
    warmup = options.get("warmup")
    if warmup is not None and warmup >= epochs:
        users = sorted({n for spec in policies for n in split_spec(spec) if n in OPTIONS["warmup"]})
        raise OptionError("warmup", warmup, f"less than {{epochs}} ({epochs}): {', '.join(users)} "
                          "would never act (warm-up epochs do not skip)")
    accel_cfg = None
    if backend == "accel":
        from skiptrain.config import Config, ConfigError, preset

        from .accel import check_accel, check_thresholds
        source = ("accel_config", accel_config) if accel_config is not None else \
            ("accel_preset", accel_preset or "default")
        if accel_config is not None and accel_preset is not None:
            raise ValueError("give accel_preset or accel_config, not both")
        try:
            accel_cfg = Config.from_json(accel_config) if accel_config else preset(source[1])
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if not accel_cfg.training:
            raise OptionError(source[0], str(source[1]), "an accelerator with training hardware "
                              f"(training=true); {accel_cfg.name!r} has training=false: it runs "
                              "inference only")
        check_accel(TrainConfig(**base), policies, accel_cfg)
        for stack in stacks.values():
            check_thresholds(stack.policies, batch_size, accel_cfg)
        stacked = [spec for spec in policies if "+" in spec]
        if command == "compare" and match and stacked:
            raise ValueError(f"policies {stacked} with backend accel: the matched baseline of a stack "
                             "is random_sample+random_batch at the two rates the policies reached, "
                             "and the accelerator has one SKIP_RATE for both draws; add --no-match")
        accel_rounding = accel_rounding or "nearest"
        if accel_rounding not in ("nearest", "stochastic"):
            raise OptionError("accel_rounding", accel_rounding, "'nearest' or 'stochastic'")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("backend accel runs in one process (no torch.distributed)")
    out = check_out(out)

    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    data = load_dataset(dataset, data_dir)
    n_train = data.x_train.shape[0]
    if limit is not None and limit > n_train:
        raise OptionError("limit", limit, f"at most {n_train}, the training images of {dataset}")
    if limit is not None:
        data = Dataset(data.name, data.x_train[:limit], data.y_train[:limit], data.x_test,
                       data.y_test, data.num_classes)
    if batch_size > data.x_train.shape[0]:
        have = (f"the training images left by {{limit}} {limit}" if limit is not None
                else f"the training images of {dataset}")
        raise OptionError("batch_size", batch_size, f"at most {data.x_train.shape[0]}, {have}")
    dist = init_from_env(dev)
    lead = dist.rank == 0

    groups: dict[str, PolicyRuns] = {}
    order: list[str] = []
    total = len(policies) * seeds
    bar = None
    if progress and lead:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=command, unit="run")

    def one(name, spec, stack, seed, matched_to=None):
        if name not in groups:
            groups[name] = PolicyRuns(name, spec, matched_to)
            order.append(name)
        cfg = TrainConfig(seed=seed, device=str(dev), progress=progress and lead, **base)
        torch.manual_seed(seed)
        net = build_model(model, data.input_shape, data.num_classes, width)
        if backend == "accel":
            from .accel import AccelTrainer
            result = AccelTrainer(data, net, cfg, accel_cfg, stack, accel_rounding).run()
        else:
            result = Trainer(data, net, stack, cfg, dist).run()
        groups[name].runs.append(result)
        return stack

    try:
        for seed in range(seeds):
            for spec in policies:
                if bar is not None:
                    bar.set_description(f"{spec} seed {seed}")
                stack = one(spec, spec, make_policy(spec, options, strict=False), seed)
                baseline = stack.matched_baseline() if match and command == "compare" else None
                if baseline is not None:
                    if bar is not None:
                        bar.total += 1
                        bar.set_description(f"random for {spec} seed {seed}")
                    one(f"{baseline.name}~{spec}", baseline.name, baseline, seed, matched_to=spec)
                    if bar is not None:
                        bar.update(1)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not lead:
        return 0
    ordered = [groups[n] for n in order]
    where = f"accelerator ({accel_cfg.name} preset, golden model)" if backend == "accel" else f"device {dev}"
    print(f"{command}: {dataset}, {model}, {seeds} seed(s), {epochs} epochs, batch {batch_size}, "
          f"lr {lr}, {where}" + (f", {dist.world} ranks" if dist.world > 1 else ""),
          file=stdout)
    table = format_table(ordered, baseline="none")
    print(table, file=stdout)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    path = write_results(out, command, ordered, options)
    plots = write_plots(out, ordered)
    print(f"wrote {path}, table.txt and {', '.join(p.name for p in plots)}", file=stdout)
    return 0
