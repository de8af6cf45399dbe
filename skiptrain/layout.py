"""Skewed storage of matrices in the banked memories.

The scratchpad and the accumulator memory have V = ``cfg.banks`` banks. Element (r, c) of a
matrix stored at word ``base`` with ``ld`` words per row lives at

    bank = (r + c) mod V,    word = base + r * ld + c // V.

Rotating each row by its index makes any V consecutive elements of a row *and* any V
consecutive elements of a column fall in V different banks, so the operand readers fetch a
column of op(A) and a row of op(B) in one cycle whichever of A, B is transposed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["Region", "words_per_row", "locate"]


def words_per_row(cols: int, banks: int) -> int:
    return -(-cols // banks)


def locate(r, c, base: int, ld: int, banks: int):
    """(bank, word) of element (r, c); works elementwise on numpy arrays."""
    return (r + c) % banks, base + r * ld + c // banks


@dataclass(frozen=True)
class Region:
    """A matrix of ``rows`` x ``cols`` elements at ``base`` with ``ld`` words per row."""

    base: int
    rows: int
    cols: int
    ld: int

    @classmethod
    def packed(cls, base: int, rows: int, cols: int, banks: int) -> "Region":
        """The densest region: ``ld`` = words per row."""
        return cls(base, rows, cols, words_per_row(cols, banks))

    def end(self, banks: int) -> int:
        """One past the last word used."""
        return self.base + (self.rows - 1) * self.ld + (self.cols - 1) // banks + 1

    def indices(self, banks: int):
        """(banks, words) arrays of shape (rows, cols) for every element."""
        r = np.arange(self.rows)[:, None]
        c = np.arange(self.cols)[None, :]
        return locate(r, c, self.base, self.ld, banks)

    def store(self, image, matrix) -> None:
        """Write ``matrix`` (rows x cols) into ``image`` (banks x depth, numpy or torch) in place."""
        m = matrix if hasattr(matrix, "shape") else np.asarray(matrix)
        if tuple(m.shape) != (self.rows, self.cols):
            raise ValueError(f"matrix shape {m.shape} does not match region {self.rows}x{self.cols}")
        if self.end(image.shape[0]) > image.shape[1]:
            raise ValueError(f"region words {self.base}..{self.end(image.shape[0]) - 1} "
                             f"exceed memory depth {image.shape[1]}")
        flat = _flat_index(self, *image.shape, not isinstance(image, np.ndarray))
        image.reshape(-1)[flat] = m if isinstance(m, type(image)) else _array_like(image, m)

    def load(self, image):
        """Read the matrix back from ``image`` (banks x depth, numpy or torch)."""
        return image.reshape(-1)[_flat_index(self, *image.shape, not isinstance(image, np.ndarray))]


@functools.lru_cache(maxsize=4096)
def _flat_index(region: Region, banks: int, depth: int, torch_index: bool):
    """Indices into the flattened (bank-major) image of every element, rows x cols; cached,
    since a program touches the same few regions at every step."""
    b, w = region.indices(banks)
    flat = b * depth + w
    if not torch_index:
        return flat
    import torch  # only when the caller already works in torch
    return torch.as_tensor(flat, dtype=torch.int64)


def _array_like(image, m):
    if isinstance(image, np.ndarray):
        return np.asarray(m)
    import torch
    return torch.as_tensor(np.asarray(m), dtype=image.dtype)
