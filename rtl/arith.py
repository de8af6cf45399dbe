"""Small arithmetic helpers shared by the address generators, the writer and the requantizer."""

from amaranth.hdl import Array, Const, Mux


def csd_digits(c: int) -> list[tuple[int, int]]:
    """Canonical signed-digit form of ``c >= 0``: [(shift, +1/-1), ...], fewest nonzero digits."""
    if c < 0:
        raise ValueError(f"c={c}: must be >= 0")
    digits, shift = [], 0
    while c:
        if c & 1:
            d = 2 - (c & 3)  # +1 if c = 1 mod 4, -1 if c = 3 mod 4
            digits.append((shift, d))
            c -= d
        c >>= 1
        shift += 1
    return digits


def const_mul(value, c: int):
    """``value * c`` for a constant ``c`` as shifts and at most a few adders.

    Written out instead of ``*`` because Yosys maps every ``$mul`` with two wide-enough
    operands to a DSP block, and the DSPs are kept for the PEs.
    """
    digits = csd_digits(c)
    if not digits:
        return Const(0, 1)
    acc = None
    for shift, d in digits:
        term = value << shift
        if acc is None:
            acc = term if d > 0 else -term
        else:
            acc = acc + term if d > 0 else acc - term
    return acc


def popcount(bits, chunk: int = 4):
    """The number of ones in ``bits``: each ``chunk`` of bits through a table (one LUT4 level
    per result bit for chunks of 4), then a balanced tree of small adders.

    Written out instead of ``sum(bits[i] ...)``, which Yosys maps to a ripple of carry-chain
    adders, one per bit: across 8 lanes that ripple was the critical path of the loss unit
    (13.7 ns on ECP5, from ``keep`` through the compactor's ranks into the kept count).
    """
    width = len(bits)
    if width == 0:
        return Const(0, 1)
    counts = []
    for lo in range(0, width, chunk):
        part = bits[lo:min(lo + chunk, width)]
        n = len(part)
        if n == 1:
            counts.append(part)
        else:
            counts.append(Array(Const(bin(v).count("1"), n.bit_length()) for v in range(1 << n))[part])
    while len(counts) > 1:
        counts = [counts[i] + counts[i + 1] if i + 1 < len(counts) else counts[i]
                  for i in range(0, len(counts), 2)]
    return counts[0]


def round_saturate(q, up, dw: int, fits=None, top_ones=None):
    """Saturate ``q + up`` (``q`` signed, ``up`` the round-up bit) to a signed ``dw``-bit value
    without a carry chain in front of the clamp.

    q + up fits iff q's bits from dw-1 up are all equal, except q = data_max with a round-up;
    and q = data_min - 1 with a round-up lands exactly on data_min (the exact value lay in
    [data_min - 0.5, data_min), which rounds half to even into range: written as data_min, not
    a saturation). The increment itself then needs dw + 1 bits, not the width of q.

    ``fits`` (q's bits from dw-1 up all equal) and ``top_ones`` (q's bits from dw up all equal,
    that is all ones when q is negative) may be given, computed ahead from registers: they are
    the deep part, wide AND reductions (the requantizer derives them a stage early).

    Returns (value, saturated) as expressions: value is data_max, data_min or q + up.
    """
    width = len(q)
    lo, hi = -(1 << (dw - 1)), (1 << (dw - 1)) - 1
    top = q[dw - 1:]
    if fits is None:
        fits = (top == 0) | (top == (1 << (width - dw + 1)) - 1)
    sign = q[width - 1]
    is_max = fits & ~sign & (q[:dw - 1] == (1 << (dw - 1)) - 1)
    over = (~fits & ~sign) | (is_max & up)
    under = ~fits & sign
    high_ones = (q[dw:] == (1 << (width - dw)) - 1) if top_ones is None else (top_ones & sign)
    is_min_m1 = high_ones & ~q[dw - 1] & (q[:dw - 1] == (1 << (dw - 1)) - 1)
    rounded = (q[:dw].as_signed() + up)
    value = Mux(over, hi, Mux(under, lo, rounded))
    return value, over | (under & ~(is_min_m1 & up))
