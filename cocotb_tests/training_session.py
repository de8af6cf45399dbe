"""Training steps of the digits MLP for co-simulation: what the caller hands the cocotb bench.

The golden model runs here (the simulator process never imports torch). The document::

    {"config": Config.to_dict(), "program": [prog_depth words], "train_pc", "lr_shift",
     "stochastic", "sr_seed", "skip",                              # ROUNDING, SR_SEED, skip registers
     "load": {"spad": [[line, [V values]], ...], "acc": [...]},   # weights, ones rows, ...
     "check": {"spad": [lines], "acc": [lines]},                   # every weight and bias line
     "steps": [{"batch": [[line, [V values]], ...],                # inputs and labels
                "expected": {"status": {...}, "counters": {...}, "cycles",
                             "digest": lines_digest of the check lines}}]}

The bench loads once, then per step writes the batch lines, starts the training program,
waits for ``done``, and compares the status, every counter, the START-to-done cycles and the
digest of every weight and bias line (master weights in the accumulator memory and their
operand copies in the scratchpad). On a mismatch it stops and returns that step's lines, and
:func:`first_differences` names the lines that differ.
"""

from __future__ import annotations

import torch

from skiptrain.config import Config
from skiptrain.driver import lines_digest
from skiptrain.program import MlpSpec, words_of

from .scenarios import BUDGET_FACTOR, BUDGET_MARGIN

__all__ = ["training_session", "first_differences"]


def _lines(image, words) -> list:
    return [[int(w), [int(v) for v in image[:, w].tolist()]] for w in words]


def training_session(cfg: Config, *, sizes=(64, 128, 10), batch: int = 32, steps: int = 10,
                     seed: int = 0, lr: float = 0.25, rounding: str = "nearest",
                     policy: str = "none", options: dict | None = None,
                     changes: dict | None = None) -> tuple[dict, dict]:
    """The document for the bench, and the golden model's per-step images (for diagnosis).
    ``policy`` (none, conf_sample, random_sample, conf_batch, random_batch, or a per-sample and a
    batch policy stacked, ``conf_sample+conf_batch``) with the training library's ``options``
    (tau, confidence, batch_tau, rate) sets the skip registers; its
    warm-up is left out, so the accelerator decides from the first step on. ``changes`` maps a
    step to the policy options the host switches to before it (the skip registers rewritten
    between steps, e.g. a new tau)."""
    from golden.mlp import MlpOnChip, quantize
    from golden.training.accel import stack_registers
    from golden.training.datasets import load_digits
    from golden.training.registry import make_policy

    data = load_digits()
    sizes = tuple(sizes)
    if sizes[0] != 64 or sizes[-1] != 10:
        raise ValueError(f"sizes={sizes}: the digits MLP has 64 inputs and 10 classes")
    spec = MlpSpec(sizes, batch)
    chip = MlpOnChip(spec, cfg, lr, rounding=rounding, seed=seed)
    # torch's initialisation of linear layers from the seed, as the training library's
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(sizes[l - 1], sizes[l]) for l in range(1, len(sizes))]
    chip.load_float_weights([(lin.weight, lin.bias) for lin in layers])
    pols = make_policy(policy, options or {}).policies
    warm = max(getattr(p, "warmup_epochs", 0) for p in pols)  # the first epoch the policies are on
    skip = stack_registers(pols, warm, batch, cfg, seed)
    chip.acc.set_skip(**skip)
    p, V = chip.prog, cfg.banks
    weights = {"spad": sorted({w for r in p.w[1:] for w in words_of(r, V)}),
               "acc": sorted({w for r in p.master[1:] for w in words_of(r, V)})}
    every = {"spad": sorted({w for r in p.act + [p.z, p.labels] + p.err[1:] + p.w[1:]
                             for w in words_of(r, V)}),
             "acc": sorted({w for r in p.master[1:] + p.relu[1:] for w in words_of(r, V)})}
    doc = {"config": cfg.to_dict(), "program": [int(w) for w in chip.acc.prog],
           "train_pc": p.train_pc, "lr_shift": chip.acc.lr_shift,
           "stochastic": int(chip.acc.stochastic), "sr_seed": seed, "skip": skip,
           "load": {m: _lines(chip.acc.image(m), every[m]) for m in every},
           "check": weights, "steps": []}
    batch_words = sorted(set(words_of(p.x_rows(), V) + words_of(p.labels, V)))
    order = torch.Generator().manual_seed(seed)
    perm = torch.cat([torch.randperm(data.x_train.shape[0], generator=order)
                      for _ in range(-(-steps * batch // data.x_train.shape[0]) + 1)])
    images = []
    for s in range(steps):
        new = {}
        if changes and s in changes:
            new = stack_registers(make_policy(policy, changes[s]).policies, warm, batch, cfg, seed)
            new.pop("seed", None)  # the LFSRs run on
            chip.acc.set_skip(**new)
        idx = perm[s * batch:(s + 1) * batch]
        x, y = data.fetch("train", idx, "cpu")
        x = quantize(x.reshape(batch, -1), cfg.frac_bits, cfg)
        res = chip.train_step(x, y)
        digest = lines_digest({m: _lines(chip.acc.image(m), weights[m]) for m in weights})
        doc["steps"].append({
            "skip": new,
            "batch": _lines(chip.acc.image("spad"), batch_words),
            "expected": {"status": {"busy": 0, "done": 1, "error": int(res.error),
                                    "error_code": int(res.error_code),
                                    "saturated": int(res.saturated), "host_error": 0,
                                    "batch_skipped": int(res.batch_skipped)},
                         "counters": {k: int(v) for k, v in res.counters.items()},
                         "cycles": int(res.cycles),
                         "budget_cycles": BUDGET_FACTOR * int(res.cycles) + BUDGET_MARGIN,
                         "digest": digest}})
        images.append({m: chip.acc.image(m).clone() for m in ("spad", "acc")})
    return doc, {"images": images, "check": weights}


def first_differences(golden: dict, step: int, hw_lines: dict, limit: int = 10) -> list[str]:
    """The lines where a failing step's hardware values differ from the golden model's."""
    out = []
    image = golden["images"][step]
    for mem, lines in hw_lines.items():
        for w, got in lines:
            exp = [int(v) for v in image[mem][:, w]]
            if got != exp:
                out.append(f"step {step}: {mem} line {w}: got {got}, expected {exp}")
                if len(out) >= limit:
                    return out
    return out



def run_training(cfg: Config, sim: str, *, sizes=(64, 128, 10), batch: int = 32,
                 steps: int = 10, seed: int = 0, lr: float = 0.25, rounding: str = "nearest",
                 policy: str = "none", options: dict | None = None, changes: dict | None = None,
                 log=print) -> dict:
    """Build (or reuse) the model of ``cfg`` for ``sim``, run the steps, and summarise:
    ``{"steps", "passed", "errors", "cycles", "wall": {...}}``; ``errors`` names the first
    differing lines of a failing step."""
    import time

    from .runner import build, run

    t = time.perf_counter()
    doc, golden = training_session(cfg, sizes=sizes, batch=batch, steps=steps, seed=seed, lr=lr,
                                   rounding=rounding, policy=policy, options=options,
                                   changes=changes)
    golden_s = time.perf_counter() - t
    b = build(cfg, sim, log=log)
    t = time.perf_counter()
    results = run(b, doc, test_module="cocotb_tests.test_training")
    sim_s = time.perf_counter() - t
    errors = []
    for n, r in enumerate(results):
        if r["errors"]:
            errors += [f"{r['name']}: {e}" for e in r["errors"]]
            if "lines" in r:
                errors += first_differences(golden, n, r["lines"])
            break
    passed = sum(1 for r in results if not r["errors"])
    cycles = sum(r.get("cycles") or 0 for r in results)
    compute_s = sum(r.get("compute_wall_s", 0.0) for r in results)
    skipped = sum(st["expected"]["status"]["batch_skipped"] for st in doc["steps"])
    samples = [st["expected"]["counters"]["skipped_samples"] for st in doc["steps"]]
    batch_skipped = [st["expected"]["status"]["batch_skipped"] for st in doc["steps"]]
    return {"steps": steps, "passed": passed, "errors": errors, "cycles": cycles,
            "skipped_steps": skipped, "skipped_samples": samples, "batch_skipped": batch_skipped,
            "cycles_per_step": doc["steps"][0]["expected"]["cycles"] if steps else 0,
            "golden_s": golden_s, "sim_s": sim_s, "compute_s": compute_s,
            "counters": results[-1].get("counters") if results else None, "build_s": b.build_s, "build_reused": b.reused}
