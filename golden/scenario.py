"""Programs with their data, random or hand-made, and what the golden model says they produce.

Benches and tests of every tier use the same scenarios: the bench loads ``initial`` lines into
the hardware, runs ``commands``, and compares the ``check_lines`` of both memories, the status
and the counters with :meth:`Scenario.expected`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from skiptrain.config import Config
from skiptrain.isa import Command, ErrorCode, OutMode, Phase
from skiptrain.layout import Region, words_per_row

from .accelerator import Accelerator, RunResult


@dataclass
class Scenario:
    cfg: Config
    inputs: list = field(default_factory=list)    # (memory, Region, int64 tensor)
    commands: list = field(default_factory=list)  # Command or raw int words
    outputs: list = field(default_factory=list)   # (memory, Region) to compare
    start_pc: int = 0
    name: str = ""

    def initial(self) -> Accelerator:
        acc = Accelerator(self.cfg)
        for memory, region, matrix in self.inputs:
            acc.store(region, matrix, memory)
        acc.load_program(self.commands)
        return acc

    def expected(self) -> tuple[Accelerator, RunResult]:
        acc = self.initial()
        return acc, acc.run(self.start_pc)

    def lines(self, memory: str) -> list[int]:
        """Every line any input or output region of this memory touches, sorted."""
        V = self.cfg.banks
        out = set()
        regions = [r for m, r, _ in self.inputs if m == memory] + [r for m, r in self.outputs if m == memory]
        for r in regions:
            for row in range(r.rows):
                start = r.base + row * r.ld
                out.update(range(start, start + words_per_row(r.cols, V)))
        return sorted(out)


class _Allocator:
    """Hands out non-overlapping word ranges of one memory, with random gaps."""

    def __init__(self, depth: int, rng: random.Random):
        self.next, self.depth, self.rng = 0, depth, rng

    def region(self, rows: int, cols: int, banks: int, slack: bool) -> Region | None:
        wpr = words_per_row(cols, banks)
        ld = wpr + (self.rng.choice([0, 0, 1, 2]) if slack else 0)
        base = self.next + self.rng.choice([0, 0, 1, 3])
        r = Region(base, rows, cols, ld)
        if r.end(banks) > self.depth:
            return None
        self.next = r.end(banks)
        return r


def random_matrix(rows: int, cols: int, cfg: Config, rng: random.Random, extreme: bool = False):
    g = torch.Generator().manual_seed(rng.getrandbits(31))
    if extreme:
        # mostly the extremes, so products saturate and the accumulator is stressed
        choices = torch.tensor([cfg.data_min, cfg.data_max, cfg.data_min + 1, -1, 0, 1])
        return choices[torch.randint(len(choices), (rows, cols), generator=g)]
    return torch.randint(cfg.data_min, cfg.data_max + 1, (rows, cols), generator=g)


def random_gemm_scenario(cfg: Config, seed: int, n_commands: int = 2, max_dim: int = 12,
                         shapes: list | None = None, extreme_rate: float = 0.25) -> Scenario:
    """Back-to-back GEMMs on random shapes (``shapes`` forces (M, K, N) of each), every transpose
    and output mode, random strides and shifts, some with extreme values that saturate."""
    rng = random.Random(seed)
    V = cfg.banks
    spad = _Allocator(cfg.spad_depth, rng)
    accm = _Allocator(cfg.acc_depth, rng)
    sc = Scenario(cfg, name=f"random_gemm(seed={seed})")
    for n in range(n_commands):
        if shapes:
            M, K, N = shapes[n % len(shapes)]
        else:
            pick = lambda: rng.choice([1, rng.randint(1, max_dim), rng.randint(1, max_dim)])
            M, K, N = pick(), pick(), pick()
        ta, tb = rng.random() < 0.5, rng.random() < 0.5
        quant = rng.random() < 0.6
        extreme = rng.random() < extreme_rate
        a_shape = (K, M) if ta else (M, K)
        b_shape = (N, K) if tb else (K, N)
        A = spad.region(*a_shape, V, slack=True)
        B = spad.region(*b_shape, V, slack=True)
        Cr = (spad if quant else accm).region(M, N, V, slack=True)
        if A is None or B is None or Cr is None:
            raise ValueError(f"scenario seed={seed}: command {n} ({M}x{K}x{N}) does not fit the "
                             "memories of this config; use fewer commands or smaller shapes")
        sc.inputs.append(("spad", A, random_matrix(*a_shape, cfg, rng, extreme)))
        sc.inputs.append(("spad", B, random_matrix(*b_shape, cfg, rng, extreme)))
        shift = rng.choice([0, cfg.frac_bits, rng.randint(0, cfg.acc_width - 1)]) if quant else 0
        sc.commands.append(Command.gemm(M, K, N, A, B, Cr, trans_a=ta, trans_b=tb,
                                        out_mode=OutMode.QUANT if quant else OutMode.ACC,
                                        shift=shift, phase=rng.choice(list(Phase))))
        sc.outputs.append(("spad" if quant else "acc", Cr))
    sc.commands.append(Command())  # HALT
    return sc


def compare(sc: Scenario, hw: dict, hw_lines: dict, measured_cycles: int | None = None) -> list[str]:
    """Differences between a hardware run and the golden model, as readable messages.

    ``hw`` is :meth:`skiptrain.driver.Driver.run`'s result; ``hw_lines`` maps "spad"/"acc" to
    {line: [bank values]}. Exact comparison: every bit, every counter, the cycle count.
    """
    gold, res = sc.expected()
    errors = []
    want = {"done": 1, "error": int(res.error), "error_code": int(res.error_code),
            "saturated": int(res.saturated), "busy": 0, "host_error": 0}
    for key, exp in want.items():
        if hw[key] != exp:
            errors.append(f"status.{key}: got {hw[key]}, expected {exp}")
    if res.error and hw["error_pc"] != res.pc:
        errors.append(f"status.error_pc: got {hw['error_pc']}, expected {res.pc}")
    for key, exp in res.counters.items():
        if hw["counters"][key] != exp:
            errors.append(f"counter {key}: got {hw['counters'][key]}, expected {exp}")
    if measured_cycles is not None and measured_cycles != res.cycles:
        errors.append(f"measured cycles start->done: got {measured_cycles}, expected {res.cycles}")
    for memory, lines in hw_lines.items():
        image = gold.image(memory)
        for w, got in lines.items():
            exp = [int(v) for v in image[:, w]]
            if got != exp:
                errors.append(f"{memory} line {w}: got {got}, expected {exp}")
    return errors


def error_scenarios(cfg: Config) -> dict[str, tuple[Scenario, ErrorCode]]:
    """One program per error the sequencer detects, each after a good GEMM (so the error comes
    at slot 1, with results already written), with the error it must stop with."""
    from skiptrain.isa import encode  # raw words for opcodes the Command class cannot name

    V = cfg.banks
    rng = random.Random(1234)
    A = Region.packed(0, 3, 5, V)
    B = Region.packed(A.end(V), 5, 4, V)
    C = Region.packed(B.end(V), 3, 4, V)
    good = Command.gemm(3, 5, 4, A, B, C, shift=cfg.frac_bits)
    inputs = [("spad", A, random_matrix(3, 5, cfg, rng)), ("spad", B, random_matrix(5, 4, cfg, rng))]
    far = cfg.spad_depth - 1
    bad = {
        "a_range": (Command.gemm(3, 5, 4, Region(far, 3, 5, words_per_row(5, V)), B, C), ErrorCode.A_RANGE),
        "b_range": (Command.gemm(3, 5, 4, A, Region(far - 1, 5, 4, words_per_row(4, V)), C), ErrorCode.B_RANGE),
        "c_range_spad": (Command.gemm(3, 5, 4, A, B, Region(far, 3, 4, words_per_row(4, V))), ErrorCode.C_RANGE),
        "c_range_acc": (Command.gemm(3, 5, 4, A, B, Region(cfg.acc_depth - 2, 3, 4, words_per_row(4, V)),
                                     out_mode=OutMode.ACC), ErrorCode.C_RANGE),
        "zero_m": (Command.gemm(0, 5, 4, A, B, C), ErrorCode.ZERO_DIM),
        "zero_k": (Command.gemm(3, 0, 4, A, B, C), ErrorCode.ZERO_DIM),
        "zero_n": (Command.gemm(3, 5, 0, A, B, C), ErrorCode.ZERO_DIM),
        "bad_shift": (Command.gemm(3, 5, 4, A, B, C, shift=cfg.acc_width), ErrorCode.BAD_SHIFT),
        "a_stride": (Command.gemm(3, 5 + V, 4, Region(A.base, 3, 5 + V, 1), B, C), ErrorCode.A_STRIDE),
        "c_stride": (Command.gemm(3, 5, 4 + V, A, Region(B.base, 5, 4 + V, words_per_row(4 + V, V)),
                                   Region(C.base, 3, 4 + V, 1)),
                     ErrorCode.C_STRIDE),
        "overlap_a": (Command.gemm(3, 5, 4, A, B, Region(A.base + 1, 3, 4, words_per_row(4, V))), ErrorCode.OVERLAP),
        "overlap_b": (Command.gemm(3, 5, 4, A, B, Region(B.end(V) - 1, 3, 4, words_per_row(4, V))), ErrorCode.OVERLAP),
        "opcode_2": (encode(good, cfg) & ~3 | 2, ErrorCode.BAD_OPCODE),
        "opcode_3": (encode(good, cfg) & ~3 | 3, ErrorCode.BAD_OPCODE),
    }
    out = {}
    for name, (cmd, code) in bad.items():
        sc = Scenario(cfg, inputs=list(inputs), commands=[good, cmd, Command()],
                      outputs=[("spad", C)], name=f"error:{name}")
        out[name] = (sc, code)
    # no HALT: the good GEMM sits in the last slot, and the sequencer runs off the end
    sc = Scenario(cfg, inputs=list(inputs), outputs=[("spad", C)], name="error:prog_end",
                  start_pc=cfg.prog_depth - 1)
    sc.commands = [Command()] * (cfg.prog_depth - 1) + [good]
    out["prog_end"] = (sc, ErrorCode.PROG_END)
    return out
