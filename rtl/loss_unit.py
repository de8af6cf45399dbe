"""The loss unit: the softmax cross-entropy error of a batch of logits, V samples per cycle."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from skiptrain import numerics
from skiptrain.config import Config

from .banked_memory import read_port_signature, write_port_signature


class LossUnit(wiring.Component):
    """dY = round_half_even((softmax(z) - onehot(y)) * 2**EXP_FRAC / 2**shift), per column of Z.

    Z (M classes x N samples) holds one sample per column, so one scratchpad line of a row is
    V samples' logit for one class, and the unit works on V samples at a time (a *group*),
    one lane per sample, one class per cycle. Per group it reads Z three times (the logits are
    never held; a re-read costs a cycle per class):

    1. MAX (M cycles): the column maximum and its first index (argmax), and the group's labels
       (one line, the second read port); a label outside 0..M-1 on a valid lane stops the unit
       with ``error`` before anything of this group is written;
    2. SUM (M cycles): S = sum of EXP[z_max - z] (:func:`skiptrain.numerics.exp_table`), and the
       count of valid lanes whose argmax equals the label (``correct``);
    3. four cycles while ln S comes from the leading one of S and the log table
       (:func:`skiptrain.numerics.log_table`);
    4. OUT (M cycles): p = EXP[z_max - z + L], minus 2**EXP_FRAC on the label's row, rounded
       half to even by ``shift`` and saturated (``saturated``), written to dY.

    Groups follow each other without a gap: ``3 M + 4`` cycles each (:meth:`group_cycles`),
    then ``drain_cycles`` until the last row is in memory and ``done`` pulses. On a bad label the
    unit stops issuing, drains, and pulses ``done`` with ``error``.
    Lanes past N are neither checked nor written.
    """

    #: cycles without a read between SUM and OUT, while L is computed from S
    gap_cycles = 4
    #: cycles from the last issue (or from the cycle after a bad label is seen) to ``done``
    drain_cycles = 9
    #: a read issued in cycle t is checked (labels) in t + label_check_delay
    label_check_delay = 4

    def __init__(self, cfg: Config, memory_read_latency: int = 3):
        if memory_read_latency != 3:
            raise ValueError(f"memory_read_latency={memory_read_latency}: the pipeline is built for 3")
        self._cfg = cfg
        super().__init__(loss_unit_signature(cfg))

    @classmethod
    def group_cycles(cls, m: int) -> int:
        return 3 * m + cls.gap_cycles

    def elaborate(self, platform):
        cfg = self._cfg
        V, bb, dw, f = cfg.banks, cfg.bank_bits, cfg.data_width, cfg.frac_bits
        aw, dim = cfg.addr_width, cfg.dim_width
        m = Module()

        exp_rom = numerics.exp_table(f)
        log_rom = numerics.log_table(f)
        t_bits = (len(exp_rom) - 1).bit_length()
        e_bits = numerics.EXP_FRAC + 1
        l_bits = max(log_rom).bit_length()
        s_bits = numerics.EXP_FRAC + numerics.LOG_EXPONENTS + 1  # S < (MAX_CLASSES + 1) * 2**16

        # ---- the command, registered at start (it stays put in the sequencer meanwhile) --------
        mm, nn = Signal.like(self.m), Signal.like(self.n)
        z_base, z_ld, y_base = Signal.like(self.z_base), Signal.like(self.z_ld), Signal.like(self.y_base)
        d_base, d_ld, shift = Signal.like(self.d_base), Signal.like(self.d_ld), Signal.like(self.shift)
        below_half = Signal(e_bits + 2)
        with m.If(self.start):
            m.d.sync += [mm.eq(self.m), nn.eq(self.n), z_base.eq(self.z_base), z_ld.eq(self.z_ld),
                         y_base.eq(self.y_base), d_base.eq(self.d_base), d_ld.eq(self.d_ld),
                         shift.eq(self.shift),
                         below_half.eq(((Const(1, e_bits + 3) << self.shift) - 1) >> 1)]

        # ---- issue: pass (MAX, SUM, OUT), class row r, group g -----------------------------------
        MAX, SUM, OUT = 0, 1, 2
        issuing, in_gap, draining = Signal(), Signal(), Signal()
        pass_ = Signal(2)
        r = Signal(dim)
        r_last = Signal()                      # r == M - 1, kept one step ahead
        z_row, d_row = Signal(aw), Signal(aw)  # z_base + r*z_ld, d_base + r*d_ld
        gw = Signal(aw)                        # word of the group's first sample in a row
        n_left = Signal(dim + 1)               # samples from this group on
        gap = Signal(range(self.gap_cycles + 1))
        drain = Signal(range(self.drain_cycles + 1))
        bad_seen = Signal()

        tag = data.StructLayout({"valid": 1, "pass_": 2, "first": 1, "last": 1, "r": dim,
                                 "rot": bb, "word": aw, "lanes_ok": V, "label_read": 1})
        t0 = Signal(tag)
        m.d.comb += [t0.valid.eq(issuing), t0.pass_.eq(pass_), t0.first.eq(r == 0),
                     t0.last.eq(r_last), t0.r.eq(r), t0.rot.eq(r[:bb]), t0.word.eq(d_row + gw),
                     t0.label_read.eq(issuing & (pass_ == MAX) & (r == 0))]
        for lane in range(V):
            m.d.comb += t0.lanes_ok[lane].eq(n_left > lane)
        for b in range(V):
            m.d.comb += [self.rd_z.addr[b].eq(z_row + gw), self.rd_y.addr[b].eq(y_base + gw)]

        m.d.sync += [self.done.eq(0), self.error.eq(0)]
        with m.If(self.start):
            m.d.sync += [issuing.eq(1), in_gap.eq(0), draining.eq(0), pass_.eq(MAX), r.eq(0),
                         r_last.eq(self.m == 1), z_row.eq(self.z_base), d_row.eq(self.d_base),
                         gw.eq(0), n_left.eq(self.n)]
        with m.Elif(bad_seen & (issuing | in_gap)):
            # a bad label: stop issuing; what is in flight of earlier groups still lands
            m.d.sync += [issuing.eq(0), in_gap.eq(0), draining.eq(1), drain.eq(self.drain_cycles - 1)]
        with m.Elif(issuing):
            with m.If(r_last):
                m.d.sync += [r.eq(0), r_last.eq(mm == 1), z_row.eq(z_base), d_row.eq(d_base)]
                with m.If(pass_ == MAX):
                    m.d.sync += pass_.eq(SUM)
                with m.Elif(pass_ == SUM):
                    m.d.sync += [pass_.eq(OUT), issuing.eq(0), in_gap.eq(1), gap.eq(self.gap_cycles - 1)]
                with m.Else():
                    m.d.sync += [pass_.eq(MAX), gw.eq(gw + 1), n_left.eq(n_left - V)]
                    with m.If(n_left <= V):
                        m.d.sync += [issuing.eq(0), draining.eq(1), drain.eq(self.drain_cycles - 1)]
            with m.Else():
                m.d.sync += [r.eq(r + 1), r_last.eq(r + 2 == mm), z_row.eq(z_row + z_ld),
                             d_row.eq(d_row + d_ld)]
        with m.Elif(in_gap):
            m.d.sync += gap.eq(gap - 1)
            with m.If(gap == 0):
                m.d.sync += [in_gap.eq(0), issuing.eq(1)]
        with m.Elif(draining):
            m.d.sync += drain.eq(drain - 1)
            with m.If(drain == 0):
                m.d.sync += [draining.eq(0), self.done.eq(1), self.error.eq(bad_seen)]
        with m.If(self.start):
            m.d.sync += bad_seen.eq(0)

        # ---- the tag waits for the memory (3 cycles), then stage A rotates the line into lanes --
        td = t0
        for stage in range(3):
            nxt = Signal(tag, name=f"tag_d{stage}")
            m.d.sync += nxt.eq(td)
            td = nxt
        zA = [Signal(signed(dw), name=f"zA{lane}") for lane in range(V)]
        labels = [Signal(signed(dw), name=f"label{lane}") for lane in range(V)]
        tA = Signal(tag)
        m.d.sync += tA.eq(td)
        bank_data = Array(self.rd_z.data[b] for b in range(V))
        for lane in range(V):
            # lane l of row r is column gw*V + l, in bank (r + l) mod V
            m.d.sync += zA[lane].eq(bank_data[(td.rot + lane)[:bb]] if V > 1 else bank_data[0])
            with m.If(td.label_read):
                # the labels are row 0: lane l is in bank l
                m.d.sync += labels[lane].eq(self.rd_y.data[lane])

        # ---- stage B: max/argmax; the exp index; the label test --------------------------------
        zmax = [Signal(signed(dw), name=f"zmax{lane}") for lane in range(V)]
        amax = [Signal(dim, name=f"argmax{lane}") for lane in range(V)]
        L = [Signal(l_bits, name=f"log{lane}") for lane in range(V)]
        idx = [Signal(t_bits, name=f"exp_idx{lane}") for lane in range(V)]
        past = Signal(V)          # the index is past the table: exp rounds to 0
        onehot = Signal(V)
        tB = Signal(tag)
        m.d.sync += tB.eq(tA)
        correct = Signal.like(self.correct)
        m.d.sync += correct.eq(0)
        m.d.comb += self.correct.eq(correct)
        bad = Signal(V)
        hits = Signal(V)
        for lane in range(V):
            z = zA[lane]
            with m.If(tA.valid & (tA.pass_ == MAX) & (tA.first | (z > zmax[lane]))):
                m.d.sync += [zmax[lane].eq(z), amax[lane].eq(tA.r)]
            d = Signal(max(dw, l_bits) + 2, name=f"d{lane}")
            m.d.comb += d.eq((zmax[lane] - z).as_unsigned() + Mux(tA.pass_ == OUT, L[lane], 0))
            m.d.sync += [idx[lane].eq(d[:t_bits]), past[lane].eq(d[t_bits:].any()),
                         onehot[lane].eq(tA.r == labels[lane].as_unsigned())]
            y = labels[lane]
            m.d.comb += [bad[lane].eq(tA.lanes_ok[lane] & ((y < 0) | (y >= mm))),
                         hits[lane].eq(tA.lanes_ok[lane] & (amax[lane] == y.as_unsigned()))]
        with m.If(tA.valid & tA.label_read & bad.any() & ~bad_seen):
            m.d.sync += bad_seen.eq(1)
        with m.If(tA.valid & (tA.pass_ == SUM) & tA.first & ~bad_seen):
            # the argmax is final when SUM's first row reaches this stage
            m.d.sync += correct.eq(sum(hits[lane] for lane in range(V)))

        # ---- stage C: exp from the table; the sum, or the error value --------------------------
        tC = Signal(tag)
        m.d.sync += tC.eq(tB)
        past_c, onehot_c = Signal(V), Signal(V)
        m.d.sync += [past_c.eq(past), onehot_c.eq(onehot)]
        total = [Signal(s_bits, name=f"exp_sum{lane}") for lane in range(V)]
        out = [Signal(signed(dw), name=f"dy{lane}") for lane in range(V)]
        sat = Signal(V)
        for lane in range(V):
            m.submodules[f"exp_rom{lane}"] = rom = memory.Memory(
                shape=unsigned(e_bits), depth=len(exp_rom), init=exp_rom)
            port = rom.read_port()
            m.d.comb += port.addr.eq(idx[lane])
            e = Mux(past_c[lane], 0, port.data)
            with m.If(tC.valid & (tC.pass_ == SUM)):
                m.d.sync += total[lane].eq(Mux(tC.first, e, total[lane] + e))
            # the error: p - onehot, rounded half to even by shift, saturated
            v = Signal(signed(e_bits + 2), name=f"err{lane}")
            m.d.comb += v.eq(e - Mux(onehot_c[lane], 1 << numerics.EXP_FRAC, 0))
            q = Signal(signed(e_bits + 2), name=f"err_q{lane}")
            m.d.comb += q.eq(v >> shift)
            half = Mux(shift == 0, 0, (v >> (shift - 1).as_unsigned()[:len(shift)])[0])
            sticky = (v.as_unsigned() & below_half) != 0
            up = half & (sticky | q[0])
            rounded = Signal(signed(e_bits + 3), name=f"err_r{lane}")
            m.d.comb += rounded.eq(q + up)
            lo, hi = cfg.data_min, cfg.data_max
            m.d.sync += [out[lane].eq(Mux(rounded > hi, hi, Mux(rounded < lo, lo, rounded))),
                         sat[lane].eq(tC.valid & (tC.pass_ == OUT) & tC.lanes_ok[lane]
                                      & ((rounded > hi) | (rounded < lo)))]

        # ---- L = ln S: leading one of S and the log table, once SUM's last row is summed -------
        sum_final = Signal()
        m.d.sync += sum_final.eq(tC.valid & (tC.pass_ == SUM) & tC.last)
        log_idx = [Signal(range(len(log_rom)), name=f"log_idx{lane}") for lane in range(V)]
        mb = numerics.LOG_MANT_BITS
        for lane in range(V):
            s = total[lane]
            code = Const(0, len(log_idx[lane]))
            for e in range(numerics.LOG_EXPONENTS):   # the highest set bit wins
                lead = numerics.EXP_FRAC + e
                code = Mux(s[lead], Cat(s[lead - mb:lead], Const(e, 4)), code)
            with m.If(sum_final):
                m.d.sync += log_idx[lane].eq(code)
            m.submodules[f"log_rom{lane}"] = rom = memory.Memory(
                shape=unsigned(l_bits), depth=len(log_rom), init=log_rom)
            port = rom.read_port()
            m.d.comb += [port.addr.eq(log_idx[lane]), L[lane].eq(port.data)]

        # ---- stage D: lanes into bank order, into the write port registers ---------------------
        tD = Signal(tag)
        m.d.sync += tD.eq(tC)
        outs = Array(out)
        m.d.sync += self.saturated.eq(sat.any())
        for b in range(V):
            lane = (b - tD.rot)[:bb] if V > 1 else 0
            ok = Array(tD.lanes_ok[x] for x in range(V))[lane]
            m.d.sync += [self.wr.addr[b].eq(tD.word), self.wr.data[b].eq(outs[lane]),
                         self.wr.en[b].eq(tD.valid & (tD.pass_ == OUT) & ok)]
        return m


def loss_unit_signature(cfg: Config) -> wiring.Signature:
    """The loss unit's ports (top builds them alone when the training hardware is left out)."""
    V, saw, dw, aw = cfg.banks, cfg.spad_addr_width, cfg.data_width, cfg.addr_width
    return wiring.Signature({
        "start": In(1),
        "m": In(unsigned(cfg.dim_width)), "n": In(unsigned(cfg.dim_width)),
        "z_base": In(unsigned(aw)), "z_ld": In(unsigned(aw)),
        "y_base": In(unsigned(aw)),
        "d_base": In(unsigned(aw)), "d_ld": In(unsigned(aw)),
        "shift": In(unsigned(cfg.shift_width)),
        "rd_z": Out(read_port_signature(V, saw, signed(dw))),
        "rd_y": Out(read_port_signature(V, saw, signed(dw))),
        "wr": Out(write_port_signature(V, saw, signed(dw))),
        "done": Out(1), "error": Out(1), "saturated": Out(1),
        "correct": Out(range(V + 1)),
    })
