"""The softmax cross-entropy error, bit-exact with rtl/loss_unit.py (vectorised over the batch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skiptrain import numerics
from skiptrain.config import Config
from skiptrain.skip import RATE_BITS, ConfMode, SamplePolicy

from .requantizer import requantize

#: rtl LossUnit: cycles of one group of V samples (3 passes of M rows and the gap for ln S),
#: and the cycles the sequencer spends in its LOSS state besides the groups (start, drain, done)
GAP_CYCLES = 8
RUN_EXTRA_CYCLES = 18     # 1 (start registered) + 16 (drain) + 1 (done seen)
ERROR_EXTRA_CYCLES = 26   # 1 + 6 (label check) + 1 (stop) + 16 (drain) + 1 (done seen) + 1


def group_cycles(m: int) -> int:
    return 3 * m + GAP_CYCLES


def loss_cycles(m: int, n: int, cfg: Config, bad_group: int | None = None) -> int:
    """Cycles the sequencer spends in LOSS (after CHECK): every group, or up to a bad label."""
    if bad_group is not None:
        return bad_group * group_cycles(m) + ERROR_EXTRA_CYCLES
    return -(-n // cfg.banks) * group_cycles(m) + RUN_EXTRA_CYCLES


@dataclass
class LossResult:
    dy: torch.Tensor          # M x N (only the columns of groups before a bad one are valid)
    columns: int              # columns written: every one, or up to the first bad group
    saturated: bool
    correct: int              # argmax == label over the written columns
    bad_group: int | None     # the first group of V samples with a label outside 0..M-1
    confident: int = 0        # samples that passed the per-sample test, over the written columns
    batch_sum: int = 0        # sum of c_i over every column (meaningful without a bad group)
    keep: torch.Tensor | None = None  # per sample of the decided groups: kept (dY written)
    kept: int = 0             # samples kept: dY columns 0..kept-1 written, compacted
    skipped: int = 0          # samples of the decided groups skipped by the sample policy
    lfsr: list | None = None  # the per-sample LFSR states after the command


@dataclass(frozen=True)
class Comparator:
    """The confidence comparator's registers (skiptrain.skip): mode, require_correct, CONF_TAU."""
    mode: int = ConfMode.MAX_PROB
    require_correct: bool = False
    conf_tau: int = 0


def confidence(z: torch.Tensor, labels: torch.Tensor, comp: Comparator, cfg: Config):
    """Per column: (confident, c) as rtl/loss_unit.py's comparator computes them (skiptrain.skip).
    ``labels`` must be in range (the caller cuts the columns at a bad label)."""
    exp, log = tables(cfg.frac_bits)
    zmax, argmax, d, L = softmax_parts(z, cfg)
    s = exp_lookup(d, exp).sum(dim=0)
    M, N = z.shape
    cols = torch.arange(N)
    p_max = exp_lookup(L, exp)                       # d = 0 on the argmax row
    p_y = exp_lookup(d[labels, cols] + L, exp)
    if M > 1:
        second = z.topk(2, dim=0).values[1]          # equal to z_max on a tie
    else:
        second = torch.full((N,), cfg.data_min, dtype=torch.int64)
    margin = zmax - second
    if comp.mode == ConfMode.MAX_PROB:
        passed, c = s <= comp.conf_tau, p_max
    elif comp.mode == ConfMode.TRUE_CLASS_PROB:
        passed, c = p_y >= comp.conf_tau, p_y
    else:
        passed, c = margin >= comp.conf_tau, margin
    if comp.require_correct:
        passed = passed & (argmax == labels)
    return passed, c


def _tables(frac_bits: int):
    return (torch.tensor(numerics.exp_table(frac_bits), dtype=torch.int64),
            torch.tensor(numerics.log_table(frac_bits), dtype=torch.int64))


_TABLES: dict = {}


def tables(frac_bits: int):
    if frac_bits not in _TABLES:
        _TABLES[frac_bits] = _tables(frac_bits)
    return _TABLES[frac_bits]


def exp_lookup(d: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
    """EXP[d] for d >= 0, 0 past the table (as the RTL's ``past`` flag)."""
    inside = d < len(exp)
    return torch.where(inside, exp[torch.where(inside, d, 0)], 0)


def log_sum(s: torch.Tensor, log: torch.Tensor) -> torch.Tensor:
    """LOG[log_index(S)] per element, vectorised: the leading one and the mantissa after it."""
    mb = numerics.LOG_MANT_BITS
    bl = torch.floor(torch.log2(s.to(torch.float64))).to(torch.int64) + 1  # exact: s < 2**53
    e = bl - numerics.EXP_FRAC - 1
    mant = torch.bitwise_and(torch.bitwise_right_shift(s, bl - 1 - mb), (1 << mb) - 1)
    return log[(e << mb) | mant]


def softmax_parts(z: torch.Tensor, cfg: Config):
    """Per column of z (classes x samples): z_max, argmax (first), d = z_max - z, L = ln S."""
    exp, log = tables(cfg.frac_bits)
    zmax, _ = z.max(dim=0)
    argmax = (z == zmax).to(torch.int64).argmax(dim=0)  # the first maximum, as the RTL's strict >
    d = zmax.unsqueeze(0) - z
    s = exp_lookup(d, exp).sum(dim=0)
    return zmax, argmax, d, log_sum(s, log)


@dataclass(frozen=True)
class SampleSkip:
    """The per-sample skip's registers (skiptrain.skip): policy, SKIP_RATE, and the lanes'
    LFSR states (skiptrain.skip.sample_lfsr_seeds)."""
    policy: int = SamplePolicy.OFF
    rate: int = 0
    lfsr: tuple = ()
    tcp_bound: int = 0   #: TCP_BOUND (skiptrain.skip.tcp_bound)


def sample_keep(passed: torch.Tensor, groups: int, sample: SampleSkip, cfg: Config):
    """Per sample of the first ``groups`` groups: kept or not, and the lanes' LFSR states after.
    Every lane's LFSR steps once per group under the RANDOM policy (lanes past N too); a
    sample is skipped when its lane's new state's low 16 bits are below SKIP_RATE."""
    V = cfg.banks
    states = list(sample.lfsr)
    n = groups * V
    if sample.policy == SamplePolicy.CONFIDENCE:
        skip = passed[:n]
    elif sample.policy == SamplePolicy.RANDOM:
        draws = []
        for _ in range(groups):
            states = [numerics.lfsr_step(x) for x in states]
            draws.extend(x & ((1 << RATE_BITS) - 1) for x in states)
        skip = torch.tensor(draws[:n], dtype=torch.int64) < sample.rate
    else:
        skip = torch.zeros(n, dtype=torch.bool)
    return ~skip, states


def loss_error(z: torch.Tensor, labels: torch.Tensor, shift: int, cfg: Config,
               comp: Comparator = Comparator(), sample: SampleSkip = SampleSkip()) -> LossResult:
    """What a LOSS command computes and writes (see rtl/loss_unit.py), with the comparator's
    count and batch sum for the registers ``comp``, and the per-sample decisions for
    ``sample``: ``dy`` holds the kept columns only, compacted (columns 0..kept-1 of the
    region are written)."""
    z = z.to(torch.int64)
    labels = labels.to(torch.int64).reshape(-1)
    M, N = z.shape
    V = cfg.banks
    bad = (labels < 0) | (labels >= M)
    bad_group = None
    columns = N
    if bool(bad.any()):
        bad_group = int(torch.nonzero(bad)[0, 0]) // V
        columns = bad_group * V
    exp, _ = tables(cfg.frac_bits)
    _, argmax, d, L = softmax_parts(z, cfg)
    p = exp_lookup(d + L.unsqueeze(0), exp)
    onehot = torch.arange(M).unsqueeze(1) == labels.clamp(0, M - 1).unsqueeze(0)
    v = p - torch.where(onehot & ~bad.unsqueeze(0), 1 << numerics.EXP_FRAC, 0)
    dy, sat = requantize(v, shift, cfg)
    correct = int((argmax[:columns] == labels[:columns]).sum())
    passed, c = confidence(z, labels.clamp(0, M - 1), comp, cfg)
    sample_passed = passed
    if comp.mode == ConfMode.TRUE_CLASS_PROB:
        # the per-sample decision comes before p_y exists: d_y + L against TCP_BOUND (equal to
        # p_y >= CONF_TAU when the host wrote TCP_BOUND = skiptrain.skip.tcp_bound(CONF_TAU))
        cols = torch.arange(N)
        sample_passed = d[labels.clamp(0, M - 1), cols] + L < sample.tcp_bound
        if comp.require_correct:
            sample_passed = sample_passed & (argmax == labels)
    groups = -(-columns // V)
    keep, states = sample_keep(sample_passed, groups, sample, cfg)
    keep = keep[:columns]
    kept_cols = torch.nonzero(keep).reshape(-1)
    return LossResult(dy[:, kept_cols], len(kept_cols), bool(sat[:, kept_cols].any()), correct,
                      bad_group, confident=int(passed[:columns].sum()), batch_sum=int(c.sum()),
                      keep=keep, kept=len(kept_cols), skipped=columns - len(kept_cols),
                      lfsr=states)
