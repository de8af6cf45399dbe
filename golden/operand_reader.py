"""Gathering op(A) and op(B) from the skewed scratchpad image, as rtl/operand_reader.py does."""

import torch

from skiptrain.layout import Region


def read_operand(image: torch.Tensor, base: int, ld: int, rows: int, cols: int,
                 transposed: bool) -> torch.Tensor:
    """The stored rows x cols matrix at ``base``/``ld``, transposed when the command says so."""
    stored = Region(base, rows, cols, ld).load(image)
    return stored.t() if transposed else stored
