"""The stochastic-rounding LFSRs of rtl/result_writer.py (xorshift32, one per writer lane)."""

from __future__ import annotations

import numpy as np
import torch

from skiptrain.config import Config
from skiptrain.numerics import LFSR_WIDTH, lfsr_seed

_MASK = np.uint64((1 << LFSR_WIDTH) - 1)


def seeded(seed: int, cfg: Config) -> list[int]:
    """Every lane's state after SR_SEED is written with ``seed``."""
    return [lfsr_seed(seed, j) for j in range(cfg.cols)]


def _step(x: np.ndarray) -> np.ndarray:
    x = x ^ ((x << np.uint64(13)) & _MASK)
    x = x ^ (x >> np.uint64(17))
    return x ^ ((x << np.uint64(5)) & _MASK)


def rounding_noise(states: list[int], m: int, n: int, shift: int, cfg: Config):
    """The noise an UPDATE command adds to its M x N accumulators, and the lanes' states after.

    Rows reach the writer tile by tile (tile rows, then tile columns), R rows per tile; lane j
    of a row is column j0 + j. Each row takes every lane's current state and steps them all.
    The noise is the state's low min(shift, 32) bits."""
    R, C = cfg.rows, cfg.cols
    ti, tj = -(-m // R), -(-n // C)
    rows = ti * tj * R
    seq = np.empty((rows, C), dtype=np.uint64)
    x = np.array(states, dtype=np.uint64)
    for k in range(rows):
        seq[k] = x
        x = _step(x)
    mask = np.uint64((1 << min(shift, LFSR_WIDTH)) - 1)
    seq &= mask
    # (tile row a, tile column b, row i, lane j) -> element (a*R + i, b*C + j)
    noise = seq.reshape(ti, tj, R, C).transpose(0, 2, 1, 3).reshape(ti * R, tj * C)
    return torch.from_numpy(noise[:m, :n].astype(np.int64)), [int(v) for v in x]
