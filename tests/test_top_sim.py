"""End-to-end programs on rtl.top.Accelerator in the Amaranth simulator, against the golden model.

Every output bit, status bit, counter and busy-cycle count must equal the golden model's.
"""

import pytest
import torch
from amaranth.hdl import Module, ResetInserter, Signal

from amaranth_bus import run_scenario, run_scenarios, simulate
from golden.scenario import (SATURATION_MODES, Scenario, edge_coverage, edge_gemm_scenario,
                             error_scenarios, random_gemm_scenario, unreachable_edge_classes)
from rtl.top import Accelerator
from skiptrain.config import Config, preset
from skiptrain.hostmap import Csr, Ctrl, HostMap
from skiptrain.isa import Command, OutMode
from skiptrain.layout import Region as MatrixRegion

CONFIGS = {
    "tiny": preset("tiny"),
    "3x5": Config(rows=3, cols=5, spad_depth=512, acc_depth=128, prog_depth=16),
    "5x2": Config(rows=5, cols=2, spad_depth=512, acc_depth=128, prog_depth=16),
}


@pytest.mark.parametrize("name,seeds", [("tiny", range(8)), ("3x5", range(4)), ("5x2", range(3))])
def test_random_programs(name, seeds):
    cfg = CONFIGS[name]
    scenarios = [random_gemm_scenario(cfg, seed, n_commands=3, max_dim=11) for seed in seeds]
    errors = run_scenarios(Accelerator(cfg), cfg, scenarios)
    assert not errors, "\n".join(errors[:20])


@pytest.mark.parametrize("name", ["tiny", "3x5"])
def test_edge_programs(name):
    """GEMMs aimed at the requantizer's edges, one program per saturation mode (a program with
    no real saturation shows a SATURATED flag raised by a value that rounds into range); on
    3x5 also accumulators that wrap (K = 513: one program only, it is the slow one)."""
    cfg = CONFIGS[name]
    scenarios = [edge_gemm_scenario(cfg, 40 + n, wrap=name != "tiny" and mode == "both",
                                    saturation=mode)
                 for n, mode in enumerate(SATURATION_MODES)]
    counts = edge_coverage(scenarios)
    missed = {c for c, k in counts.items() if not k} - unreachable_edge_classes(cfg)
    assert not missed, f"{name}: edge classes never hit: {sorted(missed)}; counts {counts}"
    errors = run_scenarios(Accelerator(cfg), cfg, scenarios)
    assert not errors, "\n".join(errors[:20])


def test_edge_shapes_small():
    """1xKx1, K < rows, K = 1, sizes that are not multiples of the array, exact multiples."""
    cfg = preset("small")
    shapes = [(1, 9, 1), (4, 1, 4), (5, 3, 9), (4, 4, 4), (8, 2, 3), (1, 1, 1), (9, 5, 1)]
    scenarios = [random_gemm_scenario(cfg, seed, n_commands=len(shapes), shapes=shapes)
                 for seed in range(2)]
    errors = run_scenarios(Accelerator(cfg), cfg, scenarios)
    assert not errors, "\n".join(errors[:20])


def test_errors_then_recovery():
    """Every command error stops the program with its code and slot, the accelerator goes idle,
    and the next program on the same instance runs correctly."""
    cfg = preset("tiny")
    scenarios = []
    for name, (sc, code) in error_scenarios(cfg).items():
        assert sc.expected()[1].error_code == code, name
        scenarios += [sc, random_gemm_scenario(cfg, len(scenarios), n_commands=1, max_dim=5)]
    errors = run_scenarios(Accelerator(cfg), cfg, scenarios)
    assert not errors, "\n".join(errors[:20])


def test_host_access_while_busy_is_refused():
    cfg = preset("tiny")
    hm = HostMap(cfg)
    V = cfg.banks
    A, B, C = MatrixRegion.packed(0, 8, 40, V), MatrixRegion.packed(200, 40, 8, V), MatrixRegion.packed(400, 8, 8, V)
    probe_line = 450

    async def body(drv, bus):
        await drv.write_line("spad", probe_line, [7] * V)
        await drv.load_program([Command.gemm(8, 40, 8, A, B, C), Command()])
        await drv.start()
        await bus.tick()
        assert bus.ctx.get(bus.dut.busy), f"cycle {bus.cycle}: expected busy after START"
        await drv.write_line("spad", probe_line, [1] * V)           # refused
        got = await drv.read_line("spad", probe_line)                 # refused: reads 0
        assert got == [0] * V, f"cycle {bus.cycle}: read while busy got {got}, expected zeros"
        await drv.write_csr(Csr.CTRL, Ctrl.START)                     # refused
        st = await drv.status()
        assert st["busy"] == 1 and st["host_error"] == 1, f"cycle {bus.cycle}: status {st}"
        await bus.wait_done()
        st = await drv.status()
        assert st["done"] == 1 and st["error"] == 0 and st["host_error"] == 1, st
        got = await drv.read_line("spad", probe_line)
        assert got == [7] * V, f"line {probe_line}: got {got}, expected the value written while idle"
        await drv.write_csr(Csr.CTRL, Ctrl.CLEAR)
        st = await drv.status()
        assert st["host_error"] == 0, f"CLEAR left host_error set: {st}"
        ident = await drv.read_csr(Csr.ID)
        assert ident == hm.id_value(), f"ID: got {ident:#x}, expected {hm.id_value():#x}"

    simulate(Accelerator(cfg), cfg, body)


def test_skip_registers_read_back_and_are_refused_while_busy():
    """Every skip register (skiptrain.driver.SKIP_CSRS but the write-only seed's value) reads
    back what the host wrote while idle; a write while busy changes nothing and flags
    host_error."""
    from skiptrain.driver import SKIP_CSRS
    cfg = preset("tiny")
    V = cfg.banks
    A, B, C = MatrixRegion.packed(0, 8, 40, V), MatrixRegion.packed(200, 40, 8, V), MatrixRegion.packed(400, 8, 8, V)
    values = {"ctrl": 0x25, "conf_tau": 0x1234, "batch_tau": 77, "rate": 1 << 15, "tcp_bound": 0xDEADBEEF}

    async def body(drv, bus):
        await drv.write_skip(values)
        for key, value in values.items():
            got = await drv.read_csr(SKIP_CSRS[key])
            assert got == value, f"{key}: read back {got:#x}, wrote {value:#x}"
        await drv.load_program([Command.gemm(8, 40, 8, A, B, C), Command()])
        await drv.start()
        await bus.tick()
        await drv.write_csr(Csr.TCP_BOUND, 5)                         # refused
        st = await drv.status()
        assert st["busy"] == 1 and st["host_error"] == 1, f"cycle {bus.cycle}: status {st}"
        await bus.wait_done()
        got = await drv.read_csr(Csr.TCP_BOUND)
        assert got == values["tcp_bound"], f"TCP_BOUND after a refused write: {got:#x}"

    simulate(Accelerator(cfg), cfg, body)


def test_reset_while_busy_returns_to_idle_and_runs_again():
    """A reset in the middle of a GEMM: the accelerator is idle at once, with clear status and
    counters, and the next program on the same instance is bit- and cycle-exact."""
    cfg = preset("tiny")
    V = cfg.banks
    A, B, C = MatrixRegion.packed(0, 8, 40, V), MatrixRegion.packed(200, 40, 8, V), MatrixRegion.packed(400, 8, 8, V)
    dut, rst = Accelerator(cfg), Signal()
    top = Module()
    top.submodules.accelerator = ResetInserter(rst)(dut)

    async def body(drv, bus):
        await drv.load_program([Command.gemm(8, 40, 8, A, B, C), Command()])
        await drv.start()
        for _ in range(60):
            await bus.tick()
        assert bus.ctx.get(dut.busy), f"cycle {bus.cycle}: expected busy 60 cycles after START"
        bus.ctx.set(rst, 1)
        await bus.tick()
        bus.ctx.set(rst, 0)
        await bus.tick()
        got = (bus.ctx.get(dut.busy), bus.ctx.get(dut.done), bus.ctx.get(dut.error))
        assert got == (0, 0, 0), f"cycle {bus.cycle}: busy, done, error after reset = {got}, expected 0, 0, 0"
        st = await drv.status()
        assert (st["busy"], st["done"], st["error"], st["host_error"]) == (0, 0, 0, 0), \
            f"cycle {bus.cycle}: status after reset {st}"
        counters = await drv.counters()
        assert not any(counters.values()), f"cycle {bus.cycle}: counters after reset {counters}"
        errors = []
        for seed in range(2):
            errors += await run_scenario(drv, random_gemm_scenario(cfg, seed, n_commands=2, max_dim=9))
        return errors

    errors = simulate(dut, cfg, body, top=top)
    assert not errors, "\n".join(errors[:20])


def test_saturation_flag_is_sticky_until_clear():
    """A saturating program sets SATURATED; a later program that does not saturate, started
    without CLEAR, leaves it set; START with CLEAR clears it."""
    cfg = preset("tiny")
    V = cfg.banks
    A, B = MatrixRegion.packed(0, 2, 4, V), MatrixRegion.packed(20, 4, 2, V)
    C = MatrixRegion.packed(40, 2, 2, V)
    big = Scenario(cfg, name="saturates")
    big.inputs = [("spad", A, torch.full((2, 4), cfg.data_max)), ("spad", B, torch.full((4, 2), cfg.data_max))]
    big.commands = [Command.gemm(2, 4, 2, A, B, C, out_mode=OutMode.QUANT, shift=0), Command()]
    big.outputs = [("spad", C)]
    small = Scenario(cfg, name="does not saturate")
    small.inputs = [("spad", A, torch.ones(2, 4, dtype=torch.int64)), ("spad", B, torch.ones(4, 2, dtype=torch.int64))]
    small.commands = big.commands
    small.outputs = big.outputs
    assert big.expected()[1].saturated and not small.expected()[1].saturated, \
        "the scenarios lost their point: the first must saturate, the second must not"

    async def body(drv, bus):
        errors = await run_scenario(drv, big)
        assert (await drv.status())["saturated"] == 1, f"cycle {bus.cycle}: SATURATED not set"
        init = small.initial()
        await drv.write_lines("spad", init.image("spad").numpy(), small.lines("spad"))
        await drv.start(clear=False)
        await bus.wait_done()
        st = await drv.status()
        assert st["saturated"] == 1, f"cycle {bus.cycle}: SATURATED dropped without CLEAR: {st}"
        got = (await drv.read_lines("spad", [C.base]))[C.base][:2]
        assert got == [4, 4], f"cycle {bus.cycle}: C row 0 = {got}, expected [4, 4]"
        await drv.start(clear=True)
        await bus.wait_done()
        st = await drv.status()
        assert st["saturated"] == 0 and st["done"] == 1, f"cycle {bus.cycle}: after START|CLEAR {st}"
        return errors

    errors = simulate(Accelerator(cfg), cfg, body)
    assert not errors, "\n".join(errors[:20])


def test_one_by_one_array_with_period_one():
    """A 1x1 array with K = 1 has a tile period of 1: every cycle ends a tile."""
    cfg = Config(rows=1, cols=1, spad_depth=512, acc_depth=128, prog_depth=16)
    shapes = [(1, 1, 1), (2, 1, 3), (3, 2, 1)]
    scenarios = [random_gemm_scenario(cfg, seed, n_commands=len(shapes), shapes=shapes) for seed in range(2)]
    errors = run_scenarios(Accelerator(cfg), cfg, scenarios)
    assert not errors, "\n".join(errors[:20])
