"""A memory of V independent banks with per-bank addresses: the scratchpad and the accumulator memory."""

from amaranth.hdl import Module, Shape, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out


def read_port_signature(banks: int, addr_width: int, shape) -> wiring.Signature:
    """A read port as seen by the reader: one address per bank, data the next cycle."""
    return wiring.Signature({
        "addr": Out(data.ArrayLayout(unsigned(addr_width), banks)),
        "data": In(data.ArrayLayout(shape, banks)),
    })


def write_port_signature(banks: int, addr_width: int, shape) -> wiring.Signature:
    """A write port as seen by the writer: per-bank address, data and enable."""
    return wiring.Signature({
        "addr": Out(data.ArrayLayout(unsigned(addr_width), banks)),
        "data": Out(data.ArrayLayout(shape, banks)),
        "en": Out(banks),
    })


class BankedMemory(wiring.Component):
    """``banks`` synchronous memories of ``depth`` words, read and written bank by bank.

    Every bank has its own address on every port, which is what lets a skewed matrix row or
    column (see :mod:`skiptrain.layout`) be read in one cycle. Read data appears one cycle
    after the address (``read_latency``). Reads are not transparent: the design never reads
    and writes one word in the same cycle (the sequencer rejects overlapping operands).

    Members
    -------
    read : In(read_port_signature).array(read_ports)
    write : In(write_port_signature)
    """

    read_latency = 1

    def __init__(self, banks: int, shape, depth: int, read_ports: int):
        for name, v, lo in (("banks", banks, 1), ("depth", depth, 2), ("read_ports", read_ports, 1)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}={v!r}: must be an integer >= {lo}")
        self._banks, self._shape, self._depth, self._n_read = banks, Shape.cast(shape), depth, read_ports
        aw = (depth - 1).bit_length()
        super().__init__({
            "read": In(read_port_signature(banks, aw, shape)).array(read_ports),
            "write": In(write_port_signature(banks, aw, shape)),
        })

    def elaborate(self, platform):
        m = Module()
        for b in range(self._banks):
            m.submodules[f"bank{b}"] = mem = memory.Memory(shape=self._shape, depth=self._depth, init=[])
            for p in range(self._n_read):
                rp = mem.read_port()
                m.d.comb += [rp.addr.eq(self.read[p].addr[b]), self.read[p].data[b].eq(rp.data)]
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.write.addr[b]), wp.data.eq(self.write.data[b]),
                         wp.en.eq(self.write.en[b])]
        return m
