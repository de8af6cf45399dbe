"""MAC counting from the shapes actually run.

A :class:`MacMeter` hooks every ``nn.Linear`` and ``nn.Conv2d`` of a model and counts, per step
and per layer, the multiply-accumulates of the four parts of training work:

- **F**, forward GEMM: rows x in_features x out_features (linear), or output elements x
  in_channels/groups x kernel area (convolution, with the kernel that actually ran, so a pooled
  kernel counts as (k-1) x (k-1)). Counted when the forward runs.
- **B**, input-gradient GEMM, and **G**, weight-gradient GEMM: each costs the F MACs of the rows
  that are back-propagated. Counted by a hook on the layer's output gradient, so only when the
  backward really reaches the layer and with the rows it really carries. B counts only if the
  layer's input needs a gradient (never for the first layer, whose input is the data, nor below
  the lowest trainable layer); G counts only if the weight needs a gradient. Autograd computes
  exactly these products and no others.
- **U**, the update: one MAC per parameter element that the optimizer updates (it has a
  gradient). Layers with parameters but no GEMM (batch norm) appear with U only. Bias and
  normalisation gradients (row sums) are not GEMMs and are not counted.
- **R**, F recomputed: MACs of forwards that the PyTorch reference runs again only to build the
  autograd graph of the kept rows (per-sample skip); the accelerator keeps its activations, so R is
  reported beside the work, not in it.

The *reference* work of a step is what training without any skipping would run on the same
rows: the F, B, G of the full model at full resolution and all parameters updated. It comes from
one forward of a single sample through the full model (:meth:`MacMeter.reference`); skipped work
is reference minus executed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .models import UNIT_TRAIN

__all__ = ["MacMeter", "COUNTERS", "ReferenceWork", "gemm_macs"]

#: work counters of a step, in the order of the arrays
COUNTERS = ("F", "B", "G", "U", "R")
F_, B_, G_, U_, R_ = range(5)


def gemm_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of the forward GEMM that ``module`` just ran from ``inp`` to ``out``."""
    if isinstance(module, nn.Linear):
        rows = inp.numel() // inp.shape[-1]
        return rows * inp.shape[-1] * out.shape[-1]
    if isinstance(module, nn.Conv2d):
        kh, kw = getattr(module, "kernel_used", module.kernel_size)
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    raise TypeError(f"no GEMM MAC formula for {type(module).__name__}")


@dataclass(frozen=True)
class ReferenceWork:
    """Per-layer work of one sample through the full model (and U of one update).

    ``f``: F MACs per sample; ``needs_input_grad``: whether the layer's input gradient is part
    of full training (False for layers fed by the data); ``params``: parameter elements.
    """

    f: np.ndarray
    needs_input_grad: np.ndarray
    params: np.ndarray

    def per_step(self, rows: int) -> np.ndarray:
        """(layers, 4) reference F, B, G, U of one step over ``rows`` samples."""
        f = self.f * rows
        return np.stack([f, f * self.needs_input_grad, f, self.params], axis=1)

    def bg_per_sample(self) -> int:
        return int((self.f * self.needs_input_grad).sum() + self.f.sum())


class MacMeter:
    """Counts executed work of a :class:`~golden.training.models.SkipNet` per step and layer.

    Usage: ``begin_step(rows)``; set ``phase`` to ``"F"`` around training forwards (``"R"``
    around recomputations, None otherwise: evaluation is not training work); backward as
    usual; ``count_update()`` after the optimizer step; ``end_step()``.

    Members
    -------
    names:
        Layer names (module paths without the ``units.`` prefix), in model order.
    steps:
        List of (layers, 5) int64 arrays of executed F, B, G, U, R, one per finished step.
    rows:
        Rows (samples) of each finished step.
    backward_trace:
        When a list, every backward through a GEMM layer appends ``(name, rows of dY)``.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = [(name.removeprefix("units."), m) for name, m in model.named_modules()
                       if any(True for _ in m.parameters(recurse=False))]
        self.names = [n for n, _ in self.layers]
        self.is_gemm = np.array([isinstance(m, (nn.Linear, nn.Conv2d)) for _, m in self.layers])
        self.params = np.array([sum(p.numel() for p in m.parameters(recurse=False))
                                for _, m in self.layers], dtype=np.int64)
        self.phase: str | None = None
        self.steps: list[np.ndarray] = []
        self.rows: list[int] = []
        self.backward_trace: list | None = None
        self._cur: np.ndarray | None = None
        self._ref: np.ndarray | None = None
        self._ref_needs: np.ndarray | None = None
        self._handles = [m.register_forward_hook(self._make_hook(i))
                         for i, (_, m) in enumerate(self.layers) if self.is_gemm[i]]

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _make_hook(self, index: int):
        name, module = self.layers[index]

        def hook(mod, inputs, out):
            if self.phase is None:
                return
            macs = gemm_macs(mod, inputs[0], out)
            if self.phase == "ref":
                self._ref[index] += macs
                self._ref_needs[index] = inputs[0].requires_grad
                return
            self._cur[index, F_ if self.phase == "F" else R_] += macs
            if torch.is_grad_enabled() and out.requires_grad:
                needs_in = inputs[0].requires_grad
                needs_w = mod.weight.requires_grad
                cur = self._cur

                def on_grad(grad):
                    cur[index, B_] += macs * needs_in
                    cur[index, G_] += macs * needs_w
                    if self.backward_trace is not None:
                        self.backward_trace.append((name, grad.shape[0]))

                out.register_hook(on_grad)
        return hook

    def reference(self, low_res: int | None = None, **low_res_options) -> ReferenceWork:
        """Work of one sample through the full model (all units trained, all parameters with
        gradients), at full resolution or at ``low_res``. Leaves the model as it found it."""
        model = self.model
        saved = ([p.requires_grad for p in model.parameters()], list(model.unit_state),
                 model.low_res, model.training)
        phase = self.phase
        try:
            for p in model.parameters():
                p.requires_grad_(True)
            model.unit_state = [UNIT_TRAIN] * len(model.unit_state)
            model.set_low_res(low_res, **low_res_options)
            model.eval()
            self._ref = np.zeros(len(self.layers), dtype=np.int64)
            self._ref_needs = np.zeros(len(self.layers), dtype=bool)
            self.phase = "ref"
            with torch.enable_grad():
                model(torch.zeros(1, *model.input_shape, device=next(model.parameters()).device))
            return ReferenceWork(self._ref.copy(), self._ref_needs.copy(), self.params.copy())
        finally:
            self.phase = phase
            for p, rg in zip(model.parameters(), saved[0]):
                p.requires_grad_(rg)
            model.unit_state = saved[1]
            model.set_low_res(saved[2])
            model.train(saved[3])

    def begin_step(self, rows: int) -> None:
        self._cur = np.zeros((len(self.layers), len(COUNTERS)), dtype=np.int64)
        self._rows = rows

    def count_update(self) -> None:
        """Count U: every parameter element the optimizer is about to update (it has a grad)."""
        for i, (_, m) in enumerate(self.layers):
            self._cur[i, U_] += sum(p.numel() for p in m.parameters(recurse=False)
                                    if p.grad is not None)

    def end_step(self) -> np.ndarray:
        self.steps.append(self._cur)
        self.rows.append(self._rows)
        cur, self._cur = self._cur, None
        return cur
