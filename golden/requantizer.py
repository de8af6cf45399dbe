"""Requantization of accumulators, bit-exact with rtl/requantizer.py."""

import torch

from skiptrain.config import Config


def wrap(x: torch.Tensor, width: int) -> torch.Tensor:
    """Two's complement wrap of int64 values to ``width`` bits (what a ``width``-bit register keeps)."""
    if width >= 64:
        return x
    half = 1 << (width - 1)
    return torch.remainder(x + half, 1 << width) - half


def round_half_even(acc: torch.Tensor, shift: int) -> torch.Tensor:
    """round_half_even(acc / 2**shift), not saturated (the requantizer's round-only mode)."""
    acc = acc.to(torch.int64)
    if shift == 0:
        return acc
    q = torch.bitwise_right_shift(acc, shift)          # floor division
    rem = acc - torch.bitwise_left_shift(q, shift)
    half = 1 << (shift - 1)
    up = (rem > half) | ((rem == half) & (torch.bitwise_and(q, 1) == 1))
    return q + up.to(torch.int64)


def requantize(acc: torch.Tensor, shift: int, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """round_half_even(acc / 2**shift) saturated to the operand format; also the saturation mask."""
    r = round_half_even(acc, shift)
    saturated = (r > cfg.data_max) | (r < cfg.data_min)
    return r.clamp(cfg.data_min, cfg.data_max), saturated
