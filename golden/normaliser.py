"""The kept-count normaliser, as rtl/normaliser.py computes it."""

import torch

from skiptrain.config import Config
from skiptrain.numerics import NORM_FRAC, norm_step_width

from .requantizer import round_half_even


def normalise(step: torch.Tensor, m: int, cfg: Config) -> torch.Tensor:
    """round_half_even(clamp(step) * m / 2**16): the step clamped to
    :func:`~skiptrain.numerics.norm_step_width` signed bits, times the mantissa ``m`` of
    batch / kept (:func:`~skiptrain.numerics.norm_mantissa`)."""
    xw = norm_step_width(cfg.acc_width)
    x = step.to(torch.int64).clamp(-(1 << (xw - 1)), (1 << (xw - 1)) - 1)
    return round_half_even(x * int(m), NORM_FRAC)
