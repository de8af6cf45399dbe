"""Amaranth-simulator unit tests of the PE, the skewed array and the requantizer."""

import random

import pytest
import torch
from amaranth.hdl import Fragment, Module
from amaranth.sim import Simulator

from golden.requantizer import requantize, wrap
from rtl.pe import PE
from rtl.requantizer import Requantizer
from rtl.skew import Skew
from rtl.systolic_array import SystolicArray
from skiptrain.config import Config, preset


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_pe_accumulates_restarts_and_holds_result():
    cfg = preset("tiny")
    dut = PE(cfg)
    rng = random.Random(3)
    # three back-to-back sums of lengths 4, 1, 3; extreme operands included
    stream = []
    for length in (4, 1, 3):
        for k in range(length):
            a = rng.choice([cfg.data_min, cfg.data_max, rng.randint(cfg.data_min, cfg.data_max)])
            b = rng.choice([cfg.data_min, cfg.data_max, rng.randint(cfg.data_min, cfg.data_max)])
            stream.append((a, b, k == 0, k == length - 1))

    async def bench(ctx):
        expected_results = []
        acc = 0
        for a, b, first, last in stream:
            acc = (0 if first else acc) + a * b
            if last:
                expected_results.append(acc)
        seen = []
        cycle = 0
        feed = stream + [(0, 0, 0, 0)] * (dut.latency + 2)
        last_cycles = [n for n, s in enumerate(stream) if s[3]]
        for a, b, first, last in feed:
            ctx.set(dut.a_in, a)
            ctx.set(dut.b_in, b)
            ctx.set(dut.first_in, first)
            ctx.set(dut.last_in, last)
            await ctx.tick()
            cycle += 1
            assert ctx.get(dut.a_out) == a and ctx.get(dut.b_out) == b, f"cycle {cycle}: pass-through"
            # the result of a sum whose last step entered at cycle t is visible at t + latency + 1
            if cycle - dut.latency - 1 in last_cycles:
                seen.append(ctx.get(dut.result))
        assert seen == [wrap(torch.tensor(x), cfg.acc_width).item() for x in expected_results], \
            f"results: got {seen}, expected {expected_results}"

    _run(dut, bench)


def test_skew_delays_lane_l_by_l():
    dut = Skew(4, 8)

    async def bench(ctx):
        history = []
        for t in range(10):
            vals = [(t * 10 + lane) & 0xFF for lane in range(4)]
            history.append(vals)
            for lane in range(4):
                ctx.set(dut.i[lane], vals[lane])
            await ctx.delay(1e-9)
            for lane in range(4):
                if t >= lane:
                    got, exp = ctx.get(dut.o[lane]), history[t - lane][lane]
                    assert got == exp, f"cycle {t} lane {lane}: got {got}, expected {exp}"
            await ctx.tick()

    _run(dut, bench)


class _SkewedArray:
    """Array with its input skews, as rtl/top.py wires it."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.m = Module()
        self.m.submodules.array = self.array = SystolicArray(cfg)
        self.m.submodules.skew_a = self.skew_a = Skew(cfg.rows, cfg.data_width)
        self.m.submodules.skew_b = self.skew_b = Skew(cfg.cols, cfg.data_width)
        self.m.submodules.skew_f = self.skew_f = Skew(cfg.rows, 2)
        self.m.d.comb += [self.array.a.eq(self.skew_a.o), self.array.b.eq(self.skew_b.o)]
        for i in range(cfg.rows):
            self.m.d.comb += [self.array.first[i].eq(self.skew_f.o[i][0]),
                              self.array.last[i].eq(self.skew_f.o[i][1])]


def test_array_tiles_back_to_back():
    """Two tiles, the second following the first at once (period = max(K, R, C)); every row
    comes out at row_out_latency + i after the tile's last step, with the exact sums."""
    cfg = Config(rows=3, cols=4, spad_depth=64, acc_depth=64, prog_depth=4)
    R, C = cfg.rows, cfg.cols
    top = _SkewedArray(cfg)
    g = torch.Generator().manual_seed(0)
    K = 5
    tiles = [(torch.randint(cfg.data_min, cfg.data_max + 1, (R, K), generator=g),
              torch.randint(cfg.data_min, cfg.data_max + 1, (K, C), generator=g)) for _ in range(2)]

    async def bench(ctx):
        steps = []
        for a, b in tiles:
            for k in range(K):
                steps.append((a[:, k], b[k, :], k == 0, k == K - 1))
        outputs = []
        for t in range(len(steps) + R + C + 12):
            a, b, first, last = steps[t] if t < len(steps) else (None, None, 0, 0)
            for i in range(R):
                ctx.set(top.skew_a.i[i], int(a[i]) if a is not None else 0)
                ctx.set(top.skew_f.i[i], int(first) | int(last) << 1)
            for j in range(C):
                ctx.set(top.skew_b.i[j], int(b[j]) if b is not None else 0)
            await ctx.tick()
            if ctx.get(top.array.out_valid):
                outputs.append((t, ctx.get(top.array.out_row), [ctx.get(top.array.out_data[j]) for j in range(C)]))
        assert len(outputs) == 2 * R, f"got {len(outputs)} rows, expected {2 * R}"
        for n, (a, b) in enumerate(tiles):
            exp = wrap(a.to(torch.int64) @ b.to(torch.int64), cfg.acc_width)
            last_step = (n + 1) * K - 1
            for i in range(R):
                t, row, data = outputs[n * R + i]
                want_t = last_step + top.array.row_out_latency + i - 1  # the loop ticks before sampling
                assert (t, row) == (want_t, i), f"tile {n} row {i}: at cycle {t} row {row}, expected cycle {want_t}"
                assert data == exp[i].tolist(), f"tile {n} row {i}: got {data}, expected {exp[i].tolist()}"

    _run(top.m, bench)


def test_requantizer_matches_golden():
    cfg = preset("tiny")
    lanes = 4
    dut = Requantizer(cfg, lanes)
    rng = random.Random(5)
    big = 1 << (cfg.acc_width - 1)
    cases = []
    for shift in [0, 1, 2, cfg.frac_bits, 17, cfg.acc_width - 1]:
        for _ in range(6):
            vals = [rng.choice([rng.randint(-big, big - 1), rng.randint(-1000, 1000),
                                (rng.randint(-50, 50) << max(shift, 1)) | (1 << max(shift - 1, 0)),
                                big - 1, -big]) for _ in range(lanes)]
            vals = wrap(torch.tensor(vals), cfg.acc_width).tolist()  # what an accumulator can hold
            cases.append((shift, vals, 1))
        cases.append((shift, [rng.randint(-big, big - 1) for _ in range(lanes)], 0))

    async def bench(ctx):
        for shift, vals, quant in cases:
            ctx.set(dut.shift, shift)
            ctx.set(dut.quant, quant)
            for _ in range(dut.settle_cycles):  # the per-command constants settle, as in a command
                await ctx.tick()
            for lane, v in enumerate(vals):
                ctx.set(dut.value[lane], v)
            ctx.set(dut.valid, 1)
            for _ in range(dut.latency):
                await ctx.tick()
            ctx.set(dut.valid, 0)
            got = [ctx.get(dut.out[lane]) for lane in range(lanes)]
            sat = [(ctx.get(dut.saturated) >> lane) & 1 for lane in range(lanes)]
            if quant:
                exp, exp_sat = requantize(torch.tensor(vals), shift, cfg)
                exp, exp_sat = exp.tolist(), [int(s) for s in exp_sat]
            else:
                exp, exp_sat = vals, [0] * lanes
            assert got == exp and sat == exp_sat, \
                f"shift {shift} quant {quant} in {vals}: got {got} sat {sat}, expected {exp} sat {exp_sat}"

    _run(dut, bench)


def _sequencer_trace(cfg, commands, writer_delay=5, max_cycles=2000):
    """Run the Sequencer alone with a program memory model; returns (issue steps, result)."""
    from rtl.sequencer import Sequencer
    from skiptrain.isa import encode

    dut = Sequencer(cfg)
    words = [encode(c, cfg) for c in commands]
    out = {"issues": [], "cycles": 0}

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        drain_wait = None
        for cycle in range(max_cycles):
            addr = ctx.get(dut.prog_addr)
            await ctx.tick()
            # synchronous program memory: data for the address of the previous cycle
            ctx.set(dut.prog_data.as_value(), words[addr] if addr < len(words) else 0)
            busy = ctx.get(dut.busy)
            if ctx.get(dut.issue.valid) or ctx.get(dut.issue.first):
                out["issues"].append((ctx.get(dut.issue.i0), ctx.get(dut.issue.j0), ctx.get(dut.issue.k),
                                      ctx.get(dut.issue.valid), ctx.get(dut.issue.first), ctx.get(dut.issue.last)))
            # a stand-in writer: reports the command written a fixed time after the last step
            if ctx.get(dut.issue.last):
                drain_wait = writer_delay
            ctx.set(dut.writer_done, drain_wait == 0)
            drain_wait = None if drain_wait in (None, 0) else drain_wait - 1
            if not busy:
                out.update(cycles=cycle, error=ctx.get(dut.error), code=ctx.get(dut.error_code).value,
                           pc=ctx.get(dut.pc), done=ctx.get(dut.done))
                return
        raise AssertionError(f"sequencer still busy after {max_cycles} cycles")

    _run(dut, bench)
    return out


def test_sequencer_issues_tiles_in_order_with_bubbles():
    from skiptrain.isa import Command

    cfg = Config(rows=2, cols=3, spad_depth=256, acc_depth=64, prog_depth=8)
    M, K, N = 3, 2, 4  # K < max(R, C) = 3: one bubble step per tile
    res = _sequencer_trace(cfg, [Command(opcode=1, m=M, k=K, n=N, a_ld=1, b_ld=1, c_ld=2,
                                          b_base=20, c_base=40), Command()])
    assert res["done"] and not res["error"], res
    tiles = [(i0, j0) for i0 in range(0, M, 2) for j0 in range(0, N, 3)]
    expected = []
    for i0, j0 in tiles:
        expected += [(i0, j0, k, 1, k == 0, k == K - 1) for k in range(K)]
    got = [s for s in res["issues"] if s[3]]
    assert got == expected, f"issue stream: got {got}, expected {expected}"
    bubbles = [s for s in res["issues"] if not s[3]]
    assert bubbles == [], f"bubbles must carry no flags: {bubbles}"


def test_sequencer_rejects_bad_commands_at_the_decision_step():
    from rtl.sequencer import Sequencer
    from skiptrain.isa import Command, ErrorCode

    cfg = preset("tiny")
    good = Command(opcode=1, m=2, k=2, n=2, a_ld=1, b_ld=1, c_ld=1, c_base=10)
    cases = [
        (Command(opcode=1, m=0, k=2, n=2, a_ld=1, b_ld=1, c_ld=1), ErrorCode.ZERO_DIM),
        (Command(opcode=1, m=2, k=2, n=2, a_ld=0, b_ld=1, c_ld=1), ErrorCode.A_STRIDE),
        (Command(opcode=1, m=2, k=2, n=2, a_ld=1, b_ld=1, c_ld=1, b_base=cfg.spad_depth - 1), ErrorCode.B_RANGE),
        (Command(opcode=1, m=2, k=2, n=2, a_ld=1, b_ld=1, c_ld=1), ErrorCode.OVERLAP),
    ]
    for bad, code in cases:
        res = _sequencer_trace(cfg, [good, bad, Command()])
        assert (res["error"], res["code"], res["pc"]) == (1, code, 1), \
            f"{bad}: got error={res['error']} code={res['code']} pc={res['pc']}, expected {code.name} at 1"
        assert res["issues"][-1][:3] == (0, 0, 1), "only the good command may issue"
    # the decision falls at the last CHECK step: a bad command costs exactly FETCH+DECODE+CHECK
    res_good_only = _sequencer_trace(cfg, [good, Command()])
    res_bad = _sequencer_trace(cfg, [good, cases[0][0], Command()])
    halt = 4  # FETCH, WAIT (program memory latency 2), DECODE, one CHECK step
    assert res_bad["cycles"] - (res_good_only["cycles"] - halt) == 3 + Sequencer.check_cycles, \
        f"bad command cost {res_bad['cycles'] - res_good_only['cycles'] + halt} cycles"


def test_sequencer_range_checks_at_the_last_word():
    """Each operand's range check (A, B, C and the UPDATE's aux region) with its last word on the
    memory's last word (runs) and one past it (its RANGE error), the four operands with
    different row counts and strides, so a check that took another operand's rows or ld (the
    extent multiplier is shared, fed a step per operand) fails; the RTL against
    golden.sequencer.check and the expected code."""
    from golden.sequencer import check, extent
    from skiptrain.isa import Command, Epilogue, ErrorCode, Gate, OutMode

    cfg = preset("tiny")
    V = cfg.banks
    # m x k times k x n: A is 3 x 5 (trans_a: stored 5 x 3), B is 5 x 4, C (and aux) 3 x 4
    shape = {"a": (5, 3), "b": (5, 4), "c": (3, 4), "aux": (3, 4)}
    lds = {"a": 7, "b": 5, "c": 11}
    depth = {"a": cfg.spad_depth, "b": cfg.spad_depth, "c": cfg.spad_depth, "aux": cfg.acc_depth}
    low = {"a": 0, "b": 60, "c": 120, "aux": 0}  # apart, far below the memories' ends
    codes = {"a": ErrorCode.A_RANGE, "b": ErrorCode.B_RANGE, "c": ErrorCode.C_RANGE,
             "aux": ErrorCode.AUX_RANGE}
    for target in ("a", "b", "c", "aux"):
        for past in (0, 1):
            base = dict(low)
            ld = lds["c"] if target == "aux" else lds[target]
            rows, cols = shape[target]
            base[target] = depth[target] - 1 - (rows - 1) * ld - (cols - 1) // V + past
            cmd = Command(opcode=1, m=3, k=5, n=4, trans_a=1, out_mode=OutMode.QUANT,
                          epilogue=Epilogue.UPDATE, gate=Gate.ALWAYS,
                          a_base=base["a"], a_ld=lds["a"], b_base=base["b"], b_ld=lds["b"],
                          c_base=base["c"], c_ld=lds["c"], aux_base=base["aux"])
            assert extent(base[target], ld, rows, cols, cfg) == depth[target] - 1 + past
            expected = codes[target] if past else ErrorCode.NONE
            assert check(cmd, cfg) == expected, (target, past, check(cmd, cfg))
            res = _sequencer_trace(cfg, [cmd, Command()])
            got = ErrorCode(res["code"]) if res["error"] else ErrorCode.NONE
            assert got == expected, f"{target} last word {depth[target] - 1 + past}: got {got.name}, expected {expected.name}"


def test_golden_cycle_constants_are_the_rtl_latencies():
    """golden/sequencer.py may not import rtl/, so its constants are copies: this binds them."""
    from golden import sequencer as gs
    from rtl.banked_memory import BankedMemory
    from rtl.operand_reader import OperandReader
    from rtl.result_writer import ResultWriter
    from rtl.systolic_array import SystolicArray
    from rtl.sequencer import Sequencer
    cfg = preset("default")
    reader = OperandReader(cfg, cfg.rows, BankedMemory.read_latency)
    writer = ResultWriter(cfg, BankedMemory.write_latency)
    array = SystolicArray(cfg)
    for dut in (reader, writer, array):
        Fragment.get(dut, None)  # elaborated, so Amaranth does not warn it was never used
    got = {"CHECK_CYCLES": Sequencer.check_cycles, "READER_LATENCY": reader.latency,
           "WRITER_LATENCY": writer.latency, "ARRAY_MUX_STAGES": array.mux_stages,
           "FETCH_CYCLES": 1 + BankedMemory.read_latency}
    for name, value in got.items():
        assert getattr(gs, name) == value, f"golden {name}={getattr(gs, name)}, rtl says {value}"
    gemm_only = ResultWriter(cfg.replace(training=False), BankedMemory.write_latency)
    Fragment.get(gemm_only, None)
    assert gs.WRITER_LATENCY_GEMM_ONLY == gemm_only.latency, (gs.WRITER_LATENCY_GEMM_ONLY, gemm_only.latency)


def test_popcount_counts_every_mask():
    """rtl.arith.popcount (chunk tables and an adder tree) against bin(x).count("1"), every
    mask of 1 to 9 bits (chunks of 4: one, two and three chunks, ragged last ones)."""
    from amaranth.hdl import Signal
    from rtl.arith import popcount
    m = Module()
    ins = {w: Signal(w, name=f"bits{w}") for w in range(1, 10)}
    outs = {}
    for w, s in ins.items():
        outs[w] = Signal(4, name=f"count{w}")
        m.d.comb += outs[w].eq(popcount(s))
    sim = Simulator(m)

    async def bench(ctx):
        for w, s in ins.items():
            for v in range(1 << w):
                ctx.set(s, v)
                got = ctx.get(outs[w])
                assert got == bin(v).count("1"), f"{w} bits, mask {v:#x}: got {got}, expected {bin(v).count('1')}"

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("width,dw", [(10, 4), (9, 8), (6, 5)])
def test_round_saturate_matches_the_clamp_of_the_sum(width, dw):
    """rtl.arith.round_saturate (the requantizer's and the writer's clamp without a carry chain
    in front) against clamp(q + up) and its flag, for every q of ``width`` bits and both
    round-up bits: the windows q = data_max with a round-up (saturates) and q = data_min - 1
    with a round-up (lands on data_min: not a saturation) are among them."""
    from amaranth.hdl import Signal, signed
    from rtl.arith import round_saturate
    m = Module()
    q, up = Signal(signed(width)), Signal()
    value, sat = Signal(signed(dw)), Signal()
    v, s = round_saturate(q, up, dw)
    m.d.comb += [value.eq(v), sat.eq(s)]
    lo, hi = -(1 << (dw - 1)), (1 << (dw - 1)) - 1
    sim = Simulator(m)

    async def bench(ctx):
        for qv in range(-(1 << (width - 1)), 1 << (width - 1)):
            for u in (0, 1):
                ctx.set(q, qv)
                ctx.set(up, u)
                r = qv + u
                want = (min(max(r, lo), hi), int(r > hi or r < lo))
                got = (ctx.get(value), ctx.get(sat))
                assert got == want, f"q={qv}, up={u}: got (value, saturated) {got}, expected {want}"

    sim.add_testbench(bench)
    sim.run()
