"""The golden model against independent references: Python integers and Fractions, hand counts."""

import random
from fractions import Fraction

import torch

from golden.accelerator import Accelerator
from golden.requantizer import requantize, wrap
from golden.sequencer import drain_cycles, gemm_cycles
from golden.systolic_array import gemm
from skiptrain.config import preset
from skiptrain.isa import Command, OutMode
from skiptrain.layout import Region


def _ref_wrap(x: int, width: int) -> int:
    x &= (1 << width) - 1
    return x - (1 << width) if x >> (width - 1) else x


def test_requantize_is_round_half_even_then_saturate():
    cfg = preset("default")
    rng = random.Random(1)
    vals = [rng.randint(-(1 << 39), (1 << 39) - 1) for _ in range(300)]
    vals += [5 << 7, 3 << 7, -(5 << 7), -(3 << 7), 1 << 7, -(1 << 7), 0, (1 << 39) - 1, -(1 << 39)]
    for shift in (0, 1, 8, 20, 39):
        got, sat = requantize(torch.tensor(vals), shift, cfg)
        for v, g, s in zip(vals, got.tolist(), sat.tolist()):
            r = round(Fraction(v, 1 << shift))  # Fraction rounds half to even
            want = min(max(r, cfg.data_min), cfg.data_max)
            assert (g, s) == (want, want != r), f"value {v} shift {shift}: got {g}/{s}, expected {want}"


def test_gemm_wraps_like_a_40_bit_register():
    cfg = preset("default")  # 16-bit operands, 40-bit accumulator
    a = torch.full((2, 600), cfg.data_min)
    b = torch.full((600, 3), cfg.data_min)
    exact = 600 * cfg.data_min * cfg.data_min
    assert exact >= 1 << 39  # really overflows
    assert gemm(a, b, cfg)[0, 0].item() == _ref_wrap(exact, cfg.acc_width)
    assert wrap(torch.tensor([1 << 39]), 40).item() == -(1 << 39)


def test_cycle_model_by_hand():
    """tiny (2x2), M=3 K=5 N=4: 4 tiles of period 5; drain = issue register 1 + reader 9
    + array (C + 3 + 2 + R - 1 = 8) + writer 16 = 34; a GEMM is FETCH + 2 WAIT + DECODE 4
    + CHECK 11 + 20 + 34 = 69 cycles, and the HALT 5 more."""
    cfg = preset("tiny")
    cmd = Command(opcode=1, m=3, k=5, n=4)
    assert drain_cycles(cmd, cfg) == 34
    assert gemm_cycles(cmd, cfg) == {"total": 69, "in_command": 65}
    # K < max(R, C): the tile period is max(R, C) and the bubbles shorten the drain
    cmd1 = Command(opcode=1, m=2, k=1, n=2)
    assert drain_cycles(cmd1, cfg) == 33 and gemm_cycles(cmd1, cfg)["in_command"] == 11 + 2 + 33


def test_accelerator_run_end_to_end():
    cfg = preset("small")  # 16-bit operands
    V = cfg.banks
    acc = Accelerator(cfg)
    A, B = Region.packed(0, 4, 3, V), Region.packed(10, 5, 3, V)  # B stored N x K (transposed)
    C = Region.packed(0, 4, 5, V)
    a = torch.randint(-300, 300, (4, 3))
    b = torch.randint(-300, 300, (5, 3))
    acc.store(A, a)
    acc.store(B, b)
    acc.load_program([Command.gemm(4, 3, 5, A, B, C, trans_b=True, out_mode=OutMode.ACC), Command()])
    res = acc.run()
    assert not res.error and res.counters["commands"] == 1 and res.counters["phase_macs_fwd"] == 60
    assert torch.equal(acc.load(C, "acc"), a @ b.t())
