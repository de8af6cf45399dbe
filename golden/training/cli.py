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

__all__ = ["run", "METHODS", "DEFAULT_TARGET"]

#: the methods of methods.md and the no-skip reference: the default of ``compare``
METHODS = ("none", "conf_sample", "conf_batch", "wus", "wus_lr", "layer_freeze", "layer_drop",
           "downsample")

#: default test accuracy for time-to-target, per data set
DEFAULT_TARGET = {"digits": 0.95, "synthetic": 0.9, "cifar10": 0.5}


def run(command: str, policies: list[str], options: dict | None = None, *,
        dataset: str = "digits", data_dir: str | None = None, model: str = "mlp",
        seeds: int = 3, out: str | Path = "runs/train", epochs: int = 20, batch_size: int = 32,
        lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0,
        width: int | None = None, device: str = "auto", target_acc: float | None = None,
        limit: int | None = None, threads: int | None = None, bn_replay: str = "kept",
        match: bool = True, progress: bool = False, backend: str = "float",
        accel_preset: str = "default", accel_config: str | Path | None = None,
        accel_rounding: str = "nearest", stdout=None) -> int:
    import torch

    from .datasets import DATASETS, Dataset, load_dataset
    from .distributed import init_from_env
    from .models import MODELS
    from .registry import check_options, make_policy
    from .report import PolicyRuns, format_table, write_plots, write_results
    from .trainer import TrainConfig, Trainer, resolve_device
    from .models import build_model

    stdout = stdout or sys.stdout
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if command not in ("train", "compare"):
        raise ValueError(f"command must be 'train' or 'compare', got {command!r}")
    if not policies:
        raise ValueError("give at least one policy")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if len(set(policies)) != len(policies):
        raise ValueError(f"a policy is listed twice in {','.join(policies)}")
    check_options(policies, options)
    for spec in policies:  # every spec and value checked before any data is loaded
        make_policy(spec, options, strict=False)
    target = DEFAULT_TARGET.get(dataset) if target_acc is None else target_acc
    base = dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                weight_decay=weight_decay, width=width, target_accuracy=target,
                bn_replay=bn_replay)
    TrainConfig(**base)  # checks the hyper-parameters
    if backend not in ("float", "accel"):
        raise ValueError(f"backend={backend!r}: must be 'float' or 'accel'")
    accel_cfg = None
    if backend == "accel":
        from skiptrain.config import Config, ConfigError, preset

        from .accel import check_accel
        try:
            accel_cfg = Config.from_json(accel_config) if accel_config else preset(accel_preset)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        check_accel(TrainConfig(**base), policies, accel_cfg)
        stacked = [spec for spec in policies if "+" in spec]
        if command == "compare" and match and stacked:
            raise ValueError(f"policies {stacked} with backend accel: the matched baseline of a stack "
                             "is random_sample+random_batch at the two rates the policies reached, "
                             "and the accelerator has one SKIP_RATE for both draws; add --no-match")
        if accel_rounding not in ("nearest", "stochastic"):
            raise ValueError(f"accel_rounding={accel_rounding!r}: must be 'nearest' or 'stochastic'")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("backend accel runs in one process (no torch.distributed)")

    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    data = load_dataset(dataset, data_dir)
    if limit is not None:
        data = Dataset(data.name, data.x_train[:limit], data.y_train[:limit], data.x_test,
                       data.y_test, data.num_classes)
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    path = write_results(out, command, ordered, options)
    plots = write_plots(out, ordered)
    print(f"wrote {path}, table.txt and {', '.join(p.name for p in plots)}", file=stdout)
    return 0
