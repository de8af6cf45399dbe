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

    Pipeline (``latency`` = 5 + memory_latency): issue -> base update -> lane addresses ->
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
            "port": Out(read_port_signature(cfg.banks, cfg.spad_addr_width, signed(cfg.data_width))),
            "data": Out(data.ArrayLayout(signed(cfg.data_width), lanes)),
            "out_first": Out(1), "out_last": Out(1),
        })

    @property
    def latency(self) -> int:
        return 5 + self._memory_latency

    def elaborate(self, platform):
        cfg, lanes = self._cfg, self._lanes
        V, bb, saw = cfg.banks, cfg.bank_bits, cfg.spad_addr_width
        m = Module()

        # per-command constants, registered so the shift-adds stay off the issue path
        lane_off = [Signal(saw, name=f"lane_off{l}") for l in range(lanes)]
        lanes_ld = Signal(saw)
        m.d.sync += [o.eq(const_mul(self.ld, l)) for l, o in enumerate(lane_off)]
        m.d.sync += lanes_ld.eq(const_mul(self.ld, lanes))

        # stage 1: ob = base + outer0 * ld, outer0 = k (lane_is_row=0) or l0 (lane_is_row=1)
        ob = Signal(saw)
        l0_prev = Signal.like(self.l0)
        v1, first1, last1 = Signal(), Signal(), Signal()
        k1, l01 = Signal.like(self.k), Signal.like(self.l0)
        rem1 = Signal(cfg.dim_width + 1)  # lanes left before the edge: lane l is valid if l < rem1
        row_inner1 = [Signal(saw, name=f"row_inner{l}") for l in range(lanes)]
        col_inner1 = [Signal(saw, name=f"col_inner{l}") for l in range(lanes)]
        m.d.sync += [v1.eq(self.valid), first1.eq(self.first & self.valid),
                     last1.eq(self.last & self.valid), k1.eq(self.k), l01.eq(self.l0),
                     rem1.eq(self.limit - self.l0)]
        # the word offsets within a row, one adder each, so stage 2 is a single addition
        for l in range(lanes):
            m.d.sync += [row_inner1[l].eq(lane_off[l] + (self.k >> bb)),
                         col_inner1[l].eq((self.l0 + l) >> bb)]
        with m.If(self.valid):
            with m.If(self.lane_is_row):
                with m.If(self.first):
                    m.d.sync += l0_prev.eq(self.l0)
                    with m.If(self.l0 == 0):
                        m.d.sync += ob.eq(self.base)
                    with m.Elif(self.l0 != l0_prev):
                        m.d.sync += ob.eq(ob + lanes_ld)
            with m.Else():
                m.d.sync += ob.eq(Mux(self.first, self.base, ob + self.ld))

        # stage 2: lane word addresses, lane validity, bank rotation
        word2 = [Signal(saw, name=f"word{l}") for l in range(lanes)]
        ok2 = Signal(lanes)
        rot2 = Signal(bb)
        flags2 = Signal(2)
        for l in range(lanes):
            m.d.sync += [word2[l].eq(ob + Mux(self.lane_is_row, row_inner1[l], col_inner1[l])),
                         ok2[l].eq(v1 & (rem1 > l))]
        m.d.sync += [rot2.eq(l01 + k1), flags2.eq(Cat(first1, last1))]

        # stage 3: bank b serves lane (b - rot) mod V
        words = Array(word2 + [0] * (V - lanes))
        for b in range(V):
            m.d.sync += self.port.addr[b].eq(words[(b - rot2)[:bb]])
        ok3, rot3, flags3 = ok2, rot2, flags2
        for stage in range(2 + self._memory_latency):
            d_ok, d_rot, d_flags = Signal(lanes, name=f"ok_d{stage}"), Signal(bb, name=f"rot_d{stage}"), \
                Signal(2, name=f"flags_d{stage}")
            m.d.sync += [d_ok.eq(ok3), d_rot.eq(rot3), d_flags.eq(flags3)]
            ok3, rot3, flags3 = d_ok, d_rot, d_flags

        # capture the bank data first, then route: lane l takes bank (l + rot) mod V
        captured = [Signal.like(self.port.data[b], name=f"bank_data{b}") for b in range(V)]
        m.d.sync += [c.eq(self.port.data[b]) for b, c in enumerate(captured)]
        banks = Array(captured)
        for l in range(lanes):
            m.d.sync += self.data[l].eq(Mux(ok3[l], banks[(l + rot3)[:bb]], 0))
        m.d.sync += [self.out_first.eq(flags3[0]), self.out_last.eq(flags3[1])]
        return m

