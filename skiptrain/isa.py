"""The command set of the accelerator's sequencer: opcodes, fields, bit layout and error codes.

A program is a list of commands in program memory; the sequencer runs them from ``START_PC``
until a ``HALT`` (or an error). The bit layout is derived from the :class:`~skiptrain.config.Config`
and is the contract between the host (benches, golden model) and ``rtl/command.py``, which
builds its ``data.Struct`` from :func:`command_fields`. Fields are packed LSB first in the order
listed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from .config import Config

__all__ = ["Opcode", "Phase", "OutMode", "Epilogue", "Gate", "ErrorCode", "Command", "command_fields",
           "command_width", "encode", "decode"]


class Opcode(enum.IntEnum):
    HALT = 0   #: stop; status.done = 1
    GEMM = 1   #: C = op(A) . op(B), written back per out_mode and epilogue
    LOSS = 2   #: dY = (softmax(Z) - onehot(y)) / 2**shift per column of Z (rtl/loss_unit.py)
    # 3 is not assigned: it stops the program with ErrorCode.BAD_OPCODE


class Phase(enum.IntEnum):
    """Training phase a GEMM belongs to; only selects which performance counters count it."""
    FWD = 0         #: F: forward, Y = W . X
    BWD_INPUT = 1   #: B: input gradient, dX = W^T . dY
    BWD_WEIGHT = 2  #: G: weight gradient, dW = dY . X^T
    UPDATE = 3      #: U: weight update


class OutMode(enum.IntEnum):
    QUANT = 0  #: requantize (shift, round half to even, saturate) into the scratchpad
    ACC = 1    #: full accumulators into the accumulator memory


class Epilogue(enum.IntEnum):
    """Element-wise work fused into a QUANT GEMM's write-back. The *aux* region is an M x N
    matrix in the accumulator memory at ``aux_base`` with the same ``c_ld`` as C."""
    NONE = 0    #: C = requantize(acc)
    RELU = 1    #: C = max(0, requantize(acc)); the same values also go to aux (for MASK)
    MASK = 2    #: C = requantize(acc) where aux > 0, else 0 (the ReLU derivative)
    UPDATE = 3  #: aux = sat(aux - round(acc / 2**(shift + LR_SHIFT))) (master weights, in place);
    #: C = requantize(new aux, frac_bits) (the operand copy)


class Gate(enum.IntEnum):
    """Whether a GEMM runs, and over which samples, decided by the gradient-skip hardware
    (rtl/skip_controller.py, the loss unit's per-sample decision)."""
    ALWAYS = 0  #: runs
    BATCH = 1   #: skipped (checked, not run, its MACs counted as skipped) when the last LOSS of
    #: this run decided to skip the batch: the B, G and U commands of a training step
    SAMPLES_M = 2  #: M is the batch and runs over the kept samples only: M becomes KEPT (the
    #: kept count of the run's last LOSS), A's rows are the kept samples compacted, and a MASK
    #: epilogue reads its aux (N x M, packed: ld = ceil(M / V)) transposed, column list[r] for
    #: output row r (the kept list); skipped as BATCH, and when KEPT is 0
    SAMPLES_K = 3  #: K is the batch: K becomes KEPT, A's columns are the kept samples
    #: compacted, and B (stored transposed) is read through the kept list: op(B) row k is
    #: stored column list[k]; skipped as SAMPLES_M


class ErrorCode(enum.IntEnum):
    NONE = 0
    BAD_OPCODE = 1  #: opcode not in Opcode
    ZERO_DIM = 2    #: M, K or N is 0
    BAD_SHIFT = 3   #: shift > acc_width - 1
    A_STRIDE = 4    #: a_ld < words per stored row of A
    A_RANGE = 5     #: A's last word is past the scratchpad
    B_STRIDE = 6
    B_RANGE = 7
    C_STRIDE = 8
    C_RANGE = 9     #: C's last word is past its memory (scratchpad or accumulator memory)
    OVERLAP = 10    #: QUANT output words overlap A's or B's words
    PROG_END = 11   #: ran past the last program slot without HALT
    BAD_LABEL = 12  #: LOSS: a label outside 0..M-1 (found per group of V samples, before its writes)
    AUX_RANGE = 13  #: the epilogue's aux region is past the accumulator memory
    BAD_EPILOGUE = 14  #: an epilogue with out_mode ACC, or on LOSS
    LOSS_CLASSES = 15  #: LOSS with more rows than numerics.max_classes(data_width): 256, 128 on 8-bit data
    BAD_GATE = 16   #: a gate on LOSS, any gate without the training hardware, a SAMPLES gate whose
    #: batch dimension is over max_batch, SAMPLES_K without trans_b, SAMPLES_M with an epilogue
    #: other than NONE and MASK
    SKIP_CONFIG = 17  #: LOSS while SKIP_CTRL holds an unassigned policy or confidence mode


@dataclass(frozen=True)
class Command:
    """One command. Matrices live in memory in the skewed layout of :mod:`skiptrain.layout`:
    ``*_base`` is the word of element (0, 0) and ``*_ld`` the words between consecutive stored
    rows. A is stored M x K (K x M when ``trans_a``), B is K x N (N x K when ``trans_b``), C is
    M x N.
    """

    opcode: int = Opcode.HALT
    phase: int = Phase.FWD
    trans_a: int = 0
    trans_b: int = 0
    out_mode: int = OutMode.QUANT
    epilogue: int = Epilogue.NONE
    shift: int = 0
    m: int = 0
    k: int = 0
    n: int = 0
    a_base: int = 0
    a_ld: int = 0
    b_base: int = 0
    b_ld: int = 0
    c_base: int = 0
    c_ld: int = 0
    aux_base: int = 0
    gate: int = Gate.ALWAYS

    @classmethod
    def gemm(cls, m, k, n, a, b, c, *, trans_a=False, trans_b=False, out_mode=OutMode.QUANT,
             shift=0, phase=Phase.FWD, epilogue=Epilogue.NONE, aux=None,
             gate=Gate.ALWAYS) -> "Command":
        """A GEMM on three :class:`~skiptrain.layout.Region` objects (anything with base, ld);
        ``aux`` (a Region in the accumulator memory, ld = C's; for a SAMPLES_M MASK the N x M
        aux stored packed) for the RELU, MASK, UPDATE epilogues; ``gate`` for work the skip
        hardware may skip (:class:`Gate`)."""
        aux_base = 0 if aux is None else aux.base
        # a SAMPLES_M MASK reads its aux transposed (N x M, packed: the hardware derives its ld)
        transposed = gate == Gate.SAMPLES_M and epilogue == Epilogue.MASK
        if aux is not None and aux.ld != c.ld and not transposed:
            raise ValueError(f"aux region ld={aux.ld}: must equal C's ld={c.ld}")
        return cls(Opcode.GEMM, phase, int(trans_a), int(trans_b), out_mode, epilogue, shift,
                   m, k, n, a.base, a.ld, b.base, b.ld, c.base, c.ld, aux_base, gate)

    @classmethod
    def loss(cls, classes, batch, z, labels, dy, *, shift) -> "Command":
        """The softmax cross-entropy error of the logits ``z`` (classes x batch, one column per
        sample) against ``labels`` (1 x batch integers) into ``dy`` (classes x batch)."""
        return cls(Opcode.LOSS, Phase.FWD, 0, 0, OutMode.QUANT, Epilogue.NONE, shift,
                   classes, 1, batch, z.base, z.ld, labels.base, labels.ld, dy.base, dy.ld, 0)

    def a_shape(self) -> tuple[int, int]:
        """Stored shape of A (rows, cols); for LOSS the logits, M x N."""
        if self.opcode == Opcode.LOSS:
            return (self.m, self.n)
        return (self.k, self.m) if self.trans_a else (self.m, self.k)

    def b_shape(self) -> tuple[int, int]:
        """Stored shape of B; for LOSS the labels, 1 x N."""
        if self.opcode == Opcode.LOSS:
            return (1, self.n)
        return (self.n, self.k) if self.trans_b else (self.k, self.n)

    def c_shape(self) -> tuple[int, int]:
        return (self.m, self.n)


def command_fields(cfg: Config) -> list[tuple[str, int]]:
    """(name, width) of every command field, LSB first."""
    aw, dw = cfg.addr_width, cfg.dim_width
    return [("opcode", 2), ("phase", 2), ("trans_a", 1), ("trans_b", 1), ("out_mode", 1),
            ("epilogue", 2), ("shift", cfg.shift_width), ("m", dw), ("k", dw), ("n", dw),
            ("a_base", aw), ("a_ld", aw), ("b_base", aw), ("b_ld", aw),
            ("c_base", aw), ("c_ld", aw), ("aux_base", aw), ("gate", 2)]


def command_width(cfg: Config) -> int:
    return sum(w for _, w in command_fields(cfg))


def encode(cmd: Command, cfg: Config) -> int:
    """The command as an integer; a field that does not fit its width raises ValueError."""
    word, pos = 0, 0
    for name, width in command_fields(cfg):
        v = int(getattr(cmd, name))
        if not 0 <= v < (1 << width):
            raise ValueError(f"command field {name}={v}: must be in 0..{(1 << width) - 1} "
                             f"({width} bits for this config)")
        word |= v << pos
        pos += width
    return word


def decode(word: int, cfg: Config) -> Command:
    vals, pos = {}, 0
    for name, width in command_fields(cfg):
        vals[name] = (word >> pos) & ((1 << width) - 1)
        pos += width
    return Command(**vals)


assert [f.name for f in fields(Command)] == [n for n, _ in command_fields(Config())]
