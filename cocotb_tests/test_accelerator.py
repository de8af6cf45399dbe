"""cocotb test of ``skiptrain_top``: runs the scenarios of a file against the golden expectations.

The scenario file (``SKIPTRAIN_SCENARIO``, see :mod:`cocotb_tests.scenarios`) comes from the
calling process; what the hardware did goes to ``SKIPTRAIN_RESULT`` as JSON, so the caller can
also compare it with :func:`golden.scenario.compare` and time the phases. This module imports
numpy at most (through the driver), never torch.

Each scenario: (reset,) load its lines and the whole program memory through
:class:`skiptrain.driver.Driver`, START, sleep until ``done``, read status, counters and lines,
and compare exactly: every status field, every counter, every bank of every line, and the
START-to-done time in cycles.
"""

from __future__ import annotations

import json
import os
import time

import cocotb

from skiptrain.config import Config
from skiptrain.driver import Driver
from skiptrain.hostmap import Csr, Ctrl, HostMap, Region

from .bus import TB
from .scenarios import compare


async def _load(drv: Driver, sc: dict) -> None:
    for mem, lines in sc["load"].items():
        for w, values in lines:
            await drv.write_line(mem, w, values)
    await drv.load_program(sc["program"])
    await drv.write_csr(Csr.LR_SHIFT, sc["lr_shift"])
    await drv.write_csr(Csr.ROUNDING, sc["stochastic"])
    await drv.write_csr(Csr.SR_SEED, sc["sr_seed"])
    await drv.write_skip(sc["skip"])


async def _probe_while_busy(tb: TB, drv: Driver, cfg: Config, sc: dict) -> list[str]:
    """Touch memory while the program runs: the accesses must be refused, not obeyed."""
    errors = []
    st = await drv.status()  # CSRs stay readable while busy and do not count as misuse
    if not st["busy"]:
        return [f"cycle {tb.cycle()}: host probe came too late, status.busy=0; "
                "use a longer program"]
    if st["host_error"]:
        errors.append(f"cycle {tb.cycle()}: status.host_error=1 after a CSR read while busy")
    w, values = sc["load"]["spad"][0]
    hm = HostMap(cfg)
    await tb.write(hm.addr(Region.SPAD, w), HostMap.pack_line([v ^ 1 for v in values],
                                                                cfg.data_width))
    got = await tb.read(hm.addr(Region.SPAD, w))
    if got != 0:
        errors.append(f"cycle {tb.cycle()}: a SPAD read while busy returned {got:#x}, "
                      "expected 0")
    # control writes while busy: a second START or a new START_PC must not take effect
    await drv.write_csr(Csr.START_PC, (sc["start_pc"] + 1) % cfg.prog_depth)
    await drv.write_csr(Csr.CTRL, Ctrl.START | Ctrl.CLEAR)
    st = await drv.status()
    if not st["busy"]:
        errors.append(f"cycle {tb.cycle()}: program ended during the probe; use a longer program")
    return errors


async def _check_after_probe(drv: Driver, sc: dict) -> list[str]:
    got = await drv.read_csr(Csr.START_PC)
    if got != sc["start_pc"]:
        return [f"START_PC: got {got} after a refused write while busy, "
                f"expected {sc['start_pc']}"]
    return []


async def run_scenario(tb: TB, cfg: Config, sc: dict) -> dict:
    drv = Driver(tb, cfg)
    out = {"name": sc["name"], "errors": []}
    t0 = time.perf_counter()
    await _load(drv, sc)
    t1 = time.perf_counter()
    tb.budget_cycles = sc["budget_cycles"]
    if sc["kind"] == "host_probe":
        await drv.start(sc["start_pc"])
        start_ns = tb.last_write_ns
        out["errors"] += await _probe_while_busy(tb, drv, cfg, sc)
        tb.last_write_ns = start_ns  # the budget counts from START, not from the probe
        await tb.wait_done()
        hw = await drv.status()
        hw["counters"] = await drv.counters()
        out["errors"] += await _check_after_probe(drv, sc)
    else:
        hw = await drv.run(sc["start_pc"])
        start_ns = tb.last_write_ns  # Driver.run writes nothing after the START
    t2 = time.perf_counter()
    measured = None if tb.done_ns is None else (tb.done_ns - start_ns) // tb.period_ns
    lines = {mem: await drv.read_lines(mem, [w for w, _ in sc["expected"]["lines"][mem]])
             for mem in sc["expected"]["lines"]}
    t3 = time.perf_counter()
    out["errors"] += compare(sc["expected"], hw, lines, measured)
    out.update(status=hw, measured_cycles=measured,
               lines={mem: [[w, v] for w, v in ls.items()] for mem, ls in lines.items()},
               load_wall_s=t1 - t0, compute_wall_s=t2 - t1, readback_wall_s=t3 - t2,
               wait_wall_s=tb.wait_wall_s, wait_cpu_s=tb.wait_cpu_s)
    return out


@cocotb.test()
async def run_scenarios(dut):
    """Every scenario of the file; continues past a failing one so the report is complete."""
    with open(os.environ["SKIPTRAIN_SCENARIO"]) as f:
        spec = json.load(f)
    cfg = Config.from_dict(spec["config"])
    tb = TB(dut)
    await tb.start()
    hw_id = await Driver(tb, cfg).read_csr(Csr.ID)
    if hw_id != HostMap(cfg).id_value():
        raise AssertionError(f"ID register: got {hw_id:#x}, expected {HostMap(cfg).id_value():#x}: "
                             "the Verilog was built for another config")
    results = []
    for n, sc in enumerate(spec["scenarios"]):
        if sc["reset"] and n > 0:
            await tb.reset()
        try:
            res = await run_scenario(tb, cfg, sc)
        except AssertionError as e:  # a hang or a protocol violation: report, reset, go on
            res = {"name": sc["name"], "errors": [str(e)]}
            await tb.reset()
        results.append(res)
        dut._log.info("scenario %d %s: %s", n, sc["name"],
                      "PASS" if not res["errors"] else f"FAIL ({len(res['errors'])} mismatches)")
    result_path = os.environ.get("SKIPTRAIN_RESULT")
    if result_path:
        with open(result_path, "w") as f:
            json.dump({"results": results}, f)
    failed = [r for r in results if r["errors"]]
    assert not failed, "\n".join(f"{r['name']}: " + "; ".join(r["errors"][:5]) for r in failed)
