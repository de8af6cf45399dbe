"""``skiptrain synth``: synthesise, place and route the accelerator, and report Fmax and size.

The work is done by :mod:`fpga.flow`; this module checks the arguments (before anything slow
is imported or run), prints progress on stderr and the summary table on stdout, and writes the
report as JSON and optionally Markdown.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

#: The design ``--top`` names by default: the accelerator, built from a Config.
DEFAULT_TOP = "rtl.top:Accelerator"
MAX_SEEDS = 10


def register(subparsers):
    p = subparsers.add_parser(
        "synth",
        help="synthesise and place and route the accelerator; report Fmax and resources",
        description="Synthesise the accelerator with Yosys and place and route it with nextpnr "
                    "(YoWASP builds), once per seed, and report the median Fmax, the cells "
                    "used, the same per PE, and the critical path. ECP5: LFE5U-85F speed 6, out "
                    "of context, MULT18X18D multipliers. iCE40: UP5K in a pin-light wrapper, "
                    "SB_MAC16 multipliers.")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="config preset (skiptrain.config.PRESETS: tiny, small, default)")
    p.add_argument("--config", default=None, metavar="FILE.json",
                   help="a config file instead of --preset (e.g. configs/default_kept_norm.json)")
    p.add_argument("--target", required=True, metavar="TARGET", help="ecp5 or ice40")
    p.add_argument("--json", required=True, metavar="FILE", dest="json_path",
                   help="write the report here as JSON")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as Markdown")
    p.add_argument("--seeds", default="3", metavar="N|S1,S2,...",
                   help=f"place and route with seeds 1..N, or with the seeds listed (e.g. 4,5: "
                        f"distinct, >= 1, at most {MAX_SEEDS}), and report the median Fmax "
                        f"(N in 0..{MAX_SEEDS}; default 3; 0: synthesis only, the cell counts of "
                        "the whole design and of each kept module, no Fmax)")
    p.add_argument("--jobs", default="1", metavar="N",
                   help="place and route up to N seeds at once, one per core (nextpnr is "
                        "single-threaded; default 1)")
    p.add_argument("--placer", metavar="NAME",
                   help="nextpnr's placer: static (electrostatic; the default on ecp5, where "
                        "the 8x8's heap placements did not route in hours) or heap (the "
                        "default on ice40)")
    p.add_argument("--timeout", default=None, metavar="SECONDS",
                   help="stop a seed's nextpnr that still runs after this many seconds and "
                        "fail with a message naming the seed and its log (default: no limit; "
                        "an 8x8 on ECP5 takes 20-60 minutes a seed)")
    p.add_argument("--out", metavar="DIR",
                   help="folder for the netlist, scripts and tool logs (default "
                        "build/synth/PRESET_TARGET); a seed that already ran there on the "
                        "same netlist is read back, not run again")
    p.add_argument("--top", default=DEFAULT_TOP, metavar="MODULE:NAME",
                   help="factory called with the Config to build the design "
                        f"(default {DEFAULT_TOP}; for stand-ins and experiments)")
    p.set_defaults(func=run)


def _seeds(text: str) -> list[int]:
    """``N`` is seeds 1..N (0: none); ``S1,S2,...`` is those seeds, in that order."""
    from skiptrain.cli import CliError

    if "," in text:
        rule = (f"a list of distinct integers >= 1, at most {MAX_SEEDS} of them "
                "(place and route runs with exactly these seeds)")
        try:
            seeds = [int(part) for part in text.split(",")]
        except ValueError:
            seeds = None
        if seeds is None or any(s < 1 for s in seeds):
            raise CliError(f"--seeds={text!r}: must be {rule}")
        if len(set(seeds)) != len(seeds):
            raise CliError(f"--seeds={text!r}: a seed is listed twice; must be {rule}")
        if len(seeds) > MAX_SEEDS:
            raise CliError(f"--seeds={text!r}: {len(seeds)} seeds; must be {rule}")
        return seeds
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or not 0 <= n <= MAX_SEEDS:
        raise CliError(f"--seeds={text!r}: must be an integer in 0..{MAX_SEEDS} "
                       "(place and route runs with seeds 1..N; 0 synthesises only) "
                       "or a list of seeds such as 4,5")
    return list(range(1, n + 1))


def _jobs(text: str) -> int:
    from skiptrain.cli import CliError

    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or n < 1:
        raise CliError(f"--jobs={text!r}: must be an integer >= 1 (seeds placed and routed at once)")
    return n


def _timeout(text: str | None) -> float | None:
    from skiptrain.cli import CliError

    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is None or not 0 < seconds < float("inf"):
        raise CliError(f"--timeout={text!r}: must be a finite number of seconds > 0 (a seed's "
                       "nextpnr running longer is stopped)")
    return seconds


def _factory(spec: str):
    from skiptrain.cli import CliError

    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise CliError(f"--top={spec!r}: must be MODULE:NAME, e.g. {DEFAULT_TOP}")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise CliError(f"--top={spec!r}: cannot import {module}: {e}") from None
    try:
        return getattr(mod, name)
    except AttributeError:
        raise CliError(f"--top={spec!r}: {module} has no {name}") from None


def run(args) -> int:
    from fpga.targets import PLACERS, FitError, check_fits, target
    from skiptrain.cli import CliError
    from skiptrain.config import Config, ConfigError, preset

    if (args.preset is None) == (args.config is None):
        raise CliError("give one of --preset NAME or --config FILE.json")
    try:
        tgt = target(args.target)
        cfg = preset(args.preset) if args.preset else Config.from_json(Path(args.config))
    except (FitError, ConfigError) as e:
        raise CliError(str(e)) from None
    what = args.preset or cfg.name
    seeds = _seeds(args.seeds)
    jobs = _jobs(args.jobs)
    timeout_s = _timeout(args.timeout)
    try:
        check_fits(cfg.replace(multiplier=tgt.multiplier, memory=tgt.memory), tgt, what)
    except FitError as e:
        raise CliError(f"{e}; choose a smaller preset for --target {tgt.name}") from None
    if args.placer is not None and args.placer not in PLACERS:
        raise CliError(f"--placer={args.placer!r}: must be one of {list(PLACERS)}")
    make_top = _factory(args.top)
    from skiptrain.commands.hardware import writable_dir, writable_file

    writable_file("--json", args.json_path)
    if args.markdown is not None:
        writable_file("--markdown", args.markdown)
    out = writable_dir("--out", args.out) if args.out is not None else Path("build") / "synth" / f"{what}_{tgt.name}"

    from fpga.flow import FlowError, run_flow
    from fpga.report import to_table, write_report

    def progress(msg: str):
        # one write per line: with --jobs, seeds report from several threads
        sys.stderr.write(f"[synth] {msg}\n")
        sys.stderr.flush()

    try:
        report = run_flow(make_top, cfg, tgt, out, seeds=seeds, jobs=jobs, placer=args.placer,
                          design=args.top, nextpnr_timeout_s=timeout_s,
                          progress=progress)
    except FlowError as e:
        print(f"skiptrain synth: {e}", file=sys.stderr)
        return 1
    write_report(report, args.json_path, args.markdown)
    progress(f"wrote {args.json_path}" + (f" and {args.markdown}" if args.markdown else ""))
    print(to_table(report))
    if not report["fits"]:
        print(f"skiptrain synth: {what!r} does not fit {tgt.device}: "
              f"{report['does_not_fit']}; the report has the synthesis numbers",
              file=sys.stderr)
        return 1
    check = report["dsp_check"]
    if not check["ok"]:
        print(f"skiptrain synth: {check['found']} DSPs in the netlist, fewer than the "
              f"{check['expected_min']} multipliers ({cfg.rows}x{cfg.cols} PEs): some were "
              "optimised away or not mapped to DSPs", file=sys.stderr)
        return 1
    return 0
