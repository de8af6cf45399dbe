"""Training and inference programs of an MLP for the accelerator: the memory map and the commands.

Layout (one sample per column, so the loss unit reads V samples per line):

- ``act[0]`` = X, ``(n0 + 1) x B`` in the scratchpad, and ``act[l]`` = H_l, ``(n_l + 1) x B``:
  the last row is ones (1.0, written once at load), so ``W_l`` of shape
  ``n_l x (n_{l-1} + 1)`` carries the bias in its last column: the bias add rides inside the
  forward GEMM, the bias gradient inside the weight-gradient GEMM (dW's last column is the sum
  of dY over the batch), and the bias update inside the weight update;
- ``w[l]``: the operand copy of W_l (scratchpad, ``frac_bits``), ``master[l]``: the master
  weights (accumulator memory, ``2 * frac_bits`` fraction bits, updated in place);
- ``relu[l]``: the ReLU output of hidden layer l in the accumulator memory (the RELU
  epilogue's aux), read back by the MASK epilogue of the input gradient;
- ``z``: logits ``n_L x B``; ``labels``: ``1 x B`` integers; ``err[L]``: dY, ``n_L x B``
  (the LOSS writes the kept samples' columns compacted: columns 0..KEPT-1); ``err[l]`` for a
  hidden layer: dH_l *transposed*, ``B x n_l`` (rows 0..KEPT-1: the kept samples), with
  ``grad_frac_bits`` fraction bits.

One training step (:attr:`MlpProgram.train`)::

    F_l:   act[l] = relu(W_l act[l-1])   (RELU epilogue, aux = relu[l]); the last layer: z
    LOSS:  err[L] = (softmax(z) - onehot(labels)) / B, the kept samples' columns
    per layer l = L .. 1:
      B_l: err[l-1] = err[l]^T W_l (dH transposed: rows are the kept samples), masked by
           relu[l-1] > 0, read transposed through the kept list  (MASK; not for l = 1)
      G_l: W_l -= lr * err[l] act[l-1]^T, act[l-1]'s samples through the kept list
                                                          (UPDATE epilogue, aux = master[l])
    HALT

B_l runs before G_l, which overwrites W_l. The learning rate is 2**-LR_SHIFT (a register).
B_l carries ``Gate.SAMPLES_M`` and G_l ``Gate.SAMPLES_K``: they run over the KEPT samples of
the LOSS (every sample with the per-sample skip off), and when the skip controller decides at
the LOSS to skip the batch, or no sample is kept, they are checked and skipped and the step
ends after the forward pass (skiptrain.skip). The results are those of the batch's kept
samples, bit for bit; the sums are the same whichever samples order the array takes.
Inference (:attr:`MlpProgram.infer`) is the F commands and the LOSS (its CORRECT counter is the
accuracy), for a full batch and for the last partial one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import Config
from .isa import Command, Epilogue, Gate, Phase
from .layout import Region, words_per_row
from .numerics import EXP_FRAC, max_classes

__all__ = ["MlpSpec", "MlpProgram", "ProgramError", "build_mlp", "lr_shift_of"]


class ProgramError(ValueError):
    """An MLP that the accelerator cannot run as asked; the message names the value and the rule."""


def lr_shift_of(lr: float, cfg: Config) -> int:
    """The LR_SHIFT register for a learning rate: lr must be 2**-k, k in 0..acc_width-1."""
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ProgramError(f"lr={lr!r}: must be a number > 0")
    k = -math.log2(lr)
    if k != int(k) or not 0 <= k <= cfg.acc_width - 1:
        raise ProgramError(f"lr={lr!r}: the accelerator's learning rate is 2**-LR_SHIFT, so lr must be "
                           f"a power of two in 2**-{cfg.acc_width - 1}..1 (e.g. 0.125, 0.0625)")
    return int(k)


@dataclass(frozen=True)
class MlpSpec:
    """An MLP: ``sizes`` = (inputs, hidden..., classes), ReLU between layers, softmax
    cross-entropy; ``batch`` samples per step (a power of two: the error's 1/B is a shift)."""

    sizes: tuple
    batch: int
    grad_frac_bits: int | None = None  #: fraction bits of dY and dH (default data_width - 1)

    def check(self, cfg: Config) -> None:
        if not cfg.training:
            raise ProgramError(f"config {cfg.name!r} has no training hardware (training=false): "
                               "a training program needs the loss unit and the epilogues")
        sizes = tuple(self.sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ProgramError(f"sizes={sizes!r}: must be two or more positive integers")
        if any(s + 1 > cfg.max_dim for s in sizes):
            raise ProgramError(f"sizes={sizes!r}: every size + 1 must fit a command's "
                               f"{cfg.dim_width}-bit dimension (<= {cfg.max_dim})")
        classes = max_classes(cfg.data_width)
        if sizes[-1] < 2 or sizes[-1] > classes:
            raise ProgramError(f"classes={sizes[-1]}: must be in 2..{classes} (a LOSS's limit on "
                               f"{cfg.data_width}-bit data, whose labels are signed words)")
        b = self.batch
        if not isinstance(b, int) or b < 1 or b & (b - 1) or b > cfg.max_dim:
            raise ProgramError(f"batch={b!r}: must be a power of two in 1..{cfg.max_dim} (the loss "
                               "unit divides by the batch with a shift)")
        if b > cfg.max_batch:
            raise ProgramError(f"batch={b}: must be at most the config's max_batch={cfg.max_batch} "
                               "(the per-sample gates' kept list holds max_batch samples)")
        gf = self.grad_frac(cfg)
        if not 0 <= gf <= cfg.data_width - 1:
            raise ProgramError(f"grad_frac_bits={gf}: must be in 0..data_width-1 = "
                               f"0..{cfg.data_width - 1}")
        if gf < cfg.frac_bits:
            raise ProgramError(f"grad_frac_bits={gf}: must be >= frac_bits={cfg.frac_bits} (the "
                               "weight-gradient shift grad_frac_bits - frac_bits is not negative)")
        if self.loss_shift(cfg) < 0:
            raise ProgramError(f"grad_frac_bits={gf}: must be <= {EXP_FRAC} + log2(batch) = "
                               f"{EXP_FRAC + b.bit_length() - 1}")

    def grad_frac(self, cfg: Config) -> int:
        return cfg.data_width - 1 if self.grad_frac_bits is None else self.grad_frac_bits

    def loss_shift(self, cfg: Config) -> int:
        """dY = (p - y) / B with p in EXP_FRAC bits, into grad_frac bits."""
        return EXP_FRAC + (self.batch.bit_length() - 1) - self.grad_frac(cfg)


@dataclass
class MlpProgram:
    spec: MlpSpec
    cfg: Config
    act: list = field(default_factory=list)      # Region per layer input/output (with the ones row)
    w: list = field(default_factory=list)        # operand copies (index 1..L; [0] is None)
    master: list = field(default_factory=list)   # master weights, accumulator memory
    relu: list = field(default_factory=list)     # hidden layers' ReLU outputs, accumulator memory
    err: list = field(default_factory=list)      # dY_l / dH_l
    z: Region | None = None
    labels: Region | None = None
    train: list = field(default_factory=list)
    train_pc: int = 0
    infer_pc: int = 0
    infer_last_pc: int | None = None              # partial batch (None if not built)
    infer_last_n: int = 0

    @property
    def layers(self) -> int:
        return len(self.spec.sizes) - 1

    def program(self) -> list:
        """Every command, by slot."""
        return self._slots

    def x_rows(self) -> Region:
        """The region the host writes each step: the n0 input rows of act[0]."""
        a = self.act[0]
        return Region(a.base, self.spec.sizes[0], a.cols, a.ld)


class _Alloc:
    def __init__(self, depth: int, banks: int, memory: str):
        self.next, self.depth, self.banks, self.memory = 0, depth, banks, memory

    def region(self, rows: int, cols: int, what: str) -> Region:
        r = Region.packed(self.next, rows, cols, self.banks)
        if r.end(self.banks) > self.depth:
            raise ProgramError(f"{what} ({rows} x {cols}) does not fit the {self.memory}: it needs "
                               f"words {self.next}..{r.end(self.banks) - 1}, the memory has "
                               f"{self.depth} (a larger {self.memory}_depth, or a smaller batch or MLP)")
        self.next = r.end(self.banks)
        return r


def build_mlp(spec: MlpSpec, cfg: Config, *, test_batch_last: int = 0) -> MlpProgram:
    """The memory map and the programs; ``test_batch_last`` (0 < n < batch) adds an inference
    program for a last partial batch of n samples."""
    spec.check(cfg)
    if not 0 <= test_batch_last < spec.batch:
        raise ProgramError(f"test_batch_last={test_batch_last}: must be in 0..batch-1")
    V, f = cfg.banks, cfg.frac_bits
    sizes, B = tuple(spec.sizes), spec.batch
    L = len(sizes) - 1
    sp = _Alloc(cfg.spad_depth, V, "spad")
    ac = _Alloc(cfg.acc_depth, V, "acc")
    p = MlpProgram(spec, cfg)
    p.act = [sp.region(sizes[l] + 1, B, f"activations of layer {l}") for l in range(L)]
    p.z = sp.region(sizes[L], B, "logits")
    p.labels = sp.region(1, B, "labels")
    p.err = ([None] + [sp.region(B, sizes[l], f"error of layer {l} (transposed)") for l in range(1, L)]
             + [sp.region(sizes[L], B, "error of the output layer")])
    p.w = [None] + [sp.region(sizes[l], sizes[l - 1] + 1, f"weights of layer {l}") for l in range(1, L + 1)]
    p.master = [None] + [ac.region(sizes[l], sizes[l - 1] + 1, f"master weights of layer {l}")
                         for l in range(1, L + 1)]
    p.relu = [None] + [ac.region(sizes[l], B, f"ReLU outputs of layer {l}") for l in range(1, L)]
    gf = spec.grad_frac(cfg)

    def forward(n):
        cmds = []
        for l in range(1, L + 1):
            src = p.act[l - 1]
            src = Region(src.base, sizes[l - 1] + 1, n, src.ld)
            if l < L:
                dst = Region(p.act[l].base, sizes[l], n, p.act[l].ld)
                cmds.append(Command.gemm(sizes[l], sizes[l - 1] + 1, n, p.w[l], src, dst, shift=f,
                                         phase=Phase.FWD, epilogue=Epilogue.RELU, aux=p.relu[l]))
            else:
                cmds.append(Command.gemm(sizes[l], sizes[l - 1] + 1, n, p.w[l], src, p.z, shift=f,
                                         phase=Phase.FWD))
        cmds.append(Command.loss(sizes[L], n, p.z, p.labels, p.err[L], shift=spec.loss_shift(cfg)))
        return cmds

    train = forward(B)
    for l in range(L, 0, -1):
        # err[L] is n_L x B (the LOSS's columns), a hidden err[l] is B x n_l: as op(A) of B_l
        # (B x n_l) the output layer's is transposed, and as op(A) of G_l (n_l x B) the others
        out_layer = l == L
        if l > 1:
            # dH^T = dY^T W_l over the kept samples (M); W_l's first n_{l-1} columns (no bias)
            train.append(Command.gemm(B, sizes[l], sizes[l - 1], p.err[l], p.w[l], p.err[l - 1],
                                      trans_a=out_layer, shift=f, phase=Phase.BWD_INPUT,
                                      epilogue=Epilogue.MASK, aux=p.relu[l - 1],
                                      gate=Gate.SAMPLES_M))
        # dW = dY act^T over the kept samples (K): dY (gf) x act (f) -> gf + f fraction bits;
        # master weights have 2f
        train.append(Command.gemm(sizes[l], B, sizes[l - 1] + 1, p.err[l], p.act[l - 1], p.w[l],
                                  trans_a=not out_layer, trans_b=True, shift=gf - f,
                                  phase=Phase.BWD_WEIGHT, epilogue=Epilogue.UPDATE,
                                  aux=p.master[l], gate=Gate.SAMPLES_K))
    train.append(Command())
    infer = forward(B) + [Command()]
    slots = train + infer
    p.train_pc, p.infer_pc = 0, len(train)
    if test_batch_last:
        p.infer_last_pc, p.infer_last_n = len(slots), test_batch_last
        slots += forward(test_batch_last) + [Command()]
    if len(slots) > cfg.prog_depth:
        raise ProgramError(f"the programs need {len(slots)} slots; prog_depth={cfg.prog_depth}")
    p.train = train
    p._slots = slots
    return p


def words_of(region: Region, banks: int) -> list[int]:
    """The memory lines (words) a region occupies."""
    out = []
    for r in range(region.rows):
        start = region.base + r * region.ld
        out.extend(range(start, start + words_per_row(region.cols, banks)))
    return out
