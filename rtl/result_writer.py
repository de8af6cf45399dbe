"""Write-back of result rows: requantization, address generation, bank routing."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .arith import const_mul, round_saturate
from .banked_memory import read_port_signature, write_port_signature
from .command import Epilogue
from .kept_register import KeptRegister
from .lfsr import Lfsr
from .normaliser import Normaliser
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

    The epilogue (:class:`~skiptrain.isa.Epilogue`) rides along: element (r, c) of the *aux*
    matrix (accumulator memory, word aux_base + r*c_ld + c // V, the same bank as C's) is read
    while the element is on its way (``acc_rd``), combined with it, and written back in place:
    RELU stores the ReLU'd values in aux too, MASK zeroes C where aux <= 0, UPDATE subtracts the
    rounded value from aux (saturating at acc_width bits) and writes aux and its operand copy
    round_half_even(aux / 2**frac_bits), saturated, to C. Every command runs through the same
    stages, so the latency does not depend on the epilogue.

    With ``aux_trans`` (a MASK of ``Gate.SAMPLES_M``: C's rows are the kept samples) the aux
    matrix is stored transposed, N x (the batch) with ``aux_ld``, and output row r reads its
    column list[r], entry r of the kept list (``list_entry`` out, ``list_data`` in, two cycles
    later): element (r, c) reads aux word aux_base + c*aux_ld + list[r] // V of bank
    (c + list[r]) mod V, and the "aux > 0" flags come back rotated into C's bank order.

    With ``stochastic`` set, UPDATE rounds its step stochastically instead of half to even: lane
    j adds the low ``shift`` bits (at most 32) of its LFSR (:class:`~rtl.lfsr.Lfsr`) to the
    accumulator and the requantizer floors. Every lane's LFSR steps once per row the writer
    receives in such a command (R rows per tile, in the order the tiles come, padding rows
    included); ``sr_load`` seeds them from ``sr_seed``.

    With ``cfg.kept_norm`` the step of a command with ``norm`` set (an UPDATE over the kept
    samples with SKIP_CTRL's norm_kept: the sequencer has taken the exponent of batch / kept
    off its shift) is scaled by the mantissa ``norm_m`` in the :class:`~rtl.normaliser.Normaliser`
    before E1; the aux read goes out :attr:`norm_cycles` cycles later to meet it, and every
    command is as many cycles longer.

    Pipeline (``latency`` = 15 + memory_write_latency from a row at the input to ``done``):
    the row captured (it comes from across the array) -> row counters -> the rounding noise
    added -> requantizer (3) ->
    lane addresses -> bank routing -> aux read (``acc_read_latency`` = 3) -> aux captured -> combine ->
    operand copy (2) into the write port registers -> the memory's input register -> ``done``
    registered once more.
    """

    acc_read_latency = 3
    #: Data bits per copy of a bank's lane select (each bit is an 8:1 multiplexer of it on
    #: the default 8 banks): 14 gives the 40-bit accumulator three copies beside the
    #: address's, each with a fan-out of one bank's address width or less.
    select_slice = 14
    #: The submodules synthesis keeps whole (fpga.flow, with the top's own): the copies of
    #: registers with many loads (the lane select, the epilogue's flags), which Yosys would
    #: otherwise merge back into one register.
    synthesis_keep_hierarchy = ("copy_*",)

    def __init__(self, cfg: Config, memory_write_latency: int = 1, acc_read_latency: int = 3):
        self._cfg = cfg
        self._memory_write_latency = memory_write_latency
        assert acc_read_latency == self.acc_read_latency
        dim, aw = cfg.dim_width, cfg.addr_width
        V, C = cfg.banks, cfg.cols
        super().__init__({
            "start": In(1),
            "base": In(unsigned(aw)), "ld": In(unsigned(aw)),
            "m": In(unsigned(dim)), "n": In(unsigned(dim)),
            "quant": In(1), "shift": In(unsigned(cfg.shift_width)),
            "epilogue": In(Epilogue), "aux_base": In(unsigned(aw)),
            "aux_trans": In(1), "aux_ld": In(unsigned(aw)),
            "list_entry": Out(unsigned(dim)), "list_data": In(unsigned(dim)),
            "acc_rd": Out(read_port_signature(V, cfg.acc_addr_width, signed(cfg.acc_width))),
            "stochastic": In(1), "sr_seed": In(32), "sr_load": In(1),
            "norm": In(1), "norm_m": In(unsigned(17)),
            "row_valid": In(1),
            "row_data": In(data.ArrayLayout(signed(cfg.acc_width), C)),
            "spad": Out(write_port_signature(V, cfg.spad_addr_width, signed(cfg.data_width))),
            "acc": Out(write_port_signature(V, cfg.acc_addr_width, signed(cfg.acc_width))),
            "done": Out(1),
            "saturated": Out(1),
        })

    @property
    def latency(self) -> int:
        if not self._cfg.training:  # no noise stage, aux read or epilogue stages
            return 4 + Requantizer.latency + self._memory_write_latency
        return (5 + Requantizer.latency + self.acc_read_latency + 4 + self._memory_write_latency
                + self.norm_cycles)

    @property
    def norm_cycles(self) -> int:
        """Cycles the kept-count normaliser adds (``cfg.kept_norm``): its latency less the aux
        read and capture the element waits through anyway."""
        if not self._cfg.kept_norm:
            return 0
        return 1 + self._cfg.multiplier_latency + 2 - (self.acc_read_latency + 1)

    @property
    def settle_cycles(self) -> int:
        """Cycles from ``start`` until rows may arrive: the command registered here, then the
        requantizer's (its inputs registered, its select amounts, then its per-lane
        constants)."""
        return 1 + Requantizer.settle_cycles_for(self._cfg.cols)

    def elaborate(self, platform):
        cfg = self._cfg
        R, C, V, bb = cfg.rows, cfg.cols, cfg.banks, cfg.bank_bits
        dim, aw = cfg.dim_width, cfg.addr_width
        m = Module()

        # The command comes from the sequencer, across the die: registered on arrival, with
        # ``start`` delayed alike (rows come many cycles after it, so this costs nothing).
        start, quant = Signal(name="start"), Signal(name="quant")
        base, ld = Signal.like(self.base), Signal.like(self.ld)
        m_dim, n_dim, shift = Signal.like(self.m), Signal.like(self.n), Signal.like(self.shift)
        epilogue, aux_base = Signal.like(self.epilogue), Signal.like(self.aux_base)
        aux_trans, aux_ld = Signal(), Signal.like(self.aux_ld)
        m.d.sync += [start.eq(self.start), quant.eq(self.quant), base.eq(self.base), ld.eq(self.ld),
                     m_dim.eq(self.m), n_dim.eq(self.n), shift.eq(self.shift),
                     epilogue.eq(self.epilogue), aux_base.eq(self.aux_base),
                     aux_trans.eq(self.aux_trans & cfg.training), aux_ld.eq(self.aux_ld)]

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
        aux_tile_base, aux_row_base = Signal(aw), Signal(aw)
        rows_ld = Signal(aw)
        m.d.sync += rows_ld.eq(const_mul(ld, R))
        # the transposed aux: column j0 + j starts at aux_col_base + j*aux_ld
        aux_col_base, aux_cols_ld = Signal(aw), Signal(aw)
        aux_lane_off = [Signal(aw, name=f"aux_lane_off{j}") for j in range(C)]
        m.d.sync += [aux_cols_ld.eq(const_mul(aux_ld, C))]
        m.d.sync += [o.eq(const_mul(aux_ld, j)) for j, o in enumerate(aux_lane_off)]
        # "row i is the tile's last" (i_last), "this is the last tile column" (col_last) and
        # "the last tile row" (row_last), kept one row ahead in flip-flops so the counters'
        # enables see no comparator
        i_last = Signal(name="i_last")
        col_last = Signal(name="col_last")
        row_last = Signal(name="row_last")
        single_col = Signal(name="single_col")
        last_row = Signal()
        m.d.comb += last_row.eq(i_last & col_last & row_last)
        # per lane "n_rem > j", kept beside n_rem rather than compared behind it
        lanes_ok = Signal(C, name="lanes_ok")
        # what the counters take at the next tile column or row, compared a cycle after
        # n_rem / m_rem / n_dim change and registered: the next change is R rows away, so the
        # compares never sit in front of the counters' registers (the estimate's worst writer
        # paths: n_rem through "n_rem > j + C" into lanes_ok and col_last, six LUTs). A 1-row
        # array may change them on consecutive rows: it compares in place.
        if R > 1:
            next_lanes, first_lanes = Signal(C, name="next_lanes"), Signal(C, name="first_lanes")
            next_col_last, next_row_last = Signal(name="next_col_last"), Signal(name="next_row_last")
            m.d.sync += [next_lanes[j].eq(n_rem > j + C) for j in range(C)]
            m.d.sync += [first_lanes[j].eq(n_dim > j) for j in range(C)]
            m.d.sync += [next_col_last.eq(n_rem <= 2 * C), next_row_last.eq(m_rem <= 2 * R)]
        else:
            next_lanes = Cat(*[n_rem > j + C for j in range(C)])
            first_lanes = Cat(*[n_dim > j for j in range(C)])
            next_col_last, next_row_last = n_rem <= 2 * C, m_rem <= 2 * R
        # the counters' own copy of the row's valid flag: the captured one also steers the
        # row's metadata and noise, and its enable net into the counters (some 150 flip-flops)
        # arrived after 8 ns (the writer's m_rem, the static placer's seed 2 at 5096382)
        m.submodules.copy_row_valid = row_valid_ctl = KeptRegister(1)
        m.d.comb += row_valid_ctl.d.eq(self.row_valid)
        # the kept list's own copy of the row counter: i also feeds row_ok's compare, and
        # from one register both, i's net across the die into the list's entry adder was
        # 399e746's critical path at seed 3 (writer.i into meta_d0.row_ok, 8.02 ns, one net of
        # 4.37). Not merged by Yosys: each copy's next value is computed from itself.
        i_list = Signal.like(i, name="i_list")
        with m.If(start):
            m.d.sync += i_list.eq(0)
        with m.Elif(row_valid_ctl.q):
            m.d.sync += i_list.eq(Mux(i_last, 0, i_list + 1))
        with m.If(start):
            m.d.sync += [i.eq(0), i0.eq(0), j0.eq(0), m_rem.eq(m_dim), n_rem.eq(n_dim),
                         tile_base.eq(base), row_base.eq(base),
                         aux_tile_base.eq(aux_base), aux_row_base.eq(aux_base), aux_col_base.eq(aux_base),
                         i_last.eq(R == 1), col_last.eq(n_dim <= C), single_col.eq(n_dim <= C),
                         row_last.eq(m_dim <= R)]
            m.d.sync += [lanes_ok[j].eq(n_dim > j) for j in range(C)]
        with m.Elif(row_valid_ctl.q):
            with m.If(i_last):
                m.d.sync += [i.eq(0), i_last.eq(R == 1)]
                with m.If(col_last):
                    m.d.sync += [j0.eq(0), n_rem.eq(n_dim), i0.eq(i0 + R), m_rem.eq(m_rem - R),
                                 tile_base.eq(tile_base + rows_ld), row_base.eq(tile_base + rows_ld),
                                 aux_tile_base.eq(aux_tile_base + rows_ld),
                                 aux_row_base.eq(aux_tile_base + rows_ld), aux_col_base.eq(aux_base),
                                 col_last.eq(single_col), row_last.eq(next_row_last)]
                    m.d.sync += lanes_ok.eq(first_lanes)
                with m.Else():
                    m.d.sync += [j0.eq(j0 + C), n_rem.eq(n_rem - C), row_base.eq(tile_base),
                                 aux_row_base.eq(aux_tile_base), aux_col_base.eq(aux_col_base + aux_cols_ld),
                                 col_last.eq(next_col_last)]
                    m.d.sync += lanes_ok.eq(next_lanes)
            with m.Else():
                m.d.sync += [i.eq(i + 1), row_base.eq(row_base + ld), aux_row_base.eq(aux_row_base + ld),
                             i_last.eq(i == R - 2)]

        m.submodules.requantizer = rq = Requantizer(cfg, C)
        assert self.settle_cycles == 1 + rq.settle_cycles
        # stochastic rounding of the update: the LFSRs' low shift bits added, then a floor
        sr_active = Signal()  # stays 0 without the training hardware
        noise_mask = Signal(32)
        # (1 << shift) - 1 as 32 compares with constants: a shifter and a 33-bit decrement
        # were 7.86 ns at a8901ff's seed 3
        m.d.sync += noise_mask.eq(Cat(*[shift > k for k in range(32)]))
        noised, noised_valid = row_data, row_valid
        if cfg.training:
            m.d.sync += sr_active.eq(self.stochastic & (self.epilogue == Epilogue.UPDATE))
            noised, noised_valid = Signal.like(row_data), Signal()
            m.d.sync += noised_valid.eq(row_valid)
            for j in range(C):
                # sr_active again, in a copy per lane: it selects the noise of all 32 bits of
                # every lane's adder and steps every lane's LFSR (some 260 loads as one register)
                m.submodules[f"copy_sr{j}"] = sr_lane = KeptRegister(1)
                m.d.comb += sr_lane.d.eq(self.stochastic & (self.epilogue == Epilogue.UPDATE))
                m.submodules[f"lfsr{j}"] = lfsr = Lfsr(j)
                m.d.comb += [lfsr.seed.eq(self.sr_seed), lfsr.load.eq(self.sr_load),
                             lfsr.step.eq(row_valid & sr_lane.q)]
                m.d.sync += noised[j].eq(row_data[j] + Mux(sr_lane.q, lfsr.value & noise_mask, 0))
        m.d.comb += [rq.value.eq(noised), rq.valid.eq(noised_valid), rq.floor.eq(sr_active),
                     rq.quant.eq(quant), rq.shift.eq(shift)]
        # UPDATE takes the requantizer's unsaturated rounding (the step), and its saturation
        # flags do not count; without the training hardware no epilogue runs (a constant)
        takes_step = (epilogue == Epilogue.UPDATE) if cfg.training else 0
        # The epilogue's flags, decoded from the command's epilogue, each drive a multiplexer
        # of every bit of every lane or bank (aux_write some 55 bits of each of the V write
        # ports, beside the memories across the die): registered in a copy per lane for the
        # step's select and per bank for the rest. The command is constant while its rows
        # flow, and its first row reaches them many cycles after ``start``.
        lane_step = [0] * C
        bank_flags = [Signal(4, name=f"bank_flags{b}") for b in range(V)]
        if cfg.training:
            aux_write_d = (epilogue == Epilogue.RELU) | (epilogue == Epilogue.UPDATE)
            flags_d = Cat(epilogue == Epilogue.UPDATE, epilogue == Epilogue.RELU,
                          epilogue == Epilogue.MASK, aux_write_d)
            for j in range(C):
                m.submodules[f"copy_step{j}"] = reg = KeptRegister(1)
                m.d.comb += reg.d.eq(takes_step)
                lane_step[j] = reg.q
            for b in range(V):
                m.submodules[f"copy_flags{b}"] = reg = KeptRegister(4)
                m.d.comb += [reg.d.eq(flags_d), bank_flags[b].eq(reg.q)]

        # row metadata, delayed to meet the requantizer output
        # (aux_row_base: the transposed aux's column base until the list entry s comes, then
        # that plus s // V: the word of element (s, j0) of the stored aux)
        meta = data.StructLayout({"row_ok": 1, "lanes_ok": C, "last": 1, "rot": bb,
                                  "row_base": aw, "aux_row_base": aw, "j0": dim + 1, "s": bb})
        cur = Signal(meta)
        m.d.comb += [cur.row_ok.eq(row_valid & (m_rem > i)),
                     cur.last.eq(row_valid & last_row),
                     cur.rot.eq(i0 + i + j0), cur.row_base.eq(row_base),
                     cur.aux_row_base.eq(Mux(aux_trans, aux_col_base, aux_row_base)), cur.j0.eq(j0)]
        m.d.comb += self.list_entry.eq(i0 + i_list)
        m.d.comb += cur.lanes_ok.eq(lanes_ok)
        assert int(cfg.training) + rq.latency > 2 or not cfg.training
        for stage in range(int(cfg.training) + rq.latency):  # the noise stage, the requantizer
            nxt = Signal(meta, name=f"meta_d{stage}")
            if stage == 2:  # the kept list's entry for this row has come (two cycles)
                m.d.sync += nxt.eq(cur)
                with m.If(aux_trans):
                    m.d.sync += [nxt.s.eq(self.list_data[:bb]),
                                 nxt.aux_row_base.eq(cur.aux_row_base + (self.list_data >> bb))]
            else:
                m.d.sync += nxt.eq(cur)
            cur = nxt

        # stage 3: lane addresses and write enables
        word = [Signal(aw, name=f"word{j}") for j in range(C)]
        aux_word = [Signal(aw, name=f"aux_word{j}") for j in range(C)]
        en = Signal(C)
        value = [Signal(signed(cfg.acc_width), name=f"value{j}") for j in range(C)]
        # per bank the lane it takes, (b - rot) mod V: select registers per bank, so no single
        # register drives the multiplexers of every bank, and per bank one copy for the
        # address and enable and one per slice of the data (a single 3-bit register per bank
        # drove the 8:1 multiplexers of some 55 bits, ec1557b's critical path at seed 1:
        # bank_sel0 into a bank address register, 9.22 ns, one net of 5.0 ns). The copies are
        # KeptRegisters, kept whole in synthesis, because Yosys merges equal flip-flops.
        data_slices = [(lo, min(lo + self.select_slice, cfg.acc_width))
                       for lo in range(0, cfg.acc_width, self.select_slice)]
        bank_sel = []  # per bank: [address and enable, data slice 0, data slice 1, ...]
        for b in range(V):
            copies = []
            for k in range(1 + len(data_slices)):
                m.submodules[f"copy_sel{b}_{k}"] = reg = KeptRegister(bb)
                m.d.comb += reg.d.eq(b - cur.rot)
                copies.append(reg.q)
            bank_sel.append(copies)
        last = Signal()
        for j in range(C):
            m.d.sync += [word[j].eq(cur.row_base + ((cur.j0 + j) >> bb)),
                         aux_word[j].eq(cur.aux_row_base + Mux(aux_trans, aux_lane_off[j],
                                                               (cur.j0 + j) >> bb)),
                         en[j].eq(cur.row_ok & cur.lanes_ok[j]), value[j].eq(Mux(lane_step[j], rq.out_wide[j], rq.out[j]))]
        m.d.sync += last.eq(cur.last)
        # the transposed aux: bank b serves lane (b - j0 - s) mod V, and C's bank b takes the
        # "aux > 0" flag of aux bank (b - rot + j0 + s) mod V (both b itself otherwise)
        aux_sel = [Signal(bb, name=f"aux_bank_sel{b}") for b in range(V)]
        flag_sel = [Signal(bb, name=f"flag_sel{b}") for b in range(V)]
        m.d.sync += [sel.eq(Mux(aux_trans, b - cur.j0 - cur.s, b - cur.rot)) for b, sel in enumerate(aux_sel)]
        m.d.sync += [sel.eq(Mux(aux_trans, b - cur.rot + cur.j0 + cur.s, b)) for b, sel in enumerate(flag_sel)]

        # stage 4: bank b takes lane (b - rot) mod V, into one set of bank-ordered registers for
        # both memories (only the enables differ), so the rotation stays in one place
        words = Array(word + [0] * (V - C))
        value_slices = [Array([v[lo:hi] for v in value] + [0] * (V - C)) for lo, hi in data_slices]
        aux_words = Array(aux_word + [0] * (V - C))
        ens = Array(list(en) + [0] * (V - C))
        bank_addr = [Signal(aw, name=f"bank_addr{b}") for b in range(V)]
        bank_aux = [Signal(aw, name=f"bank_aux{b}") for b in range(V)]
        bank_data = [Signal(signed(cfg.acc_width), name=f"bank_data{b}") for b in range(V)]
        bank_en = Signal(V)
        bank_flag_sel = [Signal(bb, name=f"bank_flag_sel{b}") for b in range(V)]
        m.d.sync += [f.eq(flag_sel[b]) for b, f in enumerate(bank_flag_sel)]
        flag_sel = bank_flag_sel  # with the bank registers, one stage after the selects
        for b in range(V):
            lane, *data_lanes = bank_sel[b]
            m.d.sync += [bank_addr[b].eq(words[lane]), bank_aux[b].eq(aux_words[aux_sel[b]]),
                         bank_en[b].eq(ens[lane])]
            m.d.sync += [bank_data[b][lo:hi].eq(values[sel])
                         for (lo, hi), values, sel in zip(data_slices, value_slices, data_lanes)]
        lane_sat = Signal()
        m.d.sync += lane_sat.eq((rq.saturated & cur.lanes_ok).any() & cur.row_ok & ~takes_step)
        if not cfg.training:
            # the GEMM engine alone: the bank registers are the write ports
            to_spad = Signal()
            m.d.sync += to_spad.eq(quant)
            for b in range(V):
                m.d.comb += [self.spad.addr[b].eq(bank_addr[b]), self.spad.data[b].eq(bank_data[b]),
                             self.spad.en[b].eq(bank_en[b] & to_spad),
                             self.acc.addr[b].eq(bank_addr[b]), self.acc.data[b].eq(bank_data[b]),
                             self.acc.en[b].eq(bank_en[b] & ~to_spad)]
            m.d.comb += self.saturated.eq(lane_sat)
            self._done_chain(m, last, 2 + self._memory_write_latency)
            m.d.comb += [self.acc_rd.addr[b].eq(bank_aux[b]) for b in range(V)]
            return m

        # the kept-count normaliser takes the bank-ordered step here and gives it back in
        # time for E1; the aux read then goes out norm_cycles later, so it still meets E1
        norm_cycles = self.norm_cycles
        if cfg.kept_norm:
            m.submodules.normaliser = nz = Normaliser(cfg, V)
            assert nz.latency == norm_cycles + self.acc_read_latency + 1
            norm_q, norm_m_q = Signal(), Signal(17)
            m.d.sync += [norm_q.eq(self.norm), norm_m_q.eq(self.norm_m)]
            m.d.comb += [nz.norm.eq(norm_q), nz.m.eq(norm_m_q)]
            m.d.comb += [nz.step[b].eq(bank_data[b]) for b in range(V)]
        # E1 (below) is one addition, aux' + x' + UPDATE, with no multiplexer after it: x' is
        # the element's UPDATE operand ~x or its other value (ReLU'd or as it is), and aux' the
        # aux word, 0 unless UPDATE; per bank: UPDATE, RELU, MASK, "aux is written" (RELU or
        # UPDATE)
        aw_ = cfg.acc_width
        is_update, is_relu, is_mask, aux_write = ([f[k] for f in bank_flags] for k in range(4))

        def e1_operand(x, b):
            # ReLU here, after the requantizer's saturation (a sign bit, no more logic on the
            # requantizer's own critical path); ~x widened is the widened x's complement
            return Mux(is_update[b], ~x.as_signed(), Mux(is_relu[b] & x[-1], 0, x))

        # while the aux word is read, and captured in the fabric beside the memory, the
        # element waits beside it; the last of these registers holds x' (without the
        # normaliser, whose output register comes last instead)
        stages = norm_cycles + self.acc_read_latency + 1
        for stage in range(stages):
            if stage == norm_cycles:
                # the aux read goes out from these registers; its data comes acc_read_latency
                # later and is captured once more
                m.d.comb += [self.acc_rd.addr[b].eq(bank_aux[b]) for b in range(V)]
            operand = stage == stages - 1 and not cfg.kept_norm
            nxt_addr = [Signal(aw, name=f"bank_addr_d{stage}_{b}") for b in range(V)]
            nxt_aux = [Signal(aw, name=f"bank_aux_d{stage}_{b}") for b in range(V)]
            nxt_data = [Signal(signed(aw_ + operand), name=f"bank_data_d{stage}_{b}") for b in range(V)]
            nxt_en = Signal(V, name=f"bank_en_d{stage}")
            nxt_flag = [Signal(bb, name=f"flag_sel_d{stage}_{b}") for b in range(V)]
            m.d.sync += [nxt_en.eq(bank_en)]
            for b in range(V):
                m.d.sync += [nxt_addr[b].eq(bank_addr[b]), nxt_aux[b].eq(bank_aux[b]),
                             nxt_data[b].eq(e1_operand(bank_data[b], b) if operand else bank_data[b]),
                             nxt_flag[b].eq(flag_sel[b])]
            bank_addr, bank_aux, bank_data, bank_en = nxt_addr, nxt_aux, nxt_data, nxt_en
            flag_sel = nxt_flag
        if cfg.kept_norm:
            bank_data = [e1_operand(nz.out[b], b) for b in range(V)]

        # combine (E1): the epilogue's element-wise step, per bank
        acc_min, acc_max = -(1 << (aw_ - 1)), (1 << (aw_ - 1)) - 1
        e1_addr = [Signal(aw, name=f"e1_addr{b}") for b in range(V)]
        e1_aux = [Signal(aw, name=f"e1_aux{b}") for b in range(V)]
        # E1 holds the difference (or the element) one bit wider than acc_width, unsaturated:
        # the clamp to acc_width is E2a's, from its two top bits. With the clamp's multiplexer
        # behind the 42-bit subtraction, E1 was 98ce465's critical path at seed 2 and its
        # registers the late endpoints (173 of them); with the UPDATE/ReLU multiplexer behind
        # it, 104 at ec89ee3's seed 2. Any other element, sign-extended, has its two top bits
        # equal, so the clamp leaves it as it is.
        e1_data = [Signal(signed(aw_ + 1), name=f"e1_data{b}") for b in range(V)]
        e1_en = Signal(V)
        # MASK: per aux bank "aux > 0", registered here; C's bank b takes flag flag_sel[b] in E2a
        e1_pos = Signal(V)
        e1_flag_sel = [Signal(bb, name=f"e1_flag_sel{b}") for b in range(V)]
        # the aux words, registered as they leave the block RAM: its output and the route from
        # it were the critical path into E1's subtraction (ECP5: about 6 ns of the 11). Twice:
        # as they are, for MASK's "aux > 0", and zeroed unless UPDATE (the flag on the
        # register's synchronous reset) for the sum
        aux_q = [Signal(signed(aw_), name=f"aux_q{b}") for b in range(V)]
        aux_u = [Signal(signed(aw_), name=f"aux_u{b}") for b in range(V)]
        m.d.sync += [q.eq(self.acc_rd.data[b]) for b, q in enumerate(aux_q)]
        m.d.sync += [q.eq(Mux(is_update[b], self.acc_rd.data[b], 0)) for b, q in enumerate(aux_u)]
        for b in range(V):
            aux = aux_q[b]
            m.d.sync += [e1_addr[b].eq(bank_addr[b]), e1_aux[b].eq(bank_aux[b]),
                         e1_data[b].eq(aux_u[b] + bank_data[b] + is_update[b]),
                         # aux > 0 as a sign bit and an OR tree
                         e1_pos[b].eq(~aux[-1] & aux[:-1].any()), e1_flag_sel[b].eq(flag_sel[b])]
        m.d.sync += e1_en.eq(bank_en)

        # operand copy (E2a, E2b) into the write-port registers: UPDATE writes the new master
        # weight to aux and round_half_even(w / 2**frac_bits), saturated, to C; RELU writes its
        # values to both; the others write C only. E2a: the clamp of E1's value to acc_width,
        # the shift and the round-up bit; E2b: the saturation from the top bits of the shifted
        # value and a short increment (rtl.arith.round_saturate).
        f, dw = cfg.frac_bits, cfg.data_width
        a_addr = [Signal(aw, name=f"e2_addr{b}") for b in range(V)]
        a_aux = [Signal(aw, name=f"e2_aux{b}") for b in range(V)]
        a_w = [Signal(signed(aw_), name=f"e2_w{b}") for b in range(V)]
        a_q = [Signal(signed(aw_ - f), name=f"e2_q{b}") for b in range(V)]
        a_up, a_en, update_sat = Signal(V), Signal(V), Signal(V)
        # MASK's zeroing flag, registered here and applied in E2b: the "aux > 0" flag comes from
        # another bank (e1_flag_sel), and with that cross-bank multiplexer in front of E2a's
        # clamp multiplexer e2_w had 80 late endpoints at 91aa52b's seed 1 (66 at 5096382's)
        a_masked = Signal(V)
        pos = Array(e1_pos[x] for x in range(V))
        top_max, top_min = Const(acc_max, signed(aw_)), Const(acc_min, signed(aw_))
        for b in range(V):
            wide = e1_data[b]
            d_over = ~wide[aw_] & wide[aw_ - 1]   # the two top bits differ: outside acc_width
            d_under = wide[aw_] & ~wide[aw_ - 1]
            w_in = wide[:aw_].as_signed()
            w = Mux(d_over, top_max, Mux(d_under, top_min, w_in))
            m.d.sync += [a_addr[b].eq(e1_addr[b]), a_aux[b].eq(e1_aux[b]), a_w[b].eq(w),
                         a_masked[b].eq(is_mask[b] & ~pos[e1_flag_sel[b]]),
                         a_q[b].eq(w >> f), a_up[b].eq(_round_up(w, f)),
                         update_sat[b].eq(is_update[b] & e1_en[b] & (d_over | d_under))]
        m.d.sync += a_en.eq(e1_en)
        to_spad = Signal()
        m.d.sync += to_spad.eq(quant)
        out_addr = [Signal(aw, name=f"out_addr{b}") for b in range(V)]
        out_aux = [Signal(aw, name=f"out_aux{b}") for b in range(V)]
        out_c = [Signal(signed(aw_), name=f"out_c{b}") for b in range(V)]
        out_x = [Signal(signed(aw_), name=f"out_aux_data{b}") for b in range(V)]
        out_en, e2_sat = Signal(V), Signal(V)
        for b in range(V):
            # the clamp tests a_q's top bits, not the sum: one short carry chain in E2b
            copy, sat = round_saturate(a_q[b], a_up[b], dw)
            m.d.sync += [out_addr[b].eq(a_addr[b]), out_aux[b].eq(a_aux[b]),
                         # MASK writes C only (no aux write), so out_x needs no zeroing
                         out_c[b].eq(Mux(a_masked[b], 0, Mux(is_update[b], copy, a_w[b]))),
                         out_x[b].eq(a_w[b]),
                         e2_sat[b].eq(is_update[b] & a_en[b] & sat)]
            m.d.comb += [self.spad.addr[b].eq(out_addr[b]), self.spad.data[b].eq(out_c[b]),
                         self.spad.en[b].eq(out_en[b] & to_spad),
                         self.acc.addr[b].eq(Mux(aux_write[b], out_aux[b], out_addr[b])),
                         self.acc.data[b].eq(Mux(aux_write[b], out_x[b], out_c[b])),
                         self.acc.en[b].eq(out_en[b] & (~to_spad | aux_write[b]))]
        m.d.sync += out_en.eq(a_en)
        # SATURATED is sticky and read once the run is done, so the flags take two more
        # registers on their way out: per bank, where the bank's stages sit, then their OR.
        # ORed across the banks straight into the top's sticky flag, they were adf40c8's
        # critical path at seed 1 (9.29 ns, 7.80 of it routing over five nets): the banks sit
        # beside their block RAMs all over the die. ``done`` still comes after the flag.
        bank_sat = Signal(V)
        sat_q = Signal()
        m.d.sync += [bank_sat.eq(update_sat | e2_sat), sat_q.eq(lane_sat | bank_sat.any())]
        m.d.comb += self.saturated.eq(sat_q)
        self._done_chain(m, last, 2 + norm_cycles + self.acc_read_latency + 4 + self._memory_write_latency)
        return m

    def _done_chain(self, m, last, stages: int) -> None:
        """``done``: the last row's flag, ``stages`` registers later (one cycle after that row
        lands in memory)."""
        done = last
        for stage in range(stages):
            d = Signal(name=f"done_d{stage}")
            m.d.sync += d.eq(done)
            done = d
        m.d.comb += self.done.eq(done)


def _round_up(w, shift: int):
    """The round-half-to-even increment of w / 2**shift (a fixed shift): the half bit, and
    either a bit below it or the quotient odd."""
    if not shift:
        return 0
    sticky = w[:shift - 1].any() if shift > 1 else 0
    return w[shift - 1] & (sticky | w[shift])
