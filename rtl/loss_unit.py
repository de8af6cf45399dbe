"""The loss unit: the softmax cross-entropy error of a batch of logits, V samples per cycle."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain import numerics
from skiptrain.config import Config
from skiptrain.skip import (CONF_TAU_WIDTH, RATE_BITS, SAMPLE_LFSR_LANE, TCP_BOUND_WIDTH, ConfMode,
                            SamplePolicy, batch_tau_width)

from .arith import popcount
from .banked_memory import read_port_signature, write_port_signature
from .compactor import Compactor
from .confidence import Confidence
from .kept_register import KeptRegister
from .kept_list import kept_list_widths
from .lfsr import Lfsr
from .rom import Rom


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
    3. eight cycles while ln S comes from the leading one of S and the log table
       (:func:`skiptrain.numerics.log_table`);
    4. OUT (M cycles): p = EXP[z_max - z + L], minus 2**EXP_FRAC on the label's row, rounded
       half to even by ``shift`` and saturated (``saturated``), written to dY.

    The per-sample skip (``sample_policy``, :class:`skiptrain.skip.SamplePolicy`) decides, once
    S (and, for true_class_prob, L) is final and before OUT writes, which of the group's
    samples are kept: CONFIDENCE skips those with S <= ``conf_tau`` (max_prob), z(1) - z(2) >=
    ``conf_tau`` (margin, taken in the SUM pass) or z_max - z_y + L < ``tcp_bound``
    (true_class_prob: p_y >= CONF_TAU in the table's index domain, before p_y exists), and
    argmax == label with ``require_correct``. RANDOM skips those
    whose lane LFSR (stepped once per group) draws below ``rate``. The kept samples' dY columns
    are written compacted: the group's k-th kept sample goes to column ``kept`` + k, where
    ``kept`` counts the samples kept by the earlier groups of the command. A run of at most V
    adjacent columns is in V different banks, so every row is still one write. With the
    policy off every sample is kept and column n is sample n.

    Groups follow each other without a gap: ``3 M + 8`` cycles each (:meth:`group_cycles`),
    then ``drain_cycles`` until the last row is in memory and ``done`` pulses. On a bad label the
    unit stops issuing, drains, and pulses ``done`` with ``error``.
    Lanes past N are neither checked nor written.
    """

    #: cycles without a read between SUM and OUT, while L is computed from S
    gap_cycles = 8
    #: cycles from the last issue (or from the cycle after a bad label is seen) to ``done``
    drain_cycles = 16
    #: exponents per registered part of the log table's index (three parts for nine)
    LOG_GROUP = 3
    #: a read issued in cycle t is checked (labels) in t + label_check_delay
    label_check_delay = 6
    #: the last group's c_i reach ``batch_sum`` 13 + log2(V) cycles after its last OUT read;
    #: ``done`` comes drain_cycles + 1 after it: batch_sum is final this many cycles after done
    @classmethod
    def batch_sum_after_done(cls, banks: int) -> int:
        return max(0, 13 + (banks - 1).bit_length() - (cls.drain_cycles + 1))

    def __init__(self, cfg: Config, memory_read_latency: int = 3, comparator: bool = True):
        """``comparator=False`` leaves the confidence comparator out (``confident`` and
        ``batch_sum`` stay 0): for measuring its area (fpga/units.py), not for the accelerator.
        Without the skip hardware (``cfg.has_skip`` false) the comparator and the per-sample
        skip are both left out: every sample is kept, ``confident``, ``batch_sum``,
        ``skipped`` and the kept list's write port stay 0, and the cycles are the same."""
        if memory_read_latency != 3:
            raise ValueError(f"memory_read_latency={memory_read_latency}: the pipeline is built for 3")
        self._cfg, self._comparator = cfg, comparator
        super().__init__(loss_unit_signature(cfg))

    @classmethod
    def group_cycles(cls, m: int) -> int:
        return 3 * m + cls.gap_cycles

    def elaborate(self, platform):
        cfg = self._cfg
        skip_hw = cfg.has_skip
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
        # the rounding's bit masks, registered with the shift: the half bit (1 << shift - 1, none
        # for shift 0), the bits below it, and q's least significant bit (1 << shift), so the
        # round-up bit is three AND-OR reductions rather than two barrel shifts behind shift - 1
        below_half, half_bit, lsb_bit = Signal(e_bits + 2), Signal(e_bits + 2), Signal(e_bits + 2)
        with m.If(self.start):
            m.d.sync += [mm.eq(self.m), nn.eq(self.n), z_base.eq(self.z_base), z_ld.eq(self.z_ld),
                         y_base.eq(self.y_base), d_base.eq(self.d_base), d_ld.eq(self.d_ld),
                         shift.eq(self.shift)]
            # per bit a compare of the command's shift with a constant: the shifters and the
            # decrement's carry chain, from the command register across the die, were
            # 7156b8c's seed 1 critical path (cmd into below_half, 8.18 ns)
            m.d.sync += [below_half.eq(Cat(*[self.shift > k + 1 for k in range(e_bits + 2)])),
                         half_bit.eq(Cat(*[self.shift == k + 1 for k in range(e_bits + 2)])),
                         lsb_bit.eq(Cat(*[self.shift == k for k in range(e_bits + 2)]))]

        # ---- issue: pass (MAX, SUM, OUT), class row r, group g -----------------------------------
        MAX, SUM, OUT = 0, 1, 2
        issuing = Signal(name="issuing")
        in_gap = Signal(name="in_gap")
        draining = Signal(name="draining")
        pass_ = Signal(2)
        r = Signal(dim)
        r_last = Signal()                      # r == M - 1, kept one step ahead
        # M == 1 and M - 2, registered with the command; r_left = M - 2 - r counts down beside
        # r, so r_last's next value is a zero test rather than the compare r == M - 2 (the
        # path estimate's worst, six LUTs from r, and a late endpoint of adf40c8's seed 1)
        m_is_1, m_m2 = Signal(name="m_is_1"), Signal.like(self.m, name="m_minus_2")
        r_left = Signal.like(self.m, name="r_left")
        z_row, d_row = Signal(aw), Signal(aw)  # z_base + r*z_ld, d_base + r*d_ld
        gw = Signal(aw)                        # word of the group's first sample in a row
        n_left = Signal(dim + 1)               # samples from this group on
        # n_left <= V and, per lane, n_left > lane: registered beside n_left rather than
        # compared behind it (they steer the issue and the tag)
        last_group, lanes_ok = Signal(name="last_group"), Signal(V, name="lanes_ok")
        # the next group's flags, compared a cycle after n_left changes (a group lasts at least
        # three passes of a row, so they are ready at its end), as the OR of n_left's high bits
        # and small compares of its low ones: the plain compares behind the conditions
        # were six LUTs into lanes_ok (the estimate's worst at 6f51285)
        next_last_group, next_lanes_ok = Signal(name="next_last_group"), Signal(V, name="next_lanes_ok")
        k = (2 * V).bit_length()
        n_high = n_left[k:].any() if len(n_left) > k else Const(0)
        m.d.sync += [next_last_group.eq(~n_high & (n_left[:k] <= 2 * V)),
                     *(next_lanes_ok[lane].eq(n_high | (n_left[:k] > lane + V)) for lane in range(V))]
        gap = Signal(range(self.gap_cycles + 1))
        drain = Signal(range(self.drain_cycles + 1))
        bad_seen = Signal()

        tag = data.StructLayout({"valid": 1, "pass_": 2, "first": 1, "last": 1, "r": dim,
                                 "rot": bb, "word": aw, "lanes_ok": V, "label_read": 1})
        t0 = Signal(tag)
        # ``word`` is the dY row's first word; the group's kept columns are added at the write
        m.d.comb += [t0.valid.eq(issuing), t0.pass_.eq(pass_), t0.first.eq(r == 0),
                     t0.last.eq(r_last), t0.r.eq(r), t0.rot.eq(r[:bb]), t0.word.eq(d_row),
                     t0.label_read.eq(issuing & (pass_ == MAX) & (r == 0))]
        for lane in range(V):
            m.d.comb += t0.lanes_ok[lane].eq(lanes_ok[lane])
        for b in range(V):
            m.d.comb += [self.rd_z.addr[b].eq(z_row + gw), self.rd_y.addr[b].eq(y_base + gw)]

        m.d.sync += [self.done.eq(0), self.error.eq(0)]
        # The row, pass and group counters step while issuing, whatever a bad label does: after
        # one the unit issues nothing more and START reloads them, so a step too many is never
        # seen. Behind the bad label's priority their enables were a chain from bad_seen through
        # the branches, across the unit (91aa52b's critical path at seed 1: bad_seen into
        # the enables of n_left and lanes_ok, 10.69 ns, 8.98 of it routing).
        with m.If(issuing):
            with m.If(r_last):
                m.d.sync += [r.eq(0), r_last.eq(m_is_1), r_left.eq(m_m2), z_row.eq(z_base),
                             d_row.eq(d_base)]
                with m.If(pass_ == MAX):
                    m.d.sync += pass_.eq(SUM)
                with m.Elif(pass_ == SUM):
                    m.d.sync += pass_.eq(OUT)
                with m.Else():
                    m.d.sync += [pass_.eq(MAX), gw.eq(gw + 1), n_left.eq(n_left - V),
                                 last_group.eq(next_last_group), lanes_ok.eq(next_lanes_ok)]
            with m.Else():
                m.d.sync += [r.eq(r + 1), r_last.eq(r_left == 0), r_left.eq(r_left - 1),
                             z_row.eq(z_row + z_ld),
                             d_row.eq(d_row + d_ld)]
        # START loads them (the unit is idle then: issuing is 0) and has the flags' priority
        with m.If(self.start):
            m.d.sync += [issuing.eq(1), in_gap.eq(0), draining.eq(0), pass_.eq(MAX), r.eq(0),
                         r_last.eq(self.m == 1), m_is_1.eq(self.m == 1), m_m2.eq(self.m - 2),
                         r_left.eq(self.m - 2),
                         z_row.eq(self.z_base), d_row.eq(self.d_base),
                         gw.eq(0), n_left.eq(self.n), last_group.eq(self.n <= V)]
            m.d.sync += [lanes_ok[lane].eq(self.n > lane) for lane in range(V)]
        with m.Elif(bad_seen & (issuing | in_gap)):
            # a bad label: stop issuing; what is in flight of earlier groups still lands
            m.d.sync += [issuing.eq(0), in_gap.eq(0), draining.eq(1), drain.eq(self.drain_cycles - 1)]
        with m.Elif(issuing):
            with m.If(r_last & (pass_ == SUM)):
                m.d.sync += [issuing.eq(0), in_gap.eq(1), gap.eq(self.gap_cycles - 1)]
            with m.Elif(r_last & (pass_ == OUT) & last_group):
                m.d.sync += [issuing.eq(0), draining.eq(1), drain.eq(self.drain_cycles - 1)]
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

        # ---- the tag waits for the memory (3 cycles) and the capture of its output (1), then
        # stage A rotates the line into lanes. The banks' outputs are captured as they leave
        # the block RAMs, before the rotation: a block RAM's output (0.96 ns) routed across the
        # die straight into the lane multiplexer was the critical path of adf40c8's seed 1
        # (a late endpoint) and 91aa52b's seed 3 (8.34 ns, 4.67 of it one net), and 70ed4be's
        # seed 3. The capture costs a cycle per LOSS command.
        td = t0
        # per lane the bank it takes in stage A, (rot + lane) mod V, registered beside tag_d3 from
        # tag_d2: the rotation multiplexer's select is then a register of its own per lane, not
        # an adder behind one tag register that fans out to every lane (zA was the most common
        # late endpoint of 98ce465's seed 1)
        zsel = [Signal(max(bb, 1), name=f"zA_sel{lane}") for lane in range(V)]
        for stage in range(4):
            nxt = Signal(tag, name=f"tag_d{stage}")
            m.d.sync += nxt.eq(td)
            if stage == 3:
                m.d.sync += [zsel[lane].eq((td.rot + lane)[:bb] if V > 1 else 0) for lane in range(V)]
            td = nxt
        z_bank = [Signal(signed(dw), name=f"z_bank{b}") for b in range(V)]
        y_bank = [Signal(signed(dw), name=f"y_bank{b}") for b in range(V)]
        m.d.sync += [q.eq(self.rd_z.data[b]) for b, q in enumerate(z_bank)]
        m.d.sync += [q.eq(self.rd_y.data[b]) for b, q in enumerate(y_bank)]
        zA = [Signal(signed(dw), name=f"zA{lane}") for lane in range(V)]
        labels = [Signal(signed(dw), name=f"label{lane}") for lane in range(V)]
        tA = Signal(tag)
        m.d.sync += tA.eq(td)
        bank_data = Array(z_bank)
        for lane in range(V):
            # lane l of row r is column gw*V + l, in bank (r + l) mod V
            m.d.sync += zA[lane].eq(bank_data[zsel[lane]] if V > 1 else bank_data[0])
            with m.If(td.label_read):
                # the labels are row 0: lane l is in bank l
                m.d.sync += labels[lane].eq(y_bank[lane])

        # From here on every register is named by when it is visible: X_k holds, in cycle
        # t + 1 + k, what belongs to the read issued in cycle t (k counts from the capture of
        # the block RAMs' output, the read's fourth cycle: stage A is 4). Each stage has at most
        # one carry chain or one block RAM read before its register (a block RAM's output is
        # 5.6 ns on ECP5),
        # and a block RAM's address comes from a register in the fabric (its routing to the
        # address pins is 4-5 ns on ECP5, too long to follow logic).
        def delayed(sig, cycles, name):
            for n in range(cycles):
                nxt = Signal.like(sig, name=f"{name}_d{n}")
                m.d.sync += nxt.eq(sig)
                sig = nxt
            return sig

        tag_at = {4: tA}
        for k in range(5, 14):
            tag_at[k] = Signal(tag, name=f"tag_{k}")
            m.d.sync += tag_at[k].eq(tag_at[k - 1])

        # the skip registers, copied into registers of this unit: the top writes them only
        # while idle (it refuses them while busy), and a LOSS starts cycles after START, so
        # the copies are always settled; the compare flags and the threshold then start beside
        # their users rather than across the chip at the host's CSRs
        mode, require_correct = Signal(2, name="conf_mode_q"), Signal(name="require_correct_q")
        conf_tau = Signal.like(self.conf_tau, name="conf_tau_q")
        tcp_bound = Signal.like(self.tcp_bound, name="tcp_bound_q")
        policy, rate = Signal(2, name="sample_policy_q"), Signal.like(self.rate, name="rate_q")
        is_tcp, is_margin = Signal(name="mode_is_tcp"), Signal(name="mode_is_margin")
        is_random = Signal(name="policy_is_random")
        m.d.sync += [mode.eq(self.conf_mode), require_correct.eq(self.require_correct),
                     conf_tau.eq(self.conf_tau), tcp_bound.eq(self.tcp_bound),
                     policy.eq(self.sample_policy), rate.eq(self.rate),
                     is_tcp.eq(self.conf_mode == ConfMode.TRUE_CLASS_PROB),
                     is_margin.eq(self.conf_mode == ConfMode.MARGIN),
                     is_random.eq(self.sample_policy == SamplePolicy.RANDOM)]

        # ---- B1 (cycle 4): max/argmax; z_max - z; the label test and the hit count -----------
        zmax = [Signal(signed(dw), name=f"zmax{lane}") for lane in range(V)]
        amax = [Signal(dim, name=f"argmax{lane}") for lane in range(V)]
        diff_5 = [Signal(dw + 1, name=f"diff_5_{lane}") for lane in range(V)]
        onehot_5 = Signal(V)
        correct = Signal.like(self.correct)
        m.d.sync += correct.eq(0)
        m.d.comb += self.correct.eq(correct)
        bad = Signal(V)
        hits = Signal(V)
        t4 = tag_at[4]
        # the comparator's inputs: whether row r is the mode's row (the argmax row: p_max and
        # the margin; the label's row: p_y), and, registered at OUT's first row (when the argmax
        # is final and before the next group's MAX pass overwrites it), per lane argmax == label
        # and whether the lane holds a sample. One c_i register per lane serves every mode.
        take_5 = Signal(V)
        c_bits = max(e_bits, dw + 1)
        c_q = [Signal(c_bits, name=f"conf_c{lane}") for lane in range(V)]
        margin_s = [Signal(dw + 1, name=f"margin_s{lane}") for lane in range(V)]
        hit_q, sample_q = Signal(V), Signal(V)
        for lane in range(V):
            z = zA[lane]
            with m.If(t4.valid & (t4.pass_ == MAX)):
                with m.If(t4.first | (z > zmax[lane])):
                    m.d.sync += [zmax[lane].eq(z), amax[lane].eq(t4.r)]
            # "row r is the label's", compared a stage early (stage 3 against the labels
            # loaded at MAX's first row; only SUM and OUT rows use it, and they come after)
            label_row = Signal(name=f"label_row_4_{lane}")
            m.d.sync += label_row.eq(td.r == labels[lane].as_unsigned())
            m.d.sync += [diff_5[lane].eq((zmax[lane] - z).as_unsigned()),
                         onehot_5[lane].eq(label_row),
                         take_5[lane].eq(Mux(is_tcp, label_row,
                                             t4.r == amax[lane]))]
            y = labels[lane]
            m.d.comb += [bad[lane].eq(t4.lanes_ok[lane] & ((y < 0) | (y >= mm))),
                         hits[lane].eq(t4.lanes_ok[lane] & (amax[lane] == y.as_unsigned()))]
        # the label test registered per lane (cycle 5), so the OR over the lanes into bad_seen
        # does not follow the compares in the same cycle (ec1557b's critical path at seed 2:
        # a label register through its compare into bad_seen's enable, 9.45 ns)
        bad_5 = Signal(V, name="bad_5")
        m.d.sync += bad_5.eq(Mux(t4.valid & t4.label_read, bad, 0))
        with m.If(bad_5.any() & ~bad_seen):
            m.d.sync += bad_seen.eq(1)
        # argmax == label registered (cycle 5), so its popcount does not follow the compare in
        # the same cycle; the argmax is final when SUM's first row reaches stage 4, and the
        # count goes out a cycle later (the top only sums it)
        hits_5 = Signal(V)
        m.d.sync += hits_5.eq(hits)
        t5 = tag_at[5]
        with m.If(t5.valid & (t5.pass_ == SUM) & t5.first & ~bad_seen):
            m.d.sync += correct.eq(popcount(hits_5))
        with m.If(t5.valid & (t5.pass_ == OUT) & t5.first):
            m.d.sync += [hit_q.eq(hits_5), sample_q.eq(t5.lanes_ok)]
        # the same, for the per-sample decision at the end of SUM
        hit_s, sample_s = Signal(V), Signal(V)
        with m.If(t5.valid & (t5.pass_ == SUM) & t5.first):
            m.d.sync += [hit_s.eq(hits_5), sample_s.eq(t5.lanes_ok)]

        # ---- B2 (cycle 5): the exp index d = z_max - z (+ L in OUT), registered ---------------
        Lq = [Signal(l_bits, name=f"log{lane}") for lane in range(V)]
        exp_roms = [Rom(exp_rom, cfg.memory) for _ in range(V)]
        past_6 = Signal(V)  # the index is past the table: exp rounds to 0
        for lane in range(V):
            m.submodules[f"exp_rom{lane}"] = exp_roms[lane]
            d = Signal(max(dw + 1, l_bits) + 1, name=f"d{lane}")
            d_6 = Signal(t_bits, name=f"exp_index_6_{lane}")
            m.d.comb += [d.eq(diff_5[lane] + Mux(t5.pass_ == OUT, Lq[lane], 0)),
                         exp_roms[lane].addr.eq(d_6)]
            m.d.sync += [d_6.eq(d[:t_bits]), past_6[lane].eq(d[t_bits:].any())]
            # the margin z(1) - z(2) = the least z_max - z over the rows other than the argmax,
            # taken in the SUM pass (the argmax is final) into margin_s, where the per-sample
            # decision finds it at the end of SUM; OUT's first row copies it into c_q for the
            # comparator (the next group's SUM overwrites margin_s, for few classes before
            # the comparator reads c_q). With one class z(2) = data_min, and z_max - data_min
            # is z_max with its sign bit flipped.
            # Two running minima, of the even and of the odd rows, each row's compare
            # registered (lt_6) and its update a cycle later from that register: a row's
            # minimum is next compared two rows on, so no compare drives the registers'
            # enables in the cycle it is made (margin_s was 43 late endpoints at 98ce465's
            # seed 3); margin_s = the lesser of the two, registered every cycle, is final in
            # cycle 8 of SUM's last row (the decision reads it in 9, OUT's first row in 14)
            part = [Signal(dw + 1, name=f"margin_{n}{lane}") for n in ("even", "odd")]
            lt_6, odd_6 = Signal(name=f"margin_lt_6_{lane}"), Signal(name=f"margin_odd_6_{lane}")
            diff_6 = Signal.like(diff_5[lane], name=f"diff_6_{lane}")
            in_sum = t5.valid & (t5.pass_ == SUM) & is_margin
            # both minima compared and the row's picked after the carry chains, not before: the
            # multiplexer in front of one compare was a late endpoint of adf40c8's seed 1
            m.d.sync += [diff_6.eq(diff_5[lane]), odd_6.eq(t5.r[0]),
                         lt_6.eq(in_sum & ~t5.first & ~take_5[lane]
                                 & Mux(t5.r[0], diff_5[lane] < part[1], diff_5[lane] < part[0]))]
            with m.If(in_sum & t5.first):
                m.d.sync += [part[0].eq(Mux(take_5[lane], zmax[lane].as_unsigned() ^ (1 << (dw - 1)),
                                            diff_5[lane])),
                             part[1].eq((1 << (dw + 1)) - 1)]
            with m.If(lt_6):
                with m.If(odd_6):
                    m.d.sync += part[1].eq(diff_6)
                with m.Else():
                    m.d.sync += part[0].eq(diff_6)
            m.d.sync += margin_s[lane].eq(Mux(part[1] < part[0], part[1], part[0]))
            with m.If(t5.valid & (t5.pass_ == OUT) & t5.first & is_margin):
                m.d.sync += c_q[lane].eq(margin_s[lane])

        # ---- C0 (cycle 8): the exp table's word (Rom.latency = 2 after its index) registered ---
        # ---- C1 (cycle 9): e; the sum, or v = e - onehot ---------------------------------------
        # ---- C2 (cycle 10): v >> shift and the round-up bit; C3 (11): + up; C4 (12): saturate --
        past_8, onehot_9 = delayed(past_6, 2, "past"), delayed(onehot_5, 4, "onehot")
        take_9 = delayed(take_5, 4, "take")
        total = [Signal(s_bits, name=f"exp_sum{lane}") for lane in range(V)]
        out_13 = [Signal(signed(dw), name=f"dy_13_{lane}") for lane in range(V)]
        sat_13 = Signal(V)
        keep = Signal(V)  # the group's kept samples (the per-sample decision, below)
        t8, t9, t12 = tag_at[8], tag_at[9], tag_at[12]
        lo, hi = cfg.data_min, cfg.data_max
        # S is cleared a cycle before SUM's first row reaches it (stage 8; the previous group's
        # S was last read at its OUT pass's end), so the sum is one adder into its register, not
        # an adder and a "first row" multiplexer (exp_sum was 26 late endpoints at ec89ee3's
        # seed 2)
        clear_sum = Signal(name="exp_sum_clear")
        m.d.comb += clear_sum.eq(t8.valid & (t8.pass_ == SUM) & t8.first)
        for lane in range(V):
            # e = EXP[d], 0 past the table: the zero comes in as the register's synchronous
            # reset, not as a multiplexer between the register and the sum
            e = Signal(e_bits, name=f"exp_9_{lane}")
            m.d.sync += e.eq(Mux(past_8[lane], 0, exp_roms[lane].data))
            with m.If(clear_sum):
                m.d.sync += total[lane].eq(0)
            with m.Elif(t9.valid & (t9.pass_ == SUM)):
                m.d.sync += total[lane].eq(total[lane] + e)
            with m.If(t9.valid & (t9.pass_ == OUT) & take_9[lane] & ~is_margin):
                m.d.sync += c_q[lane].eq(e)
            # v = e - onehot * 2**EXP_FRAC: the subtraction leaves v's low EXP_FRAC bits those
            # of e, so the rounding's half, sticky and lsb bits are reduced from v as it is
            # formed and registered beside it; the round-up bit then is one LUT from registers
            # (the three reductions behind v_10 were six LUTs, the estimate's worst at 6f51285)
            v = Signal(signed(e_bits + 2), name=f"err_{lane}")
            m.d.comb += v.eq(e - Mux(onehot_9[lane], 1 << numerics.EXP_FRAC, 0))
            v_10 = Signal(signed(e_bits + 2), name=f"err_10_{lane}")
            half_10, sticky_10, odd_10 = (Signal(name=f"err_{n}_10_{lane}")
                                          for n in ("half", "sticky", "odd"))
            m.d.sync += [v_10.eq(v),
                         half_10.eq((v.as_unsigned() & half_bit) != 0),
                         sticky_10.eq((v.as_unsigned() & below_half) != 0),
                         odd_10.eq((v.as_unsigned() & lsb_bit) != 0)]      # q[0]
            q = Signal(signed(e_bits + 2), name=f"err_q{lane}")
            m.d.comb += q.eq(v_10 >> shift)
            q_11, up_11 = Signal.like(q, name=f"err_q_11_{lane}"), Signal(name=f"err_up_11_{lane}")
            m.d.sync += [q_11.eq(q), up_11.eq(half_10 & (sticky_10 | odd_10))]
            r_12 = Signal(signed(e_bits + 3), name=f"err_r_12_{lane}")
            m.d.sync += r_12.eq(q_11 + up_11)
            m.d.sync += [out_13[lane].eq(Mux(r_12 > hi, hi, Mux(r_12 < lo, lo, r_12))),
                         sat_13[lane].eq(t12.valid & (t12.pass_ == OUT) & keep[lane]
                                         & ((r_12 > hi) | (r_12 < lo)))]

        # ---- L = ln S: leading one of S and the log table, once SUM's last row is summed -------
        # (S final in cycle 10 of that row, its table index registered in 11; the table's word
        # in 13, registered as L in 14: OUT's first row meets it in its cycle 5, hence the gap)
        sum_final_10 = Signal()
        m.d.sync += sum_final_10.eq(t9.valid & (t9.pass_ == SUM) & t9.last)
        sum_final_13 = delayed(sum_final_10, 1 + Rom.latency, "sum_final")
        mb = numerics.LOG_MANT_BITS
        for lane in range(V):
            s_ = total[lane]
            # the table index: the leading one among bits EXP_FRAC.. of S (one-hot) selects the
            # exponent and the mantissa bits after it. Per group of LOG_GROUP exponents, the
            # selected candidate (or 0) is registered in 11; the OR of the groups' registers
            # goes into the table's address register (the block RAM's own). All of it in front
            # of one register was six LUTs (a8901ff's critical path at seed 3, exp_sum into
            # log_index_11, 8.11 ns); all of the pick behind the register, three LUTs and then
            # the net to a block RAM across the die (7156b8c's at seed 3, 8.63 ns)
            leads = [s_[numerics.EXP_FRAC + e] & ~s_[numerics.EXP_FRAC + e + 1:].any()
                     for e in range(numerics.LOG_EXPONENTS)]
            m.submodules[f"log_rom{lane}"] = rom = Rom(log_rom, cfg.memory)
            code = 0
            for g, e0 in enumerate(range(0, numerics.LOG_EXPONENTS, self.LOG_GROUP)):
                part = Signal(len(rom.addr), name=f"log_index_11_{lane}_{g}")
                pick = 0
                for e in range(e0, min(e0 + self.LOG_GROUP, numerics.LOG_EXPONENTS)):
                    lead = numerics.EXP_FRAC + e
                    pick = pick | Mux(leads[e], Cat(s_[lead - mb:lead], Const(e, 4)), 0)
                m.d.sync += part.eq(pick)
                code = code | part
            m.d.comb += rom.addr.eq(code)
            with m.If(sum_final_13):
                m.d.sync += Lq[lane].eq(rom.data)

        # ---- the per-sample decision. S is final in cycle 10 of SUM's last row; 11: the
        # max_prob and margin tests (and the lanes' LFSRs have stepped), held with the group's
        # lanes, hits and index; true_class_prob waits for L (14): 15: d_y + L, 16: against
        # TCP_BOUND. 16: the decision for every mode, 17: keep, 18: the kept samples' ranks and
        # their count; 19: the group's first column, the kept total, and per rank the lane that
        # holds it; 20: the kept list written. OUT's first row reaches the write stage in its
        # cycle 12, 21 cycles after SUM's last row; the next group's SUM pass loads sample_s
        # and hit_s 16 cycles after this one's last SUM row at the earliest (one class), and
        # decides 11 cycles after this decision: what the decision needs is held at 11, and
        # the registers below serve one group at a time. A group cut short by a bad label
        # decides nothing.
        decide = {11: Signal(name="decide_11")}
        m.d.sync += decide[11].eq(sum_final_10 & ~bad_seen)
        for k in range(12, 20):
            decide[k] = Signal(name=f"decide_{k}")
            m.d.sync += decide[k].eq(decide[k - 1])
        conf_11 = Signal(V)
        draw_low = Signal(V)
        # d_y = z_max - z_y, taken on the label's row in the SUM pass (the argmax is final)
        diff_y = [Signal(dw + 1, name=f"diff_y{lane}") for lane in range(V)]
        tcp_15 = [Signal(max(dw + 1, l_bits) + 1, name=f"tcp_index_15_{lane}") for lane in range(V)]
        tcp_16 = Signal(V)
        # a MAX row follows SUM's last by at least gap_cycles + 1: its label check must not
        # set bad_seen while that row is at stage 9 (the LFSRs' step, below)
        assert self.gap_cycles + 1 > 1 + 9 - self.label_check_delay
        # (without the skip hardware no lane is tested: every sample is kept)
        for lane in (range(V) if skip_hw else ()):
            m.submodules[f"sample_lfsr{lane}"] = lf = Lfsr(SAMPLE_LFSR_LANE + lane)
            # the step is sum_final_10 & ~bad_seen for the random policy, registered per lane
            # from stage 9 (bad_seen cannot change then: a label is checked in a MAX pass, at
            # least gap_cycles + 1 after SUM's last row), so bad_seen drives no LFSR enable
            # across the unit (ec1557b's critical path at seed 3: bad_seen into their CE, 9.5 ns)
            step_10 = Signal(name=f"lfsr_step_10_{lane}")
            m.d.sync += step_10.eq(t9.valid & (t9.pass_ == SUM) & t9.last & ~bad_seen & is_random)
            m.d.comb += [lf.seed.eq(self.seed), lf.load.eq(self.seed_load), lf.step.eq(step_10),
                         draw_low[lane].eq(lf.value[:RATE_BITS] < rate)]
            # max_prob: S <= CONF_TAU; margin: z(1) - z(2) >= CONF_TAU (final since SUM's
            # last row passed cycle 5). margin_s >= CONF_TAU is registered every cycle
            # (margin_s is final from cycle 8 of SUM's last row): its own compare, not one
            # shared with S <= CONF_TAU behind a mux
            margin_pass = Signal(name=f"margin_pass{lane}")
            m.d.sync += margin_pass.eq(margin_s[lane] >= conf_tau)
            # S <= CONF_TAU registered in 11 on its own too, and the mode's pick after it, on
            # the way into conf_d: behind S's 26-bit compare the pick was a8901ff's seed 2
            # second-worst path (8.14 ns into conf_11)
            sum_pass = Signal(name=f"sum_pass{lane}")
            m.d.sync += sum_pass.eq(total[lane] <= conf_tau)
            m.d.comb += conf_11[lane].eq(Mux(is_margin, margin_pass, sum_pass)
                                         & (hit_s[lane] | ~require_correct))
            # true_class_prob: p_y = EXP[d_y + L] >= CONF_TAU iff d_y + L < TCP_BOUND (the table
            # does not increase; skiptrain.skip.tcp_bound), decided before p_y exists
            with m.If(t5.valid & (t5.pass_ == SUM) & onehot_5[lane]):
                m.d.sync += diff_y[lane].eq(diff_5[lane])
            m.d.sync += [tcp_15[lane].eq(diff_y[lane] + Lq[lane]),
                         tcp_16[lane].eq(tcp_15[lane] < tcp_bound)]
        conf_d, draw_d, sample_d, hit_d = Signal(V), Signal(V), Signal(V), Signal(V)
        with m.If(decide[11]):
            m.d.sync += [conf_d.eq(conf_11), draw_d.eq(draw_low), sample_d.eq(sample_s),
                         hit_d.eq(hit_s)]
        confident = Mux(is_tcp, tcp_16 & (hit_d | Mux(require_correct, 0, (1 << V) - 1)), conf_d)
        skip = Mux(policy == SamplePolicy.CONFIDENCE, confident,
                   Mux(policy == SamplePolicy.RANDOM, draw_d, 0))
        keep_next = sample_d & ~skip if skip_hw else sample_d
        with m.If(decide[16]):
            m.d.sync += keep.eq(keep_next)
        # the kept count (18) and per rank the lane that holds it (19): rtl/compactor.py.
        # The compactor reads its own copy of keep (a KeptRegister, so Yosys does not merge it
        # with keep): keep also gates every lane's OUT pass, and from keep's one register the
        # compactor's popcounts were 399e746's critical path at seed 1 (keep across the loss
        # unit into the kept count, 8.06 ns, 6.57 of it routing)
        if skip_hw:
            m.submodules.copy_keep = keep_c = KeptRegister(V)
            m.d.comb += keep_c.d.eq(Mux(decide[16], keep_next, keep_c.q))
            m.submodules.compactor = compactor = Compactor(V)
            m.d.comb += compactor.keep.eq(keep_c.q)
            count, lane_of_rank = compactor.count, list(compactor.lane_of_rank)
        else:
            # every sample kept: the group's samples are lanes 0 .. count - 1 in order; the
            # count a cycle after keep, as the compactor's
            count = Signal(range(V + 1), name="kept_count")
            m.d.sync += count.eq(popcount(keep))
            lane_of_rank = [Const(q, max(bb, 1)) for q in range(V)]
        group_k0 = Signal(dim)   # the group's first dY column
        kept_total = Signal(dim)
        m.d.sync += self.skipped.eq(0)
        # per bank b, what depends on group_k0 alone, registered beside it from its next value
        # (kept_total) so they change together: the rank it takes, (b - group_k0) mod V
        # (group_rank); the kept-list word of column group_k0 + group_rank (the word after
        # group_k0 // V where b < group_k0 mod V) and whether it is below max_batch
        # (group_in_list). They cut the critical path from group_k0 into the kept list's enable
        # (2296d99, seed 1). k0_next_lo is group_k0 mod V's next value, for the D stage a stage
        # ahead (below)
        _, _, list_aw = kept_list_widths(cfg)
        group_rank = [Signal(max(bb, 1), name=f"group_rank{b}", init=b % V) for b in range(V)]
        k0_next_lo = Signal(max(bb, 1), name="group_k0_next_lo")
        # without START in its select: START comes from the sequencer across the die, and behind
        # it this multiplexer was 6f51285's critical path at seed 3 (loss_start into the D
        # stage's carry, 10.9 ns). No group is in the pipeline when a LOSS starts, so the
        # value START would give (group_k0's) is never used there.
        m.d.comb += k0_next_lo.eq(Mux(decide[18], kept_total[:bb], group_k0[:bb]))
        group_word = [Signal(list_aw, name=f"group_list_word{b}") for b in range(V)]
        group_in_list = Signal(V, init=(1 << V) - 1)  # group_k0 = 0: columns 0..V-1, in the list
        # max_batch is a multiple of V: column w*V + b (b < V) is below it iff w < max_batch // V
        list_words = cfg.max_batch >> bb
        # the compactor's registered count, a cycle after keep: the kept count's adder does not
        # follow the popcount in the same cycle
        with m.If(self.start):
            m.d.sync += kept_total.eq(0)
        with m.Elif(decide[18]):
            m.d.sync += [group_k0.eq(kept_total), kept_total.eq(kept_total + count)]
        # apart from START: no group is in the pipeline when a LOSS starts, and with START in its
        # enable this register was 98ce465's critical path at seed 1 (loss_start with decide_18
        # into its reset, 9.44 ns)
        with m.If(decide[18]):
            m.d.sync += self.skipped.eq(popcount(sample_d) - count if skip_hw else 0)
            k_lo, k_word = kept_total[:bb], kept_total >> bb
            for b in range(V):
                wrap = (b < k_lo) if V > 1 else Const(0, 1)
                m.d.sync += [group_rank[b].eq((b - k_lo)[:bb] if V > 1 else 0),
                             group_word[b].eq(k_word + wrap),
                             group_in_list[b].eq(Mux(wrap, k_word < list_words - 1,
                                                     k_word < list_words))]
        m.d.comb += self.kept.eq(kept_total)
        # 19: the kept list (rtl/kept_list.py): entry group_k0 + q is sample gw * V + lane_of_rank[q],
        # in bank (group_k0 + q) mod V; entries past max_batch are not stored
        # (the group's index is taken a cycle after its SUM pass issues its last row, as gw
        # moves on at the end of OUT, and held from stage 11 to the write. Stage 11 is 12 cycles
        # after that issue, and with one class the next group's SUM pass issues its last row
        # 11 cycles after it: taken at the issue itself, the next group's index would be there)
        group_sum, group = Signal.like(gw), Signal.like(gw)
        sum_last_q, gw_q = Signal(name="sum_last_q"), Signal.like(gw, name="gw_q")
        m.d.sync += [sum_last_q.eq(issuing & (pass_ == SUM) & r_last), gw_q.eq(gw)]
        with m.If(sum_last_q):
            m.d.sync += group_sum.eq(gw_q)
        with m.If(decide[11]):
            m.d.sync += group.eq(group_sum)
        entries = Array(lane_of_rank)
        for b in (range(V) if skip_hw else ()):  # without the skip hardware, no kept list
            q = group_rank[b]
            m.d.sync += [self.list_wr.addr[b].eq(group_word[b]),
                         self.list_wr.data[b].eq(Cat(entries[q], group)),
                         self.list_wr.en[b].eq(decide[19] & (q < count) & group_in_list[b])]

        if self._comparator and skip_hw:
            # ---- the confidence comparator: once the group's last OUT row has passed C1 (cycle 10),
            # per lane the test and c_i (cycle 11), then the count and a tree of sums into batch_sum
            group_end_10 = Signal()
            m.d.sync += group_end_10.eq(t9.valid & (t9.pass_ == OUT) & t9.last)
            m.submodules.confidence = comparator = Confidence(V, s_bits, c_bits)
            m.d.comb += [comparator.mode.eq(mode), comparator.require_correct.eq(require_correct),
                         comparator.conf_tau.eq(conf_tau), comparator.valid.eq(group_end_10),
                         comparator.hit.eq(hit_q), comparator.sample.eq(sample_q)]
            m.d.comb += [comparator.s[lane].eq(total[lane]) for lane in range(V)]
            m.d.comb += [comparator.c[lane].eq(c_q[lane]) for lane in range(V)]
            conf_11, c_11 = comparator.confident, list(comparator.c_out)
            confident = Signal.like(self.confident)
            m.d.sync += confident.eq(popcount(conf_11))
            m.d.comb += self.confident.eq(confident)
            level = c_11
            while len(level) > 1:
                nxt = []
                for i in range(0, len(level), 2):
                    pair = level[i:i + 2]
                    t = Signal(len(pair[0]) + 1, name=f"conf_sum_l{len(level)}_{i}")
                    m.d.sync += t.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
                    nxt.append(t)
                level = nxt
            with m.If(self.start):
                m.d.sync += self.batch_sum.eq(0)
            with m.Else():
                m.d.sync += self.batch_sum.eq(self.batch_sum + level[0])

        # ---- D (cycle 12): per bank, the rank it writes and the lane that holds it, the word and
        # the enable, registered (the row's kept columns group_k0 .. group_k0 + count - 1 lie in
        # banks (r + column) mod V: bank b takes rank (b - r - group_k0) mod V, in the word
        # after the row's group_k0 // V when (b - r) mod V is below group_k0 mod V);
        # then (cycle 13) the lanes into the write port registers. The rank and the carry are
        # registered a stage early, from tag_11's r and group_k0's next value (what group_k0
        # holds in 12), so the rank select into dy_bank_lane starts at a register rather than
        # behind group_k0 and two subtracts (2296d99's critical path at seed 3)
        row_word_12 = Signal(aw)
        m.d.sync += row_word_12.eq(tag_at[11].word + (group_k0 >> bb))
        bank_lane = [Signal(max(bb, 1), name=f"dy_bank_lane{b}") for b in range(V)]
        bank_word = [Signal(aw, name=f"dy_bank_word{b}") for b in range(V)]
        bank_en = Signal(V)
        ranks = Array(lane_of_rank)
        for b in range(V):
            if V > 1:
                q = Signal(bb, name=f"dy_rank_12_{b}", init=b)  # r = 0, group_k0 = 0 at reset
                carry = Signal(name=f"dy_carry_12_{b}")
                r11 = tag_at[11].r[:bb]
                m.d.sync += [q.eq((b - r11 - k0_next_lo)[:bb]),
                             carry.eq((b - r11)[:bb] < k0_next_lo)]
            else:
                q, carry = Const(0, 1), 0
            m.d.sync += [bank_lane[b].eq(ranks[q]), bank_word[b].eq(row_word_12 + carry),
                         bank_en[b].eq(t12.valid & (t12.pass_ == OUT) & (q < count))]
        outs = Array(out_13)
        m.d.sync += self.saturated.eq(sat_13.any())
        for b in range(V):
            m.d.sync += [self.wr.addr[b].eq(bank_word[b]), self.wr.data[b].eq(outs[bank_lane[b]]),
                         self.wr.en[b].eq(bank_en[b])]
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
        # the confidence comparator (skiptrain.skip): mode and threshold in, per group the
        # count of confident samples, per command the sum of c_i over the batch
        "conf_mode": In(2), "require_correct": In(1), "conf_tau": In(CONF_TAU_WIDTH),
        "tcp_bound": In(TCP_BOUND_WIDTH),
        "confident": Out(range(V + 1)),
        "batch_sum": Out(batch_tau_width(cfg)),
        # the per-sample skip (skiptrain.skip.SamplePolicy): the policy, SKIP_RATE and the lane
        # LFSRs' seed in; per group the count of skipped samples, per command the kept count
        "sample_policy": In(2), "rate": In(RATE_BITS + 1),
        "seed": In(32), "seed_load": In(1),
        "skipped": Out(range(V + 1)),
        "kept": Out(unsigned(cfg.dim_width)),
        "list_wr": Out(write_port_signature(V, kept_list_widths(cfg)[2], unsigned(kept_list_widths(cfg)[0]))),
    })
