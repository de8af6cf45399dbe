"""The RTL requantizer at its edges, value and saturation flag per lane, against the golden one.

Deterministic: for each shift every accumulator of golden.scenario.requant_edge_accumulators
(the exact multiples of 2**shift and the ties x.5 around data_min - 2 .. data_min + 1,
data_max - 1 .. data_max + 2 and -1 .. 1, each +-1, the accumulator's extremes), so a rounding
or flag bug at one edge cannot hide behind random values that never reach it. The flag
matters on its own: it once rose for exact results in [data_min - 0.5, data_min), which round
half to even into range (e.g. tiny, shift 1: -257 -> -128, not a saturation).
"""

import pytest
import torch
from amaranth.sim import Simulator

from golden.requantizer import requantize
from golden.scenario import requant_edge_accumulators
from rtl.requantizer import Requantizer
from skiptrain.config import Config, preset

LANES = 4  # two copies of the per-command constants (Requantizer.lanes_per_copy = 2)

CONFIGS = {"tiny": preset("tiny"), "default": preset("default"),
           # frac_bits = 0 and an accumulator that is not a multiple of 8 bits
           "odd": Config(rows=2, cols=2, data_width=5, frac_bits=0, acc_width=19)}


def _shifts(cfg: Config) -> list[int]:
    # every shift: the coarse (multiple of 8) and fine steps, and the saturation tests the
    # requantizer selects per shift a stage early (one-hot, so one wrong select hides at one
    # shift only)
    return list(range(cfg.acc_width))


def _simulate(cfg: Config, cases: list[tuple[int, list[int]]]) -> list[tuple[list[int], list[int]]]:
    """(values, flags) of the RTL for each (shift, LANES accumulators), one command each."""
    dut = Requantizer(cfg, LANES)
    out = []

    async def bench(ctx):
        ctx.set(dut.quant, 1)
        shift = None
        for s, vals in cases:
            if s != shift:
                shift = s
                ctx.set(dut.shift, s)
                for _ in range(dut.settle_cycles):  # the per-command constants settle, as in a command
                    await ctx.tick()
            for lane, v in enumerate(vals):
                ctx.set(dut.value[lane], v)
            ctx.set(dut.valid, 1)
            for _ in range(dut.latency):
                await ctx.tick()
            ctx.set(dut.valid, 0)
            assert ctx.get(dut.out_valid), f"shift {s}: no out_valid {dut.latency} cycles after valid"
            out.append(([ctx.get(dut.out[lane]) for lane in range(LANES)],
                        [(ctx.get(dut.saturated) >> lane) & 1 for lane in range(LANES)]))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_requantizer_edges_value_and_flag(name):
    cfg = CONFIGS[name]
    cases = []
    for shift in _shifts(cfg):
        vals = requant_edge_accumulators(cfg, shift)
        vals += [vals[-1]] * (-len(vals) % LANES)  # whole batches
        # each value in a different lane from batch to batch: rotate by the batch number
        for n in range(0, len(vals), LANES):
            batch = vals[n:n + LANES]
            r = (n // LANES) % LANES
            cases.append((shift, batch[r:] + batch[:r]))
    # the fixed window must be in the list, or this test lost its point
    for shift in (1, 2):
        assert (cfg.data_min << shift) - 1 in requant_edge_accumulators(cfg, shift), shift
    got = _simulate(cfg, cases)
    failures = []
    for (shift, vals), (values, flags) in zip(cases, got):
        exp, exp_sat = requantize(torch.tensor(vals), shift, cfg)
        for lane, v in enumerate(vals):
            want = (int(exp[lane]), int(exp_sat[lane]))
            if (values[lane], flags[lane]) != want:
                failures.append(f"acc {v} shift {shift} (lane {lane}): got value {values[lane]} "
                                f"saturated {flags[lane]}, expected value {want[0]} saturated {want[1]}")
    assert not failures, f"{name}: {len(failures)} of {len(cases) * LANES} results differ:\n" + \
        "\n".join(failures[:30])
