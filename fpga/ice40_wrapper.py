"""A pin-light shell that lets any core be placed and timed on an iCE40UP5K.

nextpnr-ice40 has no out-of-context mode, and the accelerator's host bus alone is wider than
the UP5K's 39 pins. Tying the inputs to constants would let Yosys fold most of the core away,
and leaving outputs unconnected would let it delete the rest, so the shell feeds every input
bit from a pseudo-random stream that depends on a pin, and folds every output bit into a
registered XOR tree that ends in one pin: each output bit reaches a pin, each input bit comes
from one, and the numbers nextpnr reports are those of the whole core.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Ice40Wrapper"]

#: x^32 + x^22 + x^2 + x + 1, a maximal-length polynomial (Galois form, bit i = x^(i+1)).
_TAPS = (1 << 31) | (1 << 21) | (1 << 1) | (1 << 0)
_LFSR_WIDTH = 32
#: Inputs of one XOR stage: one LUT4 each, so a stage is one LUT level between flip-flops.
_FAN_IN = 4


class Ice40Wrapper(wiring.Component):
    """Drives ``core``'s inputs from an LFSR and reduces its outputs to ``q``.

    Parameters
    ----------
    core : wiring.Component
        Any component whose signature members are plain ports (nested interfaces such as
        the host bus are flattened); it shares this shell's ``sync`` domain.
    seed : int
        Nonzero initial state of the 32-bit LFSR.

    Members
    -------
    entropy : In(1)
        XORed into the LFSR every cycle, so the input stream depends on a pin and no input
        bit can be treated as a constant.
    q : Out(1)
        XOR of all the core's output bits, through ceil(log4(output bits)) register stages
        (at least one).
    """

    def __init__(self, core: wiring.Component, *, seed: int = 0xACE1_2024):
        try:
            self._inputs, self._outputs = self._ports(core, seed)
        except (TypeError, ValueError):
            # A wrapper that failed its checks was never built; without this Amaranth would
            # also warn, at garbage collection, that it was never elaborated.
            self._MustUse__used = True
            raise
        self.core = core
        self._seed = seed
        super().__init__({"entropy": In(1), "q": Out(1)})

    @staticmethod
    def _ports(core, seed):
        if not isinstance(core, wiring.Component):
            raise TypeError(f"core={core!r}: must be an amaranth.lib.wiring.Component")
        if not 0 < seed < (1 << _LFSR_WIDTH):
            raise ValueError(f"seed={seed!r}: must be in 1..2**{_LFSR_WIDTH}-1 (an LFSR stuck at 0 "
                             "never leaves it)")
        inputs, outputs = [], []
        for _path, member, value in core.signature.flatten(core):
            (inputs if member.flow == In else outputs).append(Value.cast(value))
        if not outputs:
            raise ValueError(f"core={core!r}: has no outputs, so all of it would be optimised away")
        return inputs, outputs

    @property
    def input_bits(self) -> int:
        return sum(len(v) for v in self._inputs)

    @property
    def output_bits(self) -> int:
        return sum(len(v) for v in self._outputs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self.core

        lfsr = Signal(_LFSR_WIDTH, init=self._seed)
        step = Mux(lfsr[0], (lfsr >> 1) ^ _TAPS, lfsr >> 1)
        m.d.sync += lfsr.eq(step ^ self.entropy)
        # One new bit a cycle along a shift register as wide as all inputs: every input bit
        # gets its own flip-flop, so no two inputs are the same net for Yosys to merge.
        stream = Signal(max(self.input_bits, 1))
        m.d.sync += stream.eq(Cat(lfsr[0], stream[:-1]))
        pos = 0
        for value in self._inputs:
            m.d.comb += value.eq(stream[pos:pos + len(value)])
            pos += len(value)

        level = list(Cat(*self._outputs))
        depth = 0
        while len(level) > 1 or depth == 0:
            nxt = []
            for i in range(0, len(level), _FAN_IN):
                r = Signal(name=f"xor{depth}_{i // _FAN_IN}")
                m.d.sync += r.eq(Cat(*level[i:i + _FAN_IN]).xor())
                nxt.append(r)
            level = nxt
            depth += 1
        m.d.comb += self.q.eq(level[0])
        return m
