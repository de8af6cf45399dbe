"""Small arithmetic helpers shared by the address generators."""

from amaranth.hdl import Const


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
