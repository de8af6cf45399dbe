"""The raw harness: the same Verilator model and host bus as the cocotb bench, with no cocotb.

``raw_harness.cpp`` is a plain C++ ``main`` that clocks ``skiptrain_top`` itself and runs a bus
script (its header comment has the format). This module builds it (one cached build per
config: ``build/cosim/<config-hash>-raw``, same locking, Verilator flags and C++ optimisation as
the cocotb model), writes the script of scenario entries (:mod:`cocotb_tests.scenarios`: load
the lines, the program and the CSRs, START, wait for ``done``, read status, counters and the
expected lines, exactly what ``cocotb_tests/test_accelerator.py`` does), and returns results in
the cocotb bench's shape, compared with the golden expectations by the same
:func:`~cocotb_tests.scenarios.compare`. ``skiptrain bench cosim`` runs both side by side.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from skiptrain.config import Config
from skiptrain.driver import SKIP_CSRS
from skiptrain.hostmap import READBACK_CSRS, READ_LATENCY, Csr, Ctrl, HostMap, Region, Status

from . import runner
from .scenarios import compare

__all__ = ["HARNESS", "RawBuild", "build_raw", "script", "run_raw"]

HARNESS = Path(__file__).with_name("raw_harness.cpp")
EXECUTABLE = "raw_harness"
#: reset edges before the first scenario and before each one with ``reset`` (as the bench's)
RESET_CYCLES = 2


@dataclass
class RawBuild:
    cfg: Config
    directory: Path
    opt: str
    reused: bool
    build_s: float

    @property
    def executable(self) -> Path:
        return self.directory / EXECUTABLE


def build_raw(cfg: Config, *, opt: str = runner.DEFAULT_CXX_OPT, root: Path | None = None,
              log=print) -> RawBuild:
    """Build (or reuse) the raw harness around the Verilator model of ``cfg``."""
    from rtl.top import generate_verilog

    runner.check_simulator("verilator")
    cxx_args, makeflags = runner.verilator_cxx_flags(opt)
    kind = "raw" if opt == runner.DEFAULT_CXX_OPT else f"raw-{opt}"
    directory = runner.build_directory(cfg, kind, root)
    verilog = generate_verilog(cfg, name=runner.DESIGN)
    harness = HARNESS.read_text()
    args = runner.VERILATOR_ARGS + cxx_args
    stamp = hashlib.sha256("\n".join([verilog, harness, *args, makeflags]).encode()).hexdigest()
    result = RawBuild(cfg, directory, opt, True, 0.0)

    def make():
        (directory / f"{runner.DESIGN}.v").write_text(verilog)
        (directory / HARNESS.name).write_text(harness)
        cfg.to_json(directory / "config.json")
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "-Mdir", str(directory),
               "--top-module", runner.DESIGN, "-o", EXECUTABLE, *args,
               HARNESS.name, f"{runner.DESIGN}.v"]
        with runner._environment("verilator", makeflags):
            with open(directory / "build.log", "w") as logf:
                proc = subprocess.run(cmd, cwd=directory, stdout=logf, stderr=subprocess.STDOUT)
        if proc.returncode != 0 or not result.executable.is_file():
            raise runner.CosimError(
                f"raw harness build failed (exit code {proc.returncode}); last lines of "
                f"{directory / 'build.log'}:\n{runner._tail(directory / 'build.log')}")

    return runner.cached_build(result, stamp, make, f"the raw harness of {cfg.name} "
                                                    f"({cfg.rows}x{cfg.cols})", log)


def _write(ops: list, addr: int, data: int) -> None:
    ops.append(f"w {addr:x} {data:x}")


def script(cfg: Config, entries: list[dict]) -> tuple[str, list[list[tuple]]]:
    """The bus script of ``entries`` and, per entry, what each result line answers: ``("id",)``,
    ``("status",)``, ``("counter", name)``, ``("line", memory, index)`` or ``("done",)``."""
    hm = HostMap(cfg)
    width = {"spad": cfg.data_width, "acc": cfg.acc_width}
    region = {"spad": Region.SPAD, "acc": Region.ACC}
    ops = [f"latency {READ_LATENCY}", f"x {RESET_CYCLES}", f"r {hm.addr(Region.CSR, Csr.ID):x}"]
    meaning: list[list[tuple]] = []
    for n, sc in enumerate(entries):
        if sc["kind"] != "run":
            raise ValueError(f"scenario {sc['name']!r}: kind={sc['kind']!r}; the raw harness "
                             "runs only kind 'run' (probes while busy need the cocotb bench)")
        if sc["reset"] and n > 0:
            ops.append(f"x {RESET_CYCLES}")
        for mem, lines in sc["load"].items():
            for w, values in lines:
                _write(ops, hm.addr(region[mem], w), HostMap.pack_line(values, width[mem]))
        for slot, word in enumerate(sc["program"]):
            _write(ops, hm.addr(Region.PROG, slot), word)
        for csr, key in ((Csr.LR_SHIFT, "lr_shift"), (Csr.ROUNDING, "stochastic"),
                         (Csr.SR_SEED, "sr_seed"), (Csr.START_PC, "start_pc")):
            _write(ops, hm.addr(Region.CSR, csr), sc[key])
        for key, value in sc.get("skip", {}).items():
            _write(ops, hm.addr(Region.CSR, SKIP_CSRS[key]), value)
        _write(ops, hm.addr(Region.CSR, Csr.CTRL), Ctrl.START | Ctrl.CLEAR)
        ops.append(f"d {sc['budget_cycles']}")
        answers = [("done",), ("status",)]
        ops.append(f"r {hm.addr(Region.CSR, Csr.STATUS):x}")
        for name, csr in READBACK_CSRS.items():
            ops.append(f"r {hm.addr(Region.CSR, csr):x}")
            answers.append(("counter", name))
        for mem, lines in sc["expected"]["lines"].items():
            for w, _ in lines:
                ops.append(f"r {hm.addr(region[mem], w):x}")
                answers.append(("line", mem, w))
        meaning.append(answers)
    return "\n".join(ops) + "\n", meaning


def run_raw(b: RawBuild, entries: list[dict], *, keep: bool = False) -> list[dict]:
    """Run ``entries`` (kind "run") through the raw harness; results as
    :func:`cocotb_tests.runner.run` returns them, ``wait_wall_s`` and ``wait_cpu_s`` the wall and
    CPU time from START to done."""
    cfg = b.cfg
    text, meaning = script(cfg, entries)
    run_dir = b.directory / f"run-{time.time_ns()}"
    run_dir.mkdir()
    (run_dir / "script.txt").write_text(text)
    t = time.perf_counter()
    proc = subprocess.run([str(b.executable), "script.txt", "results.txt"], cwd=run_dir,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    out = (run_dir / "results.txt").read_text().split("\n") if \
        (run_dir / "results.txt").is_file() else []
    if proc.returncode != 0:
        raise runner.CosimError(f"raw harness exit code {proc.returncode} in {run_dir}: "
                                f"{proc.stderr.strip()}")
    out = [line.split() for line in out if line]
    if not out or out[0][0] != "r" or int(out[0][2], 16) != HostMap(cfg).id_value():
        raise runner.CosimError(f"raw harness in {run_dir}: ID register {out[:1]}, expected "
                                f"{HostMap(cfg).id_value():#x}: built for another config?")
    pos, results = 1, []
    width = {"spad": cfg.data_width, "acc": cfg.acc_width}
    for sc, answers in zip(entries, meaning):
        res = {"name": sc["name"], "errors": [], "process_wall_s": wall}
        if pos >= len(out) or out[pos][0] != "d":
            got = out[pos] if pos < len(out) else "nothing"
            res["errors"].append(f"done did not rise within the budget of {sc['budget_cycles']} "
                                 f"cycles after START ({got})")
            results.append(res)
            break
        hw, lines = {}, {mem: {} for mem in sc["expected"]["lines"]}
        for answer, line in zip(answers, out[pos:pos + len(answers)]):
            if answer[0] == "done":
                res["measured_cycles"] = int(line[1])
                res["wait_wall_s"], res["wait_cpu_s"] = int(line[2]) * 1e-9, int(line[3]) * 1e-9
                continue
            value = int(line[2], 16)
            if answer[0] == "status":
                hw = Status.decode(value)
                hw["counters"] = {}
            elif answer[0] == "counter":
                hw["counters"][answer[1]] = value
            else:
                lines[answer[1]][answer[2]] = HostMap.unpack_line(value, width[answer[1]],
                                                                  cfg.banks)
        pos += len(answers)
        res["errors"] += compare(sc["expected"], hw, lines, res["measured_cycles"])
        res.update(status=hw, lines={m: [[w, v] for w, v in ls.items()] for m, ls in lines.items()})
        results.append(res)
    if not keep and not any(r["errors"] for r in results):
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        for r in results:
            r["run_dir"] = str(run_dir)
    return results
