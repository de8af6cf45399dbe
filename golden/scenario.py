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
    lr_shift: int = 0  #: the LR_SHIFT register the host writes before START
    stochastic: bool = False  #: the ROUNDING register's bit 0
    sr_seed: int = 0   #: the SR_SEED register the host writes before START (seeds the LFSRs)
    #: the skip registers the host writes before START: SKIP_CTRL, CONF_TAU, BATCH_TAU,
    #: SKIP_RATE, SKIP_SEED, TCP_BOUND (skiptrain.skip)
    skip: dict = field(default_factory=dict)

    SKIP_KEYS = ("ctrl", "conf_tau", "batch_tau", "rate", "seed", "tcp_bound")

    def skip_registers(self) -> dict:
        unknown = set(self.skip) - set(self.SKIP_KEYS)
        if unknown:
            raise ValueError(f"scenario skip registers {sorted(unknown)}: must be among {self.SKIP_KEYS}")
        return {k: int(self.skip.get(k, 0)) for k in self.SKIP_KEYS}

    def initial(self) -> Accelerator:
        acc = Accelerator(self.cfg)
        for memory, region, matrix in self.inputs:
            acc.store(region, matrix, memory)
        acc.load_program(self.commands)
        acc.lr_shift = self.lr_shift
        acc.stochastic = self.stochastic
        acc.seed_lfsr(self.sr_seed)
        acc.set_skip(**self.skip_registers())
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
            "saturated": int(res.saturated), "busy": 0, "host_error": 0,
            "batch_skipped": int(res.batch_skipped)}
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


# ---- the requantizer's edges: values, classes, programs that aim at them ---------------------
#: Edge classes of a QUANT result, in the order tables list them (:func:`edge_classes`):
#: round_to_min / round_to_max: the rounded result is data_min / data_max (not clamped);
#: below_min_rounds_in: the exact result lies in [data_min - 0.5, data_min), which rounds half
#: to even into range (not a saturation); tie_even / tie_odd: the exact result is k + 0.5 with
#: k even (rounds down) / odd (rounds up); saturate_low / saturate_high: clamped, the sticky
#: SATURATED flag is set; acc_wrap: the exact sum overflowed the acc_width accumulator;
#: zero: the accumulator is 0.
EDGE_CLASSES = ("round_to_min", "round_to_max", "below_min_rounds_in", "tie_even", "tie_odd",
                "saturate_low", "saturate_high", "acc_wrap", "zero")


def edge_classes(exact: int, shift: int, cfg: Config) -> set[str]:
    """The :data:`EDGE_CLASSES` one QUANT result falls in, from its exact accumulator (the sum
    before the acc_width wrap). Python integers throughout: a second opinion next to the
    golden requantize(), not a copy of it."""
    acc = _wrap_int(exact, cfg.acc_width)
    out = set()
    if acc != exact:
        out.add("acc_wrap")
    if acc == 0:
        out.add("zero")
    q = acc >> shift  # floor
    rounded = q
    if shift:
        rem, half = acc - (q << shift), 1 << (shift - 1)
        if rem == half:
            out.add("tie_odd" if q & 1 else "tie_even")
        rounded = q + (rem > half or (rem == half and q & 1))
    if rounded < cfg.data_min:
        out.add("saturate_low")
    elif rounded > cfg.data_max:
        out.add("saturate_high")
    elif rounded == cfg.data_min:
        out.add("round_to_min")
        if acc < cfg.data_min << shift:
            out.add("below_min_rounds_in")
    elif rounded == cfg.data_max:
        out.add("round_to_max")
    return out


def _wrap_int(x: int, width: int) -> int:
    half = 1 << (width - 1)
    return (x + half) % (1 << width) - half


def requant_edge_accumulators(cfg: Config, shift: int) -> list[int]:
    """Accumulators at the requantizer's edges for ``shift``, each one an acc_width register
    can hold, sorted: for the results data_min - 2 .. data_min + 1, data_max - 1 .. data_max
    + 2 and -1, 0, 1 the exact multiple r * 2**shift and (shift >= 1) the ties r * 2**shift
    +- 2**(shift-1), each with its neighbours +-1; and the accumulator extremes and their
    neighbours."""
    lo, hi = cfg.data_min, cfg.data_max
    acc_lo, acc_hi = -(1 << (cfg.acc_width - 1)), (1 << (cfg.acc_width - 1)) - 1
    half = (1 << shift) >> 1
    out = {acc_lo, acc_lo + 1, acc_hi - 1, acc_hi}
    for r in (lo - 2, lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, hi + 2, -1, 0, 1):
        for centre in {r << shift, (r << shift) - half, (r << shift) + half}:
            out.update(centre + d for d in (-1, 0, 1))
    return sorted(v for v in out if acc_lo <= v <= acc_hi)


def quant_accumulators(sc: Scenario) -> list[tuple[torch.Tensor, int]]:
    """(exact accumulators, shift) of every QUANT GEMM the golden run of ``sc`` executes, in
    order, but those with the UPDATE epilogue (which requantize the updated master weights,
    not the sums): the sums before the acc_width wrap and the requantizer. The
    golden model itself steps the memories (GEMMs and LOSS commands), so a command that reads
    what an earlier one wrote sees it; the walk stops where the run stops (HALT, an error)."""
    from skiptrain.isa import Epilogue, Opcode, decode

    from .operand_reader import read_operand
    from .sequencer import check

    cfg = sc.cfg
    gold = sc.initial()
    out = []
    for pc in range(sc.start_pc, cfg.prog_depth):
        cmd = decode(gold.prog[pc], cfg)
        if cmd.opcode not in (Opcode.GEMM, Opcode.LOSS) or check(cmd, cfg, gold.lr_shift, loss_n=gold.loss_n) != ErrorCode.NONE:
            break
        if cmd.opcode == Opcode.LOSS:
            if gold._loss(cmd) is not None:  # a bad label stops the run
                break
            continue
        # RELU and MASK act after the requantizer (its values and flags are those of NONE)
        if cmd.out_mode == OutMode.QUANT and cmd.epilogue != Epilogue.UPDATE:
            a = read_operand(gold.spad, cmd.a_base, cmd.a_ld, *cmd.a_shape(), bool(cmd.trans_a))
            b = read_operand(gold.spad, cmd.b_base, cmd.b_ld, *cmd.b_shape(), bool(cmd.trans_b))
            out.append((a.to(torch.int64) @ b.to(torch.int64), int(cmd.shift)))
        gold._gemm(cmd)
    return out


def edge_coverage(scenarios) -> dict[str, int]:
    """{edge class: QUANT results of these scenarios' golden runs in it}, every class of
    :data:`EDGE_CLASSES` listed (0 when none). A result may count in several classes."""
    counts = dict.fromkeys(EDGE_CLASSES, 0)
    for sc in scenarios:
        for exact, shift in quant_accumulators(sc):
            for v in exact.flatten().tolist():
                for name in edge_classes(v, shift, sc.cfg):
                    counts[name] += 1
    return counts


def _wrap_k(cfg: Config) -> int:
    """K of the command that wraps (:func:`_wrap_operands`): enough full-scale products that
    each sum overflows the accumulator whatever the last, random product adds, upwards
    (products data_min * data_min) and downwards (data_min * data_max), plus that last one."""
    P, half = 1 << (cfg.data_width - 1), 1 << (cfg.acc_width - 1)
    up = -(-(half + P * P - P) // (P * P))        # n * P**2 + min product >= 2**(acc_width-1)
    down = (half + P * P) // (P * P - P) + 1     # n * (P**2 - P) - max product > 2**(acc_width-1)
    return max(up, down) + 1


def unreachable_edge_classes(cfg: Config) -> set[str]:
    """Classes no GEMM of ``cfg`` can produce: acc_wrap needs more than 512 full-scale products
    in one sum (Config's rule acc_width >= 2*data_width + 8), so it is out of reach where K
    cannot be that large (dim_width < 10, e.g. the tiny preset: K <= 255)."""
    return set() if _wrap_k(cfg) <= cfg.max_dim else {"acc_wrap"}


def _digits(target: int, cfg: Config, rng: random.Random | None = None):
    """``target`` as sum(digits) * data_min + last, with every digit and ``last`` in the
    operand range: (digits needed, last, digit sum). Of the two choices of ``last`` the one
    needing fewer digits (a random one on a tie when ``rng`` is given)."""
    P = 1 << (cfg.data_width - 1)
    options = []
    for last in (target % P, target % P - P):
        total = (last - target) // P  # exact: target - last is a multiple of P
        need = -(-total // (P - 1)) if total > 0 else -(-(-total) // P)
        options.append((need, last, total))
    options.sort(key=lambda o: o[0])
    if rng is not None and options[0][0] == options[1][0]:
        return rng.choice(options)
    return options[0]


def _spread(total: int, n: int, cfg: Config, rng: random.Random) -> list[int]:
    """``n`` operand values summing to ``total`` (which must fit), not all alike."""
    if n == 0:
        return []
    base, extra = divmod(total, n)
    out = [base + (i < extra) for i in range(n)]
    for _ in range(n):  # move random amounts between pairs, staying in range
        i, j = rng.randrange(n), rng.randrange(n)
        d = rng.randint(0, cfg.data_max)
        if i != j and out[i] + d <= cfg.data_max and out[j] - d >= cfg.data_min:
            out[i], out[j] = out[i] + d, out[j] - d
    rng.shuffle(out)
    return out


def _aimed_operands(targets: list[list[int]], digits: int, cfg: Config, rng: random.Random):
    """A (M x K) and B (K x N) with A . B = ``targets`` exactly, K = N * (digits + 1): column j
    of B is data_min on its own block of ``digits`` rows and 1 on the row after, 0 elsewhere;
    row i of A holds, in block j, the digits and the last value of targets[i][j]."""
    M, N = len(targets), len(targets[0])
    L = digits + 1
    a = torch.zeros((M, N * L), dtype=torch.int64)
    b = torch.zeros((N * L, N), dtype=torch.int64)
    for j in range(N):
        b[j * L:j * L + digits, j] = cfg.data_min
        b[j * L + digits, j] = 1
        for i in range(M):
            _, last, total = _digits(targets[i][j], cfg, rng)
            a[i, j * L:j * L + digits] = torch.tensor(_spread(total, digits, cfg, rng), dtype=torch.int64)
            a[i, j * L + digits] = last
    return a, b


#: which saturations an edge scenario may contain. SATURATED is one sticky bit per program,
#: so a flag that rises where it must not (or stays low where it must rise) shows only in a
#: program with no (or one kind of) real saturation
SATURATION_MODES = {"none": set(), "low": {"saturate_low"}, "high": {"saturate_high"},
                    "both": {"saturate_low", "saturate_high"}}


def edge_gemm_scenario(cfg: Config, seed: int, n_commands: int = 3, max_k: int = 24,
                       wrap: bool | None = None, saturation: str | None = None) -> Scenario:
    """QUANT GEMMs whose accumulators are chosen to land on the requantizer's edges.

    Each command picks a shift (0, 1, 2, frac_bits, or random), then M x N accumulators: one
    of each :data:`EDGE_CLASSES` class the shift makes reachable first (from
    :func:`requant_edge_accumulators`), the rest edge values and random values at random, and
    builds A and B whose product is exactly those (:func:`_aimed_operands`; K <= ``max_k``).
    Transposes, strides, phases and the place of each value in C are random.

    ``saturation`` (a key of :data:`SATURATION_MODES`; default: "none" for 2 seeds in 5, each
    other mode for 1 in 5, at random) leaves out the values that would saturate the other way
    or at all, so the program's sticky SATURATED bit tests the flag of each value: in a "none"
    program a flag raised by a value that rounds into range (below_min_rounds_in) shows.

    With ``wrap`` (default: every other seed, at random) and when the config's K reaches it
    (:func:`unreachable_edge_classes`), one of the commands instead sums full-scale products
    past the accumulator's range, so its accumulators wrap (:func:`_wrap_operands`). Which classes a
    scenario really hits: :func:`edge_coverage`.
    """
    rng = random.Random(seed)
    V = cfg.banks
    max_k = min(max_k, cfg.max_dim)
    if max_k < 2:
        raise ValueError(f"edge scenario: max_k={max_k}: must be at least 2")
    if saturation is None:
        saturation = rng.choice(["none", "none", "low", "high", "both"])
    if saturation not in SATURATION_MODES:
        raise ValueError(f"saturation={saturation!r}: must be one of {sorted(SATURATION_MODES)}")
    allowed = SATURATION_MODES[saturation]
    spad = _Allocator(cfg.spad_depth, rng)
    sc = Scenario(cfg, name=f"edge_gemm(seed={seed})")
    if wrap is None:
        wrap = rng.random() < 0.5
    wrap_at = (rng.randrange(n_commands)
               if wrap and n_commands >= 2 and "acc_wrap" not in unreachable_edge_classes(cfg)
               else None)
    # the wrap command's operands are long (K > 512): placed first, so they fit whenever any does
    planned = sorted(range(n_commands), key=lambda n: n != wrap_at)
    commands = {}
    for n in planned:
        if n == wrap_at:
            a, b, shift = _wrap_operands(cfg, rng, saturation)
            ta, tb = False, True  # both stored as rows of K: ceil(K / V) words each
        else:
            a, b, shift = _edge_operands(cfg, rng, max_k, allowed)
            ta, tb = rng.random() < 0.5, rng.random() < 0.5
        (M, K), N = a.shape, b.shape[1]
        a_stored, b_stored = (a.t() if ta else a), (b.t() if tb else b)
        A = spad.region(*a_stored.shape, V, slack=True)
        B = spad.region(*b_stored.shape, V, slack=True)
        Cr = spad.region(M, N, V, slack=True)
        if A is None or B is None or Cr is None:
            raise ValueError(f"edge scenario seed={seed}: command {n} ({M}x{K}x{N}) does not fit "
                             "the scratchpad of this config; use fewer commands or a smaller max_k")
        sc.inputs += [("spad", A, a_stored.contiguous()), ("spad", B, b_stored.contiguous())]
        commands[n] = (Command.gemm(M, K, N, A, B, Cr, trans_a=ta, trans_b=tb,
                                    out_mode=OutMode.QUANT, shift=shift,
                                    phase=rng.choice(list(Phase))), Cr)
    for n in range(n_commands):
        sc.commands.append(commands[n][0])
        sc.outputs.append(("spad", commands[n][1]))
    sc.commands.append(Command())  # HALT
    sc.name = f"edge_gemm(seed={seed},sat={saturation})"
    return sc


def _edge_operands(cfg: Config, rng: random.Random, max_k: int, allowed: set):
    """(A, B, shift) of one edge-aimed command (see :func:`edge_gemm_scenario`); no value
    saturates in a way outside ``allowed``."""
    R, C = cfg.rows, cfg.cols
    shift = rng.choice([0, 1, 2, cfg.frac_bits, cfg.frac_bits,
                        rng.randint(1, cfg.data_width + 2), rng.randint(0, cfg.acc_width - 1)])
    N = rng.randint(1, min(C + 1, max_k // 2))
    M = rng.randint(1, R + 1)
    digits_max = max_k // N - 1
    banned = SATURATION_MODES["both"] - allowed
    usable = lambda t: (_digits(t, cfg)[0] <= digits_max and _wrap_int(t, cfg.acc_width) == t
                        and not edge_classes(t, shift, cfg) & banned)
    by_class: dict[str, list[int]] = {}
    edges = [t for t in requant_edge_accumulators(cfg, shift) if usable(t)]
    for t in edges:
        for name in edge_classes(t, shift, cfg):
            by_class.setdefault(name, []).append(t)
    # one of each reachable class first (in random order), then edges and random values
    wanted = [rng.choice(by_class[name]) for name in rng.sample(sorted(by_class), len(by_class))]
    M = max(M, -(-len(wanted) // N))  # room for all of them
    span = (cfg.data_max + 3) << shift
    pool = wanted + [rng.choice(edges) if edges and rng.random() < 0.6 else rng.randint(-span, span)
                     for _ in range(M * N)]
    values = [t for t in pool if usable(t)][:M * N]
    while len(values) < M * N:
        values.append(rng.randint(cfg.data_min, cfg.data_max) >> 1)  # one digit, never saturates
    rng.shuffle(values)
    targets = [values[i * N:(i + 1) * N] for i in range(M)]
    digits = max(_digits(t, cfg)[0] for t in values)
    a, b = _aimed_operands(targets, digits, cfg, rng)
    return a, b, shift


def _wrap_operands(cfg: Config, rng: random.Random, saturation: str):
    """(A, B, shift) of a command whose sums overflow the accumulator: K = :func:`_wrap_k`, A
    data_min and B data_min (the sum passes 2**(acc_width-1) and wraps to near the minimum) or
    data_max (it passes -2**(acc_width-1) and wraps to near the maximum) per column, but for
    a random last product. ``saturation`` picks the columns' directions and the shift so that
    only the allowed saturations occur (near the minimum nothing can saturate high, and
    shifted by acc_width - 1 every sum rounds to -1, 0 or 1)."""
    k = _wrap_k(cfg)
    M, N = rng.randint(1, 2), rng.randint(1, 2)
    lo, hi = cfg.data_min, cfg.data_max
    ups = {"low": [True] * N, "high": [False] * N}.get(saturation, [rng.random() < 0.5 for _ in range(N)])
    a = torch.full((M, k), lo, dtype=torch.int64)
    b = torch.tensor([[lo if up else hi for up in ups]] * k, dtype=torch.int64)
    a[:, -1] = torch.tensor([rng.randint(lo, hi) for _ in range(M)])
    b[-1, :] = torch.tensor([rng.randint(lo, hi) for _ in range(N)])
    shift = (cfg.acc_width - 1 if saturation == "none" else
             rng.choice([0, cfg.frac_bits, cfg.acc_width - cfg.data_width, cfg.acc_width - 1]))
    return a, b, shift
