"""An MLP on the accelerator: its data in the memories and its steps, on the golden model.

:class:`MlpOnChip` holds a golden :class:`~golden.accelerator.Accelerator` with the memory map
and programs of :func:`skiptrain.program.build_mlp`; the host's part is what the RTL's host
does too: load the weights and the programs once, then per step write the batch (inputs and
labels) and START. Everything else happens "on chip", bit for bit as the RTL.
"""

from __future__ import annotations

import torch

from skiptrain.config import Config
from skiptrain.isa import ErrorCode
from skiptrain.layout import Region
from skiptrain.program import MlpProgram, MlpSpec, build_mlp, lr_shift_of

from .accelerator import Accelerator, RunResult
from .requantizer import requantize

__all__ = ["MlpOnChip", "quantize", "StepError"]


class StepError(RuntimeError):
    """A program stopped with an error status; the message names the code and the slot."""


def to_fixed(x: torch.Tensor, frac_bits: int) -> torch.Tensor:
    """round_half_even(x * 2**frac_bits) as int64. Exact: scaling by a power of two is exact in
    float64, and torch.round rounds half to even."""
    return torch.round(x.to(torch.float64) * float(1 << frac_bits)).to(torch.int64)


def quantize(x: torch.Tensor, frac_bits: int, cfg: Config) -> torch.Tensor:
    """round_half_even(x * 2**frac_bits), saturated to the operand format (float in, int64 out)."""
    return to_fixed(x, frac_bits).clamp(cfg.data_min, cfg.data_max)


class MlpOnChip:
    def __init__(self, spec: MlpSpec, cfg: Config, lr: float, *, test_batch_last: int = 0,
                 rounding: str = "nearest", seed: int = 0):
        """``rounding``: the update step rounded half to even (``nearest``) or stochastically
        (``stochastic``: the LFSRs seeded with ``seed``)."""
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(f"rounding={rounding!r}: must be 'nearest' or 'stochastic'")
        self.spec, self.cfg = spec, cfg
        self.prog: MlpProgram = build_mlp(spec, cfg, test_batch_last=test_batch_last)
        self.acc = Accelerator(cfg)
        self.acc.load_program(self.prog.program())
        self.acc.lr_shift = lr_shift_of(lr, cfg)
        self.acc.stochastic = rounding == "stochastic"
        self.acc.seed_lfsr(seed)
        one = 1 << cfg.frac_bits
        if one > cfg.data_max:
            raise ValueError(f"frac_bits={cfg.frac_bits}: 1.0 must be representable (the bias row)")
        for l, a in enumerate(self.prog.act):
            ones = Region(a.base + (a.rows - 1) * a.ld, 1, a.cols, a.ld)
            self.acc.store(ones, torch.full((1, a.cols), one, dtype=torch.int64))

    # ---- weights ------------------------------------------------------------------------------
    def load_float_weights(self, layers) -> None:
        """Master weights from float (weight, bias) pairs: 2*frac_bits fraction bits, exact
        rounding; the operand copies as the UPDATE epilogue makes them."""
        f, cfg = self.cfg.frac_bits, self.cfg
        for l, (w, b) in enumerate(layers, start=1):
            full = torch.cat([w.detach().to(torch.float64), b.detach().to(torch.float64)[:, None]], 1)
            master = to_fixed(full, 2 * f)
            lim = 1 << (cfg.acc_width - 1)
            self.set_master(l, master.clamp(-lim, lim - 1))

    def set_master(self, layer: int, master: torch.Tensor) -> None:
        self.acc.store(self.prog.master[layer], master, "acc")
        copy, _ = requantize(master, self.cfg.frac_bits, self.cfg)
        self.acc.store(self.prog.w[layer], copy)

    def master(self, layer: int) -> torch.Tensor:
        return self.acc.load(self.prog.master[layer], "acc")

    def float_weights(self):
        """(weight, bias) float pairs of the master weights."""
        scale = float(1 << (2 * self.cfg.frac_bits))
        out = []
        for l in range(1, self.prog.layers + 1):
            m = self.master(l).to(torch.float64) / scale
            out.append((m[:, :-1], m[:, -1]))
        return out

    # ---- steps --------------------------------------------------------------------------------
    def write_batch(self, x_int: torch.Tensor, labels: torch.Tensor) -> None:
        """x_int: samples x inputs (operand format), labels: samples. Fewer samples than the
        batch fill the first columns (inference of a last partial batch)."""
        n = x_int.shape[0]
        a = self.prog.act[0]
        self.acc.store(Region(a.base, self.spec.sizes[0], n, a.ld), x_int.t())
        lab = self.prog.labels
        self.acc.store(Region(lab.base, 1, n, lab.ld), labels.reshape(1, -1))

    def _run(self, pc: int) -> RunResult:
        self.acc.clear()
        res = self.acc.run(pc)
        if res.error:
            raise StepError(f"program at slot {pc} stopped with {ErrorCode(res.error_code).name} "
                            f"at slot {res.pc}")
        return res

    def train_step(self, x_int: torch.Tensor, labels: torch.Tensor) -> RunResult:
        if x_int.shape[0] != self.spec.batch:
            raise ValueError(f"a training batch has {self.spec.batch} samples, got {x_int.shape[0]}")
        self.write_batch(x_int, labels)
        return self._run(self.prog.train_pc)

    def infer(self, x_int: torch.Tensor, labels: torch.Tensor) -> RunResult:
        """Forward and LOSS of a batch (or the last partial one); counters['correct'] counts."""
        n = x_int.shape[0]
        if n == self.spec.batch:
            pc = self.prog.infer_pc
        elif n == self.prog.infer_last_n and self.prog.infer_last_pc is not None:
            pc = self.prog.infer_last_pc
        else:
            raise ValueError(f"inference of {n} samples: the programs take {self.spec.batch}"
                             + (f" or {self.prog.infer_last_n}" if self.prog.infer_last_n else ""))
        self.write_batch(x_int, labels)
        return self._run(pc)
