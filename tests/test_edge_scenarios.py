"""The requantizer edge classes and the programs aimed at them (golden/scenario.py), fast tier.

The generator must keep aiming: for fixed seeds its programs hit every edge class the config
can reach, the "none" programs hit the rounds-into-range window without any real saturation
(so the sticky SATURATED bit tests that value's flag), and `skiptrain cosim`'s default run
covers every reachable class on the tiny preset.
"""

import math
import random
from fractions import Fraction

import pytest
import torch

from golden.requantizer import requantize
from golden.scenario import (EDGE_CLASSES, SATURATION_MODES, edge_classes, edge_coverage,
                             edge_gemm_scenario, quant_accumulators, requant_edge_accumulators,
                             unreachable_edge_classes)
from skiptrain.config import Config, preset

CONFIGS = {"tiny": preset("tiny"), "default": preset("default"),
           "3x5": Config(rows=3, cols=5, spad_depth=512, acc_depth=128, prog_depth=16),
           "odd": Config(rows=2, cols=2, data_width=5, frac_bits=0, acc_width=19)}
SEEDS = range(6)


def _reference_classes(exact: int, shift: int, cfg: Config) -> set[str]:
    """The classes from their definitions, with Fractions (round() is half to even)."""
    w = 1 << cfg.acc_width
    acc = (exact + w // 2) % w - w // 2
    x = Fraction(acc, 1 << shift)
    r, floor = round(x), math.floor(x)
    tie = x - floor == Fraction(1, 2)
    return {name for name, hit in (
        ("acc_wrap", acc != exact), ("zero", acc == 0),
        ("tie_even", tie and floor % 2 == 0), ("tie_odd", tie and floor % 2 == 1),
        ("saturate_low", r < cfg.data_min), ("saturate_high", r > cfg.data_max),
        ("round_to_min", r == cfg.data_min), ("round_to_max", r == cfg.data_max),
        ("below_min_rounds_in", r == cfg.data_min and x < cfg.data_min)) if hit}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_edge_classes_match_their_definitions(name):
    cfg = CONFIGS[name]
    rng = random.Random(9)
    half = 1 << (cfg.acc_width - 1)
    for shift in sorted({0, 1, 2, cfg.frac_bits, 8, cfg.acc_width - 1}):
        vals = requant_edge_accumulators(cfg, shift) + [rng.randint(-half, half - 1) for _ in range(50)]
        vals += [half, -half - 1, 3 * half]  # exact sums past the accumulator: they wrap
        for v in vals:
            got, want = edge_classes(v, shift, cfg), _reference_classes(v, shift, cfg)
            assert got == want, f"acc {v} shift {shift}: got {sorted(got)}, expected {sorted(want)}"
        edges = requant_edge_accumulators(cfg, shift)
        _, sat = requantize(torch.tensor(edges), shift, cfg)
        for v, s in zip(edges, sat.tolist()):
            flagged = bool(edge_classes(v, shift, cfg) & {"saturate_low", "saturate_high"})
            assert flagged == s, f"acc {v} shift {shift}: classes say saturated={flagged}, golden {s}"


def test_edge_list_holds_the_fixed_window():
    """tiny: -257 / 2 = -128.5 (a tie) and -513 / 4 = -128.25 round onto data_min = -128, in
    range (the values that once raised the flag)."""
    cfg = preset("tiny")
    window = {"round_to_min", "below_min_rounds_in"}
    for v, shift, want in ((-257, 1, window | {"tie_odd"}), (-513, 2, window)):
        assert v in requant_edge_accumulators(cfg, shift), (v, shift)
        got = edge_classes(v, shift, cfg)
        assert got == want, f"acc {v} shift {shift}: got {sorted(got)}, expected {sorted(want)}"


def test_unreachable_classes():
    assert unreachable_edge_classes(CONFIGS["tiny"]) == {"acc_wrap"}, \
        "tiny: K <= 255 products of at most 2**14 cannot reach 2**23"
    for name in ("default", "3x5"):
        assert unreachable_edge_classes(CONFIGS[name]) == set(), name


@pytest.mark.parametrize("name", ["tiny", "3x5", "default"])
def test_edge_generator_covers_every_reachable_class(name):
    cfg = CONFIGS[name]
    scs = [edge_gemm_scenario(cfg, s) for s in SEEDS]
    counts = edge_coverage(scs)
    assert set(counts) == set(EDGE_CLASSES), counts
    missed = {c for c, n in counts.items() if not n} - unreachable_edge_classes(cfg)
    assert not missed, f"{name}, seeds {list(SEEDS)}: never hit {sorted(missed)}; counts {counts}"
    for sc in scs:
        res = sc.expected()[1]
        assert not res.error, f"{sc.name}: golden stops with {res.error_code!r} at slot {res.pc}"
        assert len(quant_accumulators(sc)) == len(sc.commands) - 1, \
            f"{sc.name}: {len(quant_accumulators(sc))} QUANT GEMMs ran, expected {len(sc.commands) - 1}"


@pytest.mark.parametrize("name", ["tiny", "3x5"])
def test_edge_generator_isolates_the_saturation_flag(name):
    """Per mode, the sticky flag the golden model expects, and the window without saturation."""
    cfg = CONFIGS[name]
    for mode, allowed in SATURATION_MODES.items():
        scs = [edge_gemm_scenario(cfg, s, saturation=mode) for s in SEEDS]
        counts = edge_coverage(scs)
        for cls in SATURATION_MODES["both"]:
            assert bool(counts[cls]) == (cls in allowed), \
                f"{name} saturation={mode}: {cls} hit {counts[cls]} times, expected " + \
                ("some" if cls in allowed else "none")
        assert counts["below_min_rounds_in"], f"{name} saturation={mode}: window never hit: {counts}"
        flags = {sc.expected()[1].saturated for sc in scs}
        assert flags == {bool(allowed)}, f"{name} saturation={mode}: SATURATED {flags}, expected {bool(allowed)}"


def test_edge_scenario_with_wrap():
    cfg = CONFIGS["3x5"]
    for mode in SATURATION_MODES:
        sc = edge_gemm_scenario(cfg, 3, wrap=True, saturation=mode)
        counts = edge_coverage([sc])
        assert counts["acc_wrap"], f"{sc.name}: no wrapped accumulator: {counts}"
        assert max(c.k for c in sc.commands) > 512, [c.k for c in sc.commands]


def test_cosim_command_covers_every_reachable_class_on_tiny():
    """`skiptrain cosim --preset tiny` with its defaults (10 seeds, 3 commands, max-dim 12)."""
    from skiptrain.commands.hardware import cosim_scenarios

    cfg = preset("tiny")
    scs = cosim_scenarios(cfg, 10, 3, 12)
    counts = edge_coverage(scs)
    missed = {c for c, n in counts.items() if not n} - unreachable_edge_classes(cfg)
    assert not missed, f"skiptrain cosim tiny defaults: never hit {sorted(missed)}; counts {counts}"
    none_runs = [sc for sc in scs if "sat=none" in sc.name]
    assert none_runs and not any(sc.expected()[1].saturated for sc in none_runs), \
        "the default run needs an edge program without saturation (it shows a false flag)"
