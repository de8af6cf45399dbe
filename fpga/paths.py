"""Register-to-register path estimate of an ECP5 netlist, in seconds rather than an hour.

A place and route of the default accelerator takes 60-75 minutes a seed here, and nextpnr reports
one critical path per clock. To find the *tail* of slow endpoints between two place-and-route
runs, this module reads the netlist Yosys wrote (``netlist.json`` in a ``skiptrain synth`` out
folder), flattens it, and propagates arrival times through the combinational cells with a fixed
delay per cell and per routed net. It estimates; it does not replace nextpnr:

- the cell delays are those nextpnr reported on our critical paths (LUT4 0.24 ns, carry-in to
  carry-out 0.07 ns a CCU2C, clock to Q 0.52 ns); every routed net costs ``route`` (1.0 ns by
  default, the middle of the 0.9-2.3 ns nextpnr reported for our critical paths), and the
  dedicated carry, LUT-to-PFUMX and PFUMX-to-L6MUX connections cost nothing;
- placement is unknown, so a net's real delay can be twice the estimate; use it to rank
  endpoints and to count the ones above a budget, before and after a change.

``python -m fpga.paths build/synth/default_ecp5_v6/netlist.json --period 8`` prints, per unit
(the first two parts of the hierarchical name), how many endpoints miss the period, and the
worst paths with their cells.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

__all__ = ["PathEstimate", "estimate", "flatten", "main", "register_of", "summary", "unit_of"]

CLK_TO_Q = 0.52
#: delay from a cell's input pin to its output pin, per cell type: {(input, output): ns}
_LUT = 0.24
_CARRY_IN_OUT = 0.45      # a CCU2C data input to S or COUT
_CIN_COUT = 0.07
_CIN_S = 0.40
_PFUMX = 0.21
_L6MUX = 0.14
_DPR_READ = 0.30          # TRELLIS_DPR16X4 read address to data out (a LUT read)
_EBR_NOREG = 3.0          # DP16KD data out without its output register (ns after the clock)
_EBR_OUTREG = 0.6


class PathEstimate:
    """The result: ``endpoints`` maps an endpoint name to its estimated arrival (ns), ``paths``
    reconstructs the worst path into an endpoint as a list of (cell name, arrival)."""

    def __init__(self, endpoints, pred, net_driver, net_arrival, endpoint_net):
        self.endpoints = endpoints
        self._pred = pred
        self._driver = net_driver
        self._arrival = net_arrival
        self._endpoint_net = endpoint_net

    def path(self, endpoint: str) -> list[tuple[str, float]]:
        net = self._endpoint_net[endpoint]
        steps = [(endpoint, self.endpoints[endpoint])]
        while net is not None:
            cell = self._driver.get(net, ("<input>", None))[0]
            steps.append((cell, self._arrival.get(net, 0.0)))
            net = self._pred.get(net)
        return steps[::-1]

    def failing(self, period: float) -> list[tuple[str, float]]:
        return sorted(((e, t) for e, t in self.endpoints.items() if t > period),
                      key=lambda x: -x[1])


def flatten(netlist: dict, top: str | None = None) -> list[tuple[str, str, dict, dict, dict]]:
    """The primitive cells of the design below ``top``, as (hierarchical name, type, parameters,
    port directions, connections with bits renumbered to be unique in the whole design)."""
    modules = netlist["modules"]
    if top is None:
        tops = [n for n, m in modules.items() if m.get("attributes", {}).get("top")]
        top = tops[0] if tops else next(iter(modules))
    counter = [10 ** 9]
    cells = []

    def fresh():
        counter[0] += 1
        return counter[0]

    def walk(mod_name, prefix, port_map):
        mod = modules[mod_name]
        local: dict = dict(port_map)

        def bit(b):
            if isinstance(b, str):
                return b            # "0", "1", "x", "z": constants
            if b not in local:
                local[b] = fresh() if prefix else b
            return local[b]

        for cname, cell in mod["cells"].items():
            ctype = cell["type"]
            conns = {p: [bit(b) for b in bits] for p, bits in cell["connections"].items()}
            name = f"{prefix}{cname}"
            sub = modules.get(ctype)
            if sub is not None and not any(
                    int(sub.get("attributes", {}).get(a, "0") or "0", 2)
                    for a in ("blackbox", "whitebox")):
                sub_map = {}
                for pname, port in sub["ports"].items():
                    for sb, pb in zip(port["bits"], conns.get(pname, [])):
                        if not isinstance(sb, str):
                            sub_map[sb] = pb
                walk(ctype, f"{name}.", sub_map)
            elif not ctype.startswith("$scopeinfo"):
                cells.append((name, ctype, cell.get("parameters", {}),
                              cell.get("port_directions", {}), conns))

    walk(top, "", {})
    return cells


def _arcs(ctype: str, params: dict, inputs: list[str], outputs: list[str]):
    """Combinational arcs (input pin, output pin, delay) of a primitive, and the output pins that
    start a path at a clock edge (pin, arrival) and the input pins that end one."""
    arcs, starts, ends = [], [], []
    if ctype == "LUT4":
        arcs = [(i, "Z", _LUT) for i in inputs]
    elif ctype == "PFUMX":
        arcs = [(i, "Z", _PFUMX) for i in inputs]
    elif ctype == "L6MUX21":
        arcs = [(i, "Z", _L6MUX) for i in inputs]
    elif ctype == "CCU2C":
        for i in inputs:
            for o in outputs:
                if i == "CIN":
                    arcs.append((i, o, _CIN_COUT if o == "COUT" else _CIN_S))
                elif i[-1] == "0" or o != "S0":          # bit 1's inputs do not reach S0
                    arcs.append((i, o, _CARRY_IN_OUT))
    elif ctype == "TRELLIS_FF":
        starts = [("Q", CLK_TO_Q)]
        ends = [i for i in inputs if i != "CLK"]
    elif ctype == "TRELLIS_DPR16X4":
        arcs = [(i, o, _DPR_READ) for i in inputs if i.startswith("RAD") for o in outputs]
        starts = [(o, CLK_TO_Q) for o in outputs]
        ends = [i for i in inputs if not i.startswith(("RAD", "WCK"))]
    elif ctype == "DP16KD":
        for o in outputs:
            port = "A" if o.startswith("DOA") else "B"
            reg = params.get(f"REGMODE_{port}", "NOREG")
            starts.append((o, _EBR_OUTREG if reg == "OUTREG" else _EBR_NOREG))
        ends = [i for i in inputs if not i.startswith("CLK")]
    else:                         # DSPs here are registered on every side; anything else: a wall
        starts = [(o, CLK_TO_Q) for o in outputs]
        ends = [i for i in inputs if not i.startswith("CLK")]
    return arcs, starts, ends


def _free_route(ctype: str, pin: str) -> bool:
    return (pin == "CIN" or (ctype == "PFUMX" and pin in ("ALUT", "BLUT"))
            or (ctype == "L6MUX21" and pin in ("D0", "D1")))


def estimate(netlist: dict, route: float = 1.0) -> PathEstimate:
    """Arrival times at every endpoint (flip-flop and memory inputs) of ``netlist``."""
    cells = flatten(netlist)
    net_driver = {}       # net -> (cell name, list of (input net, input pin delay incl. route))
    start_arrival = {}
    end_pins = []         # (endpoint name, net, routed)
    for name, ctype, params, dirs, conns in cells:
        inputs = [p for p, d in dirs.items() if d == "input"]
        outputs = [p for p, d in dirs.items() if d == "output"]
        arcs, starts, ends = _arcs(ctype, params, inputs, outputs)
        for pin, t in starts:
            for b in conns.get(pin, []):
                if not isinstance(b, str):
                    start_arrival[b] = t
                    net_driver[b] = (name, [])
        by_out = defaultdict(list)
        for i, o, delay in arcs:
            by_out[o].append((i, delay))
        for o, ins in by_out.items():
            for b in conns.get(o, []):
                if isinstance(b, str):
                    continue
                fanin = []
                for i, delay in ins:
                    for ib in conns.get(i, []):
                        if not isinstance(ib, str):
                            fanin.append((ib, delay + (0.0 if _free_route(ctype, i) else route)))
                net_driver[b] = (name, fanin)
        for pin in ends:
            for k, b in enumerate(conns.get(pin, [])):
                if not isinstance(b, str):
                    label = f"{name}.{pin}" + (f"[{k}]" if len(conns[pin]) > 1 else "")
                    end_pins.append((label, b))

    arrival: dict = {}
    pred: dict = {}

    def resolve(net):
        # Depth-first without recursion (paths are thousands of nets deep in carry chains).
        stack, open_ = [(net, False)], set()
        while stack:
            n, expanded = stack.pop()
            if n in arrival:
                continue
            if n in start_arrival or n not in net_driver:
                arrival[n], pred[n] = start_arrival.get(n, 0.0), None
                continue
            if not expanded:
                if n in open_:
                    raise ValueError(f"combinational loop through {net_driver[n][0]}")
                open_.add(n)
                stack.append((n, True))
                stack.extend((f, False) for f, _ in net_driver[n][1] if f not in arrival)
                continue
            best, best_pred = 0.0, None
            for f, d in net_driver[n][1]:
                if arrival[f] + d > best:
                    best, best_pred = arrival[f] + d, f
            arrival[n], pred[n] = best, best_pred
            open_.discard(n)

    endpoints, endpoint_net = {}, {}
    for label, b in end_pins:
        resolve(b)
        endpoints[label] = arrival[b] + (route if b in net_driver else 0.0)
        endpoint_net[label] = b
    return PathEstimate(endpoints, pred, net_driver, arrival, endpoint_net)


def register_of(endpoint: str) -> str:
    """The register (or memory) an endpoint pin belongs to: the hierarchical name without the
    bit index, the primitive suffix Yosys appends and the pin."""
    name = endpoint.replace("\\", "")
    for cut in ("_TRELLIS_", "_DP16KD", ".DI", ".CE", ".LSR", ".M"):
        if cut in name:
            name = name[:name.index(cut)]
    return name.split("[")[0]


def unit_of(endpoint: str, depth: int = 1) -> str:
    parts = register_of(endpoint).split(".")
    return ".".join(parts[:min(depth, len(parts) - 1)]) or "top"


def summary(netlist: dict, period: float, route: float = 1.0, worst: int = 5) -> dict:
    """The estimate in a few numbers, for the synthesis report: endpoints, how many are above
    ``period`` (ns), per unit, and the worst registers with their estimated arrival."""
    est = estimate(netlist, route=route)
    failing = est.failing(period)
    registers: dict = {}
    for e, t in failing:
        registers.setdefault(register_of(e), round(t, 2))
    return {"period_ns": round(period, 3), "route_ns": route, "endpoints": len(est.endpoints),
            "over": len(failing), "worst_ns": round(failing[0][1], 2) if failing else None,
            "per_unit": dict(Counter(unit_of(e) for e, _ in failing)),
            "worst_registers": dict(list(registers.items())[:worst]),
            "note": "fpga.paths: cell delays from nextpnr's reports and a fixed delay a routed "
                    "net, no placement; ranks endpoints, is not an Fmax"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fpga.paths", description=__doc__.split("\n")[0])
    ap.add_argument("netlist", type=Path, help="netlist.json written by skiptrain synth")
    ap.add_argument("--period", type=float, default=8.0, help="clock period in ns (8: 125 MHz)")
    ap.add_argument("--route", type=float, default=1.0, help="delay of every routed net in ns")
    ap.add_argument("--paths", type=int, default=5, help="worst paths to print")
    ap.add_argument("--depth", type=int, default=1, help="name parts that make a unit")
    ap.add_argument("--registers", type=int, default=40, help="slowest registers to list")
    ap.add_argument("--json", type=Path, help="write the per-unit counts and worst paths here")
    args = ap.parse_args(argv)
    if not args.netlist.is_file():
        ap.error(f"netlist {args.netlist}: no such file (run skiptrain synth first)")
    if args.period <= 0 or args.route < 0:
        ap.error(f"--period {args.period} must be > 0 and --route {args.route} >= 0")
    est = estimate(json.loads(args.netlist.read_text()), route=args.route)
    failing = est.failing(args.period)
    per_unit = Counter(unit_of(e, args.depth) for e, _ in failing)
    per_register = Counter(register_of(e) for e, _ in failing)
    worst_unit, worst_register = {}, {}
    for e, t in failing:
        worst_unit.setdefault(unit_of(e, args.depth), t)
        worst_register.setdefault(register_of(e), t)
    print(f"{len(est.endpoints)} endpoints, {len(failing)} estimated above {args.period} ns "
          f"(route {args.route} ns a net); worst {failing[0][1] if failing else 0:.2f} ns")
    print(f"{'unit':40} {'over':>6} {'worst ns':>9}")
    for unit, n in per_unit.most_common():
        print(f"{unit:40} {n:6d} {worst_unit[unit]:9.2f}")
    print(f"\n{'register':60} {'bits':>6} {'worst ns':>9}")
    for reg, _ in sorted(worst_register.items(), key=lambda x: -x[1])[:args.registers]:
        print(f"{reg:60} {per_register[reg]:6d} {worst_register[reg]:9.2f}")
    paths = []
    shown_units = set()
    for e, t in failing:
        # one path per destination register (bits of one register share their path)
        key = register_of(e)
        if key in shown_units:
            continue
        shown_units.add(key)
        steps = est.path(e)
        paths.append({"endpoint": e, "ns": round(t, 2), "cells": [c for c, _ in steps]})
        print(f"\n{t:.2f} ns into {e}")
        for cell, at in steps:
            print(f"  {at:6.2f}  {cell}")
        if len(paths) >= args.paths:
            break
    if args.json:
        args.json.write_text(json.dumps({"period_ns": args.period, "route_ns": args.route,
                                         "endpoints": len(est.endpoints),
                                         "failing": len(failing), "per_unit": dict(per_unit),
                                         "per_register": dict(per_register),
                                         "paths": paths}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
