"""Co-simulation of the generated Verilog (Icarus and Verilator) against the golden model.

Every scenario is checked exactly: each bank of each line the program touches, every status
field and counter, and the START-to-done cycle count. The golden model runs here; the simulator
process gets a scenario file (cocotb_tests/scenarios.py) and runs the list in one simulation.
Builds are made once per (config, simulator) and reused across sessions (cocotb_tests/runner.py).
"""

from __future__ import annotations

import dataclasses

import pytest

from cocotb_tests import runner
from cocotb_tests.scenarios import scenario_entry
from golden.scenario import (SATURATION_MODES, Scenario, compare, edge_coverage, edge_gemm_scenario,
                             random_gemm_scenario, unreachable_edge_classes)
from skiptrain.config import Config, preset
from skiptrain.isa import Command, ErrorCode, Opcode, OutMode, encode

pytestmark = pytest.mark.cosim

SIMS = ["icarus", "verilator"]
NONSQUARE = Config(rows=3, cols=5, spad_depth=512, acc_depth=128, prog_depth=16, name="nonsquare")
CONFIGS = {"tiny": preset("tiny"), "nonsquare": NONSQUARE, "default": preset("default"),
           # the tiny accelerator with the kept-count normaliser
           "tiny_norm": preset("tiny").replace(kept_norm=True, name="tiny_norm")}

_builds: dict = {}


def get_build(cfg_name: str, sim: str) -> runner.Build:
    """One build per (config, simulator) and session; the build folder outlives the session."""
    key = (cfg_name, sim)
    if key not in _builds:
        try:
            runner.check_simulator(sim)
        except runner.SimulatorNotFound as e:
            pytest.skip(str(e))
        _builds[key] = runner.build(CONFIGS[cfg_name], sim, log=lambda *a: None)
    return _builds[key]


def run_and_check(cfg_name: str, sim: str, items: list) -> list[dict]:
    """Run ``(scenario, kind, reset)`` items in one simulation; fail with every mismatch."""
    b = get_build(cfg_name, sim)
    results = runner.run(b, [scenario_entry(sc, kind=kind, reset=reset)
                             for sc, kind, reset in items])
    assert len(results) == len(items), f"{len(results)} results for {len(items)} scenarios"
    failures = []
    for (sc, kind, _), r in zip(items, results):
        errors = list(r["errors"])
        if "status" in r:  # second opinion: the golden package's own comparison
            lines = {mem: {w: v for w, v in ls} for mem, ls in r["lines"].items()}
            hw = dict(r["status"])
            if kind == "host_probe":
                hw["host_error"] = 0  # expected 1 there, checked by the cocotb side
            errors += [f"golden.compare: {m}" for m in compare(sc, hw, lines, r["measured_cycles"])]
        if errors:
            failures.append(f"{sc.name} ({kind}): " + "; ".join(errors[:8])
                            + (f" [run dir {r['run_dir']}]" if "run_dir" in r else ""))
    assert not failures, f"{len(failures)} of {len(items)} scenarios differ from golden:\n" + \
        "\n".join(failures)
    return results


def named(sc: Scenario, name: str) -> Scenario:
    sc.name = name
    return sc


def coverage(scenarios) -> set:
    return {(bool(c.trans_a), bool(c.trans_b), int(c.out_mode))
            for sc in scenarios for c in sc.commands
            if isinstance(c, Command) and c.opcode == Opcode.GEMM}


ALL_COMBOS = {(ta, tb, om) for ta in (False, True) for tb in (False, True) for om in (0, 1)}


# ---- random programs ------------------------------------------------------------------------
def random_set(cfg: Config, seeds, n_commands, max_dim, forced) -> list[Scenario]:
    scs = [random_gemm_scenario(cfg, s, n_commands=n_commands, max_dim=max_dim) for s in seeds]
    scs += [named(random_gemm_scenario(cfg, 1000 + n, n_commands=len(shapes), shapes=shapes),
                  f"forced{shapes}(seed={1000 + n})")
            for n, shapes in enumerate(forced)]
    # extremes only, so QUANT results saturate and accumulators see full-scale products
    scs += [named(random_gemm_scenario(cfg, 2000 + s, n_commands=3, max_dim=max_dim,
                                       extreme_rate=1.0), f"extreme(seed={2000 + s})")
            for s in range(3)]
    return scs


def check_coverage(cfg: Config, scs) -> None:
    missing = ALL_COMBOS - coverage(scs)
    assert not missing, f"(trans_a, trans_b, out_mode) combinations never run: {sorted(missing)}"
    gold = [sc.expected()[1] for sc in scs]
    assert any(r.saturated for r in gold), "no scenario saturates; the extreme set lost its point"
    assert all(not r.error for r in gold), "a random program failed its checks in golden"


@pytest.mark.parametrize("sim", SIMS)
def test_random_tiny(sim):
    cfg = CONFIGS["tiny"]
    # 1xKx1, K < rows (K=1), sizes that are not multiples of 2, K >> array
    forced = [[(1, 7, 1), (3, 1, 5)], [(5, 9, 3), (1, 1, 1)], [(2, 2, 2), (4, 3, 6)],
              [(7, 1, 2), (1, 12, 7)]]
    scs = random_set(cfg, range(14), n_commands=4, max_dim=9, forced=forced)
    check_coverage(cfg, scs)
    run_and_check("tiny", sim, [(sc, "run", True) for sc in scs])


@pytest.mark.parametrize("sim", SIMS)
def test_random_nonsquare(sim):
    cfg = CONFIGS["nonsquare"]
    forced = [[(1, 13, 1), (3, 5, 5)], [(2, 1, 4), (7, 2, 11)], [(6, 6, 10), (4, 17, 1)]]
    scs = random_set(cfg, range(10), n_commands=4, max_dim=12, forced=forced)
    check_coverage(cfg, scs)
    run_and_check("nonsquare", sim, [(sc, "run", True) for sc in scs])


@pytest.mark.parametrize("sim", SIMS)
def test_random_default(sim):
    cfg = CONFIGS["default"]
    forced = [[(1, 20, 1), (9, 3, 17), (8, 8, 8)], [(16, 16, 16), (13, 1, 5), (3, 40, 9)]]
    scs = [random_gemm_scenario(cfg, s, n_commands=3, max_dim=20) for s in range(4)]
    scs += [named(random_gemm_scenario(cfg, 3000 + n, n_commands=len(f), shapes=f),
                  f"forced{f}(seed={3000 + n})") for n, f in enumerate(forced)]
    scs.append(named(random_gemm_scenario(cfg, 3100, n_commands=2, max_dim=12, extreme_rate=1.0),
                     "extreme(seed=3100)"))
    run_and_check("default", sim, [(sc, "run", True) for sc in scs])


@pytest.mark.parametrize("sim", SIMS)
def test_edge_tiny(sim):
    """Programs aimed at the requantizer's edges, one per saturation mode: the value and the
    sticky SATURATED bit of results that round onto the limits, just inside them by less than
    half an LSB, ties of both parities, saturations of one kind only, zeros."""
    cfg = CONFIGS["tiny"]
    scs = [edge_gemm_scenario(cfg, 60 + n, saturation=mode) for n, mode in enumerate(SATURATION_MODES)]
    counts = edge_coverage(scs)
    missed = {c for c, n in counts.items() if not n} - unreachable_edge_classes(cfg)
    assert not missed, f"edge classes never hit: {sorted(missed)}; counts {counts}"
    run_and_check("tiny", sim, [(sc, "run", True) for sc in scs])


# ---- bad programs ---------------------------------------------------------------------------
def bad_program(cfg: Config, name: str, mutate, expect: ErrorCode, seed: int = 7) -> Scenario:
    """Two GEMMs; the second one is replaced by ``mutate(cmd)`` (a Command or a raw word), so
    the first must still complete and the error must name slot 1."""
    sc = random_gemm_scenario(cfg, seed, n_commands=2, shapes=[(3, 3, 3), (3, 3, 3)])
    sc.commands = [sc.commands[0], mutate(sc.commands[1]), *sc.commands[2:]]
    sc.name = f"bad:{name}"
    res = sc.expected()[1]
    assert (res.error_code, res.pc) == (expect, 1), \
        f"{name}: golden says {res.error_code!r} at slot {res.pc}, the test meant {expect!r} at 1"
    return sc


def bad_programs(cfg: Config) -> list[Scenario]:
    r = dataclasses.replace
    c_depth = lambda c: cfg.spad_depth if c.out_mode == OutMode.QUANT else cfg.acc_depth

    def word(op):
        return lambda c: (encode(c, cfg) & ~0b11) | op

    cases = [
        ("a_out_of_memory", lambda c: r(c, a_base=cfg.spad_depth - 1), ErrorCode.A_RANGE),
        ("b_out_of_memory", lambda c: r(c, b_base=cfg.spad_depth - 1), ErrorCode.B_RANGE),
        ("c_out_of_memory", lambda c: r(c, c_base=c_depth(c) - 1), ErrorCode.C_RANGE),
        ("a_stride", lambda c: r(c, a_ld=0), ErrorCode.A_STRIDE),
        ("zero_m", lambda c: r(c, m=0), ErrorCode.ZERO_DIM),
        ("zero_k", lambda c: r(c, k=0), ErrorCode.ZERO_DIM),
        ("zero_n", lambda c: r(c, n=0), ErrorCode.ZERO_DIM),
        ("opcode_3", word(3), ErrorCode.BAD_OPCODE),
        ("shift_acc_width", lambda c: r(c, shift=cfg.acc_width), ErrorCode.BAD_SHIFT),
        ("shift_max", lambda c: r(c, shift=(1 << cfg.shift_width) - 1), ErrorCode.BAD_SHIFT),
        ("c_overlaps_a", lambda c: r(c, out_mode=OutMode.QUANT, c_base=c.a_base),
         ErrorCode.OVERLAP),
        ("c_overlaps_b", lambda c: r(c, out_mode=OutMode.QUANT, c_base=c.b_base + 1),
         ErrorCode.OVERLAP),
    ]
    return [bad_program(cfg, *case) for case in cases]


def off_the_end(cfg: Config) -> Scenario:
    """Two GEMMs in the last two program slots and no HALT: PROG_END at slot prog_depth."""
    sc = random_gemm_scenario(cfg, 11, n_commands=2, shapes=[(2, 3, 2), (3, 2, 3)])
    gemms = [c for c in sc.commands if c.opcode == Opcode.GEMM]
    sc.commands = [Command()] * (cfg.prog_depth - 2) + gemms
    sc.start_pc = cfg.prog_depth - 2
    sc.name = "bad:off_the_end"
    res = sc.expected()[1]
    assert (res.error_code, res.pc) == (ErrorCode.PROG_END, cfg.prog_depth), (res.error_code, res.pc)
    return sc


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("cfg_name", ["tiny", "nonsquare"])
def test_bad_programs(sim, cfg_name):
    """Each bad program stops with its error code and slot, leaves the accelerator idle, and a
    good program run right after it (no reset) is exact: the error did not hang anything."""
    cfg = CONFIGS[cfg_name]
    items = []
    for n, bad in enumerate(bad_programs(cfg) + [off_the_end(cfg)]):
        good = named(random_gemm_scenario(cfg, 500 + n, n_commands=2, max_dim=6),
                     f"good after {bad.name}")
        items += [(bad, "run", True), (good, "run", False)]
    run_and_check(cfg_name, sim, items)


@pytest.mark.parametrize("sim", SIMS)
def test_host_access_while_busy(sim):
    """Memory writes and reads while busy are refused (memory unchanged, reads 0) and set the
    sticky host_error; the next START with CLEAR clears it."""
    cfg = CONFIGS["tiny"]
    long = named(random_gemm_scenario(cfg, 21, n_commands=2, shapes=[(6, 8, 6), (4, 5, 4)]),
                 "host probe while busy")
    after = named(random_gemm_scenario(cfg, 22, n_commands=2, max_dim=5), "good after the probe")
    run_and_check("tiny", sim, [(long, "host_probe", True), (after, "run", False)])
