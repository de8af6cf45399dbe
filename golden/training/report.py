"""Tables, JSON and plots of training runs.

``results.json`` (schema ``skiptrain.training.results/1``)::

    {
      "schema": "skiptrain.training.results/1",
      "command": "train" | "compare",
      "dataset": "digits", "model": "mlp", "seeds": [0, 1, 2], "world": 1,
      "config": {epochs, batch_size, lr, momentum, weight_decay, width, device, target_accuracy},
      "options": {policy options given on the command line},
      "policies": [                       # in table order
        {"name": "conf_sample",           # "random_sample~conf_sample" for a matched baseline
         "spec": "conf_sample", "matched_to": null | "conf_sample", "params": {policy: {...}},
         "accuracy_mean": 0.97, "accuracy_std": 0.004,       # test accuracy, fraction
         "skipped": {"F", "B", "G", "U", "BG", "total"},     # share of reference MACs skipped,
         "skipped_std": {...},                               #   mean and std over seeds
         "wall_s_mean": 3.1, "wall_s_std": 0.1,              # training time (no evaluation)
         "time_to_target_s_mean": 1.2 | null, "macs_to_target_mean": ... | null,
         "runs_reaching_target": 3, "recompute_macs_mean": R,
         "runs": [{"seed", "final_accuracy", "wall_s", "time_to_target_s", "macs_to_target",
                   "epoch_to_target", "executed": {F, B, G, U, R, BG, total},
                   "reference": {F, B, G, U, BG, total}, "skipped": {...},
                   "layers": [{"name", "executed": {F, B, G, U, R}, "reference": {F, B, G, U}}],
                   "epochs": [{"epoch", "test_accuracy", "train_accuracy", "train_loss", "wall_s",
                               "lr", "steps", "updates", "rows_backpropagated",
                               "low_res_steps", "weight_skip_steps", "executed", "reference",
                               "decisions": {policy: {...its epoch log...}}}],
                   "steps_file": "runs/<name>_seed<seed>.npz"}]}
      ]
    }

Standard deviations are over seeds with ddof=1 (0 for one seed). The per-step, per-layer counts
are in the ``.npz`` files: ``executed`` (steps x layers x 5: F, B, G, U, R), ``rows`` (steps),
``wall_s`` (steps), ``layers`` (names).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .counting import COUNTERS

__all__ = ["PolicyRuns", "summarize", "format_table", "write_results", "write_plots",
           "SCHEMA"]

SCHEMA = "skiptrain.training.results/1"


class PolicyRuns:
    """The runs of one policy over seeds. ``matched_to``: the method a random baseline matches."""

    def __init__(self, name: str, spec: str, matched_to: str | None = None):
        self.name = name
        self.spec = spec
        self.matched_to = matched_to
        self.runs = []


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(group: PolicyRuns) -> dict:
    runs = group.runs
    acc = [r.final_accuracy for r in runs]
    skips = [r.skip_fractions() for r in runs]
    keys = ("F", "B", "G", "U", "BG", "total")
    return {
        "name": group.name, "spec": group.spec, "matched_to": group.matched_to,
        "params": runs[0].params,
        "accuracy_mean": float(np.mean(acc)), "accuracy_std": _std(acc),
        "skipped": {k: float(np.mean([s[k] for s in skips])) for k in keys},
        "skipped_std": {k: _std([s[k] for s in skips]) for k in keys},
        "wall_s_mean": float(np.mean([r.wall_s for r in runs])),
        "wall_s_std": _std([r.wall_s for r in runs]),
        "time_to_target_s_mean": _mean_or_none([r.time_to_target_s for r in runs]),
        "macs_to_target_mean": _mean_or_none([r.macs_to_target for r in runs]),
        "runs_reaching_target": sum(r.time_to_target_s is not None for r in runs),
        "recompute_macs_mean": float(np.mean([r.totals()["executed"]["R"] for r in runs])),
    }


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+~-]", "_", name)


def _run_json(run, steps_file: str) -> dict:
    t = run.totals()
    return {
        "seed": run.seed, "final_accuracy": run.final_accuracy, "wall_s": run.wall_s,
        "time_to_target_s": run.time_to_target_s, "macs_to_target": run.macs_to_target,
        "epoch_to_target": run.epoch_to_target,
        "executed": t["executed"], "reference": t["reference"], "skipped": run.skip_fractions(),
        "layers": [{"name": n,
                    "executed": {c: int(run.layer_executed[i, j]) for j, c in enumerate(COUNTERS)},
                    "reference": {c: int(run.layer_reference[i, j])
                                  for j, c in enumerate(COUNTERS[:4])}}
                   for i, n in enumerate(run.layers)],
        "epochs": run.epochs,
        "steps_file": steps_file,
    }


def write_results(out: Path, command: str, groups: list[PolicyRuns], options: dict) -> Path:
    """Write ``results.json`` and the per-step ``runs/*.npz`` into ``out``; return the JSON path."""
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    first = groups[0].runs[0]
    config = {k: v for k, v in first.config.items() if k not in ("seed", "progress")}
    policies = []
    for g in groups:
        entry = summarize(g)
        entry["runs"] = []
        for run in g.runs:
            rel = f"runs/{_file_name(g.name)}_seed{run.seed}.npz"
            np.savez_compressed(out / rel, executed=run.step_executed, rows=run.step_rows,
                                wall_s=run.step_wall_s, layers=np.array(run.layers),
                                counters=np.array(COUNTERS))
            entry["runs"].append(_run_json(run, rel))
        policies.append(entry)
    doc = {"schema": SCHEMA, "command": command, "dataset": first.dataset, "model": first.model,
           "seeds": [r.seed for r in groups[0].runs], "world": first.world, "config": config,
           "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
           "policies": policies}
    path = out / "results.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def accel_cycles_per_epoch(group: PolicyRuns) -> float | None:
    """Mean accelerator cycles of an epoch's training steps (backend accel), or None."""
    vals = [e["accel"]["cycles"] for run in group.runs for e in run.epochs if "accel" in e]
    if not vals or len(vals) != sum(len(run.epochs) for run in group.runs):
        return None
    return float(np.mean(vals))


def accel_of_ideal(group: PolicyRuns, base: PolicyRuns) -> float | None:
    """Backend accel: the share of the ideal cycle saving that ``group`` realised against
    ``base`` (no skipping, same seeds): over every epoch of every seed, the cycles saved over
    (the skipped share of B+G MACs x the baseline's B, G and U cycles). None when there is
    nothing to compare (no accel counters, other seeds or epochs, or nothing skipped)."""
    saved = ideal = 0.0
    by_seed = {run.seed: run for run in base.runs}
    for run in group.runs:
        ref = by_seed.get(run.seed)
        if ref is None or len(ref.epochs) != len(run.epochs):
            return None
        for e, e0 in zip(run.epochs, ref.epochs):
            a, a0 = e.get("accel"), e0.get("accel")
            if a is None or a0 is None:
                return None
            done = a["phase_macs_bwd_input"] + a["phase_macs_bwd_weight"]
            skipped = a["skipped_macs_bwd_input"] + a["skipped_macs_bwd_weight"]
            if done + skipped == 0:
                continue
            bgu = a0["phase_cycles_bwd_input"] + a0["phase_cycles_bwd_weight"] + a0["phase_cycles_update"]
            ideal += bgu * skipped / (done + skipped)
            saved += a0["cycles"] - a["cycles"]
    return saved / ideal if ideal else None


def format_table(groups: list[PolicyRuns], baseline: str | None = "none") -> str:
    """A plain-text table: accuracy (mean ± std, and its change against ``baseline``), MACs
    skipped per part, B+G and total, wall time, time to target."""
    rows = [summarize(g) for g in groups]
    ref = next((r for r in rows if r["name"] == baseline), None)
    head = ["policy", "test acc %", "Δ pts", "F %", "B %", "G %", "U %", "B+G %", "total %",
            "wall s", "to target s"]
    # backend accel: the accelerator's cycles per epoch (mean over epochs and seeds), and the
    # factor fewer than the baseline's
    cycles = {g.name: accel_cycles_per_epoch(g) for g in groups}
    with_cycles = all(c is not None for c in cycles.values())
    base = next((g for g in groups if g.name == baseline), None)
    if with_cycles:
        # and the share of the ideal saving (skipped B+G share x the baseline's B, G, U cycles)
        head += ["cycles/epoch", "× fewer", "of ideal"]
    table = []
    for r in rows:
        # + 0.0 turns a rounded -0.0 into 0.0, so no "-0.00" appears
        d = "" if ref is None else \
            f"{round(100 * (r['accuracy_mean'] - ref['accuracy_mean']), 2) + 0.0:+.2f}"
        tt = r["time_to_target_s_mean"]
        n_runs = len(next(g for g in groups if g.name == r["name"]).runs)
        tt = "-" if tt is None else f"{tt:.2f}" + (
            "" if r["runs_reaching_target"] == n_runs else f" ({r['runs_reaching_target']}/{n_runs})")
        s = r["skipped"]
        table.append([r["name"], f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}",
                      d] + [f"{100 * s[k]:.1f}" for k in ("F", "B", "G", "U", "BG", "total")]
                     + [f"{r['wall_s_mean']:.2f}", tt])
        if with_cycles:
            c, c0 = cycles[r["name"]], cycles.get(baseline)
            of = None if base is None or r["name"] == baseline else \
                accel_of_ideal(next(g for g in groups if g.name == r["name"]), base)
            table[-1] += [f"{c:,.0f}", "" if c0 is None else f"{c0 / c:.2f}",
                          "" if of is None else f"{100 * of:.1f} %"]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in table:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def write_plots(out: Path, groups: list[PolicyRuns]) -> list[Path]:
    """accuracy_vs_epoch.png, skip_vs_epoch.png (B+G share skipped), accuracy_vs_macs.png
    (executed F+B+G+U, cumulative); curves are means over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    paths = []

    def curve(run, what):
        if what == "acc":
            return [e["test_accuracy"] for e in run.epochs]
        if what == "skip":
            return [1 - (e["executed"]["B"] + e["executed"]["G"]) /
                    max(e["reference"]["B"] + e["reference"]["G"], 1) for e in run.epochs]
        return np.cumsum([sum(e["executed"][c] for c in "FBGU") for e in run.epochs])

    def mean_curve(g, what):
        return np.mean([curve(r, what) for r in g.runs], axis=0)

    specs = [("accuracy_vs_epoch.png", "epoch", "test accuracy", "acc"),
             ("skip_vs_epoch.png", "epoch", "share of B+G MACs skipped", "skip"),
             ("accuracy_vs_macs.png", "executed training MACs (F+B+G+U)", "test accuracy", "macs")]
    for fname, xlabel, ylabel, what in specs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # a method and its random baseline share a colour; the baseline is dashed
        methods = list(dict.fromkeys(g.matched_to or g.name for g in groups))
        cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
        for g in groups:
            kw = dict(color=cmap(methods.index(g.matched_to or g.name)),
                      linestyle="--" if g.matched_to else "-", label=g.name)
            if what == "macs":
                ax.plot(mean_curve(g, "macs"), mean_curve(g, "acc"), **kw)
            else:
                y = mean_curve(g, what)
                ax.plot(np.arange(1, len(y) + 1), y, **kw)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if what == "macs":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
