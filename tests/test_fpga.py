"""fpga/ and ``skiptrain synth``: the flow on a stand-in design and on the accelerator.

Tests marked ``synth`` run Yosys and nextpnr (YoWASP). They use one seed and the 2x2 preset,
so the tier stays within a few minutes on a two-core machine (the first YoWASP call of a
fresh machine also compiles WebAssembly, about 70 s for Yosys).
"""

from __future__ import annotations

import json
import sys

import pytest
from amaranth.hdl import Fragment, Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from fpga.ice40_wrapper import Ice40Wrapper
from fpga.targets import TARGETS, FitError, check_fits, target
from rtl.multiplier import Multiplier
from rtl.result_writer import ResultWriter
from skiptrain import cli
from skiptrain.config import preset

#: a placement still running after this long has stopped making progress (the accelerator's
#: take a few minutes on CI's two cores, the stand-ins seconds): it fails with its log's last
#: lines instead of hanging CI. Every test that places and routes runs under it.
CI_NEXTPNR_LIMIT_S = 1200

REPORT_KEYS = {"fmax_mhz", "luts", "ffs", "dsps", "brams", "carry", "per_pe", "seeds",
               "fmax_per_seed", "tool_versions", "runtime_s", "config", "critical_path",
               "dsp_check", "cells", "target", "device"}


class MacArray(wiring.Component):
    """Stand-in for the accelerator: rows x cols multiply-accumulates on the shared
    Multiplier, each PE on its own row and column operand, every accumulator an output."""

    def __init__(self, cfg):
        self.cfg = cfg
        w = cfg.data_width
        super().__init__({
            "a": In(signed(w)).array(cfg.rows),
            "b": In(signed(w)).array(cfg.cols),
            "acc": Out(signed(cfg.acc_width)).array(cfg.rows, cfg.cols),
        })

    def elaborate(self, platform):
        m = Module()
        for r in range(self.cfg.rows):
            for c in range(self.cfg.cols):
                mul = m.submodules[f"mul_{r}_{c}"] = Multiplier(self.cfg)
                m.d.comb += [mul.a.eq(self.a[r]), mul.b.eq(self.b[c])]
                m.d.sync += self.acc[r][c].eq(self.acc[r][c] + mul.p)
        return m


class Passthrough(wiring.Component):
    """Registers its input to its output: lets a test see exactly what the wrapper feeds in
    and what it should fold into ``q``."""

    def __init__(self, width):
        super().__init__({"i": In(width), "o": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.o.eq(self.i)
        return m


# ---- targets and fit checks -----------------------------------------------------------------

def test_unknown_target():
    with pytest.raises(FitError, match=r"target='vu9p': unknown target; choose one of \['ecp5', 'ice40'\]"):
        target("vu9p")


def test_ice40_rejects_more_pes_than_dsps():
    with pytest.raises(FitError) as e:
        check_fits(preset("small"), TARGETS["ice40"], "small")
    assert str(e.value) == ("preset 'small' (4x4 PEs) needs 16 DSP multipliers, one per PE; "
                            "iCE40UP5K-SG48 has 8 (rule: rows*cols <= 8 on ice40)")


def test_ice40_rejects_memories_too_big():
    cfg = preset("tiny").replace(spad_depth=8192)
    with pytest.raises(FitError, match=r"needs \d+ bits of memory \(scratchpad 131072, .*stores at most 128160"):
        check_fits(cfg, TARGETS["ice40"])


@pytest.mark.parametrize("name", ["tiny", "small", "default"])
def test_presets_fit_ecp5(name):
    check_fits(preset(name), TARGETS["ecp5"], name)


def test_tiny_fits_ice40():
    need = check_fits(preset("tiny"), TARGETS["ice40"], "tiny")
    assert need["dsps"] == 4


def test_yosys_script_splits_synthesis():
    from fpga.flow import yosys_script

    for tgt in TARGETS.values():
        lines = yosys_script(tgt).splitlines()
        synth = " ".join(tgt.synth)
        i = lines.index(f"{synth} -top top -run begin:map_luts")
        assert lines[i + 1] == "splitnets", lines
        assert lines[i + 2] == f"{synth} -top top -run map_luts:", lines
    assert "-dsp" in TARGETS["ice40"].synth
    lines = yosys_script(TARGETS["ecp5"], keep_hierarchy=["top.array.pe_*"]).splitlines()
    assert lines.index("setattr -mod -set keep_hierarchy 1 top.array.pe_*") < lines.index(
        "synth_ecp5 -top top -run begin:map_luts"), lines


# ---- the iCE40 wrapper (Amaranth simulator) -------------------------------------------------

def test_wrapper_folds_every_output_bit_into_q():
    core = Passthrough(37)
    dut = Ice40Wrapper(core)
    depth = 3   # 37 -> 10 -> 3 -> 1
    ins, outs, qs = [], [], []

    async def bench(ctx):
        for t in range(300):
            ctx.set(dut.entropy, (t * 7) % 5 == 0)
            ins.append(ctx.get(core.i))
            outs.append(ctx.get(core.o))
            qs.append(ctx.get(dut.q))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for bit in range(37):
        seen = {(v >> bit) & 1 for v in ins}
        assert seen == {0, 1}, f"core input bit {bit} never toggled: saw only {seen}"
    for t in range(depth, len(qs)):
        expected = bin(outs[t - depth]).count("1") & 1
        assert qs[t] == expected, f"cycle {t}: got q={qs[t]}, expected parity of o at cycle {t - depth}"
    assert set(qs) == {0, 1}


def test_wrapper_parameter_errors():
    with pytest.raises(ValueError, match=r"seed=0: must be in 1\.\.2\*\*32-1"):
        Ice40Wrapper(_used(Passthrough(4)), seed=0)
    with pytest.raises(TypeError, match="must be an amaranth.lib.wiring.Component"):
        Ice40Wrapper(object())

    class NoOutputs(wiring.Component):
        def __init__(self):
            super().__init__({"i": In(4)})

        def elaborate(self, platform):
            return Module()

    with pytest.raises(ValueError, match="has no outputs"):
        Ice40Wrapper(_used(NoOutputs()))


def _used(component):
    # Amaranth warns about components that are built but never elaborated.
    Fragment.get(component, None)
    return component


# ---- CLI argument errors (no tool runs) -----------------------------------------------------

def _cli_error(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        cli.main(["synth", *argv])
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--preset", "tiny", "--target", "xc7"],
     "skiptrain: error: target='xc7': unknown target; choose one of ['ecp5', 'ice40']"),
    (["--preset", "huge", "--target", "ecp5"],
     "skiptrain: error: preset='huge': unknown preset; choose one of ['default', 'small', 'tiny', 'tiny_gemm']"),
    (["--preset", "small", "--target", "ice40"],
     "skiptrain: error: preset 'small' (4x4 PEs) needs 16 DSP multipliers, one per PE; "
     "iCE40UP5K-SG48 has 8 (rule: rows*cols <= 8 on ice40); choose a smaller preset for --target ice40"),
    (["--preset", "default", "--target", "ice40"],
     "skiptrain: error: preset 'default' (8x8 PEs) needs 64 DSP multipliers"),
    (["--preset", "tiny", "--target", "ecp5", "--seeds", "-1"],
     "skiptrain: error: --seeds='-1': must be an integer in 0..10 (place and route runs with seeds 1..N; 0 synthesises only)"),
    (["--preset", "tiny", "--target", "ecp5", "--seeds", "three"],
     "skiptrain: error: --seeds='three': must be an integer in 0..10"),
    (["--preset", "tiny", "--target", "ecp5", "--seeds", "11"],
     "skiptrain: error: --seeds='11': must be an integer in 0..10"),
    (["--preset", "tiny", "--target", "ecp5", "--seeds", "4,x"],
     "skiptrain: error: --seeds='4,x': must be a list of distinct integers >= 1, at most 10 of them"),
    (["--preset", "tiny", "--target", "ecp5", "--seeds", "0,1"],
     "skiptrain: error: --seeds='0,1': must be a list of distinct integers >= 1"),
    (["--preset", "tiny", "--target", "ecp5", "--seeds", "4,4"],
     "skiptrain: error: --seeds='4,4': a seed is listed twice"),
    (["--preset", "tiny", "--target", "ecp5", "--seeds", ",".join(str(s) for s in range(1, 12))],
     "skiptrain: error: --seeds='1,2,3,4,5,6,7,8,9,10,11': 11 seeds; must be a list"),
    (["--preset", "tiny", "--target", "ecp5", "--jobs", "0"],
     "skiptrain: error: --jobs='0': must be an integer >= 1 (seeds placed and routed at once)"),
    (["--preset", "tiny", "--target", "ecp5", "--timeout", "0"],
     "skiptrain: error: --timeout='0': must be a finite number of seconds > 0 (a seed's nextpnr running longer is stopped)"),
    (["--preset", "tiny", "--target", "ecp5", "--timeout", "soon"],
     "skiptrain: error: --timeout='soon': must be a finite number of seconds > 0"),
    (["--preset", "tiny", "--target", "ecp5", "--timeout", "nan"],
     "skiptrain: error: --timeout='nan': must be a finite number of seconds > 0"),
    (["--preset", "tiny", "--target", "ecp5", "--timeout", "inf"],
     "skiptrain: error: --timeout='inf': must be a finite number of seconds > 0"),
    (["--preset", "tiny", "--target", "ecp5", "--placer", "sa"],
     "skiptrain: error: --placer='sa': must be one of ['heap', 'static']"),
    (["--preset", "tiny", "--target", "ecp5", "--top", "Accelerator"],
     "skiptrain: error: --top='Accelerator': must be MODULE:NAME, e.g. rtl.top:Accelerator"),
    (["--preset", "tiny", "--target", "ecp5", "--top", "rtl.nowhere:Accelerator"],
     "skiptrain: error: --top='rtl.nowhere:Accelerator': cannot import rtl.nowhere"),
    (["--preset", "tiny", "--config", "configs/default_kept_norm.json", "--target", "ecp5"],
     "skiptrain: error: give one of --preset NAME or --config FILE.json"),
    (["--target", "ecp5"], "skiptrain: error: give one of --preset NAME or --config FILE.json"),
    (["--config", "configs/nowhere.json", "--target", "ecp5"],
     "skiptrain: error: config file 'configs/nowhere.json' does not exist"),
])
def test_cli_bad_arguments(capsys, tmp_path, argv, message):
    err = _cli_error(capsys, *argv, "--json", str(tmp_path / "r.json"), "--out", str(tmp_path))
    assert err.startswith(message), err
    assert not (tmp_path / "r.json").exists()


def test_cli_requires_json(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["synth", "--preset", "tiny", "--target", "ecp5"])
    assert e.value.code == 2
    assert "--json" in capsys.readouterr().err


# ---- synthesis of the stand-in --------------------------------------------------------------

def _check_report(report: dict, *, target_name: str, dsps: int, pes: int):
    missing = REPORT_KEYS - report.keys()
    assert not missing, f"report lacks {sorted(missing)}"
    json.loads(json.dumps(report))  # plain JSON all the way down
    assert report["target"] == target_name
    assert report["fmax_mhz"] > 0 and report["seeds"] == [1]
    assert list(report["fmax_per_seed"]) == ["1"]
    assert report["fmax_mhz"] == report["fmax_per_seed"]["1"]
    assert report["dsps"] == dsps, f"got {report['dsps']} DSPs, expected {dsps}: {report['cells']}"
    assert report["dsp_check"]["ok"]
    assert report["per_pe"]["pes"] == pes
    assert report["per_pe"]["dsps"] == dsps / pes
    assert report["per_pe"]["luts"] == round(report["luts"] / pes, 2)
    assert "whole design / PE count" in report["per_pe"]["note"]
    assert report["ffs"] > 0
    cp = report["critical_path"]
    assert cp["total_ns"] > 0 and cp["slowest_steps"]
    # nextpnr's Fmax is the inverse of the slowest path it lists.
    assert abs(1000 / cp["total_ns"] - report["fmax_mhz"]) / report["fmax_mhz"] < 0.05
    assert {"yosys", "nextpnr", "amaranth"} <= report["tool_versions"].keys()
    assert report["runtime_s"]["yosys"] > 0 and "1" in report["runtime_s"]["nextpnr_per_seed"]


@pytest.mark.synth
def test_cli_synthesis_only_reports_the_kept_modules(tmp_path, capsys):
    """--seeds 0: Yosys alone; the cell counts of the whole design and of the loss unit and
    the writer on their own (how the README's area figures are made), no Fmax."""
    json_path = tmp_path / "r.json"
    rc = cli.main(["synth", "--preset", "tiny", "--target", "ecp5", "--seeds", "0",
                   "--json", str(json_path), "--out", str(tmp_path / "build")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(json_path.read_text())
    assert report["fmax_mhz"] is None and report["seeds"] == [] and report["synthesis_only"]
    assert report["module_cells"]["top.loss"]["LUT4"] > 0, report["module_cells"].keys()
    assert "none: synthesis only" in out and "module top.loss:" in out
    # the writer's register copies stay apart (KeptRegister): one lane select per bank and
    # field, each with its own flip-flops, not merged into one by Yosys
    tiny = preset("tiny")
    sel = [n for n in report["module_cells"] if n.startswith("top.writer.copy_sel")]
    assert len(sel) == tiny.banks * (1 + -(-tiny.acc_width // ResultWriter.select_slice)), sel
    assert all(report["module_cells"][n].get("TRELLIS_FF") == tiny.bank_bits for n in sel), sel
    assert "copy_" not in out
    assert not (tmp_path / "build" / "nextpnr_seed1.log").exists()


@pytest.mark.synth
def test_units_give_the_comparators_area(tmp_path, capsys):
    """fpga.units: the loss unit with and without its comparator, and the skip controller,
    synthesised alone (how the README's area of the skip hardware is made); the result writer
    (for its path estimate)."""
    cells = {}
    for unit in ("loss_unit", "loss_unit_without_comparator", "skip_controller", "result_writer"):
        json_path = tmp_path / f"{unit}.json"
        rc = cli.main(["synth", "--preset", "tiny", "--target", "ecp5", "--seeds", "0",
                       "--json", str(json_path), "--out", str(tmp_path / unit),
                       "--top", f"fpga.units:{unit}"])
        _, err = capsys.readouterr()
        assert rc == 0, err
        cells[unit] = json.loads(json_path.read_text())["cells"]
    with_c, without = cells["loss_unit"], cells["loss_unit_without_comparator"]
    assert with_c["TRELLIS_FF"] > without["TRELLIS_FF"] and with_c["CCU2C"] > without["CCU2C"], cells
    assert with_c["DP16KD"] == without["DP16KD"] > 0, cells
    assert cells["skip_controller"]["TRELLIS_FF"] >= 32, cells  # the LFSR at least
    assert cells["result_writer"]["CCU2C"] > 0 and "DP16KD" not in cells["result_writer"], cells


@pytest.mark.synth
def test_cli_synthesises_standin_for_ecp5(tmp_path, capsys):
    json_path, md_path = tmp_path / "r.json", tmp_path / "r.md"
    rc = cli.main(["synth", "--preset", "tiny", "--target", "ecp5", "--seeds", "1",
                   "--timeout", str(CI_NEXTPNR_LIMIT_S),
                   "--json", str(json_path), "--markdown", str(md_path),
                   "--out", str(tmp_path / "build"), "--top", f"{__name__}:MacArray"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(json_path.read_text())
    _check_report(report, target_name="ecp5", dsps=4, pes=4)
    assert report["cells"]["MULT18X18D"] == 4
    assert report["config"]["multiplier"] == "ecp5"
    # MULT18X18D keeps its input and output registers; the fabric has the third stage (the
    # full product) and the accumulator: 4 x (2*data_width + acc_width) flip-flops.
    tiny = preset("tiny")
    assert report["ffs"] == 4 * (2 * tiny.data_width + tiny.acc_width)
    for step in ("elaborating", "yosys", "nextpnr"):
        assert f"[synth] {step}" in err
    assert "Fmax (median)" in out and "DSP" in out
    # the estimate beside it: every flip-flop and DSP input of the 2x2 is an endpoint
    est = report["path_estimate"]
    assert est["period_ns"] == 8.0 and est["endpoints"] >= report["ffs"], est
    assert "[synth] path estimate" in err and "path estimate (no placement" in out
    # every endpoint's arrival after routing, from nextpnr's per-net timings: the latest is
    # the critical path's end, at its delay less the setup time
    late = report["late_endpoints"]["1"]
    latest = late["latest"]
    assert late["endpoints"] >= report["ffs"] and late["period_ns"] == 8.0, late
    assert [e["arrival_ns"] for e in latest] == sorted((e["arrival_ns"] for e in latest), reverse=True)
    path = json.loads((tmp_path / "build" / "nextpnr_seed1.json").read_text())["critical_paths"][0]["path"]
    setup = sum(e["delay"] for e in path if e["type"] == "setup")
    assert latest[0]["arrival_ns"] == pytest.approx(sum(e["delay"] for e in path) - setup, abs=2e-3)
    assert latest[0]["endpoint"] == f"{path[-1]['to']['cell']}.{path[-1]['to']['port']}"
    assert late["over"] == sum(1 for e in latest if e["arrival_ns"] > 8.0)  # a 2x2 meets 125 MHz
    assert sum(late["over_per_unit"].values()) == late["over"]
    assert sum(late["over_per_register"].values()) == late["over"]  # at most 20 registers late
    assert "endpoints after routing (seed 1): " in out
    from fpga import report as report_mod
    assert report_mod.main([str(tmp_path / "build" / "nextpnr_seed1.json"), "--latest", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Fmax ") and len(printed) == 3, printed
    assert printed[1].endswith(latest[0]["endpoint"]), printed
    md = md_path.read_text()
    assert "# Synthesis report" in md and "## Critical path" in md
    assert "## Endpoints after routing (seed 1)" in md
    for log in ("yosys.log", "nextpnr_seed1.log", "netlist.json", "config.json", "top.il"):
        assert (tmp_path / "build" / log).is_file(), log
    assert "reused_seeds" not in report["runtime_s"]

    # Same design, same folder: Yosys gives the same netlist, so nextpnr's seed 1 is read back;
    # a listed seed runs just those seeds (2 is new, 1 reused)
    rc = cli.main(["synth", "--preset", "tiny", "--target", "ecp5", "--seeds", "2,1",
                   "--timeout", str(CI_NEXTPNR_LIMIT_S), "--json", str(json_path),
                   "--out", str(tmp_path / "build"), "--top", f"{__name__}:MacArray"])
    err = capsys.readouterr().err
    assert rc == 0, err
    again = json.loads(json_path.read_text())
    assert again["seeds"] == [2, 1], again["seeds"]
    assert again["runtime_s"]["reused_seeds"] == [1], err
    assert sorted(again["fmax_per_seed"]) == ["1", "2"], again["fmax_per_seed"]
    assert again["fmax_per_seed"]["1"] == report["fmax_per_seed"]["1"]
    assert (tmp_path / "build" / "nextpnr_seed2.log").is_file()
    assert "reused from an earlier run" in err
    assert report["placer"] == "static" and again["placer"] == "static"  # the ECP5 default
    assert "placer `static`" in md

    # Another placer is another run, not the first one's read back.
    rc = cli.main(["synth", "--preset", "tiny", "--target", "ecp5", "--seeds", "1",
                   "--timeout", str(CI_NEXTPNR_LIMIT_S), "--placer", "heap",
                   "--json", str(json_path), "--out", str(tmp_path / "build"),
                   "--top", f"{__name__}:MacArray"])
    err = capsys.readouterr().err
    assert rc == 0, err
    heap = json.loads(json_path.read_text())
    assert heap["placer"] == "heap" and "reused_seeds" not in heap["runtime_s"], err


@pytest.mark.synth
def test_flow_synthesises_standin_for_ice40(tmp_path):
    from fpga.flow import run_flow

    steps = []
    report = run_flow(MacArray, preset("tiny"), target("ice40"), tmp_path, seeds=[1],
                      progress=steps.append, nextpnr_timeout_s=CI_NEXTPNR_LIMIT_S)
    _check_report(report, target_name="ice40", dsps=4, pes=4)
    assert report["cells"]["SB_MAC16"] == 4
    assert report["config"]["multiplier"] == "behavioral"
    assert "iCE40 wrapper" in report["per_pe"]["note"]
    # The wrapper's pins: clk, rst, entropy, q.
    assert report["utilization"]["SB_IO"]["used"] == 4
    assert any(s.startswith("nextpnr") for s in steps)


@pytest.mark.synth
def test_flow_places_seeds_side_by_side(tmp_path):
    from fpga.flow import run_flow

    steps = []
    report = run_flow(MacArray, preset("tiny"), target("ecp5"), tmp_path, seeds=[1, 2], jobs=2,
                      progress=steps.append, nextpnr_timeout_s=CI_NEXTPNR_LIMIT_S)
    assert sorted(report["fmax_per_seed"]) == ["1", "2"], report["fmax_per_seed"]
    assert sorted(report["runtime_s"]["nextpnr_per_seed"]) == ["1", "2"]
    per_seed = report["fmax_per_seed"].values()
    assert report["fmax_mhz"] == pytest.approx(sum(per_seed) / 2, abs=0.01)
    for seed in (1, 2):
        assert (tmp_path / f"nextpnr_seed{seed}.json").is_file()
        assert any(s.startswith(f"nextpnr: seed {seed}: ") for s in steps), steps


def test_flow_rejects_bad_placer(tmp_path):
    from fpga.flow import run_flow

    with pytest.raises(ValueError, match=r"placer='sa': must be one of \['heap', 'static'\]"):
        run_flow(MacArray, preset("tiny"), target("ecp5"), tmp_path, seeds=[1], placer="sa")


def test_flow_rejects_bad_jobs(tmp_path):
    from fpga.flow import run_flow

    with pytest.raises(ValueError, match=r"jobs=0: must be an integer >= 1"):
        run_flow(MacArray, preset("tiny"), target("ecp5"), tmp_path, seeds=[1], jobs=0)


@pytest.mark.parametrize("limit", [0, -5, "600", True, float("inf")])
def test_flow_rejects_bad_timeout(tmp_path, limit):
    from fpga.flow import run_flow

    with pytest.raises(ValueError, match=rf"nextpnr_timeout_s={limit!r}: must be a finite number of seconds > 0"):
        run_flow(MacArray, preset("tiny"), target("ecp5"), tmp_path, seeds=[1], nextpnr_timeout_s=limit)
    assert not (tmp_path / "top.il").exists(), "checked before anything is elaborated"


def test_tool_past_its_time_limit_is_stopped(tmp_path):
    """A tool still running at its limit is killed and named, with its log's last lines (a
    placer that stops making progress must fail CI with a message, not hang it)."""
    import time

    from fpga.flow import FlowError, _run

    log = tmp_path / "tool.log"
    script = (f"import time; open({str(log)!r}, 'w').write('iteration 18\\n'); time.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(FlowError, match=r"nextpnr seed 2 stopped: still running after the time "
                                        r"limit of 1 s \(log: .*tool.log\): last lines:\niteration 18"):
        _run("nextpnr seed 2", [sys.executable, "-c", script], tmp_path, log, timeout_s=1)
    assert time.monotonic() - t0 < 30, "the tool was not stopped at its limit"


def test_tool_within_its_time_limit_runs(tmp_path):
    from fpga.flow import _run

    assert _run("quick", [sys.executable, "-c", "pass"], tmp_path, tmp_path / "log", timeout_s=60) < 60


# ---- synthesis of the accelerator -----------------------------------------------------------

def _accelerator():
    from rtl.top import Accelerator
    return Accelerator


#: what each target places in CI: the tiny training accelerator on ECP5; on the UP5K the GEMM
#: engine alone, on a 1x2 array (tiny_gemm's 2x2 fills 94 % of the logic cells, where
#: nextpnr's placer does not finish in minutes; see the README)
SYNTH_CONFIGS = {"ecp5": preset("tiny"), "ice40": preset("tiny_gemm").replace(rows=1, cols=2)}
#: the placer each target's CI run uses: the target's default, but the electrostatic one on the
#: UP5K, where the 1x2 fills 91 % of the logic cells and the analytic placer stopped making
#: progress (HeAP's iteration 18 still running after 20 minutes at 91aa52b; static: seconds)
SYNTH_PLACERS = {"ecp5": None, "ice40": "static"}


@pytest.mark.synth
@pytest.mark.parametrize("target_name, dsp_cell", [("ecp5", "MULT18X18D"), ("ice40", "SB_MAC16")])
def test_tiny_accelerator(tmp_path, target_name, dsp_cell):
    from fpga.flow import run_flow

    cfg = SYNTH_CONFIGS[target_name]
    report = run_flow(_accelerator(), cfg, target(target_name), tmp_path, seeds=[1],
                      design="rtl.top:Accelerator", placer=SYNTH_PLACERS[target_name],
                      nextpnr_timeout_s=CI_NEXTPNR_LIMIT_S)
    pes = cfg.rows * cfg.cols
    # Checked on Yosys's netlist, so it holds whether or not placement succeeds.
    assert report["dsp_check"]["ok"], report["dsp_check"]
    assert report["cells"].get(dsp_cell, 0) >= pes, report["cells"]
    assert report["brams"] > 0, "the scratchpad and accumulator banks should be block RAM"
    assert report["fits"], f"{cfg.name} does not fit {report['device']}: {report['does_not_fit']}"
    assert report["fmax_mhz"] > 0
    if cfg.training:
        assert report["module_cells"]["top.loss"].get("DP16KD", 0) > 0, \
            "the loss unit's exp and log tables should be block RAM"


@pytest.mark.synth
def test_training_accelerator_does_not_fit_the_up5k(tmp_path):
    """The training hardware on the UP5K: reported as not fitting, with the cell counts."""
    from fpga.flow import run_flow

    report = run_flow(_accelerator(), preset("tiny"), target("ice40"), tmp_path, seeds=[1],
                      design="rtl.top:Accelerator", nextpnr_timeout_s=CI_NEXTPNR_LIMIT_S)
    assert not report["fits"] and "ICESTORM_LC" in report["does_not_fit"], report.get("does_not_fit")


def test_overfull_log_is_recognised(tmp_path):
    from fpga.flow import _overfull

    log = tmp_path / "nextpnr.log"
    log.write_text("Info: Device utilisation:\n"
                   "Info: \t         ICESTORM_LC:    6499/   5280   123%\n"
                   "Info: \t        ICESTORM_RAM:      22/     30    73%\n"
                   "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 6499 ICESTORM_LCs\n")
    over = _overfull(log)
    assert over["message"] == "ICESTORM_LC 6499/5280 (123 %)"
    assert over["utilization"]["ICESTORM_RAM"] == {"used": 22, "available": 30}
    log.write_text("Info: \t        ICESTORM_RAM:      22/     30    73%\nERROR: something else\n")
    assert _overfull(log) is None


# ---- fpga/paths.py: the register-to-register estimate, on hand-built netlists ---------------

def _cell(ctype, **pins):
    """A primitive cell: pins as name=(direction, [bits])."""
    return {"type": ctype, "parameters": {},
            "port_directions": {p: d for p, (d, _) in pins.items()},
            "connections": {p: bits for p, (_, bits) in pins.items()}}


def _ff(d, q):
    return _cell("TRELLIS_FF", CLK=("input", [2]), DI=("input", [d]), Q=("output", [q]))


def _lut(inputs, z):
    pins = {p: ("input", [b]) for p, b in zip("ABCD", inputs)}
    return _cell("LUT4", Z=("output", [z]), **pins)


def _netlist(top_cells, sub=None):
    modules = {"top": {"attributes": {"top": "1"}, "ports": {}, "cells": top_cells, "netnames": {}},
               "LUT4": {"attributes": {"blackbox": "1"}, "ports": {}, "cells": {}},
               "TRELLIS_FF": {"attributes": {"blackbox": "1"}, "ports": {}, "cells": {}}}
    modules.update(sub or {})
    return {"modules": modules}


def test_path_estimate_adds_cell_and_route_delays():
    from fpga import paths
    # r0 -> LUT -> LUT -> r1; r0 -> r2 directly; r1 and r2 each end a path
    net = _netlist({"r0": _ff(20, 10), "l1": _lut([10, 10], 11), "l2": _lut([11], 12),
                    "r1": _ff(12, 13), "r2": _ff(10, 14)})
    est = paths.estimate(net, route=1.0)
    # clock to Q, then per LUT a routed net and the LUT, then the routed net into the register
    assert est.endpoints["r1.DI"] == pytest.approx(paths.CLK_TO_Q + 2 * (1.0 + 0.24) + 1.0)
    assert est.endpoints["r2.DI"] == pytest.approx(paths.CLK_TO_Q + 1.0)
    assert [c for c, _ in est.path("r1.DI")] == ["r0", "l1", "l2", "r1.DI"]
    assert [e for e, _ in est.failing(3.0)] == ["r1.DI"]
    assert est.failing(4.0) == []


def test_path_estimate_follows_carry_chains_and_hierarchy():
    from fpga import paths
    ccu = lambda a, cin, s, cout: _cell(  # noqa: E731
        "CCU2C", A0=("input", [a]), CIN=("input", [cin] if cin else ["0"]),
        S0=("output", [s]), S1=("output", []), COUT=("output", [cout]))
    # a submodule holding a two-cell carry chain between its ports i and o
    sub = {"adder": {"attributes": {}, "ports": {"i": {"direction": "input", "bits": [2]},
                                                 "o": {"direction": "output", "bits": [3]}},
                     "cells": {"c0": ccu(2, None, 5, 6), "c1": ccu(2, 6, 3, 7)}, "netnames": {}},
           "CCU2C": {"attributes": {"blackbox": "1"}, "ports": {}, "cells": {}}}
    top = {"r0": _ff(30, 10),
           "u": {"type": "adder", "connections": {"i": [10], "o": [11]}},
           "r1": _ff(11, 12)}
    est = paths.estimate(_netlist(top, sub), route=1.0)
    # data into the first cell's carry out (0.45), carry in to the second's sum (0.40): the
    # carry between them is not routed
    assert est.endpoints["r1.DI"] == pytest.approx(paths.CLK_TO_Q + 1.0 + 0.45 + 0.40 + 1.0)
    assert [c for c, _ in est.path("r1.DI")] == ["r0", "u.c0", "u.c1", "r1.DI"]
    assert paths.register_of("loss.kept[3]_TRELLIS_FF_Q.DI") == "loss.kept"
    assert paths.unit_of("loss.kept[3]_TRELLIS_FF_Q.DI") == "loss"


def test_path_estimate_cli(tmp_path, capsys):
    from fpga import paths
    f = tmp_path / "netlist.json"
    f.write_text(json.dumps(_netlist({"r0": _ff(20, 10), "l1": _lut([10], 11), "r1": _ff(11, 13)})))
    out = tmp_path / "paths.json"
    assert paths.main([str(f), "--period", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["failing"] == 1 and report["paths"][0]["cells"] == ["r0", "l1", "r1.DI"]
    assert "1 estimated above 2.0 ns" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        paths.main([str(tmp_path / "missing.json")])
    assert "no such file" in capsys.readouterr().err


def test_late_registers_groups_endpoints_by_register(tmp_path, capsys):
    """python -m fpga.report --registers: the late endpoints counted per register, each pin
    at its latest arrival over the nets that reach it, per-lane copies merged."""
    from fpga import report as report_mod

    def end(cell, port, *delays):
        return {"cell": cell, "port": port, "delay": list(delays)}
    nets = [
        {"net": "n0", "endpoints": [end("writer.e1_data0[3]_TRELLIS_FF_Q", "DI", 8.5),
                                    end("writer.e1_data7[0]_TRELLIS_FF_Q", "CE", 7.0, 9.1),
                                    end("writer.e1_data7[1]_TRELLIS_FF_Q", "DI", 8.0)]},
        # the same pin reached by a second, later net counts once, at the later arrival
        {"net": "n1", "endpoints": [end("writer.e1_data7[1]_TRELLIS_FF_Q", "DI", 8.25),
                                    end("loss.argmax[2]_TRELLIS_FF_Q", "DI", 8.01),
                                    end("sequencer.$signal$98[0]_TRELLIS_FF_Q", "DI", 9.0),
                                    end("loss.exp_sum3[5]_TRELLIS_FF_Q", "DI", 3.0)]}]
    report = {"fmax": {"clk": {"achieved": 100.0}}, "detailed_net_timings": nets}
    assert report_mod.late_registers(report, 8.0) == {
        "writer.e1_data*": 3, "loss.argmax": 1, "sequencer.$signal$98": 1}
    assert report_mod.late_registers(report, 8.0, lanes=False) == {
        "writer.e1_data7": 2, "writer.e1_data0": 1, "loss.argmax": 1, "sequencer.$signal$98": 1}
    assert report_mod.late_registers(report, 9.05) == {"writer.e1_data*": 1}
    assert report_mod.late_registers({"fmax": {}}, 8.0) == {}
    late = report_mod.late_endpoints(report, 8.0)
    assert late["over"] == sum(report_mod.late_registers(report, 8.0).values()) == 5
    assert late["over_per_register"] == report_mod.late_registers(report, 8.0)

    f = tmp_path / "nextpnr_seed1.json"
    f.write_text(json.dumps(report))
    assert report_mod.main([str(f), "--latest", "1", "--registers", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    # six pins: e1_data7[1].DI, reached by two nets, is one endpoint
    assert printed[0] == ("Fmax 100.00 MHz; 5 of 6 endpoints arrive after 8 ns: writer 3, "
                          "sequencer 1, loss 1"), printed
    assert printed[1].split() == ["9.100", "writer.e1_data7[0]_TRELLIS_FF_Q.CE"], printed
    assert printed[2].startswith("late endpoints per register") and len(printed) == 5, printed
    assert printed[3].split() == ["3", "writer.e1_data*"], printed
    with pytest.raises(SystemExit):
        report_mod.main([str(f), "--registers", "-1"])
    assert "--registers -1" in capsys.readouterr().err
