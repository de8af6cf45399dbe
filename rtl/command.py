"""Control words of the sequencer as Amaranth layouts, built from :mod:`skiptrain.isa`.

The enums take their values from the ISA, so the host encoding (:func:`skiptrain.isa.encode`)
and the hardware decoding cannot drift apart; ``tests/test_command.py`` checks the bit layout.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from skiptrain import isa
from skiptrain.config import Config


class Opcode(enum.Enum, shape=2):
    HALT = isa.Opcode.HALT.value
    GEMM = isa.Opcode.GEMM.value
    LOSS = isa.Opcode.LOSS.value


class Phase(enum.Enum, shape=2):
    FWD = isa.Phase.FWD.value
    BWD_INPUT = isa.Phase.BWD_INPUT.value
    BWD_WEIGHT = isa.Phase.BWD_WEIGHT.value
    UPDATE = isa.Phase.UPDATE.value


class OutMode(enum.Enum, shape=1):
    QUANT = isa.OutMode.QUANT.value
    ACC = isa.OutMode.ACC.value


class Epilogue(enum.Enum, shape=2):
    NONE = isa.Epilogue.NONE.value
    RELU = isa.Epilogue.RELU.value
    MASK = isa.Epilogue.MASK.value
    UPDATE = isa.Epilogue.UPDATE.value


class Gate(enum.Enum, shape=2):
    ALWAYS = isa.Gate.ALWAYS.value
    BATCH = isa.Gate.BATCH.value
    SAMPLES_M = isa.Gate.SAMPLES_M.value
    SAMPLES_K = isa.Gate.SAMPLES_K.value


class ErrorCode(enum.Enum, shape=8):
    NONE = isa.ErrorCode.NONE.value
    BAD_OPCODE = isa.ErrorCode.BAD_OPCODE.value
    ZERO_DIM = isa.ErrorCode.ZERO_DIM.value
    BAD_SHIFT = isa.ErrorCode.BAD_SHIFT.value
    A_STRIDE = isa.ErrorCode.A_STRIDE.value
    A_RANGE = isa.ErrorCode.A_RANGE.value
    B_STRIDE = isa.ErrorCode.B_STRIDE.value
    B_RANGE = isa.ErrorCode.B_RANGE.value
    C_STRIDE = isa.ErrorCode.C_STRIDE.value
    C_RANGE = isa.ErrorCode.C_RANGE.value
    OVERLAP = isa.ErrorCode.OVERLAP.value
    PROG_END = isa.ErrorCode.PROG_END.value
    BAD_LABEL = isa.ErrorCode.BAD_LABEL.value
    AUX_RANGE = isa.ErrorCode.AUX_RANGE.value
    BAD_EPILOGUE = isa.ErrorCode.BAD_EPILOGUE.value
    LOSS_CLASSES = isa.ErrorCode.LOSS_CLASSES.value
    BAD_GATE = isa.ErrorCode.BAD_GATE.value
    SKIP_CONFIG = isa.ErrorCode.SKIP_CONFIG.value

_ENUMS = {"opcode": Opcode, "phase": Phase, "out_mode": OutMode, "epilogue": Epilogue}

assert [e.name for e in ErrorCode] == [e.name for e in isa.ErrorCode]
assert [e.name for e in Epilogue] == [e.name for e in isa.Epilogue]
assert [e.name for e in Gate] == [e.name for e in isa.Gate]


def command_layout(cfg: Config) -> data.StructLayout:
    """The command word, LSB first, exactly as :func:`skiptrain.isa.command_fields`."""
    return data.StructLayout({name: _ENUMS.get(name, unsigned(width))
                              for name, width in isa.command_fields(cfg)})


def issue_layout(cfg: Config) -> data.StructLayout:
    """One issue step of the sequencer: step k of the tile whose corner is (i0, j0)."""
    return data.StructLayout({
        "valid": 1,   # 0 in bubble steps (tile period max(K, R, C) > K) and outside ISSUE
        "first": 1,   # k == 0: PEs restart their accumulators
        "last": 1,    # k == K-1: PEs hand their sums to the result registers
        "k": unsigned(cfg.dim_width),
        "i0": unsigned(cfg.dim_width),
        "j0": unsigned(cfg.dim_width),
    })
