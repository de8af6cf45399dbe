"""The scenario file: what the calling (pytest or CLI) process hands the simulator process.

The golden model runs here, in the caller, so the simulator process never imports torch
(it costs seconds per run). A file holds one config and a list of scenarios; each names the
lines to load (every line the golden run reads or writes, with the golden initial values, so
stale memory from an earlier scenario cannot leak in), the whole program memory, and the
golden expectations: status, every counter, the cycle count and the final value of every line.

File layout (JSON)::

    {"config": Config.to_dict(),
     "scenarios": [{"name", "kind": "run" | "host_probe", "reset": bool, "start_pc", "lr_shift", "stochastic", "sr_seed", "skip",
                    "program": [prog_depth words], "budget_cycles",
                    "load": {"spad": [[line, [V values]], ...], "acc": [...]},
                    "expected": {"status": {...}, "counters": {...}, "cycles",
                                 "lines": {"spad": [[line, [V values]], ...], "acc": [...]}}}]}

``kind="host_probe"`` additionally touches memory while the program runs and expects the
refused accesses to leave memory alone and set ``host_error``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

#: cycle budget of a run: the golden count plus a margin, so a hang fails fast
BUDGET_FACTOR, BUDGET_MARGIN = 2, 2_000


#: measured (done edge - START edge) / period minus the golden ``cycles``. START is taken on
#: edge E; the sequencer is busy from the next cycle on, the CYCLES counter counts each edge
#: with busy high, and ``done`` rises on the edge that ends the last busy cycle, so the span
#: between the two edges is exactly the busy-cycle count.
START_TO_DONE_OFFSET = 0

#: at most this many mismatch messages per scenario (the count of the rest is reported)
MAX_MESSAGES = 30


def compare(expected: dict, hw: dict, lines: dict, measured_cycles) -> list[str]:
    """Mismatches between a hardware run and the golden expectations, as messages."""
    errors = []
    for key, exp in expected["status"].items():
        if hw[key] != exp:
            errors.append(f"status.{key}: got {hw[key]}, expected {exp}")
    for key, exp in expected["counters"].items():
        if hw["counters"][key] != exp:
            errors.append(f"counter {key}: got {hw['counters'][key]}, expected {exp}")
    want = expected["cycles"] + START_TO_DONE_OFFSET
    if measured_cycles is None:
        errors.append("cycles START->done: not measured (done was already high)")
    elif measured_cycles != want:
        errors.append(f"cycles START->done: got {measured_cycles}, expected {want} "
                      f"(golden {expected['cycles']} + offset {START_TO_DONE_OFFSET})")
    for mem, exp_lines in expected["lines"].items():
        for w, exp in exp_lines:
            got = lines[mem][w]
            for b, (g, e) in enumerate(zip(got, exp)):
                if g != e:
                    errors.append(f"{mem} line {w} bank {b}: got {g}, expected {e}")
    if len(errors) > MAX_MESSAGES:
        errors = errors[:MAX_MESSAGES] + [f"... and {len(errors) - MAX_MESSAGES} more mismatches"]
    return errors


def _lines(image, lines) -> list:
    return [[int(w), [int(v) for v in image[:, w].tolist()]] for w in lines]


def scenario_entry(sc, *, kind: str = "run", reset: bool = True, expected=None) -> dict:
    """One scenario as a JSON-able dict, with the golden expectations.

    ``expected`` is ``(gold, result)`` from ``sc.expected()`` if the caller already ran it
    (benches time it); otherwise the golden model runs here.
    """
    if kind not in ("run", "host_probe"):
        raise ValueError(f"kind={kind!r}: must be 'run' or 'host_probe'")
    init = sc.initial()
    gold, res = expected if expected is not None else sc.expected()
    lines = {mem: sc.lines(mem) for mem in ("spad", "acc")}
    status = {"busy": 0, "done": 1, "error": int(res.error), "error_code": int(res.error_code),
              "saturated": int(res.saturated), "host_error": int(kind == "host_probe"),
              "batch_skipped": int(res.batch_skipped)}
    if res.error:
        status["error_pc"] = int(res.pc)
    return {
        "name": sc.name, "kind": kind, "reset": bool(reset), "start_pc": int(sc.start_pc),
        "lr_shift": int(sc.lr_shift), "stochastic": int(sc.stochastic), "sr_seed": int(sc.sr_seed),
        "skip": sc.skip_registers(),
        "program": [int(w) for w in init.prog],
        "budget_cycles": BUDGET_FACTOR * int(res.cycles) + BUDGET_MARGIN,
        "load": {mem: _lines(init.image(mem), lines[mem]) for mem in lines},
        "expected": {"status": status, "counters": {k: int(v) for k, v in res.counters.items()},
                     "cycles": int(res.cycles),
                     "lines": {mem: _lines(gold.image(mem), lines[mem]) for mem in lines}},
    }


def write_file(path: str | Path, cfg, entries: list[dict]) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"config": cfg.to_dict(), "scenarios": entries}))
    return path


def timed_expected(sc):
    """``sc.expected()`` and its wall time in seconds (the golden model's speed)."""
    t = time.perf_counter()
    out = sc.expected()
    return out, time.perf_counter() - t
