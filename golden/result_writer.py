"""Write-back of C into the scratchpad or accumulator image, as rtl/result_writer.py does."""

import torch

from skiptrain.layout import Region


def write_result(image: torch.Tensor, base: int, ld: int, values: torch.Tensor) -> None:
    Region(base, values.shape[0], values.shape[1], ld).store(image, values)
