"""Skewed storage of matrices in the banked memories.

The scratchpad and the accumulator memory have V = ``cfg.banks`` banks. Element (r, c) of a
matrix stored at word ``base`` with ``ld`` words per row lives at

    bank = (r + c) mod V,    word = base + r * ld + c // V.

Rotating each row by its index makes any V consecutive elements of a row *and* any V
consecutive elements of a column fall in V different banks, so the operand readers fetch a
column of op(A) and a row of op(B) in one cycle whichever of A, B is transposed.
"""

from __future__ import annotations

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
        b, w = self.indices(image.shape[0])
        if self.end(image.shape[0]) > image.shape[1]:
            raise ValueError(f"region words {self.base}..{self.end(image.shape[0]) - 1} "
                             f"exceed memory depth {image.shape[1]}")
        b, w = _index_like(image, *self.indices(image.shape[0]))
        image[b, w] = m if isinstance(m, type(image)) else _array_like(image, m)

    def load(self, image):
        """Read the matrix back from ``image`` (banks x depth, numpy or torch)."""
        b, w = _index_like(image, *self.indices(image.shape[0]))
        return image[b, w]


def _index_like(image, b, w):
    if isinstance(image, np.ndarray):
        return b, w
    import torch  # only when the caller already works in torch
    return torch.as_tensor(b), torch.as_tensor(w)


def _array_like(image, m):
    if isinstance(image, np.ndarray):
        return np.asarray(m)
    import torch
    return torch.as_tensor(np.asarray(m), dtype=image.dtype)
