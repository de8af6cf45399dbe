"""Fixed-point tables and rounding shared by the RTL and the golden model.

One Python function makes each table; ``rtl/loss_unit.py`` puts it in ROMs and
``golden/loss_unit.py`` indexes the same list, so the two agree by construction. Tables are
computed with :mod:`decimal` at 40 digits and rounded half to even, so they are the same on
every machine (``math.exp`` may differ in its last bit between C libraries).

The softmax of a column z of logits (``frac_bits`` fraction bits) is computed without a
divider, in the log domain::

    d_j = z_max - z_j                     (an exact integer: units of 2**-frac_bits)
    e_j = EXP[d_j]                        (exp(-d_j) with EXP_FRAC fraction bits; 0 past the table)
    S   = sum_j e_j                       (>= 2**EXP_FRAC: the maximum contributes exactly 1)
    L   = LOG[e, m]                       (ln(S / 2**EXP_FRAC) with frac_bits fraction bits, from
                                           S's leading-one position e and the LOG_MANT_BITS after it)
    p_j = EXP[d_j + L]                    (exp(z_j - z_max - ln S) = softmax_j, EXP_FRAC bits)

L is rounded to an integer number of 2**-frac_bits, so p is within a relative 2**-(frac_bits+1)
plus the mantissa's error of the true softmax; the RTL and the golden model compute exactly
this p.
"""

from __future__ import annotations

import decimal
import functools

__all__ = ["EXP_FRAC", "LOG_MANT_BITS", "MAX_CLASSES", "max_classes", "exp_table_size", "exp_table",
           "log_table", "log_index", "round_shift"]

EXP_FRAC = 16        #: fraction bits of exp values and probabilities (1.0 = 65536: 17 bits)
EXP_RANGE = 16       #: the exp table covers d in [0, 16) (exp(-16) * 2**16 < 0.5: rounds to 0)
LOG_MANT_BITS = 8    #: mantissa bits after the leading one of S that index the log table
MAX_CLASSES = 256    #: classes a LOSS command takes (S < 257 * 2**16: the log table's range)
LOG_EXPONENTS = (MAX_CLASSES).bit_length()  #: leading-one positions 0..8 above 2**EXP_FRAC


def max_classes(data_width: int) -> int:
    """Classes a LOSS command takes on data_width-bit data: MAX_CLASSES, or fewer where the
    labels, data_width-bit two's complement words, cannot name them all (2**(data_width-1)
    on 8-bit data: labels 0..127). A LOSS with more rows stops with LOSS_CLASSES."""
    return min(MAX_CLASSES, 1 << (data_width - 1))

_CTX = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)


def _round(x: decimal.Decimal) -> int:
    return int(x.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_EVEN, context=_CTX))


def exp_table_size(frac_bits: int) -> int:
    """Entries of the exp table: d = 0 .. EXP_RANGE * 2**frac_bits - 1."""
    return EXP_RANGE << frac_bits


@functools.lru_cache(maxsize=None)
def exp_table(frac_bits: int) -> tuple[int, ...]:
    """EXP[d] = round_half_even(exp(-d / 2**frac_bits) * 2**EXP_FRAC); unsigned, EXP_FRAC + 1 bits."""
    scale = decimal.Decimal(1 << EXP_FRAC)
    step = decimal.Decimal(1) / decimal.Decimal(1 << frac_bits)
    return tuple(_round(_CTX.multiply(_CTX.exp(_CTX.multiply(-d, step)), scale))
                 for d in range(exp_table_size(frac_bits)))


@functools.lru_cache(maxsize=None)
def log_table(frac_bits: int) -> tuple[int, ...]:
    """LOG[e * 2**LOG_MANT_BITS + m] = round_half_even(2**frac_bits * ln(2**e * (1 + (m + 1/2) /
    2**LOG_MANT_BITS))): ln(S / 2**EXP_FRAC) for S with its leading one EXP_FRAC + e bits up
    and mantissa m (the middle of the mantissa's interval)."""
    scale = decimal.Decimal(1 << frac_bits)
    out = []
    for e in range(LOG_EXPONENTS):
        for m in range(1 << LOG_MANT_BITS):
            x = decimal.Decimal(1 << e) * (1 + (decimal.Decimal(m) + decimal.Decimal("0.5"))
                                           / decimal.Decimal(1 << LOG_MANT_BITS))
            out.append(_round(_CTX.multiply(_CTX.ln(x), scale)))
    return tuple(out)


def log_index(s: int) -> int:
    """The log-table index of an exp sum S >= 2**EXP_FRAC (what the RTL's leading-one detector
    computes): e = bit_length(S) - EXP_FRAC - 1, m = the LOG_MANT_BITS bits after the leading one."""
    if not (1 << EXP_FRAC) <= s < ((MAX_CLASSES + 1) << EXP_FRAC):
        raise ValueError(f"exp sum {s}: must be in 2**{EXP_FRAC}..{MAX_CLASSES + 1}*2**{EXP_FRAC}-1")
    bl = s.bit_length()
    e = bl - EXP_FRAC - 1
    m = (s >> (bl - 1 - LOG_MANT_BITS)) & ((1 << LOG_MANT_BITS) - 1)
    return (e << LOG_MANT_BITS) | m


def round_shift(x: int, shift: int) -> int:
    """round_half_even(x / 2**shift) for integers (shift >= 0)."""
    if shift == 0:
        return x
    q = x >> shift
    rem = x - (q << shift)
    half = 1 << (shift - 1)
    return q + (rem > half or (rem == half and q & 1))


# ---- normalisation by the kept count --------------------------------------------------------------
NORM_FRAC = 16       #: fraction bits of the kept-count factor's mantissa (1.0 = 2**16: 17 bits)
NORM_STEP_LIMIT = 35  #: the step is clamped to at most this many signed bits before the multiply
NORM_LO_BITS = 17    #: the step's low part, multiplied unsigned (two 18x18 products a lane)


def norm_mantissa(kept: int) -> int:
    """The mantissa m of 1/kept: 1/K = m * 2**-(NORM_FRAC + t) with t = ceil(log2 K), m =
    round(2**(NORM_FRAC + t) / K) (half up), in [2**16, 2**17); 2**16 for K = 0 and every power
    of two. Entry K of the normaliser's table (rtl/norm_factor.py)."""
    if kept <= 0:
        return 1 << NORM_FRAC
    t = (kept - 1).bit_length()
    return (((1 << (NORM_FRAC + t + 1)) // kept) + 1) >> 1


def norm_table(max_batch: int) -> tuple[int, ...]:
    """:func:`norm_mantissa` for K = 0 .. max_batch (the ROM's words)."""
    return tuple(norm_mantissa(k) for k in range(max_batch + 1))


def norm_exponent(kept: int, batch: int) -> int:
    """e with batch / kept = m * 2**e / 2**NORM_FRAC: floor(log2 batch) - ceil(log2 kept), or 0
    where that is not positive (a batch that is not a power of two), and 0 for kept 0."""
    if kept <= 0:  # the update is skipped: no exponent, so its CHECK never fails on it
        return 0
    n = batch.bit_length() - 1 if batch > 0 else 0
    t = (kept - 1).bit_length()
    return n - t if n > t else 0


def norm_step_width(acc_width: int) -> int:
    """Signed bits the step is clamped to before the multiply: one below acc_width (so that the
    scaled step, at most twice the clamped one, still fits acc_width), at most NORM_STEP_LIMIT."""
    return min(acc_width - 1, NORM_STEP_LIMIT)


# ---- stochastic rounding --------------------------------------------------------------------------
LFSR_WIDTH = 32
LFSR_LANE_MIX = 0x9E3779B9  #: lane l's seed is seed ^ (LFSR_LANE_MIX * (l + 1)) mod 2**32


def lfsr_seed(seed: int, lane: int) -> int:
    """The state lane ``lane``'s LFSR takes when SR_SEED is written with ``seed`` (never 0)."""
    v = (seed ^ (LFSR_LANE_MIX * (lane + 1))) & ((1 << LFSR_WIDTH) - 1)
    return v or 1


def lfsr_step(x: int) -> int:
    """One xorshift32 step (rtl/lfsr.py)."""
    mask = (1 << LFSR_WIDTH) - 1
    x ^= (x << 13) & mask
    x ^= x >> 17
    x ^= (x << 5) & mask
    return x
