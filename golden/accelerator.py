"""The accelerator as the host sees it: memories, program, status and counters after a run.

:class:`Accelerator` mirrors rtl/top.py: the same memories (as bank x word images in the
skewed layout), the same command checks and error codes, the same counters, and the exact
busy-cycle count of every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from skiptrain.config import Config
from skiptrain.hostmap import COUNTERS, PHASE_NAMES
from skiptrain import numerics
from skiptrain.isa import Command, Epilogue, ErrorCode, Gate, Opcode, OutMode, decode, encode
from skiptrain.skip import (CONF_TAU_WIDTH, RATE_BITS, TCP_BOUND_WIDTH, BatchPolicy, SkipCtrl,
                            batch_tau_width, sample_lfsr_seeds, skip_lfsr_seed)
from skiptrain.layout import Region

from . import lfsr
from .loss_unit import Comparator, SampleSkip, loss_cycles, loss_error
from .operand_reader import read_operand
from .requantizer import requantize, round_half_even, wrap
from .normaliser import normalise
from .result_writer import write_result
from .sequencer import (CHECK_CYCLES, FETCH_CYCLES, aux_ld, check, effective_shift, gemm_cycles,
                        normalises, run_dims, samples_gated, skip_cycles, tiling, transposed_aux)
from .systolic_array import gemm


@dataclass
class RunResult:
    done: bool
    error: bool
    error_code: ErrorCode
    pc: int
    saturated: bool
    counters: dict = field(default_factory=dict)
    batch_skipped: bool = False  #: Status.BATCH_SKIPPED
    kept: int = 0                #: the KEPT register

    @property
    def cycles(self) -> int:
        return self.counters["cycles"]


class Accelerator:
    """Golden model of one accelerator instance."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        V = cfg.banks
        self.spad = torch.zeros((V, cfg.spad_depth), dtype=torch.int64)
        self.acc = torch.zeros((V, cfg.acc_depth), dtype=torch.int64)
        self.prog = [0] * cfg.prog_depth
        self.counters = {name: 0 for name in COUNTERS}
        self.saturated = False
        self.lr_shift = 0  #: the LR_SHIFT register
        self.stochastic = False  #: ROUNDING bit 0: stochastic rounding of the update step
        self.lfsr = lfsr.seeded(0, cfg)  #: the writer lanes' LFSR states (reset: seed 0)
        # the gradient-skip registers (skiptrain.skip) and state
        self.skip_ctrl = 0
        self.conf_tau = 0
        self.tcp_bound = 0  #: TCP_BOUND: the per-sample true_class_prob test's bound
        self.batch_tau = 0
        self.skip_rate = 0
        self.skip_lfsr = skip_lfsr_seed(0)
        self.sample_lfsr = sample_lfsr_seeds(0, cfg)  #: the loss unit's per-sample LFSRs
        self.batch_skipped = False
        self.kept = 0  #: the KEPT register: samples the run's last LOSS kept (START clears it)
        self.loss_n = 0  #: the N of the run's last LOSS (START clears it)
        #: the kept list: entry e is the sample index of the e-th kept sample (max_batch entries)
        self.kept_list = torch.zeros(cfg.max_batch, dtype=torch.int64)

    # ---- host side --------------------------------------------------------------------------
    def image(self, memory: str) -> torch.Tensor:
        if memory not in ("spad", "acc"):
            raise ValueError(f"memory={memory!r}: must be 'spad' or 'acc'")
        return self.spad if memory == "spad" else self.acc

    def store(self, region: Region, matrix, memory: str = "spad") -> None:
        """Store a matrix; values wrap to the memory's width like the RTL's memory words."""
        width = self.cfg.data_width if memory == "spad" else self.cfg.acc_width
        write_result(self.image(memory), region.base, region.ld,
                     wrap(torch.as_tensor(matrix, dtype=torch.int64), width))

    def load(self, region: Region, memory: str = "spad") -> torch.Tensor:
        return region.load(self.image(memory))

    def load_program(self, commands, at: int = 0) -> None:
        if at + len(commands) > self.cfg.prog_depth:
            raise ValueError(f"program of {len(commands)} commands at slot {at} exceeds "
                             f"prog_depth={self.cfg.prog_depth}")
        for n, c in enumerate(commands):
            self.prog[at + n] = encode(c, self.cfg) if isinstance(c, Command) else int(c)

    def seed_lfsr(self, seed: int) -> None:
        """The SR_SEED register written."""
        self.lfsr = lfsr.seeded(seed, self.cfg)

    def set_skip(self, ctrl: SkipCtrl | int | None = None, conf_tau: int | None = None,
                 batch_tau: int | None = None, rate: int | None = None, seed: int | None = None,
                 tcp_bound: int | None = None) -> None:
        """Write the skip registers given (values wrap to the register widths, as the RTL's).
        Without the skip hardware (``cfg.has_skip`` false) the registers are not there: writes
        are ignored and they read 0."""
        if not self.cfg.has_skip:
            return
        if ctrl is not None:
            self.skip_ctrl = (ctrl.encode() if isinstance(ctrl, SkipCtrl) else int(ctrl)) & ((1 << SkipCtrl.WIDTH) - 1)
        if conf_tau is not None:
            self.conf_tau = int(conf_tau) & ((1 << CONF_TAU_WIDTH) - 1)
        if tcp_bound is not None:
            self.tcp_bound = int(tcp_bound) & ((1 << TCP_BOUND_WIDTH) - 1)
        if batch_tau is not None:
            self.batch_tau = int(batch_tau) & ((1 << batch_tau_width(self.cfg)) - 1)
        if rate is not None:
            self.skip_rate = int(rate) & ((1 << (RATE_BITS + 1)) - 1)
        if seed is not None:
            self.skip_lfsr = skip_lfsr_seed(int(seed) & 0xFFFFFFFF)
            self.sample_lfsr = sample_lfsr_seeds(int(seed) & 0xFFFFFFFF, self.cfg)

    def clear(self) -> None:
        """The CLEAR control bit: counters and the sticky saturation flag."""
        self.counters = {name: 0 for name in COUNTERS}
        self.saturated = False

    # ---- the run -------------------------------------------------------------------------------
    def run(self, start_pc: int = 0) -> RunResult:
        cfg = self.cfg
        cnt = self.counters
        pc = start_pc
        error = ErrorCode.NONE
        self.batch_skipped = False  # START clears the decision
        self.kept = 0               # and KEPT
        self.loss_n = 0
        ctrl = SkipCtrl.decode(self.skip_ctrl)
        while True:
            cnt["cycles"] += 1  # FETCH
            if pc >= cfg.prog_depth:
                error = ErrorCode.PROG_END
                break
            cnt["cycles"] += FETCH_CYCLES - 1  # the rest of the program memory read, DECODE
            cmd = decode(self.prog[pc], cfg)
            if cmd.opcode != Opcode.GEMM and not (cmd.opcode == Opcode.LOSS and cfg.training):
                cnt["cycles"] += 1  # the one CHECK cycle that reads the opcode
                if cmd.opcode != Opcode.HALT:
                    error = ErrorCode.BAD_OPCODE
                break
            phase_counter = ("loss_cycles" if cmd.opcode == Opcode.LOSS
                             else f"phase_cycles_{PHASE_NAMES[cmd.phase]}")
            error = check(cmd, cfg, self.lr_shift, ctrl.valid_on(cfg) or not cfg.has_skip, self.loss_n,
                          self.kept, ctrl.norm_kept)
            if error != ErrorCode.NONE:
                cnt["cycles"] += CHECK_CYCLES
                cnt[phase_counter] += CHECK_CYCLES
                break
            if cmd.opcode == Opcode.LOSS:
                bad_group = self._loss(cmd)
                cyc = CHECK_CYCLES + loss_cycles(cmd.m, cmd.n, cfg, bad_group)
                cnt["cycles"] += cyc
                cnt["loss_cycles"] += cyc
                if bad_group is not None:
                    error = ErrorCode.BAD_LABEL
                    break
                cnt["commands"] += 1
                pc += 1
                continue
            phase = PHASE_NAMES[cmd.phase]
            samples = samples_gated(cmd)
            if (cmd.gate != Gate.ALWAYS and self.batch_skipped) or (samples and self.kept == 0):
                cyc = CHECK_CYCLES + skip_cycles(cfg)
                cnt["cycles"] += cyc
                cnt[f"phase_cycles_{phase}"] += cyc
                cnt[f"skipped_macs_{phase}"] += cmd.m * cmd.k * cmd.n
                pc += 1
                continue
            run = run_dims(cmd, self.kept)
            self._gemm(cmd, run)
            cyc = gemm_cycles(run, cfg)
            t = tiling(run, cfg)
            cnt["cycles"] += cyc["in_command"]
            cnt[f"phase_cycles_{phase}"] += cyc["in_command"]
            cnt[f"phase_macs_{phase}"] += run.m * run.k * run.n
            # the samples not kept: their MACs are counted skipped while the command runs
            cnt[f"skipped_macs_{phase}"] += (cmd.m * cmd.k - run.m * run.k) * cmd.n
            cnt["tiles"] += t.tiles
            cnt["bubbles"] += t.bubbles
            cnt["commands"] += 1
            pc += 1
        mask = (1 << cfg.counter_width) - 1
        for k in cnt:
            cnt[k] &= mask
        return RunResult(done=True, error=error != ErrorCode.NONE, error_code=error, pc=pc,
                         saturated=self.saturated, counters=dict(cnt) | {"kept": self.kept}, batch_skipped=self.batch_skipped,
                         kept=self.kept)

    def _gemm(self, cmd: Command, run: Command | None = None) -> None:
        """``run``: ``cmd`` with a SAMPLES gate's batch dimension replaced by KEPT (the default)."""
        cfg = self.cfg
        run = run_dims(cmd, self.kept) if run is None else run
        kept = self.kept_list[:self.kept]
        a = read_operand(self.spad, run.a_base, run.a_ld, *run.a_shape(), bool(run.trans_a))
        if cmd.gate == Gate.SAMPLES_K:
            # op(B) row k is stored column list[k] (B is stored transposed: N x K)
            b = read_operand(self.spad, cmd.b_base, cmd.b_ld, *cmd.b_shape(), True)[kept]
        else:
            b = read_operand(self.spad, run.b_base, run.b_ld, *run.b_shape(), bool(run.trans_b))
        acc = gemm(a, b, cfg)
        full, cmd = cmd, run
        if cmd.out_mode != OutMode.QUANT:
            write_result(self.acc, cmd.c_base, cmd.c_ld, acc)
            return
        aux = Region(cmd.aux_base, cmd.m, cmd.n, cmd.c_ld)
        shift = effective_shift(cmd, self.lr_shift)
        norm = normalises(full, cfg, SkipCtrl.decode(self.skip_ctrl).norm_kept)
        if norm:
            # the exponent of batch / kept off the shift, the mantissa in the normaliser
            shift -= numerics.norm_exponent(self.kept, self.loss_n)
        if cmd.epilogue == Epilogue.UPDATE:
            # master weights in aux: w - round(dW / 2**shift), saturated at acc_width bits; the
            # operand copy round(w / 2**frac_bits), saturated, into C
            if self.stochastic:
                noise, self.lfsr = lfsr.rounding_noise(self.lfsr, cmd.m, cmd.n, shift, cfg)
                step = torch.bitwise_right_shift(wrap(acc + noise, cfg.acc_width), shift)
            else:
                step = round_half_even(acc, shift)
            if norm:
                step = normalise(step, numerics.norm_mantissa(self.kept), cfg)
            w = aux.load(self.acc) - step
            lo, hi = -(1 << (cfg.acc_width - 1)), (1 << (cfg.acc_width - 1)) - 1
            w_sat = w.clamp(lo, hi)
            values, sat = requantize(w_sat, cfg.frac_bits, cfg)
            self.saturated |= bool((w_sat != w).any()) or bool(sat.any())
            write_result(self.acc, aux.base, aux.ld, w_sat)
            write_result(self.spad, cmd.c_base, cmd.c_ld, values)
            return
        values, sat = requantize(acc, shift, cfg)
        self.saturated |= bool(sat.any())
        if cmd.epilogue == Epilogue.RELU:
            values = values.clamp(min=0)
            write_result(self.acc, aux.base, aux.ld, values)
        elif cmd.epilogue == Epilogue.MASK:
            if transposed_aux(full):
                # aux is N x M (the batch), packed; output row r reads its column list[r]
                stored = Region(full.aux_base, full.n, full.m, aux_ld(full, cfg)).load(self.acc)
                mask = stored[:, kept].t()
            else:
                mask = aux.load(self.acc)
            values = torch.where(mask > 0, values, 0)
        write_result(self.spad, cmd.c_base, cmd.c_ld, values)

    def _loss(self, cmd: Command) -> int | None:
        """Run a LOSS command; the first bad group, or None."""
        cfg = self.cfg
        z = Region(cmd.a_base, cmd.m, cmd.n, cmd.a_ld).load(self.spad)
        labels = Region(cmd.b_base, 1, cmd.n, cmd.b_ld).load(self.spad)
        ctrl = SkipCtrl.decode(self.skip_ctrl)
        comp = Comparator(ctrl.mode, ctrl.require_correct, self.conf_tau)
        sample = SampleSkip(ctrl.sample, self.skip_rate, tuple(self.sample_lfsr), self.tcp_bound)
        res = loss_error(z, labels, cmd.shift, cfg, comp, sample)
        if res.kept:
            write_result(self.spad, cmd.c_base, cmd.c_ld, res.dy)
        self.saturated |= res.saturated
        self.sample_lfsr = res.lfsr
        self.kept, self.loss_n = res.kept, cmd.n
        # the kept list: entries 0..kept-1 (those past max_batch are not stored)
        idx = torch.nonzero(res.keep).reshape(-1)[:cfg.max_batch]
        self.kept_list[:len(idx)] = idx & (cfg.max_batch - 1)
        self.counters["correct"] += res.correct
        if cfg.has_skip:  # without the skip hardware its counters are not there
            self.counters["confident"] += res.confident
            self.counters["skipped_samples"] += res.skipped
        if res.bad_group is None:
            # the skip controller's decision (rtl/skip_controller.py)
            if ctrl.policy == BatchPolicy.CONFIDENCE:
                skip = res.batch_sum >= self.batch_tau
            elif ctrl.policy == BatchPolicy.RANDOM:
                self.skip_lfsr = numerics.lfsr_step(self.skip_lfsr)
                skip = (self.skip_lfsr & ((1 << RATE_BITS) - 1)) < self.skip_rate
            else:
                skip = False
            self.batch_skipped = bool(skip)
            self.counters["skipped_batches"] += int(skip)
        return res.bad_group

