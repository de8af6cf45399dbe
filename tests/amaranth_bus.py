"""A host bus for the Amaranth simulator, so the skiptrain Driver runs against rtl.top.Accelerator."""

from amaranth.sim import Simulator

from golden.scenario import compare
from skiptrain.driver import Driver
from skiptrain.hostmap import Csr


class SimBus:
    def __init__(self, ctx, dut, max_cycles: int = 200_000):
        self.ctx, self.dut, self.max_cycles = ctx, dut, max_cycles
        self.cycle = 0

    async def tick(self):
        await self.ctx.tick()
        self.cycle += 1

    async def write(self, addr, data):
        h = self.dut.host
        self.ctx.set(h.addr, addr)
        self.ctx.set(h.w_data, data)
        self.ctx.set(h.w_en, 1)
        await self.tick()
        self.ctx.set(h.w_en, 0)

    async def read(self, addr):
        h = self.dut.host
        self.ctx.set(h.addr, addr)
        self.ctx.set(h.r_en, 1)
        await self.tick()
        self.ctx.set(h.r_en, 0)
        for _ in range(8):
            if self.ctx.get(h.r_valid):
                return self.ctx.get(h.r_data)
            await self.tick()
        raise AssertionError(f"cycle {self.cycle}: no r_valid 8 cycles after a read of {addr:#x}")

    async def wait_done(self):
        start = self.cycle
        while not self.ctx.get(self.dut.done) or self.ctx.get(self.dut.busy):
            await self.tick()
            if self.cycle - start > self.max_cycles:
                raise AssertionError(f"cycle {self.cycle}: not done after {self.max_cycles} cycles")


def simulate(dut, cfg, body, top=None):
    """Simulate ``dut`` with ``body(driver, bus)`` as the testbench; returns body's result.
    ``top``, when given, is what is simulated (a wrapper around ``dut``, e.g. one adding a reset)."""
    sim = Simulator(top if top is not None else dut)
    sim.add_clock(1e-8)
    out = {}

    async def tb(ctx):
        bus = SimBus(ctx, dut)
        out["result"] = await body(Driver(bus, cfg), bus)

    sim.add_testbench(tb)
    sim.run()
    return out["result"]


async def run_scenario(drv, sc):
    """Load, run and read back one scenario; returns compare()'s list of mismatches."""
    init = sc.initial()
    for mem in ("spad", "acc"):
        # output lines too: clears what an earlier scenario left there
        await drv.write_lines(mem, init.image(mem).numpy(), sc.lines(mem))
    await drv.load_program(sc.commands)
    await drv.write_csr(Csr.LR_SHIFT, sc.lr_shift)
    await drv.write_csr(Csr.ROUNDING, int(sc.stochastic))
    await drv.write_csr(Csr.SR_SEED, sc.sr_seed)
    await drv.write_skip(sc.skip_registers())
    hw = await drv.run(sc.start_pc)
    lines = {mem: await drv.read_lines(mem, sc.lines(mem)) for mem in ("spad", "acc")}
    return [f"{sc.name}: {e}" for e in compare(sc, hw, lines)]


def run_scenarios(dut, cfg, scenarios):
    """Run scenarios one after another on one simulated instance; all mismatches."""
    async def body(drv, bus):
        errors = []
        for sc in scenarios:
            errors += await run_scenario(drv, sc)
        return errors
    return simulate(dut, cfg, body)
