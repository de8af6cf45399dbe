"""Write-back of result rows: requantization, address generation, bank routing."""

from amaranth.hdl import Array, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .arith import const_mul
from .banked_memory import write_port_signature
from .requantizer import Requantizer


class ResultWriter(wiring.Component):
    """Takes the array's result rows, one per cycle, and writes them to C.

    Rows arrive in the order the sequencer issued the tiles (tile rows i0, then tile columns
    j0, then the R rows of a tile), so the writer follows with its own counters instead of
    carrying addresses through the array. Element (r, c) of C goes to word
    c_base + r*c_ld + c // V of bank (r + c) mod V; rows past M and lanes past N are not
    written. ``quant`` selects the scratchpad (requantized) or the accumulator memory (full).
    ``done`` pulses one cycle after the last row of the command lands in memory (the memories
    register their inputs: ``memory_write_latency`` cycles after the write port); the extra
    register lets ``done`` cross the die to the sequencer without logic on the way.

    Pipeline (``latency`` = 7 + memory_write_latency from a row at the input to ``done``): the
    row captured (it comes from across the array) -> row counters -> requantizer (3) -> lane
    addresses -> bank routing into the write port registers -> the memory's input register
    -> ``done`` registered once more.
    """

    def __init__(self, cfg: Config, memory_write_latency: int = 1):
        self._cfg = cfg
        self._memory_write_latency = memory_write_latency
        dim, aw = cfg.dim_width, cfg.addr_width
        V, C = cfg.banks, cfg.cols
        super().__init__({
            "start": In(1),
            "base": In(unsigned(aw)), "ld": In(unsigned(aw)),
            "m": In(unsigned(dim)), "n": In(unsigned(dim)),
            "quant": In(1), "shift": In(unsigned(cfg.shift_width)),
            "row_valid": In(1),
            "row_data": In(data.ArrayLayout(signed(cfg.acc_width), C)),
            "spad": Out(write_port_signature(V, cfg.spad_addr_width, signed(cfg.data_width))),
            "acc": Out(write_port_signature(V, cfg.acc_addr_width, signed(cfg.acc_width))),
            "done": Out(1),
            "saturated": Out(1),
        })

    @property
    def latency(self) -> int:
        return 4 + Requantizer.latency + self._memory_write_latency

    @property
    def settle_cycles(self) -> int:
        """Cycles from ``start`` until rows may arrive: the command registered here, then the
        requantizer's per-lane constants."""
        return 1 + -(-self._cfg.cols // Requantizer.lanes_per_copy)

    def elaborate(self, platform):
        cfg = self._cfg
        R, C, V, bb = cfg.rows, cfg.cols, cfg.banks, cfg.bank_bits
        dim, aw = cfg.dim_width, cfg.addr_width
        m = Module()

        # The command comes from the sequencer, across the die: registered on arrival, with
        # ``start`` delayed alike (rows come many cycles after it, so this costs nothing).
        start, quant = Signal(), Signal()
        base, ld = Signal.like(self.base), Signal.like(self.ld)
        m_dim, n_dim, shift = Signal.like(self.m), Signal.like(self.n), Signal.like(self.shift)
        m.d.sync += [start.eq(self.start), quant.eq(self.quant), base.eq(self.base), ld.eq(self.ld),
                     m_dim.eq(self.m), n_dim.eq(self.n), shift.eq(self.shift)]

        # the row arrives from the far side of the array: capture it before any logic
        row_valid = Signal()
        row_data = Signal.like(self.row_data)
        m.d.sync += [row_valid.eq(self.row_valid), row_data.eq(self.row_data)]

        # stage 0: where the incoming row goes
        i = Signal(range(max(R, 2)))
        i0, j0 = Signal(dim + 1), Signal(dim + 1)
        # rows/columns of C from i0/j0 on: validity and "last" compare registers with constants
        m_rem, n_rem = Signal(dim + 1), Signal(dim + 1)
        tile_base, row_base = Signal(aw), Signal(aw)
        rows_ld = Signal(aw)
        m.d.sync += rows_ld.eq(const_mul(ld, R))
        # "row i is the tile's last" (i_last), "this is the last tile column" (col_last) and
        # "the last tile row" (row_last), kept one row ahead in flip-flops so the counters'
        # enables see no comparator
        i_last, col_last, row_last, single_col = Signal(), Signal(), Signal(), Signal()
        last_row = Signal()
        m.d.comb += last_row.eq(i_last & col_last & row_last)
        with m.If(start):
            m.d.sync += [i.eq(0), i0.eq(0), j0.eq(0), m_rem.eq(m_dim), n_rem.eq(n_dim),
                         tile_base.eq(base), row_base.eq(base),
                         i_last.eq(R == 1), col_last.eq(n_dim <= C), single_col.eq(n_dim <= C),
                         row_last.eq(m_dim <= R)]
        with m.Elif(row_valid):
            with m.If(i_last):
                m.d.sync += [i.eq(0), i_last.eq(R == 1)]
                with m.If(col_last):
                    m.d.sync += [j0.eq(0), n_rem.eq(n_dim), i0.eq(i0 + R), m_rem.eq(m_rem - R),
                                 tile_base.eq(tile_base + rows_ld), row_base.eq(tile_base + rows_ld),
                                 col_last.eq(single_col), row_last.eq(m_rem <= 2 * R)]
                with m.Else():
                    m.d.sync += [j0.eq(j0 + C), n_rem.eq(n_rem - C), row_base.eq(tile_base),
                                 col_last.eq(n_rem <= 2 * C)]
            with m.Else():
                m.d.sync += [i.eq(i + 1), row_base.eq(row_base + ld), i_last.eq(i == R - 2)]

        m.submodules.requantizer = rq = Requantizer(cfg, C)
        assert self.settle_cycles == 1 + rq.settle_cycles
        m.d.comb += [rq.value.eq(row_data), rq.valid.eq(row_valid),
                     rq.quant.eq(quant), rq.shift.eq(shift)]

        # row metadata, delayed to meet the requantizer output
        meta = data.StructLayout({"row_ok": 1, "lanes_ok": C, "last": 1, "rot": bb,
                                  "row_base": aw, "j0": dim + 1})
        cur = Signal(meta)
        m.d.comb += [cur.row_ok.eq(row_valid & (m_rem > i)),
                     cur.last.eq(row_valid & last_row),
                     cur.rot.eq(i0 + i + j0), cur.row_base.eq(row_base), cur.j0.eq(j0)]
        for j in range(C):
            m.d.comb += cur.lanes_ok[j].eq(n_rem > j)
        for stage in range(rq.latency):
            nxt = Signal(meta, name=f"meta_d{stage}")
            m.d.sync += nxt.eq(cur)
            cur = nxt

        # stage 3: lane addresses and write enables
        word = [Signal(aw, name=f"word{j}") for j in range(C)]
        en = Signal(C)
        value = [Signal(signed(cfg.acc_width), name=f"value{j}") for j in range(C)]
        # per bank the lane it takes, (b - rot) mod V: one select register per bank, so no single
        # register drives the multiplexers of every bank
        bank_sel = [Signal(bb, name=f"bank_sel{b}") for b in range(V)]
        last = Signal()
        for j in range(C):
            m.d.sync += [word[j].eq(cur.row_base + ((cur.j0 + j) >> bb)),
                         en[j].eq(cur.row_ok & cur.lanes_ok[j]), value[j].eq(rq.out[j])]
        m.d.sync += [sel.eq(b - cur.rot) for b, sel in enumerate(bank_sel)]
        m.d.sync += [last.eq(cur.last),
                     self.saturated.eq((rq.saturated & cur.lanes_ok).any() & cur.row_ok)]

        # stage 4: bank b takes lane (b - rot) mod V. One set of bank-ordered registers serves
        # both memories (only the enables differ), so the rotation stays in one place and
        # only register-to-register routes cross the die to the two memories.
        words, values = Array(word + [0] * (V - C)), Array(value + [0] * (V - C))
        ens = Array(list(en) + [0] * (V - C))
        bank_addr = [Signal(aw, name=f"bank_addr{b}") for b in range(V)]
        bank_data = [Signal(signed(cfg.acc_width), name=f"bank_data{b}") for b in range(V)]
        bank_en = Signal(V)
        to_spad = Signal()
        m.d.sync += to_spad.eq(quant)
        for b in range(V):
            lane = bank_sel[b]
            m.d.sync += [bank_addr[b].eq(words[lane]), bank_data[b].eq(values[lane]),
                         bank_en[b].eq(ens[lane])]
            m.d.comb += [self.spad.addr[b].eq(bank_addr[b]), self.spad.data[b].eq(bank_data[b]),
                         self.spad.en[b].eq(bank_en[b] & to_spad),
                         self.acc.addr[b].eq(bank_addr[b]), self.acc.data[b].eq(bank_data[b]),
                         self.acc.en[b].eq(bank_en[b] & ~to_spad)]
        done = last
        for stage in range(2 + self._memory_write_latency):
            d = Signal(name=f"done_d{stage}")
            m.d.sync += d.eq(done)
            done = d
        m.d.comb += self.done.eq(done)
        return m
