"""The kept list: the sample indices of the samples the last LOSS kept, in order."""

from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .banked_memory import write_port_signature


def kept_list_widths(cfg: Config) -> tuple[int, int, int]:
    """(entry bits, words per bank, word address bits) of the kept list."""
    words = max(2, cfg.max_batch // cfg.banks)
    return max(1, (cfg.max_batch - 1).bit_length()), words, (words - 1).bit_length()


class KeptList(wiring.Component):
    """Entry e is the sample index of the e-th sample the run's last LOSS kept (the per-sample
    skip, :mod:`skiptrain.skip`): the loss unit writes it, the operand reader of B
    (``Gate.SAMPLES_K``) and the result writer's MASK aux (``Gate.SAMPLES_M``) read it.

    ``cfg.max_batch`` entries of log2(max_batch) bits in V banks, entry e in bank e mod V at
    word e // V, so the loss unit writes a group's kept run (at most V consecutive entries) in
    one cycle. Each of ``read_ports`` reads one entry: ``data`` is entry ``entry`` of
    ``read_latency`` cycles before (the banks' registered read, then the bank selected and
    registered).
    """

    read_latency = 2

    def __init__(self, cfg: Config, read_ports: int = 2):
        V = cfg.banks
        self._cfg, self._ports = cfg, read_ports
        self.entry_bits, self.words, self.word_bits = kept_list_widths(cfg)
        super().__init__({
            "wr": In(write_port_signature(V, self.word_bits, unsigned(self.entry_bits))),
            "entry": In(data.ArrayLayout(unsigned(self.entry_bits), read_ports)),
            "data": Out(data.ArrayLayout(unsigned(self.entry_bits), read_ports)),
        })

    def elaborate(self, platform):
        V, bb = self._cfg.banks, self._cfg.bank_bits
        m = Module()
        reads = [[] for _ in range(self._ports)]
        for b in range(V):
            m.submodules[f"bank{b}"] = mem = memory.Memory(shape=unsigned(self.entry_bits),
                                                          depth=self.words, init=[])
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.wr.addr[b]), wp.data.eq(self.wr.data[b]),
                         wp.en.eq(self.wr.en[b])]
            for p in range(self._ports):
                rp = mem.read_port()
                m.d.comb += rp.addr.eq(self.entry[p] >> bb)
                reads[p].append(rp.data)
        for p in range(self._ports):
            bank = Signal(bb, name=f"bank_of_entry{p}")
            m.d.sync += bank.eq(self.entry[p][:bb])
            m.d.sync += self.data[p].eq(Array(reads[p])[bank])
        return m
