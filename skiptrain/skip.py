"""The gradient-skip controller's registers, shared by rtl/, golden/ and the host.

The confidence comparator (in rtl/loss_unit.py) looks at every sample a LOSS command sees and
computes, without a divider, from what the loss error computes anyway:

=================  ====================================  =====================================
mode               per-sample test ("confident")         c_i summed for the batch test
=================  ====================================  =====================================
``max_prob``       S = sum_j EXP[z_max - z_j] <= CONF_TAU  p_max = EXP[L] (L = ln S, the unit's
                   (CONF_TAU = floor(2**16 / tau))        own softmax output of the top class)
``true_class_prob``  p_y = EXP[z_max - z_y + L] >= CONF_TAU  p_y
                   (CONF_TAU = ceil(tau * 2**16))
``margin``         z_(1) - z_(2) >= CONF_TAU              z_(1) - z_(2) (data units)
                   (CONF_TAU = ceil(tau * 2**frac_bits))
=================  ====================================  =====================================

With ``require_correct`` a sample is confident only if its argmax equals its label. z_(2) is
the second largest logit (equal to z_(1) on a tie; ``data_min`` with one class).

Per batch (one LOSS command) the controller decides whether the batch's B, G and U commands
(``Gate.BATCH``) are skipped: policy ``CONFIDENCE`` when sum_i c_i >= BATCH_TAU (the mean test
mean(c) >= tau_b with BATCH_TAU = ceil(B * tau_b * scale), no divider), policy ``RANDOM`` when
the low 16 bits of the skip LFSR, stepped once per LOSS, are below SKIP_RATE (rate * 2**16).
The decision holds until the next LOSS; START clears it.

Per sample (the per-sample skip, method 1; SKIP_CTRL bits 5-6), the loss unit decides before
it writes a group's dY whether each sample is kept: policy ``CONFIDENCE`` skips the samples
that pass the per-sample test (``max_prob`` and ``margin`` as above, from S and the margin,
final after the SUM pass; ``true_class_prob`` in the log domain, before p_y exists: p_y =
EXP[d_y + L] with d_y = z_max - z_y, and the table does not increase, so p_y >= CONF_TAU iff
d_y + L < TCP_BOUND, the count of table entries >= CONF_TAU, which the host writes
(:func:`tcp_bound`)), policy
``RANDOM`` skips a sample when its lane's LFSR (lane ``SAMPLE_LFSR_LANE + l``, seeded with the
skip LFSR by SKIP_SEED, stepped once per group of V samples) draws below SKIP_RATE. The kept
samples' dY columns are written compacted, in sample order, to columns 0..KEPT-1; a skipped
sample's column is not written.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from fractions import Fraction

from . import numerics
from .config import Config

__all__ = ["BatchPolicy", "SamplePolicy", "ConfMode", "SkipCtrl", "SKIP_LFSR_LANE", "SAMPLE_LFSR_LANE",
           "sample_lfsr_seeds", "RATE_BITS", "conf_threshold", "tcp_bound", "TCP_BOUND_WIDTH",
           "batch_threshold", "rate_register", "batch_tau_width", "skip_lfsr_seed"]

RATE_BITS = 16           #: SKIP_RATE is rate * 2**16 (0 .. 2**16: 17 bits)
SKIP_LFSR_LANE = 255     #: the skip LFSR is seeded as lane 255 of numerics.lfsr_seed
SAMPLE_LFSR_LANE = 128   #: loss unit lane l's per-sample LFSR is lane 128 + l
CONF_TAU_WIDTH = 32      #: bits of the CONF_TAU register
TCP_BOUND_WIDTH = 32     #: bits of the TCP_BOUND register


class BatchPolicy(enum.IntEnum):
    OFF = 0         #: no batch is skipped
    CONFIDENCE = 1  #: skip when sum c_i >= BATCH_TAU (method 2, mini-batch skip)
    RANDOM = 2      #: skip when the skip LFSR's draw is below SKIP_RATE (the matched baseline)
    # 3: ErrorCode.SKIP_CONFIG at the next LOSS


class SamplePolicy(enum.IntEnum):
    OFF = 0         #: every sample is kept
    CONFIDENCE = 1  #: skip the samples that pass the per-sample test (method 1; every mode)
    RANDOM = 2      #: skip a sample when its lane's LFSR draws below SKIP_RATE (the baseline)
    # 3: ErrorCode.SKIP_CONFIG at the next LOSS


class ConfMode(enum.IntEnum):
    MAX_PROB = 0
    TRUE_CLASS_PROB = 1
    MARGIN = 2
    # 3: ErrorCode.SKIP_CONFIG at the next LOSS


CONF_MODE_NAMES = {"max_prob": ConfMode.MAX_PROB, "true_class_prob": ConfMode.TRUE_CLASS_PROB,
                   "margin": ConfMode.MARGIN}


@dataclass(frozen=True)
class SkipCtrl:
    """The SKIP_CTRL register: bits 0-1 batch policy, 2-3 confidence mode, 4 require_correct,
    5-6 sample policy, 7 norm_kept (normalise the update of the kept samples by their count,
    not by the batch; needs an accelerator built with ``Config.kept_norm``)."""

    policy: int = BatchPolicy.OFF
    mode: int = ConfMode.MAX_PROB
    require_correct: bool = False
    sample: int = SamplePolicy.OFF
    norm_kept: bool = False

    WIDTH = 8
    NORM_BIT = 7

    def encode(self) -> int:
        for name, v in (("policy", self.policy), ("mode", self.mode), ("sample", self.sample)):
            if not 0 <= int(v) <= 3:
                raise ValueError(f"SKIP_CTRL {name}={v}: must be in 0..3 (2 bits)")
        return (int(self.policy) | int(self.mode) << 2 | int(bool(self.require_correct)) << 4
                | int(self.sample) << 5 | int(bool(self.norm_kept)) << self.NORM_BIT)

    @classmethod
    def decode(cls, word: int) -> "SkipCtrl":
        return cls(word & 3, (word >> 2) & 3, bool((word >> 4) & 1), (word >> 5) & 3,
                   bool((word >> cls.NORM_BIT) & 1))

    @property
    def valid(self) -> bool:
        """False for an unassigned policy or mode (a LOSS then stops with SKIP_CONFIG)."""
        return (self.policy in tuple(BatchPolicy) and self.mode in tuple(ConfMode)
                and self.sample in tuple(SamplePolicy))

    def valid_on(self, cfg: Config) -> bool:
        """:attr:`valid`, and norm_kept only on an accelerator built with the normaliser."""
        return self.valid and (not self.norm_kept or cfg.kept_norm)


def _real(name: str, value, lo, hi=None) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number")
    v = Fraction(value)
    if v <= lo or (hi is not None and v > hi):
        raise ValueError(f"{name}={value!r}: must be in ({lo}, {'inf' if hi is None else hi}]")
    return v


def batch_tau_width(cfg: Config) -> int:
    """Bits of BATCH_TAU and of the batch sum: up to 2**dim_width samples of c < 2**17."""
    return cfg.dim_width + max(numerics.EXP_FRAC + 1, cfg.data_width + 1) + 1


def _check_fits(name: str, value: int, width: int) -> int:
    if value >= 1 << width:
        raise ValueError(f"{name}={value}: does not fit the register's {width} bits")
    return value


def conf_threshold(mode: str, tau, cfg: Config) -> int:
    """CONF_TAU for a per-sample threshold ``tau`` (a probability, or a logit margin)."""
    if mode not in CONF_MODE_NAMES:
        raise ValueError(f"confidence mode {mode!r}: must be one of {', '.join(CONF_MODE_NAMES)}")
    if mode == "margin":
        t = _real("tau", tau, 0)
        return _check_fits("CONF_TAU", math.ceil(t * (1 << cfg.frac_bits)), CONF_TAU_WIDTH)
    t = _real("tau", tau, 0, 1)
    one = 1 << numerics.EXP_FRAC
    if mode == "max_prob":
        # S < (MAX_CLASSES + 1) * 2**16 < 2**32, so past the register every S passes, as it
        # does at the register's largest value: clamp there (a tau <= 2**-16 would otherwise
        # wrap to a small CONF_TAU that passes nothing)
        return min(math.floor(one / t), (1 << CONF_TAU_WIDTH) - 1)
    return math.ceil(t * one)


def tcp_bound(conf_tau: int, cfg: Config) -> int:
    """TCP_BOUND for the CONF_TAU register ``conf_tau`` of mode true_class_prob: how many of the
    exp table's first entries are >= CONF_TAU (the table does not increase), so that the
    per-sample test d_y + L < TCP_BOUND equals p_y = EXP[d_y + L] >= CONF_TAU (an index past
    the table reads 0). CONF_TAU 0 passes every p_y, past the table too: all ones."""
    if isinstance(conf_tau, bool) or not isinstance(conf_tau, int) or not 0 <= conf_tau < 1 << CONF_TAU_WIDTH:
        raise ValueError(f"conf_tau={conf_tau!r}: must be a CONF_TAU register value, 0..2**{CONF_TAU_WIDTH}-1")
    if conf_tau == 0:
        return (1 << TCP_BOUND_WIDTH) - 1
    table = numerics.exp_table(cfg.frac_bits)
    return sum(1 for e in table if e >= conf_tau)


def batch_threshold(mode: str, tau_b, batch: int, cfg: Config) -> int:
    """BATCH_TAU for the mean test mean(c) >= tau_b over ``batch`` samples."""
    if mode not in CONF_MODE_NAMES:
        raise ValueError(f"confidence mode {mode!r}: must be one of {', '.join(CONF_MODE_NAMES)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch < (1 << cfg.dim_width):
        raise ValueError(f"batch={batch!r}: must be an integer in 1..{(1 << cfg.dim_width) - 1}")
    if mode == "margin":
        t, scale = _real("tau_batch", tau_b, 0), 1 << cfg.frac_bits
    else:
        t, scale = _real("tau_batch", tau_b, 0, 1), 1 << numerics.EXP_FRAC
    return _check_fits("BATCH_TAU", math.ceil(batch * t * scale), batch_tau_width(cfg))


def rate_register(rate) -> int:
    """SKIP_RATE for a skip probability in [0, 1] (rounded to the nearest 2**-16)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, Fraction)) or not 0 <= rate <= 1:
        raise ValueError(f"rate={rate!r}: must be a number in [0, 1]")
    return round(Fraction(rate) * (1 << RATE_BITS))


def skip_lfsr_seed(seed: int) -> int:
    """The skip LFSR's state after SKIP_SEED is written with ``seed``."""
    return numerics.lfsr_seed(seed, SKIP_LFSR_LANE)


def sample_lfsr_seeds(seed: int, cfg: Config) -> list[int]:
    """The loss unit's per-sample LFSR states (one per lane) after SKIP_SEED is written."""
    return [numerics.lfsr_seed(seed, SAMPLE_LFSR_LANE + lane) for lane in range(cfg.banks)]
