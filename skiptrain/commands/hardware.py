"""``skiptrain generate``, ``skiptrain cosim`` and ``skiptrain bench gemm|train|cosim``: the RTL
as Verilog, checked against the golden model in Icarus or Verilator, its GEMM throughput, and
the co-simulation's speed beside a raw C++ harness of the same Verilator model.

Arguments are checked before anything heavy is imported (amaranth, torch, cocotb load inside
the command functions). Progress goes to stderr, tables to stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

SIMS = ("icarus", "verilator")
DEFAULT_SHAPES = "64x64x64,256x256x256"
#: seeds are 32-bit (the LFSRs' and the operand generators'): a larger one would alias a smaller
SEED_MAX = (1 << 32) - 1


def _err(msg: str):
    from skiptrain.cli import CliError
    return CliError(msg)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register(subparsers):
    p = subparsers.add_parser(
        "generate", help="write the accelerator's Verilog and its config.json",
        description="Generate the Verilog of the accelerator for a config: DIR/skiptrain_top.v "
                    "and DIR/config.json (the config that made it).")
    p.add_argument("--preset", metavar="NAME", help="config preset (tiny, small, default)")
    p.add_argument("--config", metavar="FILE.json",
                   help="a config as JSON (e.g. a config.json written before) instead of --preset")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.set_defaults(func=generate)

    p = subparsers.add_parser(
        "cosim", help="run random programs or training steps on the Verilog and compare with "
                      "the golden model",
        description="Co-simulate the generated Verilog (cocotb) and compare every line, status "
                    "bit, counter and the cycle count with the golden model. 'cosim' (or "
                    "'cosim gemm') runs random and edge-aimed GEMM programs; 'cosim train' runs "
                    "training steps of the digits MLP (the program of skiptrain train --backend "
                    "accel) and checks every weight, bias, counter and cycle count after every "
                    "step. Exit code 1 on any mismatch.")
    p.add_argument("what", nargs="?", default="gemm", choices=("gemm", "train"),
                   help="gemm (default): GEMM programs; train: training steps")
    p.add_argument("--sim", required=True, metavar="SIM", help="icarus or verilator")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="config preset (default: tiny for gemm, default for train)")
    p.add_argument("--config", default=None, metavar="FILE.json",
                   help="a config file instead of a preset (e.g. configs/default_kept_norm.json)")
    g = p.add_argument_group("cosim train")
    g.add_argument("--steps", default=None, metavar="N", help="training steps (default 10)")
    g.add_argument("--sizes", default=None, metavar="N,N,...",
                   help="MLP layer sizes, 64 inputs and 10 classes (default 64,128,10)")
    g.add_argument("--batch", default=None, metavar="N", help="batch, a power of two (default 32)")
    g.add_argument("--lr", default=None, metavar="LR", help="learning rate, a power of two (default 0.25)")
    g.add_argument("--seed", dest="train_seed", default=None, metavar="N",
                   help="initialisation and data order (default 0)")
    g.add_argument("--rounding", default=None, choices=("nearest", "stochastic"),
                   help="the weight update's rounding (default nearest: half to even)")
    g.add_argument("--policy", default=None,
                   help="the skip policy: none (default), conf_sample, random_sample, conf_batch, "
                        "random_batch, or a per-sample and a batch policy stacked with '+' "
                        "(conf_sample+conf_batch); decided by the hardware from the first step on "
                        "(no warm-up)")
    g.add_argument("--tau", default=None, metavar="T",
                   help="conf_sample: skip a sample when its p_max (p_y with --confidence "
                        "true_class_prob) >= T, or its logit margin >= T with --confidence margin "
                        "(default 0.9; margin: ln 9)")
    g.add_argument("--confidence", default=None, choices=("max_prob", "true_class_prob", "margin"),
                   help="conf_batch, conf_sample: the confidence (default max_prob)")
    g.add_argument("--batch-tau", default=None, metavar="T",
                   help="conf_batch: skip a batch when its mean confidence >= T (default 0.95)")
    g.add_argument("--rate", default=None, metavar="R",
                   help="random_sample, random_batch: skip rate in [0, 1] (default 0.5)")
    g.add_argument("--normalize", default=None, choices=("batch", "kept"),
                   help="conf_sample, random_sample: normalise the gradient by the batch (default) "
                        "or by the kept samples (SKIP_CTRL's norm_kept; needs a config with "
                        "kept_norm, e.g. --config configs/default_kept_norm.json)")
    p.add_argument("--seeds", default=None, metavar="N",
                   help="gemm: programs of seeds 0..N-1, even seeds random, odd seeds aimed at "
                        "the requantizer's edges (default 10)")
    p.add_argument("--commands", default=None, metavar="N", help="gemm: GEMMs per program (default 3)")
    p.add_argument("--max-dim", default=None, metavar="N",
                   help="gemm: largest random M, K, N (default 12)")
    p.add_argument("--waves", action="store_true",
                   help="record waves (FST from Icarus, VCD from Verilator; a separate build)")
    p.set_defaults(func=_reports_sim_failures(cosim))

    p = subparsers.add_parser("bench", help="benchmarks of the RTL in co-simulation",
                              description="Benchmarks of the RTL in co-simulation.")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")
    bench_sub.required = True
    q = bench_sub.add_parser(
        "gemm", help="GEMM cycles, utilization and simulation speed",
        description="Run one GEMM per shape on the RTL, check it bit- and cycle-exact against "
                    "the golden model, and report cycles, ideal cycles M*K*N/(R*C), utilization, "
                    "simulation speed (simulated cycles per wall second of the compute phase) "
                    "per simulator, and the golden model's wall time. The scratchpad depth is "
                    "raised to the next power of two that holds A, B and C; memory depth does "
                    "not change the cycle count.")
    q.add_argument("--preset", required=True, metavar="NAME", help="config preset")
    q.add_argument("--shapes", default=None, metavar="MxKxN,...",
                   help=f"GEMM shapes (default {DEFAULT_SHAPES}, each dimension capped at the "
                        "largest the preset's commands hold: 255 on tiny)")
    q.add_argument("--sims", default=",".join(SIMS), metavar="SIM,...",
                   help="simulators to run, from icarus, verilator (default both). Icarus "
                        "runs only 400-700 cycles/s on the 8x8 (Verilator 250-370 k), so "
                        "256x256x256 takes about 10 minutes there: --sims verilator skips it")
    q.add_argument("--json", required=True, metavar="FILE", dest="json_path",
                   help="write the results here as JSON")
    q.add_argument("--seed", default="0", metavar="N", help="operand seed (default 0)")
    q.set_defaults(func=_reports_sim_failures(bench_gemm))
    _register_bench_train(bench_sub)
    _register_bench_cosim(bench_sub)


def _register_bench_cosim(bench_sub) -> None:
    q = bench_sub.add_parser(
        "cosim", help="the cocotb bench's speed beside a raw C++ harness of the same model",
        description="Build the same Verilator model twice: as the cocotb bench's toplevel and "
                    "inside a minimal C++ harness of the host bus (cocotb_tests/raw_harness.cpp: "
                    "no cocotb, no VPI). Run the same GEMM program both ways, alternately, check "
                    "both bit- and cycle-exact against the golden model and against each other, "
                    "and report the simulated cycles per wall second from START to done of "
                    "each (median over the repeats) and their ratio, as a table and JSON.")
    q.add_argument("--preset", default="default", metavar="NAME",
                   help="config preset (default default)")
    q.add_argument("--shape", default="256x256x256", metavar="MxKxN",
                   help="the GEMM (default 256x256x256)")
    q.add_argument("--repeat", default="3", metavar="N", help="runs of each (default 3)")
    q.add_argument("--opt", default=None, metavar="OPT",
                   help="C++ optimisation of both models: O3 (default: one file at -O3), O2, or "
                        "Os (verilated.mk's default); a non-default one is a separate build")
    q.add_argument("--seed", default="0", metavar="N", help="operand seed (default 0)")
    q.add_argument("--json", required=True, metavar="FILE", dest="json_path",
                   help="write the results here as JSON")
    q.set_defaults(func=_reports_sim_failures(bench_cosim))


def _register_bench_train(bench_sub) -> None:
    q = bench_sub.add_parser(
        "train", help="cycles of an on-chip training step by phase, utilisation, speeds",
        description="The digits MLP's training step on the accelerator: cycles per step split "
                    "by phase (F, loss, B, G with the fused update U), the array's utilisation "
                    "over the whole step (MACs / (R*C*cycles)), the golden model's steps per "
                    "second, and Verilator's (the steps are co-simulated and checked exact).")
    q.add_argument("--preset", default=None, metavar="NAME", help="config preset (default default)")
    q.add_argument("--config", default=None, metavar="FILE.json",
                   help="a config as JSON instead of --preset (e.g. configs/default_batch128.json, "
                        "the default array with memories that hold batch 128)")
    q.add_argument("--sizes", default="64,128,10", metavar="N,N,...", help="MLP sizes (default 64,128,10)")
    q.add_argument("--batch", default="32", metavar="N", help="batch (default 32)")
    q.add_argument("--steps", default="20", metavar="N",
                   help="steps co-simulated on Verilator (default 20); 0 skips Verilator")
    q.add_argument("--golden-steps", default="200", metavar="N",
                   help="steps timed on the golden model (default 200)")
    q.add_argument("--json", required=True, metavar="FILE", dest="json_path",
                   help="write the results here as JSON")
    q.set_defaults(func=_reports_sim_failures(bench_train))


def _sample_skip_sweep(chip, x, y, full: dict, batch: int) -> list[dict]:
    """The same step from the same state, keeping k = 1, 2, 4, ... of the samples (the
    per-sample confidence policy, CONF_TAU at the S that leaves k above it): its cycles, and
    the saving against the ideal (the skipped share of the full step's B, G and U cycles)."""
    from golden.loss_unit import exp_lookup, softmax_parts, tables
    from skiptrain.skip import SamplePolicy, SkipCtrl

    acc = chip.acc
    state = (acc.spad.clone(), acc.acc.clone())
    z = acc.load(chip.prog.z)  # the step's logits: its forward ran from the same weights
    exp, _ = tables(acc.cfg.frac_bits)
    s = exp_lookup(softmax_parts(z, acc.cfg)[2], exp).sum(0).sort().values.tolist()
    bg = full["phase_cycles_bwd_input"] + full["phase_cycles_bwd_weight"] + full["phase_cycles_update"]
    rows = []
    for kept in sorted({1, 2, 4, 6, 8, 12, 16, 24, batch - 1} & set(range(1, batch))):
        # S <= CONF_TAU skips: the batch - kept smallest S (ties may keep fewer)
        acc.spad, acc.acc = state[0].clone(), state[1].clone()
        acc.set_skip(ctrl=SkipCtrl(sample=SamplePolicy.CONFIDENCE).encode(),
                     conf_tau=int(s[batch - kept - 1]))
        res = chip.train_step(x, y)
        got = res.kept
        saved = full["cycles"] - res.counters["cycles"]
        ideal = bg * (batch - got) / batch
        rows.append({"kept": got, "cycles": res.counters["cycles"], "saved_cycles": saved,
                     "ideal_saved_cycles": ideal, "of_ideal": saved / ideal if ideal else 1.0})
    acc.spad, acc.acc = state
    acc.set_skip(ctrl=0)
    return rows


def bench_train(args) -> int:
    from skiptrain.config import preset
    from skiptrain.program import MlpSpec, build_mlp

    cfg = _config(args.preset or (None if args.config else "default"), args.config)
    writable_file("--json", args.json_path)
    batch = _int("--batch", args.batch, 1, cfg.max_dim)
    steps = _int("--steps", args.steps, 0, 100_000)
    golden_steps = _int("--golden-steps", args.golden_steps, 1, 1_000_000)
    try:
        sizes = tuple(int(v) for v in args.sizes.split(","))
        if sizes[0] != 64 or sizes[-1] != 10:
            raise ValueError
    except ValueError:
        raise _err(f"--sizes={args.sizes!r}: comma-separated integers from 64 inputs to 10 classes")
    spec = MlpSpec(sizes, batch)
    try:
        build_mlp(spec, cfg)
    except ValueError as e:
        raise _err(f"{e} (preset {cfg.name})")
    if steps:
        _simulator_ready("verilator")

    import torch

    from golden.mlp import MlpOnChip, quantize
    from golden.training.datasets import load_digits

    R, C = cfg.rows, cfg.cols
    data = load_digits()
    chip = MlpOnChip(spec, cfg, 0.25)
    torch.manual_seed(0)
    chip.load_float_weights([(lin.weight, lin.bias) for lin in
                             (torch.nn.Linear(sizes[l - 1], sizes[l]) for l in range(1, len(sizes)))])
    n = data.x_train.shape[0]
    xs, ys = data.x_train.reshape(n, -1), data.y_train
    x_all = quantize(xs, cfg.frac_bits, cfg)
    t = time.perf_counter()
    for s in range(golden_steps):
        lo = (s * batch) % (n - batch)
        res = chip.train_step(x_all[lo:lo + batch], ys[lo:lo + batch])
    golden_s = time.perf_counter() - t
    c = res.counters
    phases = {"F": c["phase_cycles_fwd"], "loss": c["loss_cycles"], "B": c["phase_cycles_bwd_input"],
              "G+U": c["phase_cycles_bwd_weight"], "U (separate)": c["phase_cycles_update"]}
    phases["fetch/decode/HALT"] = c["cycles"] - sum(phases.values())
    macs = {p: c[f"phase_macs_{k}"] for p, k in (("F", "fwd"), ("B", "bwd_input"), ("G+U", "bwd_weight"))}
    issued = sum(macs.values())
    network = sum(batch * sizes[l] * sizes[l + 1] * (3 if l else 2) for l in range(len(sizes) - 1))
    report = {"preset": cfg.name, "array": [R, C], "sizes": list(sizes), "batch": batch,
              "cycles_per_step": c["cycles"], "phase_cycles": phases, "phase_macs": macs,
              "issued_macs": issued, "network_macs": network,
              "utilization": issued / (R * C * c["cycles"]),
              "utilization_network_macs": network / (R * C * c["cycles"]),
              "golden": {"steps": golden_steps, "wall_s": golden_s,
                         "steps_per_s": golden_steps / golden_s},
              "note": "issued MACs are M*K*N of the step's GEMMs (the PERF counters), the bias "
                      "row/column included; network MACs leave the bias out and count F, B "
                      "(not the first layer) and G of every layer"}
    # a step whose batch the skip controller skips (the mean test with BATCH_TAU = 0 always
    # passes): what it costs, and how much of the ideal saving (every B, G and U cycle of a
    # kept step) it realises
    # (without the skip hardware, gradient_skip=false, there is nothing to skip: null and [])
    from skiptrain.skip import BatchPolicy, SkipCtrl
    report["batch_skip"], report["sample_skip"] = None, []
    if cfg.has_skip:
        chip.acc.set_skip(ctrl=SkipCtrl(BatchPolicy.CONFIDENCE).encode(), batch_tau=0)
        skipped = chip.train_step(x_all[:batch], ys[:batch])
        chip.acc.set_skip(ctrl=0)
        ideal = c["phase_cycles_bwd_input"] + c["phase_cycles_bwd_weight"] + c["phase_cycles_update"]
        saved = c["cycles"] - skipped.counters["cycles"]
        report["batch_skip"] = {"skipped_step_cycles": skipped.counters["cycles"], "saved_cycles": saved,
                                "ideal_saved_cycles": ideal, "of_ideal": saved / ideal,
                                "skipped_macs": {k: skipped.counters[f"skipped_macs_{k}"]
                                                 for k in ("bwd_input", "bwd_weight")}}
        report["sample_skip"] = _sample_skip_sweep(chip, x_all[:batch], ys[:batch], c, batch)
    if steps:
        from cocotb_tests.training_session import run_training

        _progress(f"co-simulating {steps} steps on verilator ...")
        r = run_training(cfg, "verilator", sizes=sizes, batch=batch, steps=steps, log=_progress)
        if r["passed"] != steps:
            for msg in r["errors"][:20]:
                print(f"    {msg}", file=sys.stderr)
            return 1
        report["verilator"] = {"steps": steps, "compute_wall_s": r["compute_s"],
                               "steps_per_s": steps / r["compute_s"],
                               "cycles_per_s": r["cycles"] / r["compute_s"],
                               "exact": True}
        report["golden_speedup_over_verilator"] = (report["golden"]["steps_per_s"]
                                                   / report["verilator"]["steps_per_s"])
    Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    print(f"training step of the {'-'.join(map(str, sizes))} MLP, batch {batch}, on {cfg.name} "
          f"({R}x{C}): {c['cycles']} cycles")
    print(f"{'phase':<20} {'cycles':>8} {'share':>7} {'MACs':>9}")
    for p, cyc in phases.items():
        print(f"{p:<20} {cyc:>8} {cyc / c['cycles']:>7.1%} {macs.get(p, 0):>9}")
    print(f"utilisation over the step: {report['utilization']:.2%} (issued MACs {issued} / "
          f"({R}*{C}*{c['cycles']})); network MACs only: {report['utilization_network_macs']:.2%}")
    if cfg.has_skip:
        print("per-sample skip: a step that keeps k of the batch's samples (B and G over the kept ones)")
        print(f"{'kept':>5} {'cycles':>7} {'saved':>7} {'ideal':>7} {'of ideal':>9}")
        for row in report["sample_skip"]:
            print(f"{row['kept']:>5} {row['cycles']:>7} {row['saved_cycles']:>7} "
                  f"{row['ideal_saved_cycles']:>7.0f} {row['of_ideal']:>9.2%}")
        bs = report["batch_skip"]
        print(f"a step whose batch the skip controller skips: {bs['skipped_step_cycles']} cycles "
              f"(forward, LOSS, 3 gated commands checked and counted); saves {bs['saved_cycles']} of "
              f"the ideal {bs['ideal_saved_cycles']} (every B, G and U cycle): {bs['of_ideal']:.2%}")
    else:
        print(f"{cfg.name} is built without the skip hardware (gradient_skip=false): no skip rows")
    print(f"golden model: {report['golden']['steps_per_s']:,.0f} steps/s ({golden_steps} steps)")
    if steps:
        v = report["verilator"]
        print(f"verilator: {v['steps_per_s']:,.1f} steps/s, {v['cycles_per_s']:,.0f} cycles/s "
              f"(compute phase, {steps} steps, every one checked exact); golden model "
              f"{report['golden_speedup_over_verilator']:,.0f}x faster per step")
    print(f"wrote {args.json_path}")
    return 0


def _reports_sim_failures(func):
    """A build or simulation that produced no results: its log tail and exit code 1, not a
    traceback (mismatches are results and get their own table)."""
    import functools

    @functools.wraps(func)
    def wrapper(args):
        from cocotb_tests.runner import CosimError
        try:
            return func(args)
        except CosimError as e:
            print(f"skiptrain {args.command}: {e}", file=sys.stderr)
            return 1
    return wrapper


# ---- argument checks (no heavy imports) -------------------------------------------------------
def _int(name: str, text: str, lo: int, hi: int | None = None, why: str = "") -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        v = None
    if v is None or v < lo or (hi is not None and v > hi):
        rule = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise _err(f"{name}={text!r}: must be {rule}" + (f" ({why})" if why else ""))
    return v


def _sim(text: str) -> str:
    if text not in SIMS:
        raise _err(f"--sim={text!r}: must be one of {', '.join(SIMS)}")
    return text


def _sims(text: str) -> list[str]:
    sims = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in sims if s not in SIMS]
    if not sims or bad:
        raise _err(f"--sims={text!r}: must be a comma-separated list of {', '.join(SIMS)}")
    return list(dict.fromkeys(sims))


def parse_shapes(text: str, flag: str = "--shapes") -> list[tuple[int, int, int]]:
    """``"64x64x64,8x16x8"`` -> [(64, 64, 64), (8, 16, 8)]; a bad entry names itself and the rule."""
    shapes = []
    for item in text.split(","):
        item = item.strip()
        parts = item.lower().split("x")
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            dims = ()
        if len(dims) != 3 or min(dims) < 1:
            raise _err(f"{flag}: {item!r} is not a GEMM shape: must be MxKxN with three "
                       "positive integers, e.g. 64x64x64")
        shapes.append(dims)
    return shapes


def _config(preset_name: str | None, config_file: str | None):
    from skiptrain.config import Config, preset

    if config_file and preset_name:
        raise _err("give --preset or --config, not both")
    if config_file:
        return Config.from_json(Path(config_file))
    if not preset_name:
        raise _err("one of --preset NAME or --config FILE.json is required")
    return preset(preset_name)


def _creatable(flag: str, path: str, what: str) -> Path:
    """``path`` (not empty) whose nearest existing ancestor is a folder, so ``what`` can be made."""
    if not path:
        raise _err(f"{flag}='': must be a {what} path")
    p = Path(path)
    ancestor = p.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _err(f"{flag}={path!r}: {str(ancestor)!r} is not a directory, so the {what} cannot be made")
    return p


def writable_file(flag: str, path: str) -> Path:
    """``path`` as a file the command can write at its end: refused now, before the work, if
    it is a folder or its folder cannot be made."""
    if path and Path(path).is_dir():
        raise _err(f"{flag}={path!r} is a directory: must be a file path")
    return _creatable(flag, path, "file")


def writable_dir(flag: str, path: str) -> Path:
    """``path`` as a folder the command can create (or an existing one), checked before the work."""
    if path and Path(path).exists() and not Path(path).is_dir():
        raise _err(f"{flag}={path!r} is a file: must be a folder (created if missing)")
    return _creatable(flag, path, "folder")


def _simulator_ready(sim: str) -> None:
    from cocotb_tests.runner import SimulatorNotFound, check_simulator

    try:
        check_simulator(sim)
    except SimulatorNotFound as e:
        raise _err(str(e)) from None


# ---- generate ---------------------------------------------------------------------------------
def generate(args) -> int:
    cfg = _config(args.preset, args.config)
    out = writable_dir("--out", args.out)
    from rtl.top import generate_verilog

    out.mkdir(parents=True, exist_ok=True)
    (out / "skiptrain_top.v").write_text(generate_verilog(cfg, name="skiptrain_top"))
    cfg.to_json(out / "config.json")
    print(f"wrote {out / 'skiptrain_top.v'} and {out / 'config.json'} "
          f"({cfg.name}: {cfg.rows}x{cfg.cols}, {cfg.data_width}-bit data)")
    return 0


# ---- cosim ------------------------------------------------------------------------------------
def cosim_scenarios(cfg, seeds: int, n_commands: int, max_dim: int) -> list:
    """The programs of ``skiptrain cosim``: even seeds random GEMMs, odd seeds GEMMs aimed at
    the requantizer's edges (golden.scenario.edge_gemm_scenario; their K is the generator's,
    not ``max_dim``), so a run of N seeds costs about what N random programs did."""
    from golden.scenario import edge_gemm_scenario, random_gemm_scenario

    return [random_gemm_scenario(cfg, s, n_commands=n_commands, max_dim=max_dim) if s % 2 == 0
            else edge_gemm_scenario(cfg, s, n_commands=n_commands) for s in range(seeds)]


#: the options of each kind of cosim run, with their defaults (parsed with None as the default,
#: so an option given with its default value is still told apart from one not given)
COSIM_TRAIN_OPTIONS = {"--steps": ("steps", "10"), "--sizes": ("sizes", "64,128,10"),
                       "--batch": ("batch", "32"), "--lr": ("lr", "0.25"),
                       "--seed": ("train_seed", "0"), "--rounding": ("rounding", "nearest"),
                       "--policy": ("policy", "none"), "--confidence": ("confidence", None),
                       "--tau": ("tau", None), "--batch-tau": ("batch_tau", None),
                       "--rate": ("rate", None), "--normalize": ("normalize", None)}
COSIM_GEMM_OPTIONS = {"--seeds": ("seeds", "10"), "--commands": ("commands", "3"),
                      "--max-dim": ("max_dim", "12")}


def _only_options_of(args, mine: dict, theirs: dict, mode: str, other: str) -> None:
    """Refuse the other mode's options that were given; fill this mode's defaults in."""
    given = [flag for flag, (attr, _) in theirs.items() if getattr(args, attr) is not None]
    if given:
        raise _err(f"{', '.join(given)}: option(s) of 'cosim {other}', not of 'cosim {mode}'")
    for attr, default in mine.values():
        if getattr(args, attr) is None:
            setattr(args, attr, default)


def cosim(args) -> int:
    if args.what == "train":
        return cosim_train(args)
    _only_options_of(args, COSIM_GEMM_OPTIONS, COSIM_TRAIN_OPTIONS, "gemm", "train")
    sim = _sim(args.sim)
    cfg = _config(args.preset or (None if args.config else "tiny"), args.config)
    seeds = _int("--seeds", args.seeds, 1, 10_000)
    n_commands = _int("--commands", args.commands, 1, cfg.prog_depth - 1,
                      f"preset {cfg.name} holds {cfg.prog_depth} commands, one of them the HALT")
    max_dim = _int("--max-dim", args.max_dim, 1, cfg.max_dim,
                   f"a command of preset {cfg.name} has {cfg.dim_width}-bit dimensions")
    _simulator_ready(sim)

    from cocotb_tests import runner
    from cocotb_tests.scenarios import scenario_entry
    from golden.scenario import compare
    from skiptrain.isa import Opcode

    try:
        scs = cosim_scenarios(cfg, seeds, n_commands, max_dim)
    except ValueError as e:
        raise _err(f"{e} (--commands={n_commands}, --max-dim={max_dim}, preset {cfg.name})")
    b = runner.build(cfg, sim, waves=args.waves, log=_progress)
    _progress(f"running {seeds} programs on {sim} ({seeds - seeds // 2} random, "
              f"{seeds // 2} edge-aimed) ...")
    entries = [scenario_entry(sc) for sc in scs]
    t = time.perf_counter()
    results = runner.run(b, entries, waves=args.waves)
    wall = time.perf_counter() - t

    rows, failed = [], 0
    for sc, e, r in zip(scs, entries, results):
        errors = list(r["errors"])
        if "status" in r:
            lines = {mem: {w: v for w, v in ls} for mem, ls in r["lines"].items()}
            errors += compare(sc, r["status"], lines, r["measured_cycles"])
        failed += bool(errors)
        shapes = " ".join(f"{c.m}x{c.k}x{c.n}" for c in sc.commands if c.opcode == Opcode.GEMM)
        rows.append((sc.name, shapes, e["expected"]["cycles"], r.get("measured_cycles"),
                     "PASS" if not errors else "FAIL", errors))
    w = max(len(r[1]) for r in rows)
    nw = max(22, max(len(r[0]) for r in rows))
    print(f"{'scenario':<{nw}} {'GEMMs (MxKxN)':<{w}} {'golden':>8} {'rtl':>8}  result")
    for name, shapes, gold, meas, verdict, errors in rows:
        print(f"{name:<{nw}} {shapes:<{w}} {gold:>8} {str(meas):>8}  {verdict}")
        for msg in errors[:10]:
            print(f"    {msg}")
    print(f"{seeds - failed}/{seeds} passed on {sim} ({cfg.name}, {cfg.rows}x{cfg.cols}); "
          f"simulation {wall:.1f} s" + (f"; build {b.build_s:.1f} s" if not b.reused else ""))
    if args.waves:
        print(f"waves: {Path(results[0]['run_dir']) / runner.WAVE_FILES[sim]}")
    _print_edge_coverage(cfg, scs)
    return 1 if failed else 0


def cosim_train(args) -> int:
    from skiptrain.program import MlpSpec, build_mlp, lr_shift_of

    _only_options_of(args, COSIM_TRAIN_OPTIONS, COSIM_GEMM_OPTIONS, "train", "gemm")
    sim = _sim(args.sim)
    cfg = _config(args.preset or (None if args.config else "default"), args.config)
    if args.waves:
        raise _err("--waves: cosim train records no waves (use cosim gemm, or the cocotb runner's "
                   "waves on a training session from cocotb_tests.training_session)")
    steps = _int("--steps", args.steps, 1, 100_000)
    batch = _int("--batch", args.batch, 1, cfg.max_dim)
    seed = _int("--seed", args.train_seed, 0, SEED_MAX, "a 32-bit seed")
    try:
        sizes = tuple(int(v) for v in args.sizes.split(","))
    except ValueError:
        raise _err(f"--sizes={args.sizes!r}: must be comma-separated integers, e.g. 64,128,10")
    if len(sizes) < 2 or sizes[0] != 64 or sizes[-1] != 10:
        raise _err(f"--sizes={args.sizes!r}: the digits MLP starts with 64 inputs and ends with 10 classes")
    try:
        lr = float(args.lr)
    except ValueError:
        raise _err(f"--lr={args.lr!r}: must be a number, a power of two (e.g. 0.25)") from None
    try:
        lr_shift_of(lr, cfg)
        build_mlp(MlpSpec(sizes, batch), cfg)
    except ValueError as e:
        raise _err(f"{e} (preset {cfg.name})")
    options = {}
    for flag, key, value, policies in (("--confidence", "confidence", args.confidence, ("conf_batch", "conf_sample")),
                                       ("--batch-tau", "batch_tau", args.batch_tau, ("conf_batch",)),
                                       ("--tau", "tau", args.tau, ("conf_sample",)),
                                       ("--rate", "rate", args.rate, ("random_sample", "random_batch")),
                                       ("--normalize", "normalize", args.normalize,
                                        ("conf_sample", "random_sample"))):
        if value is None:
            continue
        if not set(args.policy.split("+")) & set(policies):
            raise _err(f"{flag}: an option of --policy {' or '.join(policies)}, not of {args.policy}")
        if key in ("confidence", "normalize"):
            options[key] = value
        else:
            try:
                options[key] = float(value)
            except ValueError:
                raise _err(f"{flag}={value!r}: must be a number")
    try:
        from golden.training.accel import check_stack, stack_registers
        from golden.training.registry import make_policy, split_spec
        check_stack(split_spec(args.policy))
        stack_registers(make_policy(args.policy, options).policies, 0, batch, cfg, seed)
    except ValueError as e:
        raise _err(str(e))
    _simulator_ready(sim)

    from cocotb_tests.training_session import run_training

    _progress(f"running {steps} training steps of the {'-'.join(map(str, sizes))} MLP "
              f"(batch {batch}, lr {lr}, {args.rounding} rounding, policy {args.policy}) on "
              f"{sim} ({cfg.name}, {cfg.rows}x{cfg.cols}) ...")
    r = run_training(cfg, sim, sizes=sizes, batch=batch, steps=steps, seed=seed, lr=lr,
                     rounding=args.rounding, policy=args.policy, options=options, log=_progress)
    for msg in r["errors"][:20]:
        print(f"    {msg}")
    verdict = "PASS" if r["passed"] == steps else "FAIL"
    print(f"{r['passed']}/{steps} steps bit- and cycle-exact on {sim} ({cfg.name}): every "
          f"weight and bias line, status bit, counter and START-to-done cycle count; "
          f"{r['cycles_per_step']} cycles per step; the hardware skipped B, G and U of "
          f"{r['skipped_steps']} of {steps} batches and {sum(r['skipped_samples'])} of "
          f"{steps * batch} samples ({args.policy}); {verdict}")
    print(f"simulation {r['sim_s']:.1f} s for {r['cycles']} cycles (with loading and the "
          f"per-step read-back of every weight); golden model {r['golden_s']:.1f} s"
          + (f"; build {r['build_s']:.1f} s" if not r["build_reused"] else ""))
    return 0 if verdict == "PASS" else 1


def _print_edge_coverage(cfg, scs) -> None:
    """How many QUANT results of the run fell in each edge class of the requantizer (from the
    golden model's accumulators; a result may count in several classes), and which classes
    the run missed."""
    from golden.scenario import EDGE_CLASSES, edge_coverage, unreachable_edge_classes

    counts = edge_coverage(scs)
    unreachable = unreachable_edge_classes(cfg)
    why = {"acc_wrap": f"unreachable on {cfg.name}: K <= {cfg.max_dim} full-scale products "
                       f"cannot overflow {cfg.acc_width} bits"}
    print(f"requantizer edge coverage ({len(scs) // 2} of {len(scs)} programs edge-aimed; "
          "QUANT results per class, from the golden model):")
    print(f"{'edge class':<20} {'results':>8}")
    for name in EDGE_CLASSES:
        note = f"  ({why[name]})" if name in unreachable else ""
        print(f"{name:<20} {counts[name]:>8}{note}")
    missed = [n for n in EDGE_CLASSES if not counts[n]]
    if not missed:
        print("every edge class covered")
    else:
        print("not covered: " + ", ".join(n + (" (unreachable)" if n in unreachable else "")
                                          for n in missed))


# ---- bench gemm -------------------------------------------------------------------------------
def _next_pow2(x: int) -> int:
    return 1 << max(1, (x - 1).bit_length())


def bench_config(cfg, m: int, k: int, n: int):
    """``cfg`` with the scratchpad deep enough for packed A (MxK), B (KxN) and C (MxN)."""
    from skiptrain.layout import words_per_row

    V = cfg.banks
    need = m * words_per_row(k, V) + k * words_per_row(n, V) + m * words_per_row(n, V)
    if need <= cfg.spad_depth:
        return cfg
    depth = _next_pow2(need)
    if depth > 1 << 20:
        raise _err(f"--shapes: {m}x{k}x{n} needs {need} scratchpad words per bank; the most a "
                   "config allows is 2**20")
    return cfg.replace(spad_depth=max(depth, cfg.spad_depth))


def gemm_scenario(cfg, m: int, k: int, n: int, seed: int):
    """C = A . B with random full-range operands, requantized by frac_bits into the scratchpad."""
    import torch

    from golden.scenario import Scenario
    from skiptrain.isa import Command, OutMode
    from skiptrain.layout import Region

    V = cfg.banks
    a = Region.packed(0, m, k, V)
    b = Region.packed(a.end(V), k, n, V)
    c = Region.packed(b.end(V), m, n, V)
    g = torch.Generator().manual_seed(seed)
    rand = lambda r, cc: torch.randint(cfg.data_min, cfg.data_max + 1, (r, cc), generator=g)
    sc = Scenario(cfg, name=f"gemm {m}x{k}x{n}")
    sc.inputs = [("spad", a, rand(m, k)), ("spad", b, rand(k, n))]
    sc.commands = [Command.gemm(m, k, n, a, b, c, out_mode=OutMode.QUANT, shift=cfg.frac_bits),
                   Command()]
    sc.outputs = [("spad", c)]
    return sc


def default_shapes(cfg) -> str:
    """bench gemm's default shapes, each dimension capped at what the config's commands hold
    (tiny: 64x64x64,255x255x255), so ``skiptrain flow --preset tiny`` runs its benchmark."""
    return ",".join("x".join(str(min(int(d), cfg.max_dim)) for d in shape.split("x"))
                    for shape in DEFAULT_SHAPES.split(","))


def bench_gemm(args) -> int:
    from skiptrain.config import preset

    cfg = preset(args.preset)
    writable_file("--json", args.json_path)
    shapes = parse_shapes(default_shapes(cfg) if args.shapes is None else args.shapes)
    sims = _sims(args.sims)
    seed = _int("--seed", args.seed, 0, SEED_MAX, "a 32-bit seed")
    for m, k, n in shapes:
        if max(m, k, n) > cfg.max_dim:
            raise _err(f"--shapes: {m}x{k}x{n} has a dimension over {cfg.max_dim}, the largest "
                       f"a command of preset {cfg.name} can hold ({cfg.dim_width} bits)")
    plans = [((m, k, n), bench_config(cfg, m, k, n)) for m, k, n in shapes]
    for sim in sims:
        _simulator_ready(sim)

    from cocotb_tests import runner
    from cocotb_tests.scenarios import scenario_entry, timed_expected

    R, C = cfg.rows, cfg.cols
    results = []
    rate: dict[str, float] = {}  # cycles/s seen so far per simulator, for time estimates
    for (m, k, n), scfg in plans:
        _progress(f"[{m}x{k}x{n}] golden model (spad_depth={scfg.spad_depth}) ...")
        sc = gemm_scenario(scfg, m, k, n, seed)
        (gold, res), golden_wall = timed_expected(sc)
        entry = scenario_entry(sc, expected=(gold, res))
        ideal = m * k * n / (R * C)
        row = {"M": m, "K": k, "N": n, "cycles": None, "ideal_cycles": ideal,
               "utilization": None, "golden_cycles": int(res.cycles),
               "memory": {"spad_depth": scfg.spad_depth, "acc_depth": scfg.acc_depth},
               "sim": {}, "golden_wall_s": golden_wall,
               "golden_cycles_per_s": res.cycles / golden_wall}
        for sim in sims:
            b = runner.build(scfg, sim, log=_progress)
            eta = (f", about {res.cycles / rate[sim] / 60:.1f} min at {rate[sim]:,.0f} cycles/s"
                   if sim in rate else "")
            _progress(f"[{m}x{k}x{n}] {sim}: load, run ({res.cycles} cycles{eta}), read back ...")
            r = runner.run(b, [entry])[0]
            if r["errors"]:
                print(f"{m}x{k}x{n} on {sim} differs from golden:", file=sys.stderr)
                for msg in r["errors"][:20]:
                    print(f"    {msg}", file=sys.stderr)
                return 1
            cycles = r["status"]["counters"]["cycles"]
            if not cycles == res.cycles == r["measured_cycles"]:  # compared already; belt and braces
                raise RuntimeError(f"{m}x{k}x{n} on {sim}: CYCLES {cycles}, START->done "
                                   f"{r['measured_cycles']}, golden {res.cycles}")
            row["cycles"] = cycles
            row["utilization"] = ideal / cycles
            row["sim"][sim] = {"cycles_per_s": cycles / r["compute_wall_s"],
                               "compute_wall_s": r["compute_wall_s"],
                               "load_wall_s": r["load_wall_s"],
                               "readback_wall_s": r["readback_wall_s"],
                               "build_s": 0.0 if b.reused else b.build_s}
            rate[sim] = cycles / r["compute_wall_s"]
            _progress(f"[{m}x{k}x{n}] {sim}: {cycles} cycles, exact; "
                      f"{cycles / r['compute_wall_s']:,.0f} cycles/s")
        results.append(row)

    report = {"preset": cfg.name, "config": cfg.to_dict(), "sims": sims, "seed": seed,
              "note": "spad_depth is raised per shape to fit A, B and C; memory depth does not "
                      "change the cycle count. cycles: the RTL's CYCLES counter, equal to the "
                      "golden cycle model and to the START-to-done time (checked).",
              "results": results}
    Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")

    hdr = f"{'MxKxN':>13} {'cycles':>9} {'ideal':>9} {'util':>7} {'golden s':>9}"
    for sim in sims:
        hdr += f" {sim + ' cyc/s':>16} {'load s':>7} {'run s':>7} {'read s':>7}"
    print(f"preset {cfg.name} ({R}x{C}); memory depth raised per shape where needed "
          "(does not change cycles)")
    print(hdr)
    for row in results:
        line = (f"{row['M']}x{row['K']}x{row['N']}".rjust(13)
                + f" {row['cycles']:>9} {row['ideal_cycles']:>9.0f} {row['utilization']:>7.2%}"
                + f" {row['golden_wall_s']:>9.3f}")
        for sim in sims:
            s = row["sim"][sim]
            line += (f" {s['cycles_per_s']:>16,.0f} {s['load_wall_s']:>7.2f}"
                     f" {s['compute_wall_s']:>7.2f} {s['readback_wall_s']:>7.2f}")
        print(line)
    print(f"wrote {args.json_path}")
    return 0


# ---- bench cosim ------------------------------------------------------------------------------
def bench_cosim(args) -> int:
    import statistics

    from skiptrain.config import preset
    from skiptrain.driver import lines_digest

    cfg = preset(args.preset)
    writable_file("--json", args.json_path)
    shapes = parse_shapes(args.shape, "--shape")
    if len(shapes) != 1:
        raise _err(f"--shape={args.shape!r}: must be one MxKxN")
    (m, k, n), = shapes
    if max(m, k, n) > cfg.max_dim:
        raise _err(f"--shape: {m}x{k}x{n} has a dimension over {cfg.max_dim}, the largest a "
                   f"command of preset {cfg.name} can hold")
    repeat = _int("--repeat", args.repeat, 1)
    seed = _int("--seed", args.seed, 0, SEED_MAX, "a 32-bit seed")
    from cocotb_tests import raw, runner
    opt = runner.DEFAULT_CXX_OPT if args.opt is None else args.opt
    if opt not in runner.CXX_OPTS:
        raise _err(f"--opt={args.opt!r}: must be one of {', '.join(runner.CXX_OPTS)}")
    _simulator_ready("verilator")
    from cocotb_tests.scenarios import scenario_entry

    scfg = bench_config(cfg, m, k, n)
    _progress(f"[{m}x{k}x{n}] golden model (spad_depth={scfg.spad_depth}) ...")
    sc = gemm_scenario(scfg, m, k, n, seed)
    entry = scenario_entry(sc)
    cycles = entry["expected"]["cycles"]
    b = runner.build(scfg, "verilator", opt=opt, log=_progress)
    rb = raw.build_raw(scfg, opt=opt, log=_progress)
    runs = {"cocotb": [], "raw": []}
    digests = set()
    for i in range(repeat):
        for way, go in (("cocotb", lambda: runner.run(b, [entry])),
                        ("raw", lambda: raw.run_raw(rb, [entry]))):
            _progress(f"[{m}x{k}x{n}] run {i + 1}/{repeat}, {way} ({cycles} cycles) ...")
            r = go()[0]
            if r["errors"]:
                print(f"{m}x{k}x{n} on {way} differs from golden:", file=sys.stderr)
                for msg in r["errors"][:20]:
                    print(f"    {msg}", file=sys.stderr)
                return 1
            digests.add(lines_digest(r["lines"]))
            runs[way].append({"cycles": r["measured_cycles"], "wait_wall_s": r["wait_wall_s"],
                              "wait_cpu_s": r["wait_cpu_s"],
                              "cycles_per_s": r["measured_cycles"] / r["wait_wall_s"],
                              "cycles_per_cpu_s": r["measured_cycles"] / r["wait_cpu_s"]})
    if len(digests) != 1:  # both matched golden, so this cannot happen unless compare is broken
        raise RuntimeError(f"result digests differ between runs: {sorted(digests)}")
    speed = {way: statistics.median(x["cycles_per_s"] for x in rs) for way, rs in runs.items()}
    cpu = {way: statistics.median(x["cycles_per_cpu_s"] for x in rs) for way, rs in runs.items()}
    report = {"preset": cfg.name, "config": scfg.to_dict(), "shape": [m, k, n], "seed": seed,
              "opt": opt, "cycles": cycles, "repeat": repeat, "result_digest": digests.pop(),
              "note": "cycles/s: START-to-done cycles over the wall time of waiting for done "
                      "(cocotb: the bench's wait for done; raw: the harness's clock loop); "
                      "cycles_per_cpu_s: over that wait's process CPU time, which a loaded "
                      "machine disturbs less; medians over the repeats; every run checked exact "
                      "against the golden model (every result line, status, counter, "
                      "START-to-done cycles).",
              "cocotb": {"cycles_per_s": speed["cocotb"], "cycles_per_cpu_s": cpu["cocotb"],
                         "runs": runs["cocotb"]},
              "raw": {"cycles_per_s": speed["raw"], "cycles_per_cpu_s": cpu["raw"],
                      "runs": runs["raw"]},
              "ratio": speed["cocotb"] / speed["raw"], "ratio_cpu": cpu["cocotb"] / cpu["raw"]}
    Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    print(f"preset {cfg.name} ({cfg.rows}x{cfg.cols}), {m}x{k}x{n} GEMM, {cycles} cycles, "
          f"C++ -{opt}; median of {repeat} runs each, every run exact")
    print(f"{'':>8} {'cycles/s':>12} {'per CPU s':>12}   runs (cycles/s)")
    for way in ("cocotb", "raw"):
        each = ", ".join(f"{x['cycles_per_s']:,.0f}" for x in runs[way])
        print(f"{way:>8} {speed[way]:>12,.0f} {cpu[way]:>12,.0f}   {each}")
    print(f"cocotb / raw: {report['ratio']:.1%} (wall), {report['ratio_cpu']:.1%} (CPU)")
    print(f"wrote {args.json_path}")
    return 0
