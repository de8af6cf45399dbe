"""cocotb test of ``skiptrain_top``: training steps of an MLP, each checked against the golden model.

The document (``SKIPTRAIN_SCENARIO``, see :mod:`cocotb_tests.training_session`) holds the
memory contents to load once, the program, LR_SHIFT, and per step the batch lines and the
golden expectations. Per step: write the batch, START (with CLEAR), sleep until ``done``,
then compare the status, every counter, the START-to-done cycles, and the digest of every
weight and bias line. The first failing step stops the run and reports its lines.
"""

from __future__ import annotations

import json
import os
import time

import cocotb

from skiptrain.config import Config
from skiptrain.driver import Driver, lines_digest
from skiptrain.hostmap import Csr, HostMap

from .bus import TB
from .scenarios import compare


@cocotb.test()
async def run_training(dut):
    with open(os.environ["SKIPTRAIN_SCENARIO"]) as f:
        doc = json.load(f)
    cfg = Config.from_dict(doc["config"])
    tb = TB(dut)
    await tb.start()
    drv = Driver(tb, cfg)
    hw_id = await drv.read_csr(Csr.ID)
    if hw_id != HostMap(cfg).id_value():
        raise AssertionError(f"ID register: got {hw_id:#x}, expected {HostMap(cfg).id_value():#x}")
    t0 = time.perf_counter()
    for mem, lines in doc["load"].items():
        for w, values in lines:
            await drv.write_line(mem, w, values)
    await drv.load_program(doc["program"])
    await drv.write_csr(Csr.LR_SHIFT, doc["lr_shift"])
    await drv.write_csr(Csr.ROUNDING, doc["stochastic"])
    await drv.write_csr(Csr.SR_SEED, doc["sr_seed"])
    await drv.write_skip(doc["skip"])
    load_s = time.perf_counter() - t0
    results = []
    compute_s = check_s = 0.0
    for s, step in enumerate(doc["steps"]):
        exp = step["expected"]
        if step.get("skip"):  # the host changes the skip registers between steps
            await drv.write_skip(step["skip"])
        for w, values in step["batch"]:
            await drv.write_line("spad", w, values)
        tb.budget_cycles = exp["budget_cycles"]
        await drv.start(doc["train_pc"])
        start_ns = tb.last_write_ns
        t1 = time.perf_counter()
        try:
            await tb.wait_done()
        except AssertionError as e:  # a hang: report and stop
            results.append({"name": f"step {s}", "errors": [str(e)]})
            break
        t2 = time.perf_counter()  # START to done only: the simulator's own speed
        hw = await drv.status()
        hw["counters"] = await drv.counters()
        measured = None if tb.done_ns is None else (tb.done_ns - start_ns) // tb.period_ns
        lines = {mem: await drv.read_lines(mem, words) for mem, words in doc["check"].items()}
        check_s += time.perf_counter() - t2
        compute_s += t2 - t1
        errors = compare({"status": exp["status"], "counters": exp["counters"],
                          "cycles": exp["cycles"], "lines": {}}, hw, lines, measured)
        if lines_digest(lines) != exp["digest"]:
            errors.append(f"step {s}: the weight and bias lines differ from the golden model's")
        res = {"name": f"step {s}", "errors": errors, "cycles": measured,
               "counters": hw["counters"], "compute_wall_s": t2 - t1}
        if errors:
            res["lines"] = {mem: [[w, v] for w, v in ls.items()] for mem, ls in lines.items()}
        results.append(res)
        if errors:
            break
    with open(os.environ["SKIPTRAIN_RESULT"], "w") as f:
        json.dump({"results": results, "load_wall_s": load_s, "compute_wall_s": compute_s,
                   "check_wall_s": check_s}, f)
    failed = [r for r in results if r["errors"]]
    assert not failed, "; ".join(f"{r['name']}: {r['errors'][:3]}" for r in failed)
    assert len(results) == len(doc["steps"]), f"ran {len(results)} of {len(doc['steps'])} steps"
