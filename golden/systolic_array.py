"""The array's arithmetic: C = op(A) . op(B) in a wrapping acc_width-bit accumulator."""

import torch

from skiptrain.config import Config

from .requantizer import wrap


def gemm(a: torch.Tensor, b: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Exact integer product of M x K and K x N operand matrices, wrapped like the PE accumulators.

    Every partial sum fits in int64 (|product| < 2**(2*data_width - 1) <= 2**63 / 2**dim_width),
    and wrapping is a ring homomorphism, so wrapping once at the end equals wrapping each step.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: shapes {tuple(a.shape)} and {tuple(b.shape)} do not chain")
    return wrap(torch.mm(a.to(torch.int64), b.to(torch.int64)), cfg.acc_width)
