"""Command checks and the exact cycle model of rtl/sequencer.py and the pipeline behind it.

Cycle accounting of one run (every busy cycle, as the CYCLES counter counts them):

- every command: FETCH 1 + 2 more cycles of program memory read + DECODE 1;
- HALT and unknown opcodes: 1 CHECK cycle; a GEMM or LOSS: ``CHECK_CYCLES``, ending there on
  an error;
- a LOSS: :func:`golden.loss_unit.loss_cycles` in the loss unit;
- a GEMM's ISSUE: one cycle per step, ``period = max(K, R, C)`` steps per output tile;
- its DRAIN: from the last issue cycle until the result writer reports the last row written:
  the last valid step goes through the issue register (1), the operand reader
  (``READER_LATENCY``), the array (C + multiplier latency + 2 row-multiplexer stages for row 0, R - 1 more rows), and
  the result writer (``WRITER_LATENCY``), less the bubble steps issued after it (period - K);
- running past the last program slot: 1 FETCH cycle, then the PROG_END error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from skiptrain.config import Config
from skiptrain.isa import Command, Epilogue, ErrorCode, Gate, Opcode, OutMode
from skiptrain.layout import words_per_row
from skiptrain.numerics import max_classes, norm_exponent

FETCH_CYCLES = 4     # FETCH, 2 x WAIT (program memory read latency 3), DECODE
CHECK_CYCLES = 11    # rtl Sequencer.check_cycles
READER_LATENCY = 9   # rtl OperandReader.latency (6 + the scratchpad read latency 3)
WRITER_LATENCY = 16  # rtl ResultWriter.latency (15 + the memories' input register)
#: without the training hardware (Config.training = False): no noise stage, aux read (3) and capture (1) or
#: epilogue stages (3)
WRITER_LATENCY_GEMM_ONLY = 8


#: the kept-count normaliser's extra writer stages (rtl ResultWriter.norm_cycles): its latency
#: (clamp, multiplier 3, sum, increment) less the aux read and capture (4)
NORM_CYCLES = 2


def writer_latency(cfg: Config) -> int:
    if not cfg.training:
        return WRITER_LATENCY_GEMM_ONLY
    return WRITER_LATENCY + (NORM_CYCLES if cfg.kept_norm else 0)
ISSUE_REGISTER = 1   # the sequencer registers its issue outputs
ARRAY_MUX_STAGES = 2 # rtl SystolicArray.mux_stages (row multiplexer)


def extent(base: int, ld: int, rows: int, cols: int, cfg: Config) -> int:
    """Last word of a stored rows x cols matrix (the RTL's check arithmetic)."""
    return base + (rows - 1) * ld + (cols - 1) // cfg.banks


def effective_shift(cmd: Command, lr_shift: int) -> int:
    """The shift the writer applies: an UPDATE epilogue adds the LR_SHIFT register."""
    if cmd.opcode == Opcode.GEMM and cmd.epilogue == Epilogue.UPDATE:
        return cmd.shift + lr_shift
    return cmd.shift


def normalises(cmd: Command, cfg: Config, norm_kept: bool) -> bool:
    """The command's update is normalised by the kept count (the writer's normaliser): a
    SAMPLES_K GEMM with UPDATE, SKIP_CTRL's norm_kept set, on an accelerator that has it."""
    return (cfg.kept_norm and norm_kept and cmd.opcode == Opcode.GEMM and cmd.gate == Gate.SAMPLES_K
            and cmd.epilogue == Epilogue.UPDATE)


def skip_cycles(cfg: Config) -> int:
    """rtl Sequencer.skip_cycles: the SKIP state of a gated GEMM (a shift-and-add M*K*N)."""
    return 2 * cfg.dim_width


def samples_gated(cmd: Command) -> bool:
    return cmd.opcode == Opcode.GEMM and cmd.gate in (Gate.SAMPLES_M, Gate.SAMPLES_K)


def batch_dim(cmd: Command) -> int:
    """The dimension a SAMPLES gate runs over the kept samples: M or K."""
    return cmd.m if cmd.gate == Gate.SAMPLES_M else cmd.k


def transposed_aux(cmd: Command) -> bool:
    """A SAMPLES_M command's MASK reads its aux (N x M, packed) transposed, through the kept list."""
    return cmd.gate == Gate.SAMPLES_M and cmd.epilogue == Epilogue.MASK


def aux_ld(cmd: Command, cfg: Config) -> int:
    return words_per_row(cmd.m, cfg.banks) if transposed_aux(cmd) else cmd.c_ld


def check(cmd: Command, cfg: Config, lr_shift: int = 0, skip_config_ok: bool = True,
          loss_n: int = 0, kept: int = 0, norm_kept: bool = False) -> ErrorCode:
    """The error a GEMM or LOSS command stops with, in the RTL's priority order (NONE if it runs).
    ``skip_config_ok``: SKIP_CTRL holds an assigned policy and mode (LOSS checks it);
    ``loss_n``: the N of the run's last LOSS (0 before one), which a SAMPLES gate's batch
    dimension must equal; ``kept``, ``norm_kept``: the KEPT register and SKIP_CTRL's norm_kept
    (a normalised update takes the exponent of loss_n / kept off its shift, and needs loss_n a
    power of two)."""
    if cmd.opcode not in (Opcode.HALT, Opcode.GEMM, Opcode.LOSS) or \
            (cmd.opcode == Opcode.LOSS and not cfg.training):
        return ErrorCode.BAD_OPCODE
    loss = cmd.opcode == Opcode.LOSS
    if cmd.m == 0 or (cmd.k == 0 and not loss) or cmd.n == 0:
        return ErrorCode.ZERO_DIM
    if loss and cmd.m > max_classes(cfg.data_width):
        return ErrorCode.LOSS_CLASSES
    norm = normalises(cmd, cfg, norm_kept)
    shift = effective_shift(cmd, lr_shift)
    if shift > cfg.acc_width - 1 or (norm and shift < norm_exponent(kept, loss_n)):
        return ErrorCode.BAD_SHIFT
    quant = cmd.out_mode == OutMode.QUANT or loss
    if cmd.epilogue != Epilogue.NONE and (loss or not quant or not cfg.training):
        return ErrorCode.BAD_EPILOGUE
    if cmd.gate != Gate.ALWAYS and (loss or not cfg.training):
        return ErrorCode.BAD_GATE
    if samples_gated(cmd) and (batch_dim(cmd) != loss_n or batch_dim(cmd) > cfg.max_batch
                               or (cmd.gate == Gate.SAMPLES_K and not cmd.trans_b)
                               or (cmd.gate == Gate.SAMPLES_M
                                   and cmd.epilogue not in (Epilogue.NONE, Epilogue.MASK))
                               or (norm and (loss_n == 0 or loss_n & (loss_n - 1)))):
        return ErrorCode.BAD_GATE
    if loss and not skip_config_ok:
        return ErrorCode.SKIP_CONFIG
    c_depth = cfg.spad_depth if quant else cfg.acc_depth
    last = {}
    for name, (rows, cols), base, ld, depth, stride_err, range_err in (
            ("a", cmd.a_shape(), cmd.a_base, cmd.a_ld, cfg.spad_depth, ErrorCode.A_STRIDE, ErrorCode.A_RANGE),
            ("b", cmd.b_shape(), cmd.b_base, cmd.b_ld, cfg.spad_depth, ErrorCode.B_STRIDE, ErrorCode.B_RANGE),
            ("c", cmd.c_shape(), cmd.c_base, cmd.c_ld, c_depth, ErrorCode.C_STRIDE, ErrorCode.C_RANGE)):
        if ld < words_per_row(cols, cfg.banks):
            return stride_err
        last[name] = extent(base, ld, rows, cols, cfg)
        if last[name] >= depth:
            return range_err
    aux_shape = (cmd.n, cmd.m) if transposed_aux(cmd) else (cmd.m, cmd.n)
    if cmd.epilogue != Epilogue.NONE and extent(cmd.aux_base, aux_ld(cmd, cfg), *aux_shape, cfg) >= cfg.acc_depth:
        return ErrorCode.AUX_RANGE
    if quant:
        for x, x_base in (("a", cmd.a_base), ("b", cmd.b_base)):
            if cmd.c_base <= last[x] and x_base <= last["c"]:
                return ErrorCode.OVERLAP
    return ErrorCode.NONE


@dataclass(frozen=True)
class Tiling:
    tiles: int
    period: int
    bubbles: int


def tiling(cmd: Command, cfg: Config) -> Tiling:
    R, C = cfg.rows, cfg.cols
    tiles = -(-cmd.m // R) * -(-cmd.n // C)
    period = max(cmd.k, R, C)
    return Tiling(tiles, period, tiles * (period - cmd.k))


def drain_cycles(cmd: Command, cfg: Config) -> int:
    R, C = cfg.rows, cfg.cols
    array_latency = C + cfg.multiplier_latency + ARRAY_MUX_STAGES + (R - 1)
    period = max(cmd.k, R, C)
    return (ISSUE_REGISTER + READER_LATENCY + array_latency + writer_latency(cfg)
            - (period - cmd.k))


def run_dims(cmd: Command, kept: int) -> Command:
    """The command as it runs: a SAMPLES gate's batch dimension replaced by the kept count."""
    if cmd.gate == Gate.SAMPLES_M:
        return dataclasses.replace(cmd, m=kept)
    if cmd.gate == Gate.SAMPLES_K:
        return dataclasses.replace(cmd, k=kept)
    return cmd


def gemm_cycles(cmd: Command, cfg: Config) -> dict:
    """Cycles of a GEMM that passes its checks, split as the counters split them."""
    t = tiling(cmd, cfg)
    in_command = CHECK_CYCLES + t.tiles * t.period + drain_cycles(cmd, cfg)
    return {"total": FETCH_CYCLES + in_command, "in_command": in_command}
