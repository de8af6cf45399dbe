"""``skiptrain flow``: the main job, end to end on one preset.

generate the Verilog -> co-simulate random programs against the golden model -> co-simulate
training steps of the digits MLP -> measure the GEMM cycles, utilisation and simulation speed
-> synthesize, place and route -> train with the skip policies on the built-in data set (float)
-> train the digits MLP on the accelerator's arithmetic with no skipping, with the hardware's
per-sample skip and with its matched random baseline (the headline the flow ends with). Each step is the ordinary command of the same name, so
every number the flow prints can be reproduced step by step.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

STEPS = ("generate", "cosim", "cosim_train", "bench", "synth", "train", "train_accel")

#: the digits MLP each preset's memories hold: (sizes, batch); tiny holds none (64 inputs need
#: 65 rows of activations, more than its 512-word scratchpad)
FLOW_MLP = {"default": ("64,128,10", "32"), "small": ("64,8,10", "16")}


def register(subparsers):
    p = subparsers.add_parser(
        "flow", help="the main job: generate, co-simulate, benchmark, synthesize, train",
        description="Run the whole skiptrain flow on one preset and write every result under "
                    "--out: Verilog and config, a co-simulation of random programs against the "
                    "golden model (Verilator), 100 training steps of the digits MLP with the "
                    "hardware's per-sample skip, co-simulated and checked after every step, the "
                    "GEMM benchmark, ECP5 synthesis (one seed), a training comparison of the skip "
                    "policies on the digits data set, and the digits MLP trained on the "
                    "accelerator's arithmetic without and with the hardware's per-sample skip "
                    "and its random baseline.")
    p.add_argument("--preset", default="default", metavar="NAME",
                   help="config preset (tiny, small, default; default: default)")
    p.add_argument("--out", default="out/flow", metavar="DIR", help="output folder (default out/flow)")
    p.add_argument("--skip", default="", metavar="STEPS",
                   help=f"comma-separated steps to leave out, of {','.join(STEPS)}")
    p.set_defaults(func=run)


def _step(name: str, argv: list[str], summary: dict) -> None:
    from skiptrain.cli import main

    print(f"\n=== flow: {name}: skiptrain {' '.join(argv)}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse and CliError exits
        rc = e.code if isinstance(e.code, int) else 1
    summary[name] = {"command": "skiptrain " + " ".join(argv), "exit_code": rc,
                     "wall_s": round(time.monotonic() - t0, 1)}
    if rc:
        raise _StepFailed(name, rc)


class _StepFailed(Exception):
    pass


def run(args) -> int:
    from skiptrain.cli import CliError
    from skiptrain.config import preset

    preset(args.preset)  # unknown presets fail here, before anything runs
    skip = {s for s in args.skip.split(",") if s}
    unknown = skip - set(STEPS)
    if unknown:
        raise CliError(f"--skip={args.skip!r}: unknown step(s) {sorted(unknown)}; steps are {','.join(STEPS)}")
    from skiptrain.commands.hardware import writable_dir

    out = writable_dir("--out", args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = args.preset
    plan = [
        ("generate", ["generate", "--preset", p, "--out", str(out / "rtl")]),
        ("cosim", ["cosim", "--sim", "verilator", "--preset", p, "--seeds", "4"]),
        # 100 steps with the hardware's per-sample skip on: at tau 0.5 the loss unit skips
        # about a third of the samples of these first steps, and B and G run over the others
        ("cosim_train", ["cosim", "train", "--sim", "verilator", "--preset", p, "--steps", "100",
                         "--sizes", FLOW_MLP.get(p, ("", ""))[0], "--batch", FLOW_MLP.get(p, ("", ""))[1],
                         "--policy", "conf_sample", "--tau", "0.5"]),
        ("bench", ["bench", "gemm", "--preset", p, "--sims", "verilator", "--json", str(out / "bench_gemm.json")]),
        ("synth", ["synth", "--preset", p, "--target", "ecp5", "--seeds", "1",
                   "--json", str(out / "synth_ecp5.json"), "--markdown", str(out / "synth_ecp5.md"),
                   "--out", str(out / "synth_build")]),
        ("train", ["compare", "--dataset", "digits", "--model", "mlp",
                   "--policies", "none,conf_sample,conf_batch,wus", "--seeds", "1",
                   "--out", str(out / "train")]),
        ("train_accel", ["compare", "--backend", "accel", "--accel-preset", p, "--model", "mlp1",
                         "--width", FLOW_MLP.get(p, ("64,0",))[0].split(",")[1], "--momentum", "0",
                         "--lr", "0.25", "--batch-size", FLOW_MLP.get(p, ("", "32"))[1],
                         "--policies", "none,conf_sample", "--seeds", "1",
                         "--out", str(out / "train_accel")]),
    ]
    summary: dict = {"preset": p}
    failed = None
    for name, argv in plan:
        if name in skip:
            summary[name] = "skipped"
            continue
        if name in ("cosim_train", "train_accel") and p not in FLOW_MLP:
            summary[name] = f"skipped: the digits MLP does not fit preset {p}'s memories"
            continue
        try:
            _step(name, argv, summary)
        except _StepFailed as e:
            failed = e.args[0]
            break
    (out / "flow.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n=== flow summary", file=sys.stderr)
    for name, _ in plan:
        s = summary.get(name, "not run")
        state = s if isinstance(s, str) else ("ok" if s["exit_code"] == 0 else f"FAILED (exit {s['exit_code']})")
        wall = "" if isinstance(s, str) else f"  {s['wall_s']} s"
        print(f"  {name:9s} {state}{wall}", file=sys.stderr)
    headline = out / "train_accel" / "table.txt"
    if isinstance(summary.get("train_accel"), dict) and headline.exists():
        print("\n=== the digits MLP trained on the accelerator (golden model, bit-exact with the RTL): "
              "no skipping, the hardware's per-sample skip (conf_sample) and its matched random "
              "baseline", file=sys.stderr)
        print(headline.read_text(), file=sys.stderr, end="")
    print(f"results in {out}/", file=sys.stderr)
    return 1 if failed else 0
