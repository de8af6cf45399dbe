"""The raw C++ harness (cocotb_tests/raw_harness.cpp) against the cocotb bench and the golden
model: same START-to-done cycles, same result lines, every status bit and counter; and
``skiptrain bench cosim``, which times the two side by side."""

from __future__ import annotations

import json

import pytest

from cocotb_tests import raw, runner
from cocotb_tests.scenarios import scenario_entry
from golden.scenario import random_gemm_scenario
from skiptrain.driver import lines_digest

from test_cosim import CONFIGS, bad_programs, get_build, named

pytestmark = pytest.mark.cosim


@pytest.fixture(scope="module")
def raw_tiny():
    try:
        runner.check_simulator("verilator")
    except runner.SimulatorNotFound as e:
        pytest.skip(str(e))
    return raw.build_raw(CONFIGS["tiny"], log=lambda *a: None)


def tiny_entries() -> list[dict]:
    cfg = CONFIGS["tiny"]
    scs = [random_gemm_scenario(cfg, s, n_commands=3, max_dim=9) for s in range(4)]
    scs.append(named(random_gemm_scenario(cfg, 40, n_commands=2, shapes=[(1, 7, 1), (9, 9, 9)]),
                     "forced 1x7x1, 9x9x9"))
    scs += bad_programs(cfg)[:3]  # a failing program: error status, code and PC compared too
    return [scenario_entry(sc, reset=n % 2 == 0) for n, sc in enumerate(scs)]


def test_raw_harness_agrees_with_cocotb_and_golden(raw_tiny):
    entries = tiny_entries()
    raw_results = raw.run_raw(raw_tiny, entries)
    cocotb_results = runner.run(get_build("tiny", "verilator"), entries)
    assert len(raw_results) == len(cocotb_results) == len(entries)
    for e, r, c in zip(entries, raw_results, cocotb_results):
        assert not r["errors"], f"{e['name']}: raw harness differs from golden: {r['errors'][:5]}"
        assert not c["errors"], f"{e['name']}: cocotb differs from golden: {c['errors'][:5]}"
        assert r["measured_cycles"] == c["measured_cycles"] == e["expected"]["cycles"], \
            (e["name"], r["measured_cycles"], c["measured_cycles"], e["expected"]["cycles"])
        assert lines_digest(r["lines"]) == lines_digest(c["lines"]), e["name"]
        assert r["status"] == c["status"], (e["name"], r["status"], c["status"])


def test_raw_harness_reports_mismatches(raw_tiny):
    """Negative control: expectations off by one cycle, one bank of one line and one counter
    must each be reported by name."""
    entries = tiny_entries()[:3]
    entries[0]["expected"]["cycles"] += 1
    mem, lines = next((m, ls) for m, ls in entries[1]["expected"]["lines"].items() if ls)
    lines[0][1][0] += 1
    entries[2]["expected"]["counters"]["tiles"] += 1
    results = raw.run_raw(raw_tiny, entries)
    assert any("cycles START->done" in e for e in results[0]["errors"]), results[0]["errors"]
    assert any(f"{mem} line {lines[0][0]} bank 0" in e for e in results[1]["errors"]), \
        results[1]["errors"]
    assert any("counter tiles" in e for e in results[2]["errors"]), results[2]["errors"]


def test_raw_harness_refuses_probe_scenarios():
    sc = random_gemm_scenario(CONFIGS["tiny"], 1, n_commands=1, max_dim=4)
    with pytest.raises(ValueError, match="kind='host_probe'.*only kind 'run'"):
        raw.script(CONFIGS["tiny"], [scenario_entry(sc, kind="host_probe")])


def test_bench_cosim_tiny(raw_tiny, tmp_path):
    from skiptrain.cli import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "cosim", "--preset", "tiny", "--shape", "8x8x8", "--repeat", "2",
               "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["shape"] == [8, 8, 8] and report["repeat"] == 2
    for way in ("cocotb", "raw"):
        assert [x["cycles"] for x in report[way]["runs"]] == [report["cycles"]] * 2, report[way]
        assert report[way]["cycles_per_s"] > 0 and report[way]["cycles_per_cpu_s"] > 0
    assert report["ratio"] == pytest.approx(report["cocotb"]["cycles_per_s"]
                                            / report["raw"]["cycles_per_s"])
