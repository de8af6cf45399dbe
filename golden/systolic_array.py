"""The array's arithmetic: C = op(A) . op(B) in a wrapping acc_width-bit accumulator."""

import torch

from skiptrain.config import Config

from .requantizer import wrap


def exact_in_float64(k: int, cfg: Config) -> bool:
    """Every partial sum of K products of operands is an integer below 2**53 in magnitude, so a
    float64 matmul (BLAS) computes it exactly: |a*b| <= 2**(2*data_width - 2), K of them."""
    return (2 * cfg.data_width - 2) + max(k - 1, 0).bit_length() <= 53


def gemm(a: torch.Tensor, b: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Exact integer product of M x K and K x N operand matrices, wrapped like the PE accumulators.

    Every partial sum fits in int64 (|product| < 2**(2*data_width - 1) <= 2**63 / 2**dim_width),
    and wrapping is a ring homomorphism, so wrapping once at the end equals wrapping each step.
    When the sums are exact in float64 (:func:`exact_in_float64`), the product runs there: BLAS
    is far faster than torch's int64 matmul, and every result is the same integer.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: shapes {tuple(a.shape)} and {tuple(b.shape)} do not chain")
    if exact_in_float64(a.shape[1], cfg):
        return wrap(torch.mm(a.to(torch.float64), b.to(torch.float64)).to(torch.int64), cfg.acc_width)
    return wrap(torch.mm(a.to(torch.int64), b.to(torch.int64)), cfg.acc_width)
