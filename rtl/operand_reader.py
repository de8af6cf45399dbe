"""Address generation and bank routing that turn a stored matrix into one operand lane vector per cycle."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .arith import const_mul
from .banked_memory import read_port_signature


class OperandReader(wiring.Component):
    """Reads step k of one operand for a tile: ``lanes`` elements, one per array row (A) or column (B).

    Lane l of the tile at lane offset l0 is stored element (outer, inner) with

    - ``lane_is_row`` = 1 (A not transposed, B transposed): outer = l0 + l, inner = k;
    - ``lane_is_row`` = 0: outer = k, inner = l0 + l;

    at word base + outer*ld + inner // V of bank (l0 + l + k) mod V in both cases, so the
    bank of every lane is a rotation by (l0 + k) and never two lanes share one. Addresses are
    kept incrementally (no multiplier): ``base + outer*ld`` moves by ``ld`` per step, or by
    ``lanes*ld`` per new tile offset. Lanes past ``limit`` (ragged tile edges) and steps that
    are not valid read as zero.

    With ``gather`` (``Gate.SAMPLES_K``, lane_is_row = 1 only) the inner index is not k but
    ``list_k``, entry k of the kept list, which must arrive in the cycle after ``k`` does
    (the kept list is read one step ahead, rtl/kept_list.py): op(B) row k is stored column
    list[k].

    Pipeline (``latency`` = 6 + memory_latency): issue registered -> base update -> lane addresses ->
    bank addresses (rotated into bank order and registered here, so only a register drives
    the long routes to the block RAMs) -> memory read (``memory_latency`` cycles, its input
    register included) -> bank data captured (the route back is as long) -> lane data.
    """

    def __init__(self, cfg: Config, lanes: int, memory_latency: int = 2):
        if memory_latency < 1:
            raise ValueError(f"memory_latency={memory_latency}: must be >= 1 (synchronous memory)")
        self._memory_latency = memory_latency
        if not 1 <= lanes <= cfg.banks:
            raise ValueError(f"lanes={lanes}: must be in 1..banks={cfg.banks}")
        self._cfg, self._lanes = cfg, lanes
        dim, aw = cfg.dim_width, cfg.addr_width
        super().__init__({
            "base": In(unsigned(aw)), "ld": In(unsigned(aw)), "lane_is_row": In(1),
            "limit": In(unsigned(dim)),
            "valid": In(1), "first": In(1), "last": In(1),
            "k": In(unsigned(dim)), "l0": In(unsigned(dim)),
            "gather": In(1), "list_k": In(unsigned(dim)),
            "port": Out(read_port_signature(cfg.banks, cfg.spad_addr_width, signed(cfg.data_width))),
            "data": Out(data.ArrayLayout(signed(cfg.data_width), lanes)),
            "out_first": Out(1), "out_last": Out(1),
        })

    @property
    def latency(self) -> int:
        return 6 + self._memory_latency

    def elaborate(self, platform):
        cfg, lanes = self._cfg, self._lanes
        V, bb, saw = cfg.banks, cfg.bank_bits, cfg.spad_addr_width
        m = Module()

        # Everything from the sequencer is registered on arrival, as it comes from across the
        # die: the command fields (constant while a command runs, so this costs no cycle) and
        # the issue stream (stage 0, one cycle of latency).
        base, ld, limit = Signal.like(self.base), Signal.like(self.ld), Signal.like(self.limit)
        lane_is_row, gather = Signal(name="lane_is_row"), Signal(name="gather")
        m.d.sync += [base.eq(self.base), ld.eq(self.ld), limit.eq(self.limit),
                     lane_is_row.eq(self.lane_is_row), gather.eq(self.gather)]
        valid, first, last = Signal(name="valid0"), Signal(name="first0"), Signal(name="last0")
        k_in, l0 = Signal.like(self.k, name="k0"), Signal.like(self.l0, name="l0_in")
        m.d.sync += [valid.eq(self.valid), first.eq(self.first), last.eq(self.last),
                     k_in.eq(self.k), l0.eq(self.l0)]
        # the inner index: k, or the kept list's entry k (it arrives now, with k)
        k = Signal.like(self.k, name="k_inner")
        m.d.comb += k.eq(Mux(gather, self.list_k, k_in))

        # per-command constants, registered so the shift-adds stay off the issue path
        lane_off = [Signal(saw, name=f"lane_off{l}") for l in range(lanes)]
        lanes_ld = Signal(saw)
        m.d.sync += [o.eq(const_mul(ld, l)) for l, o in enumerate(lane_off)]
        m.d.sync += lanes_ld.eq(const_mul(ld, lanes))

        # stage 1: ob = base + outer0 * ld, outer0 = k (lane_is_row=0) or l0 (lane_is_row=1)
        ob = Signal(saw)
        l0_prev = Signal.like(l0)
        v1, first1, last1 = Signal(name="v1"), Signal(name="first1"), Signal(name="last1")
        k1, l01 = Signal.like(k), Signal.like(l0)
        rem1 = Signal(cfg.dim_width + 1)  # lanes left before the edge: lane l is valid if l < rem1
        row_inner1 = [Signal(saw, name=f"row_inner{l}") for l in range(lanes)]
        col_inner1 = [Signal(saw, name=f"col_inner{l}") for l in range(lanes)]
        m.d.sync += [v1.eq(valid), first1.eq(first & valid),
                     last1.eq(last & valid), k1.eq(k), l01.eq(l0),
                     rem1.eq(limit - l0)]
        # the word offsets within a row, one adder each, so stage 2 is a single addition
        for l in range(lanes):
            m.d.sync += [row_inner1[l].eq(lane_off[l] + (k >> bb)),
                         col_inner1[l].eq((l0 + l) >> bb)]
        with m.If(valid):
            with m.If(lane_is_row):
                with m.If(first):
                    m.d.sync += l0_prev.eq(l0)
                    with m.If(l0 == 0):
                        m.d.sync += ob.eq(base)
                    with m.Elif(l0 != l0_prev):
                        m.d.sync += ob.eq(ob + lanes_ld)
            with m.Else():
                # lane_off[1] is ld itself: one register fewer per reader
                m.d.sync += ob.eq(Mux(first, base, ob + (lane_off[1] if lanes > 1 else ld)))

        # stage 2: lane word addresses, lane validity, and per bank the lane it serves,
        # (b - rot) mod V with rot = l0 + k: one select register per bank rather than one rot
        # register driving every bank's multiplexer across the die
        word2 = [Signal(saw, name=f"word{l}") for l in range(lanes)]
        ok2 = Signal(lanes)
        bank_sel2 = [Signal(bb, name=f"bank_sel{b}") for b in range(V)]
        rot2 = Signal(bb)
        flags2 = Signal(2)
        for l in range(lanes):
            m.d.sync += [word2[l].eq(ob + Mux(lane_is_row, row_inner1[l], col_inner1[l])),
                         ok2[l].eq(v1 & (rem1 > l))]
        m.d.sync += [s.eq(b - l01 - k1) for b, s in enumerate(bank_sel2)]
        m.d.sync += [rot2.eq(l01 + k1), flags2.eq(Cat(first1, last1))]

        # stage 3: bank b's address
        words = Array(word2 + [0] * (V - lanes))
        for b in range(V):
            m.d.sync += self.port.addr[b].eq(words[bank_sel2[b]])
        # wait for the data; the last stage turns rot into one select register per lane
        ok3, rot3, flags3 = ok2, rot2, flags2
        for stage in range(1 + self._memory_latency):
            d_ok, d_rot, d_flags = Signal(lanes, name=f"ok_d{stage}"), Signal(bb, name=f"rot_d{stage}"), \
                Signal(2, name=f"flags_d{stage}")
            m.d.sync += [d_ok.eq(ok3), d_rot.eq(rot3), d_flags.eq(flags3)]
            ok3, rot3, flags3 = d_ok, d_rot, d_flags
        lane_sel = [Signal(bb, name=f"lane_sel{l}") for l in range(lanes)]
        ok4, flags4 = Signal(lanes), Signal(2)
        m.d.sync += [s.eq(l + rot3) for l, s in enumerate(lane_sel)]
        m.d.sync += [ok4.eq(ok3), flags4.eq(flags3)]

        # capture the bank data first, then route: lane l takes bank (l + rot) mod V
        captured = [Signal.like(self.port.data[b], name=f"bank_data{b}") for b in range(V)]
        m.d.sync += [c.eq(self.port.data[b]) for b, c in enumerate(captured)]
        banks = Array(captured)
        for l in range(lanes):
            m.d.sync += self.data[l].eq(Mux(ok4[l], banks[lane_sel[l]], 0))
        m.d.sync += [self.out_first.eq(flags4[0]), self.out_last.eq(flags4[1])]
        return m

