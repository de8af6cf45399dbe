"""The host interface of the accelerator top: address map, control/status registers, line formats.

The host port is a plain synchronous bus: ``addr``, ``w_en``, ``w_data``, ``r_en``, and
``r_data`` with ``r_valid`` exactly :data:`READ_LATENCY` cycles after ``r_en``. An address is
``region << index_width | index``. One access moves a whole memory *line* (word ``index`` of
every bank), so loading a matrix costs one bus cycle per V elements.

Memories can be accessed only while the accelerator is idle; an access while busy is ignored
(reads return 0) and sets the sticky ``host_error`` status bit. CSRs are always readable.
"""

from __future__ import annotations

import enum

from .config import Config
from .isa import command_width

__all__ = ["Region", "Csr", "Ctrl", "Status", "READ_LATENCY", "HostMap", "ID_MAGIC", "COUNTERS",
           "COUNTER_CSRS", "READBACK_CSRS"]

READ_LATENCY = 5  #: cycles from r_en to r_valid (memory read 3, data capture, the region multiplexer)
ID_MAGIC = 0x5354  #: "ST" in the top bits of the ID register


class Region(enum.IntEnum):
    CSR = 0
    PROG = 1  #: one command per index
    SPAD = 2  #: one line of V data_width elements per index, bank b in bits [b*dw, (b+1)*dw)
    ACC = 3   #: one line of V acc_width accumulators per index


class Csr(enum.IntEnum):
    CTRL = 0        #: W: Ctrl bits
    STATUS = 1      #: R: Status bits
    START_PC = 2    #: RW: program slot the next START begins at
    PC = 3          #: R: current (or last) program slot
    ID = 4          #: R: ID_MAGIC << 48 | acc_width << 32 | frac_bits << 24 | data_width << 16 | cols << 8 | rows
    CYCLES = 5      #: R: busy cycles, START to done, all commands
    COMMANDS = 6    #: R: GEMM and LOSS commands completed (not HALT, a failed one, a gate-skipped GEMM)
    TILES = 7       #: R: output tiles issued
    BUBBLES = 8     #: R: issue cycles without a valid step (tile period max(K, R, C) > K)
    PHASE_CYCLES = 9   #: R: 9..12, cycles in check, issue and drain of GEMMs per Phase
    PHASE_MACS = 13    #: R: 13..16, useful MACs (M*K*N) per Phase
    LOSS_CYCLES = 17   #: R: cycles in CHECK and run of LOSS commands
    CORRECT = 18       #: R: samples whose argmax equals the label, over LOSS commands
    LR_SHIFT = 20      #: RW: learning rate 2**-LR_SHIFT, added to the shift of UPDATE epilogues
    ROUNDING = 21      #: RW: bit 0 = stochastic rounding of the UPDATE step (0: half to even)
    SR_SEED = 22       #: RW: writing seeds the stochastic-rounding LFSRs (skiptrain.numerics.lfsr_seed)
    SKIP_CTRL = 23     #: RW: skiptrain.skip.SkipCtrl (policies, confidence mode, require_correct, norm_kept)
    CONF_TAU = 24      #: RW: the per-sample confidence threshold (skiptrain.skip.conf_threshold)
    BATCH_TAU = 25     #: RW: the batch test's threshold on sum c_i (skiptrain.skip.batch_threshold)
    SKIP_RATE = 26     #: RW: random batch skip probability * 2**16 (0..65536)
    SKIP_SEED = 27     #: RW: writing seeds the skip LFSR (skiptrain.skip.skip_lfsr_seed)
    TCP_BOUND = 28     #: RW: the per-sample true_class_prob test's table-index bound (skiptrain.skip.tcp_bound)
    CONFIDENT = 32     #: R: samples that passed the per-sample confidence test, over LOSS commands
    SKIPPED_BATCHES = 33   #: R: LOSS commands that decided to skip their batch
    SKIPPED_MACS = 34      #: R: 34..37, MACs (M*K*N) of GEMMs skipped by their gate, per Phase
    SKIPPED_SAMPLES = 38   #: R: samples the per-sample policy skipped (their dY not written)
    KEPT = 40              #: R: samples the run's last LOSS kept: its dY columns 0..KEPT-1 (START clears it)


CSR_COUNT = 64

#: performance counters and their CSRs (two runs: Csr.CYCLES.., Csr.CONFIDENT..); the names are
#: shared by rtl/ and golden/
PHASE_NAMES = ("fwd", "bwd_input", "bwd_weight", "update")
_COUNTERS_LOW = (["cycles", "commands", "tiles", "bubbles"]
                 + [f"phase_cycles_{p}" for p in PHASE_NAMES]
                 + [f"phase_macs_{p}" for p in PHASE_NAMES]
                 + ["loss_cycles", "correct"])
_COUNTERS_HIGH = (["confident", "skipped_batches"] + [f"skipped_macs_{p}" for p in PHASE_NAMES]
                  + ["skipped_samples"])
COUNTERS = _COUNTERS_LOW + _COUNTERS_HIGH
COUNTER_CSRS = ({name: Csr.CYCLES + n for n, name in enumerate(_COUNTERS_LOW)}
                | {name: Csr.CONFIDENT + n for n, name in enumerate(_COUNTERS_HIGH)})
#: what a host reads back after a run besides STATUS: the counters and the KEPT register (which
#: START clears and CLEAR does not); benches compare them all
READBACK_CSRS = {**COUNTER_CSRS, "kept": Csr.KEPT}
#: counters of the training hardware (they stay 0 without it)
TRAINING_COUNTERS = ("loss_cycles", "correct", *_COUNTERS_HIGH)
#: counters of the gradient-skip hardware (they stay 0 without it: Config.has_skip)
SKIP_COUNTERS = _COUNTERS_HIGH


class Ctrl(enum.IntFlag):
    START = 1  #: start the program at START_PC (clears done, error, error_code, error_pc)
    CLEAR = 2  #: clear the counters and the sticky saturated and host_error bits (before START)


class Status:
    BUSY = 0
    DONE = 1
    ERROR = 2
    SATURATED = 3   #: sticky: a QUANT result saturated
    HOST_ERROR = 4  #: sticky: the host accessed memory or started while busy
    BATCH_SKIPPED = 5  #: the last LOSS of the run decided to skip the batch (START clears it)
    ERROR_CODE = 8  #: bits 8..15
    ERROR_PC = 16   #: bits 16..16+prog_addr_width

    @staticmethod
    def decode(word: int) -> dict:
        return {"busy": word & 1, "done": (word >> 1) & 1, "error": (word >> 2) & 1,
                "saturated": (word >> 3) & 1, "host_error": (word >> 4) & 1,
                "batch_skipped": (word >> 5) & 1,
                "error_code": (word >> 8) & 0xFF, "error_pc": (word >> 16) & 0xFFFF}


class HostMap:
    """Address and data widths of the host port for one config."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.index_width = max(CSR_COUNT.bit_length() - 1, cfg.prog_addr_width, cfg.spad_addr_width,
                               cfg.acc_addr_width)
        self.addr_width = self.index_width + 2
        self.data_width = max(cfg.banks * cfg.acc_width, command_width(cfg), 64)

    def addr(self, region: Region, index: int) -> int:
        depth = {Region.CSR: CSR_COUNT, Region.PROG: self.cfg.prog_depth,
                 Region.SPAD: self.cfg.spad_depth, Region.ACC: self.cfg.acc_depth}[region]
        if not 0 <= index < depth:
            raise ValueError(f"{region.name} index {index}: must be in 0..{depth - 1}")
        return (int(region) << self.index_width) | index

    def id_value(self) -> int:
        c = self.cfg
        return (ID_MAGIC << 48 | c.acc_width << 32 | c.frac_bits << 24 | c.data_width << 16
                | c.cols << 8 | c.rows)

    # line packing: lanes are two's complement fields, bank 0 in the low bits
    @staticmethod
    def pack_line(values, width: int) -> int:
        word = 0
        for b, v in enumerate(values):
            word |= (int(v) & ((1 << width) - 1)) << (b * width)
        return word

    @staticmethod
    def unpack_line(word: int, width: int, lanes: int) -> list[int]:
        out = []
        for b in range(lanes):
            v = (word >> (b * width)) & ((1 << width) - 1)
            out.append(v - (1 << width) if v >> (width - 1) else v)
        return out
