"""The accelerator's host bus under cocotb, for :class:`skiptrain.driver.Driver`.

Timing discipline (the same on Icarus and Verilator): inputs change only at a falling clock
edge and are sampled by the design on the next rising edge; outputs are read at the falling
edge after the rising edge that produced them (nothing changes at a falling edge). Python is awake only for bus
accesses: the clock runs inside the simulator (the toplevel ``skiptrain_cosim`` of
:mod:`cocotb_tests.runner` makes it), and :meth:`TB.wait_done` polls ``done`` with timers of
a growing step and reads the time of its rising edge from the toplevel, so a long program costs
no Python, and no VPI call, per simulated cycle.
"""

from __future__ import annotations

import time

from cocotb.triggers import FallingEdge, RisingEdge, Timer
from cocotb.utils import get_sim_time

from skiptrain.hostmap import READ_LATENCY

from .runner import CLOCK_PERIOD_NS

#: wait_done's polling: the first step in cycles, the step as a fraction of the cycles waited so
#: far, the largest step
POLL_MIN_CYCLES, POLL_FRACTION, POLL_MAX_CYCLES = 16, 64, 1 << 14


class TB:
    """Owns the reset of a ``skiptrain_cosim`` (its clock runs by itself) and is the bus a
    ``Driver`` drives.

    Members
    -------
    period_ns:
        Clock period of the toplevel (checked by :meth:`start`); cycle numbers in messages are
        simulation time over this.
    last_write_ns:
        Time of the rising edge that took the latest write (after ``Driver.start``: the START
        edge).
    done_ns:
        Time of the rising edge at which ``done`` rose, as the toplevel latched it (read by
        :meth:`wait_done`).
    wait_wall_s, wait_cpu_s:
        Wall time and this process's CPU time (simulator and Python: one thread) while
        :meth:`wait_done` waited for ``done``: the simulator's own speed, with no bus access in
        it. CPU time holds still on a loaded machine, wall time does not.
    budget_cycles:
        Cycles :meth:`wait_done` waits for ``done`` before it fails.
    """

    def __init__(self, dut, period_ns: int = CLOCK_PERIOD_NS, budget_cycles: int = 100_000):
        self.dut = dut
        self.period_ns = period_ns
        self.budget_cycles = budget_cycles
        self.last_write_ns: int | None = None
        self.done_ns: int | None = None
        self.wait_wall_s = self.wait_cpu_s = 0.0

    # ---- time -------------------------------------------------------------------------------
    def now_ns(self) -> int:
        return round(get_sim_time("ns"))

    def cycle(self) -> int:
        """Rising edges since time 0 (the clock starts low, so edge n is at (n - 1/2) periods)."""
        return (self.now_ns() + self.period_ns // 2) // self.period_ns

    # ---- clock and reset --------------------------------------------------------------------
    async def start(self, reset_cycles: int = 2) -> None:
        """Idle inputs, a check that the toplevel's clock has the period cycle counts assume,
        then reset."""
        d = self.dut
        for sig in (d.host__w_en, d.host__r_en, d.host__addr, d.host__w_data):
            sig.value = 0
        d.rst.value = 1
        await RisingEdge(d.clk)
        first = self.now_ns()
        await RisingEdge(d.clk)
        if self.now_ns() - first != self.period_ns:
            raise AssertionError(f"the toplevel's clock has rising edges {self.now_ns() - first} "
                                 f"ns apart; the bench counts cycles with period_ns="
                                 f"{self.period_ns}")
        await self.reset(reset_cycles)

    async def reset(self, cycles: int = 2) -> None:
        """Synchronous reset for ``cycles`` rising edges; returns just after a falling edge."""
        d = self.dut
        await FallingEdge(d.clk)
        d.host__w_en.value = 0
        d.host__r_en.value = 0
        d.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.rst.value = 0

    async def idle(self, cycles: int = 1) -> None:
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)

    # ---- the bus protocol of skiptrain.driver -----------------------------------------------
    # Each access starts at a falling edge and steps a whole period with one timer: Python wakes
    # once per cycle, not three times (edge, ReadOnly, edge), and that is most of a test's time.
    # At the wake (the next falling edge) the outputs are those of the rising edge in between,
    # and inputs set then are sampled by the rising edge after; the design has no falling-edge
    # logic, so whether the clock fell before or after the wake changes nothing.
    async def _cycle(self) -> None:
        await Timer(self.period_ns, "ns")

    async def write(self, addr: int, data: int) -> None:
        d = self.dut
        d.host__addr.value = int(addr)
        d.host__w_data.value = int(data)
        d.host__w_en.value = 1
        await self._cycle()
        self.last_write_ns = self.now_ns() - self.period_ns // 2  # the rising edge that took it
        d.host__w_en.value = 0

    async def read(self, addr: int) -> int:
        """One read; checks that ``r_valid`` comes exactly READ_LATENCY edges after ``r_en``."""
        d = self.dut
        d.host__addr.value = int(addr)
        d.host__r_en.value = 1
        for edge in range(1, READ_LATENCY + 1):
            await self._cycle()
            d.host__r_en.value = 0
            valid = int(d.host__r_valid.value)
            if edge < READ_LATENCY and valid:
                raise AssertionError(f"cycle {self.cycle()}: r_valid after {edge} edge(s) reading "
                                     f"{addr:#x}, expected exactly {READ_LATENCY}")
        if not valid:
            raise AssertionError(f"cycle {self.cycle()}: no r_valid {READ_LATENCY} edges "
                                 f"after a read of {addr:#x}")
        return int(d.host__r_data.value)

    async def wait_done(self) -> None:
        """Sleep until ``done`` is high (at most ``budget_cycles`` after the last write); sets
        :attr:`done_ns` to the time of its rising edge, which the toplevel latches.

        ``done`` is polled with timers of a growing step (1/POLL_FRACTION of the cycles waited
        so far), not awaited as an edge: a value callback on ``done`` makes Verilator's VPI layer
        compare it after every evaluation, a cost on every simulated half cycle. The step keeps
        the overshoot under 1/POLL_FRACTION of the wait, and the latched edge time keeps the
        cycle count exact. Whether ``busy`` fell on the same edge is checked by the CYCLES
        counter, which counts busy edges and is compared with the golden model."""
        d = self.dut
        if int(d.done.value) and not int(d.busy.value):
            # already done before we got here: the edge time is lost, so no cycle measurement
            self.done_ns = None
            self.wait_wall_s = self.wait_cpu_s = 0.0
            return
        since = self.last_write_ns if self.last_write_ns is not None else self.now_ns()
        deadline_ns = since + self.budget_cycles * self.period_ns
        t, c = time.perf_counter(), time.process_time()
        while not int(d.done.value):
            now = self.now_ns()
            if now >= deadline_ns:
                raise AssertionError(
                    f"cycle {self.cycle()}: done did not rise within the budget of "
                    f"{self.budget_cycles} cycles after the START write at cycle "
                    f"{since // self.period_ns} (busy={int(d.busy.value)}, "
                    f"error={int(d.error.value)})")
            waited = (now - since) // self.period_ns
            step = min(max(POLL_MIN_CYCLES, waited // POLL_FRACTION), POLL_MAX_CYCLES)
            await Timer(min(step * self.period_ns, deadline_ns - now), "ns")
        self.wait_wall_s, self.wait_cpu_s = time.perf_counter() - t, time.process_time() - c
        self.done_ns = int(d.done_ns.value)
        if not since < self.done_ns <= self.now_ns():
            raise AssertionError(f"cycle {self.cycle()}: done is high, but the latched time of "
                                 f"its rising edge, {self.done_ns} ns, is not after the START "
                                 f"write at {since} ns")
        if int(d.busy.value):
            raise AssertionError(f"cycle {self.cycle()}: done is high with busy still 1")
        await FallingEdge(d.clk)
