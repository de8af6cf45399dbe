"""The accelerator top: memories, sequencer, readers, array, writer, counters and the host port."""

import functools
import operator

from amaranth.back import verilog
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain import hostmap
from skiptrain.config import Config
from skiptrain.hostmap import COUNTER_CSRS, Csr, HostMap, Region
from skiptrain.skip import CONF_TAU_WIDTH, RATE_BITS, TCP_BOUND_WIDTH, SkipCtrl, batch_tau_width
from skiptrain.isa import Gate, command_width

from .banked_memory import BankedMemory
from .command import Epilogue, OutMode
from .kept_list import KeptList
from .kept_register import KeptRegister
from .loss_unit import LossUnit, loss_unit_signature
from .norm_factor import NormFactor
from .operand_reader import OperandReader
from .perf_counters import COUNTERS, PerfCounters
from .result_writer import ResultWriter
from .sequencer import Sequencer
from .skip_controller import SkipController, skip_controller_signature
from .skew import Skew
from .systolic_array import SystolicArray


def host_signature(cfg: Config) -> wiring.Signature:
    """The host port as the host sees it (see :mod:`skiptrain.hostmap`)."""
    hm = HostMap(cfg)
    return wiring.Signature({
        "addr": Out(hm.addr_width), "w_en": Out(1), "w_data": Out(hm.data_width),
        "r_en": Out(1), "r_data": In(hm.data_width), "r_valid": In(1),
    })


class Accelerator(wiring.Component):
    """The skiptrain training accelerator.

    The host loads operands into the scratchpad and a program into program memory through
    ``host``, writes START, and waits for ``done`` (``error`` tells whether it failed; the
    STATUS register says why). Everything in between runs from on-chip memory.

    Members
    -------
    host : In(host_signature(cfg))
    busy, done, error : Out(1)
    """

    def __init__(self, cfg: Config):
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a skiptrain.config.Config, not {type(cfg).__name__}")
        self.cfg = cfg
        super().__init__({"host": In(host_signature(cfg)),
                          "busy": Out(1), "done": Out(1), "error": Out(1)})

    read_latency = hostmap.READ_LATENCY
    #: r_data bits per copy of the read's last-stage flags (refused, CSR)
    read_slice = 40

    #: Submodules synthesis keeps whole (see fpga.flow): flattened, Yosys merges the equal
    #: flag flip-flops of a whole anti-diagonal of PEs into one, which then drives the
    #: accumulators of up to min(R, C) PEs across the die.
    #: The loss unit, the result writer and the skip controller stay whole too, so synthesis
    #: reports the area of the element-wise units and of the skip hardware on their own
    #: (fpga.report.module_cells).
    #: The writer's own (its lane select's copies) follow, below its name.
    synthesis_keep_hierarchy = ("array.pe_*", "loss", "loss.copy_*", "sequencer.copy_*", "writer", "skip", "copy_rd_flags*",
                                *(f"writer.{p}" for p in ResultWriter.synthesis_keep_hierarchy))

    def elaborate(self, platform):
        cfg = self.cfg
        hm = HostMap(cfg)
        V, R, C = cfg.banks, cfg.rows, cfg.cols
        m = Module()
        host = self.host

        mem = cfg.memory
        m.submodules.spad = spad = BankedMemory(V, signed(cfg.data_width), cfg.spad_depth, 2, mem)
        m.submodules.acc_mem = accm = BankedMemory(V, signed(cfg.acc_width), cfg.acc_depth, 1, mem)
        m.submodules.prog = prog = BankedMemory(1, unsigned(command_width(cfg)), cfg.prog_depth, 1, mem)
        m.submodules.sequencer = seq = Sequencer(cfg, prog.read_latency)
        m.submodules.reader_a = ra = OperandReader(cfg, R, spad.read_latency)
        m.submodules.reader_b = rb = OperandReader(cfg, C, spad.read_latency)
        m.submodules.skew_a = skew_a = Skew(R, signed(cfg.data_width))
        m.submodules.skew_flags = skew_f = Skew(R, 2)
        m.submodules.skew_b = skew_b = Skew(C, signed(cfg.data_width))
        m.submodules.array = array = SystolicArray(cfg)
        m.submodules.writer = writer = ResultWriter(cfg, spad.write_latency, accm.read_latency)
        m.submodules.counters = counters = PerfCounters(cfg)
        if cfg.training:  # with the comparator and the per-sample skip when cfg.has_skip
            m.submodules.loss = loss = LossUnit(cfg, spad.read_latency)
        else:  # a LOSS stops at CHECK: the loss unit's outputs are signals that stay 0
            loss = loss_unit_signature(cfg).create(path=("loss",))
        # the writer takes a command's constants at cmd_start; its first row comes after CHECK,
        # the issue register, the reader and the array
        first_row = Sequencer.check_cycles + 1 + ra.latency + array.row_out_latency
        assert first_row > writer.settle_cycles, \
            f"rows may reach the writer {first_row} cycles after cmd_start, before its " \
            f"{writer.settle_cycles} cycles of settling"

        busy = seq.busy
        idle = ~busy
        m.d.comb += [self.busy.eq(busy), self.done.eq(seq.done), self.error.eq(seq.error)]

        # ---- host port decode ----------------------------------------------------------------
        region = host.addr[hm.index_width:]
        index = host.addr[:hm.index_width]
        wr = {r: host.w_en & (region == r) for r in Region}
        rd_mem = host.r_en & (region != Region.CSR)
        ctrl_w = wr[Region.CSR] & (index == Csr.CTRL)
        start_pc_w = wr[Region.CSR] & (index == Csr.START_PC)
        lr_w = wr[Region.CSR] & (index == Csr.LR_SHIFT)
        rounding_w = wr[Region.CSR] & (index == Csr.ROUNDING)
        seed_w = wr[Region.CSR] & (index == Csr.SR_SEED)
        skip_w = {r: wr[Region.CSR] & (index == r)
                  for r in (Csr.SKIP_CTRL, Csr.CONF_TAU, Csr.BATCH_TAU, Csr.SKIP_RATE, Csr.SKIP_SEED,
                            Csr.TCP_BOUND)}
        start = ctrl_w & host.w_data[0]
        clear = ctrl_w & host.w_data[1]

        start_pc = Signal(cfg.prog_addr_width)
        saturated, host_error = Signal(name="saturated"), Signal(name="host_error")
        with m.If(start_pc_w & idle):
            m.d.sync += start_pc.eq(host.w_data)
        # the training registers (without the training hardware they are not there: they read 0)
        lr_shift, stochastic, sr_seed = Signal(cfg.shift_width), Signal(), Signal(32)
        if cfg.training:
            with m.If(lr_w & idle):
                m.d.sync += lr_shift.eq(host.w_data)
            with m.If(rounding_w & idle):
                m.d.sync += stochastic.eq(host.w_data[0])
            with m.If(seed_w & idle):
                m.d.sync += sr_seed.eq(host.w_data[:32])
        # the LFSR seeds (SR_SEED, SKIP_SEED) reach the LFSRs a cycle after the host's write,
        # from registers: the write's decode with ``busy`` was a long route to the writer's and
        # the loss unit's LFSRs across the die (an LFSR first steps many cycles after a START)
        seed_q, sr_load_q, skip_load_q = Signal(32), Signal(), Signal()
        m.d.sync += [seed_q.eq(host.w_data[:32]), sr_load_q.eq(seed_w & idle),
                     skip_load_q.eq(wr[Region.CSR] & (index == Csr.SKIP_SEED) & idle)]
        # the gradient-skip registers (skiptrain.skip); without the skip hardware they are not
        # there (never written, they read 0 and synthesis removes them)
        skip_ctrl, conf_tau = Signal(SkipCtrl.WIDTH), Signal(CONF_TAU_WIDTH)
        batch_tau, skip_rate = Signal(batch_tau_width(cfg)), Signal(RATE_BITS + 1)
        skip_seed, tcp_bound = Signal(32), Signal(TCP_BOUND_WIDTH)
        skip_regs = {Csr.SKIP_CTRL: skip_ctrl, Csr.CONF_TAU: conf_tau, Csr.BATCH_TAU: batch_tau,
                     Csr.SKIP_RATE: skip_rate, Csr.SKIP_SEED: skip_seed, Csr.TCP_BOUND: tcp_bound}
        if cfg.has_skip:
            for r, reg in skip_regs.items():
                with m.If(skip_w[r] & idle):
                    m.d.sync += reg.eq(host.w_data)
        # memories and control belong to the sequencer while it runs: refuse and flag
        refused = busy & (wr[Region.PROG] | wr[Region.SPAD] | wr[Region.ACC] | rd_mem
                          | start_pc_w | lr_w | rounding_w | seed_w | start | clear
                          | skip_w[Csr.SKIP_CTRL] | skip_w[Csr.CONF_TAU] | skip_w[Csr.BATCH_TAU]
                          | skip_w[Csr.SKIP_RATE] | skip_w[Csr.SKIP_SEED] | skip_w[Csr.TCP_BOUND])
        with m.If(clear & idle):
            m.d.sync += [saturated.eq(0), host_error.eq(0)]
        with m.Else():
            with m.If(writer.saturated | loss.saturated):
                m.d.sync += saturated.eq(1)
            with m.If(refused):
                m.d.sync += host_error.eq(1)

        # ---- sequencer and program memory ----------------------------------------------------
        prog_rd, prog_wr = prog.read[0], prog.write
        cmd = seq.cmd
        if cfg.has_skip:
            m.submodules.skip = skip = SkipController(cfg)
            m.d.comb += [skip.ctrl.eq(skip_ctrl), skip.batch_tau.eq(batch_tau), skip.rate.eq(skip_rate),
                         skip.seed.eq(seed_q), skip.seed_load.eq(skip_load_q),
                         skip.start.eq(start & idle), skip.loss_done.eq(loss.done),
                         skip.loss_error.eq(loss.error), skip.batch_sum.eq(loss.batch_sum),
                         loss.conf_mode.eq(skip_ctrl[2:4]), loss.require_correct.eq(skip_ctrl[4]),
                         loss.conf_tau.eq(conf_tau), loss.tcp_bound.eq(tcp_bound),
                         loss.sample_policy.eq(skip_ctrl[5:7]),
                         loss.rate.eq(skip_rate), loss.seed.eq(seed_q),
                         loss.seed_load.eq(skip_load_q)]
            # the decision (and batch_sum before it) must be in before the next command can
            # reach its gate: FETCH, the program read, DECODE and CHECK's steps up to the one
            # that registers the gate, after loss_done
            assert (LossUnit.batch_sum_after_done(V) < SkipController.decision_latency
                    < 3 + Sequencer.gate_step + 1), "the batch decision comes too late for the gate"
        else:
            skip = skip_controller_signature(cfg).create(path=("skip",))  # outputs stay 0
            if cfg.training:  # the loss unit's skip inputs: no policy (every sample kept)
                m.d.comb += [loss.conf_mode.eq(0), loss.require_correct.eq(0), loss.conf_tau.eq(0),
                             loss.tcp_bound.eq(0), loss.sample_policy.eq(0), loss.rate.eq(0),
                             loss.seed.eq(0), loss.seed_load.eq(0)]
        m.d.comb += [seq.batch_skip.eq(skip.skip), seq.skip_config_error.eq(skip.config_error)]
        # KEPT and the N of the run's last LOSS, taken when it ends (START clears both): the
        # SAMPLES gates run over the kept samples and check their batch against N
        # (without the skip hardware every sample is kept: KEPT is the LOSS's N, and the
        # SAMPLES gates run their commands whole)
        kept, loss_n = Signal.like(loss.kept), Signal(cfg.dim_width)
        if cfg.training:
            with m.If(start & idle):
                m.d.sync += [kept.eq(0), loss_n.eq(0)]
            with m.Elif(loss.done):
                m.d.sync += [kept.eq(loss.kept if cfg.has_skip else cmd.n), loss_n.eq(cmd.n)]
        m.d.comb += [seq.kept.eq(kept), seq.loss_n.eq(loss_n)]
        if cfg.kept_norm:
            # batch / kept for the normalised update (SKIP_CTRL bit 7), from the same registers
            m.submodules.norm_factor = nf = NormFactor(cfg)
            # e is read in the next command's CHECK, after FETCH, the program read and DECODE
            assert 1 + nf.exp_latency <= 1 + prog.read_latency + 1
            m.d.comb += [nf.kept.eq(kept), nf.batch.eq(loss_n),
                         seq.norm_on.eq(skip_ctrl[SkipCtrl.NORM_BIT]), seq.norm_e.eq(nf.e),
                         seq.norm_pow2.eq(nf.batch_pow2),
                         writer.norm.eq(seq.norm), writer.norm_m.eq(nf.m)]
        m.d.comb += [seq.lr_shift.eq(lr_shift),
                     seq.loss_done.eq(loss.done), seq.loss_error.eq(loss.error),
                     loss.start.eq(seq.loss_start), loss.m.eq(cmd.m), loss.n.eq(cmd.n),
                     loss.z_base.eq(cmd.a_base), loss.z_ld.eq(cmd.a_ld), loss.y_base.eq(cmd.b_base),
                     loss.d_base.eq(cmd.c_base), loss.d_ld.eq(cmd.c_ld), loss.shift.eq(cmd.shift)]
        m.d.comb += [seq.start.eq(start & idle), seq.start_pc.eq(start_pc),
                     prog_rd.addr[0].eq(Mux(busy, seq.prog_addr, index)),
                     seq.prog_data.eq(prog_rd.data[0]),
                     prog_wr.addr[0].eq(index), prog_wr.data[0].eq(host.w_data),
                     prog_wr.en.eq(wr[Region.PROG] & idle)]
        cmd, issue = seq.cmd, seq.issue

        # ---- operand path: readers -> skew -> array ------------------------------------------
        for reader, base, ld, lane_is_row, limit, l0 in (
                (ra, cmd.a_base, cmd.a_ld, ~cmd.trans_a, seq.m_run, issue.i0),
                (rb, cmd.b_base, cmd.b_ld, cmd.trans_b, cmd.n, issue.j0)):
            m.d.comb += [reader.base.eq(base), reader.ld.eq(ld), reader.lane_is_row.eq(lane_is_row),
                         reader.limit.eq(limit), reader.valid.eq(issue.valid),
                         reader.first.eq(issue.first), reader.last.eq(issue.last),
                         reader.k.eq(issue.k), reader.l0.eq(l0)]
        # the loss unit has the read ports while a LOSS command runs (the readers are idle then)
        loss_active = seq.loss_active if cfg.training else 0  # constant: the muxes fold away
        for p, (reader, loss_port) in enumerate(((ra, loss.rd_z), (rb, loss.rd_y))):
            for b in range(V):
                # the host reads lines through port 0 while the sequencer is idle
                addr = Mux(loss_active, loss_port.addr[b], reader.port.addr[b])
                if p == 0:
                    addr = Mux(busy, addr, index)
                m.d.comb += spad.read[p].addr[b].eq(addr)
            m.d.comb += [reader.port.data.eq(spad.read[p].data), loss_port.data.eq(spad.read[p].data)]
        m.d.comb += [skew_a.i.eq(ra.data), skew_b.i.eq(rb.data)]
        for i in range(R):
            m.d.comb += skew_f.i[i].eq(Cat(ra.out_first, ra.out_last))
        m.d.comb += [array.a.eq(skew_a.o), array.b.eq(skew_b.o)]
        for i in range(R):
            m.d.comb += [array.first[i].eq(skew_f.o[i][0]), array.last[i].eq(skew_f.o[i][1])]

        # ---- result path: array -> writer -> memories ----------------------------------------
        # the kept list (the per-sample skip): the loss unit writes it; reader B reads entry k of
        # SAMPLES_K commands one step ahead (the sequencer's step counter), the writer entry r
        # of a SAMPLES_M MASK's rows
        if cfg.has_skip:
            m.submodules.kept_list = kl = KeptList(cfg, read_ports=2)
            assert kl.read_latency == 2  # = the step counter's lead over the reader's k register
            m.d.comb += [kl.wr.addr.eq(loss.list_wr.addr), kl.wr.data.eq(loss.list_wr.data),
                         kl.wr.en.eq(loss.list_wr.en),
                         kl.entry[0].eq(seq.step_k), rb.list_k.eq(kl.data[0]),
                         rb.gather.eq(cmd.gate == Gate.SAMPLES_K),
                         kl.entry[1].eq(writer.list_entry), writer.list_data.eq(kl.data[1])]
        elif cfg.training:
            # without the skip hardware the kept list is the identity: reader B reads op(B)'s
            # rows in order (no gather), and the writer's transposed aux read (a SAMPLES_M
            # MASK, whose aux is stored transposed) gets entry r = r, as late as the list's
            # read would bring it
            entry = writer.list_entry & (cfg.max_batch - 1)
            for _ in range(KeptList.read_latency):
                entry_q = Signal.like(writer.list_entry)
                m.d.sync += entry_q.eq(entry)
                entry = entry_q
            m.d.comb += writer.list_data.eq(entry)
        if cfg.training:  # a SAMPLES_M MASK reads its aux transposed
            m.d.comb += [writer.aux_trans.eq((cmd.gate == Gate.SAMPLES_M) & (cmd.epilogue == Epilogue.MASK)),
                         writer.aux_ld.eq((cmd.m + (V - 1)) >> cfg.bank_bits)]
        m.d.comb += [writer.start.eq(seq.cmd_start), writer.base.eq(cmd.c_base),
                     writer.ld.eq(cmd.c_ld), writer.m.eq(seq.m_run), writer.n.eq(cmd.n),
                     writer.quant.eq(cmd.out_mode == OutMode.QUANT), writer.shift.eq(seq.eff_shift),
                     writer.epilogue.eq(cmd.epilogue), writer.aux_base.eq(cmd.aux_base),
                     writer.stochastic.eq(stochastic), writer.sr_seed.eq(seed_q),
                     writer.sr_load.eq(sr_load_q),
                     writer.row_valid.eq(array.out_valid), writer.row_data.eq(array.out_data),
                     seq.writer_done.eq(writer.done)]
        dw, aw = cfg.data_width, cfg.acc_width
        for mem, port, width, reg in ((spad, writer.spad, dw, Region.SPAD),
                                      (accm, writer.acc, aw, Region.ACC)):
            for b in range(V):
                addr, wdata, en = port.addr[b], port.data[b], port.en[b]
                if mem is spad:  # the loss unit writes the scratchpad while a LOSS runs
                    addr = Mux(loss_active, loss.wr.addr[b], addr)
                    wdata = Mux(loss_active, loss.wr.data[b], wdata)
                    en = Mux(loss_active, loss.wr.en[b], en)
                m.d.comb += [
                    mem.write.addr[b].eq(Mux(busy, addr, index)),
                    mem.write.data[b].eq(Mux(busy, wdata, host.w_data[b * width:(b + 1) * width])),
                    mem.write.en[b].eq(Mux(busy, en, wr[reg])),
                ]
        # the accumulator memory's read port: the writer's epilogue (aux) while busy, the host else
        for b in range(V):
            addr = Mux(busy, writer.acc_rd.addr[b], index) if cfg.training else index
            m.d.comb += [accm.read[0].addr[b].eq(addr), writer.acc_rd.data[b].eq(accm.read[0].data[b])]

        # ---- performance counters ------------------------------------------------------------
        m.d.comb += [counters.clear.eq(clear & idle), counters.busy.eq(busy),
                     counters.in_command.eq(seq.in_command), counters.phase.eq(cmd.phase),
                     counters.tile.eq(seq.tile), counters.bubble.eq(seq.bubble),
                     counters.cmd_done.eq(seq.cmd_done), counters.macs.eq(seq.macs),
                     counters.in_loss.eq(seq.in_loss), counters.correct.eq(loss.correct),
                     counters.confident.eq(loss.confident), counters.skipped_batch.eq(skip.skipped),
                     counters.skipped_macs.eq(seq.skipped_macs),
                     counters.skipped_samples.eq(loss.skipped)]

        # ---- host reads: memory data is captured near the memories' output registers before
        # the region multiplexer, so r_data comes READ_LATENCY = 5 cycles after r_en
        status = Cat(busy, seq.done, seq.error, saturated, host_error, skip.skip, Const(0, 2),
                     seq.error_code, seq.pc)
        csr_values = {Csr.STATUS: status, Csr.START_PC: start_pc, Csr.PC: seq.pc, Csr.LR_SHIFT: lr_shift,
                      Csr.ROUNDING: stochastic, Csr.SR_SEED: sr_seed,
                      Csr.ID: Const(hm.id_value(), 64), Csr.KEPT: kept, **skip_regs}
        for n, name in enumerate(COUNTERS):
            csr_values[COUNTER_CSRS[name]] = counters.count[n]
        # CSR reads: the index waits two cycles, then the multiplexer runs in two registered
        # stages, as the counters' registers are spread out. The first stage selects within
        # groups of four and zeroes every group but the addressed one; the second is a plain OR
        # of the groups, so no select decode (and no fan-out of the index to every bit) sits in
        # front of csr_data (it was the critical path at 898840b). Each group's select is
        # decoded a cycle early into its own one-hot register, so the first stage is an AND-OR
        # of four values with no shared index behind it (index_d2 driving every group's compare
        # was the critical path at 6f51285, seed 2: 10.3 ns, 8.2 of it routing).
        index_d1 = Signal.like(index)
        m.d.sync += index_d1.eq(index)
        groups = {}
        for idx, value in csr_values.items():
            groups.setdefault(int(idx) >> 2, {})[int(idx) & 3] = value
        group_q = {g: Signal(hm.data_width, name=f"csr_group{g}") for g in groups}
        for g, members in groups.items():
            hit = Signal(4, name=f"csr_hit{g}")
            m.d.sync += hit.eq(Cat(index_d1 == (g << 2 | low) for low in range(4)))
            m.d.sync += group_q[g].eq(functools.reduce(operator.or_, (
                Mux(hit[low], value, 0) for low, value in members.items())))
        csr_data = Signal(hm.data_width)
        m.d.sync += csr_data.eq(functools.reduce(operator.or_, group_q.values()))
        # the request waits beside the memories: 3 cycles of memory read, 1 of capture
        r_en_q, region_q, refused_q = host.r_en, region, rd_mem & busy
        region_at = []
        for stage in range(4):
            if stage == 3:
                # the last stage's "refused" and "CSR" flags, one copy per line slice: one
                # register drove the synchronous reset of every bit of r_data, across the die
                # (b3ef845's critical path at seeds 1 and 3, 8.62 and 9.03 ns)
                flags_in = Cat(refused_q, region_q == Region.CSR)
            r_en_d, region_d, refused_d = Signal(), Signal(Region), Signal()
            m.d.sync += [r_en_d.eq(r_en_q), region_d.eq(region_q), refused_d.eq(refused_q)]
            r_en_q, region_q, refused_q = r_en_d, region_d, refused_d
            region_at.append(region_d)
        assert spad.read_latency == accm.read_latency == prog.read_latency == 3 and self.read_latency == 5
        # one capture register for the three memories (the region is known by then)
        lines = {Region.SPAD: (spad.read[0], dw, V), Region.ACC: (accm.read[0], aw, V),
                 Region.PROG: (prog.read[0], command_width(cfg), 1)}
        captured = Signal(max(width * lanes for _, width, lanes in lines.values()), name="host_mem_data")
        with m.Switch(region_at[2]):
            for reg, (port, width, lanes) in lines.items():
                with m.Case(reg):
                    m.d.sync += captured.eq(Cat(port.data[b].as_unsigned()[:width] for b in range(lanes)))

        m.d.sync += host.r_valid.eq(r_en_q)
        width = len(host.r_data)
        for k, lo in enumerate(range(0, width, self.read_slice)):
            hi = min(lo + self.read_slice, width)
            m.submodules[f"copy_rd_flags{k}"] = flags = KeptRegister(2)
            m.d.comb += flags.d.eq(flags_in)
            refused_k, csr_k = flags.q[0], flags.q[1]
            with m.If(refused_k):
                m.d.sync += host.r_data[lo:hi].eq(0)
            with m.Elif(csr_k):
                m.d.sync += host.r_data[lo:hi].eq(csr_data[lo:hi])
            with m.Else():
                m.d.sync += host.r_data[lo:hi].eq(captured[lo:hi] if lo < len(captured) else 0)
        return m


def generate_verilog(cfg: Config, name: str = "skiptrain_top") -> str:
    """Verilog of the accelerator for ``cfg`` (no source locations, so it is reproducible)."""
    top = Accelerator(cfg)
    return verilog.convert(top, name=name, emit_src=False)
