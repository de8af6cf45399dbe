"""The synthesis report: reading Yosys's and nextpnr's JSON, and writing Markdown and tables.

The report itself is a plain dict (built by :func:`fpga.flow.run_flow`) so it is written as
JSON unchanged; this module only reads the tools' outputs and renders the dict for people.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from .paths import register_of, unit_of

__all__ = ["count_cells", "fmax_of", "critical_path_summary", "late_endpoints", "late_registers",
           "to_markdown", "to_table", "write_report"]

#: How many of the slowest steps of the critical path the summary keeps.
TOP_STEPS = 8
#: endpoints listed per seed by late_endpoints
LATE_ENDPOINTS = 20


def count_cells(stat: dict) -> dict[str, int]:
    """Cell type -> count over the whole design, from ``stat -json``."""
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        by_type = stat["design"]["num_cells_by_type"]
    else:
        by_type = {}
        for mod in stat.get("modules", {}).values():
            for k, v in mod.get("num_cells_by_type", {}).items():
                by_type[k] = by_type.get(k, 0) + v
    # $scopeinfo cells only carry Amaranth's hierarchy names; they are no hardware.
    return {k: int(v) for k, v in by_type.items() if k != "$scopeinfo"}


def module_cells(stat: dict) -> dict[str, dict[str, int]]:
    """Cell type -> count of every module kept whole by synthesis, each module's own cells
    (one instance; its kept submodules appear as cells of their module's name)."""
    out = {}
    for name, mod in stat.get("modules", {}).items():
        cells = {k: int(v) for k, v in mod.get("num_cells_by_type", {}).items()
                 if k != "$scopeinfo"}
        out[name.lstrip("\\")] = dict(sorted(cells.items()))
    return dict(sorted(out.items()))


def fmax_of(report: dict) -> float:
    """The lowest achieved Fmax over the clocks of a nextpnr ``--report`` file, in MHz."""
    clocks = report.get("fmax", {})
    if not clocks:
        raise ValueError("the nextpnr report has no clock: is the design purely combinational, "
                         "or was everything optimised away?")
    return float(min(c["achieved"] for c in clocks.values()))


def _where(end: dict) -> str:
    return f"{end.get('cell', '?')}.{end.get('port', '?')}"


def critical_path_summary(report: dict) -> dict:
    """The slowest register-to-register path nextpnr reports: its ends, its delay split into
    logic and routing, and its :data:`TOP_STEPS` slowest steps (the nets and cells to pipeline
    or to place closer)."""
    paths = [p for p in report.get("critical_paths", []) if p.get("path")]
    if not paths:
        return {"total_ns": None, "steps": []}
    path = max(paths, key=lambda p: sum(e["delay"] for e in p["path"]))
    elems = path["path"]
    steps = []
    for e in elems:
        step = {"type": e["type"], "delay_ns": round(e["delay"], 3)}
        if e["type"] == "routing":
            step["net"] = e.get("net", "?")
            step["from"], step["to"] = _where(e["from"]), _where(e["to"])
        else:
            step["cell"] = e["from"].get("cell", "?")
            step["from_port"], step["to_port"] = e["from"].get("port"), e["to"].get("port")
        steps.append(step)
    by_type = lambda t: round(sum(e["delay"] for e in elems if e["type"] == t), 3)
    slowest = sorted(range(len(steps)), key=lambda i: -steps[i]["delay_ns"])[:TOP_STEPS]
    logic = [s for s in steps if s["type"] == "logic"]
    # Carry propagation (entering a cell at FCI/CIN) is fast and fixed; the levels that cost
    # are those entering a LUT or the start of an adder, plus the routing between them.
    carry = sum(1 for s in logic if s["from_port"] in ("FCI", "CIN"))
    modules = []
    for s in steps:
        name = s.get("cell") or s.get("from", "").rsplit(".", 1)[0]
        module = name.split("[")[0].rsplit(".", 1)[0] if "." in name.split("[")[0] else "(top)"
        if not modules or modules[-1] != module:
            modules.append(module)
    return {
        "clock": f"{path.get('from')} -> {path.get('to')}",
        "total_ns": round(sum(e["delay"] for e in elems), 3),
        "logic_ns": round(by_type("logic") + by_type("clk-to-q") + by_type("setup"), 3),
        "routing_ns": by_type("routing"),
        "logic_levels": len(logic) - carry,
        "carry_steps": carry,
        "modules": modules,
        "startpoint": _where(elems[0]["from"]),
        "endpoint": _where(elems[-1]["to"]),
        "slowest_steps": [dict(steps[i], index=i) for i in sorted(slowest)],
        "steps": steps,
    }


def _arrivals(report: dict) -> dict[str, tuple[float, str]]:
    """Endpoint pin -> (latest arrival in ns, the net that reaches it), from a report written
    with ``--detailed-timing-report``; empty without per-net timings."""
    latest: dict = {}
    for net in report.get("detailed_net_timings", []):
        for end in net.get("endpoints", []):
            key = f"{end.get('cell', '?')}.{end.get('port', '?')}"
            t = max(end["delay"])
            if t > latest.get(key, (-1.0, ""))[0]:
                latest[key] = (t, net["net"])
    return latest


def late_endpoints(report: dict, period_ns: float, count: int = LATE_ENDPOINTS) -> dict:
    """The arrival time at every timing endpoint, from a report written with
    ``--detailed-timing-report`` (nextpnr lists, per net, each endpoint it reaches with the
    arrival there after placement and routing): how many endpoints there are, how many arrive
    later than ``period_ns``, and the ``count`` latest with the net that reaches them. Where
    the critical path names one path, this names every one that would be next. Empty when the
    report has no per-net timings."""
    latest = _arrivals(report)
    if not latest:
        return {}
    per_register = _count_registers(latest, period_ns, lanes=True)
    ranked = sorted(latest.items(), key=lambda kv: -kv[1][0])
    over = [k for k, (t, _) in ranked if t > period_ns]
    return {"period_ns": round(period_ns, 3), "endpoints": len(latest), "over": len(over),
            "over_per_unit": dict(Counter(unit_of(k) for k in over).most_common()),
            "over_per_register": dict(list(per_register.items())[:count]),
            "latest": [{"endpoint": k, "net": n, "arrival_ns": round(t, 3)}
                       for k, (t, n) in ranked[:count]]}


def late_registers(report: dict, period_ns: float, lanes: bool = True) -> dict[str, int]:
    """Register -> how many of its endpoints (data, clock-enable and reset pins, every bit)
    arrive later than ``period_ns``, most first: what to cut next, a level finer than
    ``over_per_unit`` (:func:`late_endpoints` keeps the first ``count`` as
    ``over_per_register``). With ``lanes``, a register's per-lane copies (names ending in digits,
    ``e1_data0`` .. ``e1_data7``) count as one, ``e1_data*``. Empty without per-net timings."""
    return _count_registers(_arrivals(report), period_ns, lanes)


def _count_registers(arrivals: dict, period_ns: float, lanes: bool) -> dict[str, int]:
    counts: Counter = Counter()
    for key, (t, _) in arrivals.items():
        if t > period_ns:
            name = register_of(key)
            counts[re.sub(r"(?<=[A-Za-z_])\d+$", "*", name) if lanes else name] += 1
    return dict(counts.most_common())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return str(v)


def _rows(report: dict) -> list[tuple[str, str, str]]:
    per_pe = report["per_pe"]
    cap = report.get("capacity", {})
    if report.get("synthesis_only"):
        rows = [("Fmax", "none: synthesis only", "no place and route")]
    elif report.get("fits", True):
        rows = [("Fmax (median)", f"{report['fmax_mhz']:.1f} MHz",
                 f"target {report['target_mhz']:g} MHz: "
                 + ("met" if report["meets_target"] else "NOT met")),
                ("Fmax per seed",
                 ", ".join(f"{s}: {v:.1f}" for s, v in report["fmax_per_seed"].items()), "MHz")]
    else:
        rows = [("Fmax", "none: does not fit", report["does_not_fit"])]
    for key, label in (("luts", "LUT4"), ("ffs", "FF"), ("carry", "carry cells"),
                       ("dsps", "DSP"), ("brams", "block RAM")):
        total = report.get(key, 0)
        of = f" of {cap[key]} ({100 * total / cap[key]:.1f} %)" if key in cap else ""
        pe = f"{_fmt(per_pe[key])} / PE" if key in per_pe else ""
        rows.append((label, f"{total}{of}", pe))
    return rows


def to_table(report: dict) -> str:
    """A plain-text summary for the terminal."""
    rows = [("", report["design"], f"{report['target']} {report['device']}")] + _rows(report)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lines.append(f"per PE = {report['per_pe']['note']}")
    for name, cells in report.get("module_cells", {}).items():
        # the kept units, not each PE or register copy (rtl.kept_register)
        if name != "top" and not name.startswith("top.array") and ".copy_" not in name:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(cells.items()) if not k.startswith("top."))
            lines.append(f"module {name}: {kinds}")
    cp = report.get("critical_path", {})
    if cp.get("total_ns") is not None:
        lines.append(f"critical path (seed {cp['seed']}): {cp['total_ns']:.2f} ns = "
                     f"{cp['logic_ns']:.2f} logic + {cp['routing_ns']:.2f} routing, "
                     f"{cp['startpoint']} -> {cp['endpoint']}")
    if cp.get("total_ns") is not None:
        late = report.get("late_endpoints", {}).get(str(cp["seed"]), {})
        if late:
            units = ", ".join(f"{u} {n}" for u, n in late.get("over_per_unit", {}).items())
            lines.append(f"endpoints after routing (seed {cp['seed']}): {late['over']} of "
                         f"{late['endpoints']} arrive after {late['period_ns']:g} ns"
                         + (f" ({units})" if units else "") + "; latest "
                         + ", ".join(f"{e['endpoint']} {e['arrival_ns']:.2f}"
                                     for e in late["latest"][:3]))
    est = report.get("path_estimate")
    if est:
        worst = ", ".join(f"{r} {t:.2f}" for r, t in est["worst_registers"].items())
        lines.append(f"path estimate (no placement, {est['route_ns']:g} ns a net): {est['over']} of "
                     f"{est['endpoints']} endpoints above {est['period_ns']:g} ns"
                     + (f"; worst {worst}" if worst else ""))
    check = report["dsp_check"]
    if not check["ok"]:
        lines.append(f"DSP CHECK FAILED: {check['found']} DSPs < {check['expected_min']} expected")
    if not report.get("fits", True):
        lines.append(f"DOES NOT FIT {report['device']}: {report['does_not_fit']} "
                     "(cell counts above are Yosys's, before placement)")
    return "\n".join(lines)


def to_markdown(report: dict) -> str:
    cfg = report["config"]
    out = [f"# Synthesis report: {report['design']} on {report['target']}", "",
           f"Device {report['device']}; config `{cfg.get('name')}` ({cfg['rows']}x{cfg['cols']} "
           f"PEs, data_width {cfg['data_width']}, multiplier `{cfg['multiplier']}`); "
           f"nextpnr `{' '.join(report['nextpnr_args'])}`, placer `{report.get('placer', 'heap')}`, "
           f"seeds {report['seeds']}.", "",
           "| quantity | whole design | per PE |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in _rows(report)]
    out += ["", f"Per PE = {report['per_pe']['note']}.", ""]
    check = report["dsp_check"]
    out += [f"DSP check: {check['found']} DSPs, at least {check['expected_min']} expected: "
            + ("ok" if check["ok"] else "**FAILED** (multipliers optimised away or not on DSPs)"),
            ""]
    if not report.get("fits", True):
        out += [f"**The design does not fit {report['device']}**: nextpnr needs "
                f"{report['does_not_fit']}. The cell counts above are Yosys's, before "
                "placement; there is no Fmax.", ""]
    cp = report.get("critical_path", {})
    if cp.get("total_ns") is not None:
        out += [f"## Critical path (seed {cp['seed']}, {cp['clock']})", "",
                f"{cp['total_ns']:.3f} ns: {cp['logic_ns']:.3f} ns in cells, "
                f"{cp['routing_ns']:.3f} ns routing; {cp['logic_levels']} LUT or adder-input "
                f"levels and {cp['carry_steps']} carry steps; from `{cp['startpoint']}` to "
                f"`{cp['endpoint']}`, through {' -> '.join(cp['modules'])}.", "",
                f"The {len(cp['slowest_steps'])} slowest steps, in path order:", "",
                "| # | type | delay (ns) | net or cell |", "|---|---|---|---|"]
        for s in cp["slowest_steps"]:
            what = (f"net `{s['net']}` ({s['from']} -> {s['to']})" if s["type"] == "routing"
                    else f"`{s['cell']}` {s['from_port']} -> {s['to_port']}")
            out.append(f"| {s['index']} | {s['type']} | {s['delay_ns']:.3f} | {what} |")
        out.append("")
    for seed, late in report.get("late_endpoints", {}).items():
        if late:
            out += [f"## Endpoints after routing (seed {seed})", "",
                    f"{late['over']} of {late['endpoints']} endpoints arrive after "
                    f"{late['period_ns']:g} ns (nextpnr's per-net timings); the latest:", "",
                    "| endpoint | arrival (ns) | net |", "|---|---|---|"]
            out += [f"| `{e['endpoint']}` | {e['arrival_ns']:.3f} | `{e['net']}` |"
                    for e in late["latest"]]
            if late.get("over_per_register"):
                out += ["", "Late endpoints per register (a register's lanes merged as `name*`):", "",
                        "| register | endpoints |", "|---|---|"]
                out += [f"| `{r}` | {n} |" for r, n in late["over_per_register"].items()]
            out.append("")
    out += ["## Cells (Yosys)", "", "| cell | count |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in report["cells"].items()]
    rt = report["runtime_s"]
    src = report.get("source", {})
    out += ["", "## Source, tools and run times", ""]
    if src:
        out.append(f"- source: commit {src.get('commit')}"
                   + (f", with changes to {', '.join(src['modified'])}" if src.get("modified") else ""))
    out += [f"- {k}: {v}" for k, v in report["tool_versions"].items()]
    seeds = ", ".join(f"seed {s} {t} s" for s, t in rt["nextpnr_per_seed"].items())
    if rt.get("reused_seeds"):
        seeds += f" (seeds {rt['reused_seeds']} read back from an earlier identical run)"
    out += [f"- elaborate {rt['elaborate']} s, yosys {rt['yosys']} s, nextpnr "
            f"{seeds or 'no seed completed'}; total {rt['total']} s", ""]
    return "\n".join(out)


def write_report(report: dict, json_path=None, markdown_path=None):
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    if markdown_path is not None:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(to_markdown(report))


def main(argv=None) -> int:
    """``python -m fpga.report nextpnr_seedN.json [--period 8]``: the late endpoints of one
    place and route (written with ``--detailed-timing-report``, as ``skiptrain synth`` does)."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m fpga.report", description=main.__doc__.split("\n")[0])
    ap.add_argument("report", type=Path, help="a nextpnr --report file (nextpnr_seedN.json)")
    ap.add_argument("--period", type=float, default=8.0, help="clock period in ns (8: 125 MHz)")
    ap.add_argument("--latest", type=int, default=LATE_ENDPOINTS, help="latest endpoints to list")
    ap.add_argument("--registers", type=int, default=0,
                    help="also list the N registers with the most late endpoints (lanes merged)")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        ap.error(f"report {args.report}: no such file")
    if args.period <= 0 or args.latest < 0 or args.registers < 0:
        ap.error(f"--period {args.period} must be > 0, --latest {args.latest} and "
                 f"--registers {args.registers} >= 0")
    report = json.loads(args.report.read_text())
    late = late_endpoints(report, args.period, args.latest)
    if not late:
        ap.error(f"report {args.report}: no per-net timings (run nextpnr with --detailed-timing-report)")
    print(f"Fmax {fmax_of(report):.2f} MHz; {late['over']} of {late['endpoints']} endpoints arrive "
          f"after {args.period:g} ns: " + ", ".join(f"{u} {n}" for u, n in late["over_per_unit"].items()))
    for e in late["latest"]:
        print(f"{e['arrival_ns']:7.3f}  {e['endpoint']}")
    if args.registers:
        print(f"late endpoints per register (after {args.period:g} ns; lanes merged as name*):")
        for name, n in list(late_registers(report, args.period).items())[:args.registers]:
            print(f"{n:7d}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
