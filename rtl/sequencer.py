"""The sequencer: fetches commands from program memory, checks them, and issues their tiles."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from skiptrain.numerics import max_classes

from skiptrain.isa import Gate

from .command import Epilogue, ErrorCode, Opcode, OutMode, command_layout, issue_layout
from .kept_register import KeptRegister
from .multiplier import Multiplier


_STATES = ("IDLE", "FETCH", "WAIT", "DECODE", "CHECK", "ISSUE", "DRAIN", "LOSS", "SKIP")


class Sequencer(wiring.Component):
    """Runs a program of commands from program memory until HALT or an error.

    Per GEMM command: FETCH (the program memory's ``prog_latency`` cycles) and DECODE (1)
    read and latch the command; CHECK
    (``check_cycles``) validates it with one shared multiplier for the three operand extents;
    ISSUE walks the output tiles (tile rows i0, then tile columns j0), each for
    period = max(K, R, C) steps of which the first K are valid; DRAIN waits for the result
    writer's ``writer_done``. A LOSS command, once checked, hands over to the loss unit
    (``loss_start``) and waits for its ``loss_done`` (with ``loss_error`` on a bad label).
    A GEMM with a ``gate``, checked, while ``batch_skip`` is set (the skip controller's
    decision for this batch), or with a SAMPLES gate while ``kept`` is 0, goes to SKIP instead
    of ISSUE: ``skip_cycles`` (2 x dim_width) cycles in which a shift-and-add multiplier puts
    M*K*N on ``skipped_macs`` (M*K first, then its partial products by the bits of N, one a
    cycle: the counter sums them), then the next command. A SAMPLES gate otherwise runs the
    command with its batch dimension (M for SAMPLES_M, K for SAMPLES_K) replaced by ``kept``
    (``m_run``, ``k_run``), and the same multiplier counts the samples not kept, (batch -
    kept) times the other two dimensions, while the command runs (it always ends first). With
    the kept-count normaliser (``cfg.kept_norm``) and ``norm_on`` (SKIP_CTRL's norm_kept), a
    SAMPLES_K GEMM with the UPDATE epilogue normalises (``norm``): its effective shift is
    shift + LR_SHIFT - ``norm_e`` (BAD_SHIFT if that is negative), and its batch must be a
    power of two (``norm_pow2``; BAD_GATE otherwise). Without the skip hardware
    (``cfg.has_skip`` false) the policy is always off: ``kept`` is ``loss_n`` (every sample
    kept), no batch is skipped, a gated command runs whole and SKIP is never entered. HALT
    ends after its first CHECK cycle. An invalid command ends the program with ``error`` set,
    ``error_code`` telling why, and ``pc`` at the offending slot; the sequencer is then idle
    again and never waits on anything that cannot come.

    The cycle count of every program is thus a closed formula (golden/sequencer.py).
    """

    #: cycles in CHECK for a GEMM: operand extents through one pipelined multiplier (A, B, C
    #: and the aux region, a register, the multiplier's 3 stages), the flags, the aux flag,
    #: the first failing check encoded, the decision
    check_cycles = 11

    #: the CHECK step that registers the gate (the batch decision and KEPT == 0) and the
    #: dimensions the command runs with
    gate_step = 1

    def __init__(self, cfg: Config, prog_latency: int = 2):
        if prog_latency < 1:
            raise ValueError(f"prog_latency={prog_latency}: must be >= 1 (synchronous memory)")
        self._cfg = cfg
        self._prog_latency = prog_latency
        R, C = cfg.rows, cfg.cols
        if cfg.training and 2 * cfg.dim_width > 30 + R + C:
            # the MACs of the samples not kept are counted while the command runs, which takes
            # at least 31 + R + C cycles after CHECK (one step, the pipeline's latency)
            raise ValueError(f"dim_width={cfg.dim_width}: with the training hardware, 2 * dim_width "
                             f"must be at most 30 + rows + cols = {30 + R + C}")
        super().__init__({
            "start": In(1),
            "start_pc": In(unsigned(cfg.prog_addr_width)),
            "prog_addr": Out(unsigned(cfg.prog_addr_width)),
            "prog_data": In(command_layout(cfg)),
            "busy": Out(1), "done": Out(1), "error": Out(1),
            "error_code": Out(ErrorCode), "pc": Out(unsigned(cfg.prog_addr_width + 1)),
            "cmd": Out(command_layout(cfg)),
            "cmd_start": Out(1),
            # the update's effective shift: cmd.shift + lr_shift for an UPDATE epilogue
            "lr_shift": In(unsigned(cfg.shift_width)),
            "eff_shift": Out(unsigned(cfg.shift_width + 1)),
            "loss_start": Out(1), "loss_done": In(1), "loss_error": In(1),
            "in_loss": Out(1), "loss_active": Out(1),
            "issue": Out(issue_layout(cfg)),
            "writer_done": In(1),
            # events for the performance counters
            "in_command": Out(1),      # CHECK, ISSUE or DRAIN of a command (phase = cmd.phase)
            "tile": Out(1), "bubble": Out(1), "cmd_done": Out(1),
            "macs": Out(range(R * C + 1)),
            # the gradient-skip controller: its decision, and its register error (LOSS checks it)
            "batch_skip": In(1), "skip_config_error": In(1),
            "skipped_macs": Out(unsigned(3 * cfg.dim_width)),
            # the per-sample skip: the kept count and N of the run's last LOSS; the dimensions
            # the command runs with, and the step counter (the kept list's read address: the
            # step issued next cycle)
            "kept": In(unsigned(cfg.dim_width)), "loss_n": In(unsigned(cfg.dim_width)),
            "m_run": Out(unsigned(cfg.dim_width)), "k_run": Out(unsigned(cfg.dim_width)),
            "step_k": Out(unsigned(cfg.dim_width)),
            # the kept-count normaliser: SKIP_CTRL's norm_kept, the exponent of batch / kept and
            # "the batch is a power of two" (rtl/norm_factor.py); ``norm``: this command scales
            # its update (the writer's normaliser)
            "norm_on": In(1), "norm_e": In(range(cfg.dim_width + 1)), "norm_pow2": In(1),
            "norm": Out(1),
        })

    @property
    def skip_cycles(self) -> int:
        return 2 * self._cfg.dim_width

    def elaborate(self, platform):
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        bb = cfg.bank_bits
        dim = cfg.dim_width
        m = Module()
        cmd = self.cmd

        pc = Signal(cfg.prog_addr_width + 1)  # one bit more: running off the end is an error
        wait = Signal(range(self._prog_latency + 1))
        m.d.comb += [self.prog_addr.eq(pc), self.pc.eq(pc)]

        # CHECK, pipelined so that no step has more than one carry chain: per operand the
        # stored shape, the word column of its last element (colw), base + colw, the product
        # (rows-1)*ld through one shared multiplier, the last word, then the range and overlap
        # flags, then the first failing check as a registered code; the last step only looks
        # at that code. ``step`` is one-hot, so "step n" is one flip-flop, not a comparator.
        step = Signal(self.check_cycles)
        mul_a, mul_b = Signal(dim), Signal(cfg.addr_width)
        # the pipelined multiplier of the PEs (on ECP5 a registered MULT18X18D), signed and
        # one bit wider than the unsigned operands; too wide for one DSP, Yosys builds it
        width = max(dim, cfg.addr_width) + 1
        mul_cfg = cfg if cfg.multiplier != "ecp5" or width <= 18 else cfg.replace(multiplier="behavioral")
        m.submodules.extent_multiplier = mul = Multiplier(mul_cfg, width=width)
        m.d.comb += [mul.a.eq(mul_a), mul.b.eq(mul_b)]
        prod = mul.p[:dim + cfg.addr_width]
        # operand n enters mul_a/mul_b at step n, the multiplier at n + 1, its product is
        # there at n + 1 + latency; then the flags (the aux region, the fourth, one step
        # later), the encoded first error, the decision
        product_step = 1 + mul.latency
        flags_step = 2 + product_step + 1
        assert self.check_cycles == flags_step + 4, (self.check_cycles, flags_step)
        ext_w = dim + cfg.addr_width + 2

        def stored(trans, rows, cols):
            return Mux(trans, cols, rows), Mux(trans, rows, cols)

        is_loss = cmd.opcode == Opcode.LOSS
        quant = (cmd.out_mode == OutMode.QUANT) | is_loss
        c_depth = Mux(quant, cfg.spad_depth, cfg.acc_depth)
        operands = []
        # LOSS: A is the logits (M x N), B the labels (1 x N), C the error (M x N)
        a_rows, a_cols = stored(cmd.trans_a, cmd.m, cmd.k)
        b_rows, b_cols = stored(cmd.trans_b, cmd.k, cmd.n)
        for name, (rows, cols), base, ld, depth in (
                ("a", (Mux(is_loss, cmd.m, a_rows), Mux(is_loss, cmd.n, a_cols)),
                 cmd.a_base, cmd.a_ld, cfg.spad_depth),
                ("b", (Mux(is_loss, 1, b_rows), Mux(is_loss, cmd.n, b_cols)),
                 cmd.b_base, cmd.b_ld, cfg.spad_depth),
                ("c", (cmd.m, cmd.n), cmd.c_base, cmd.c_ld, c_depth)):
            op = {"rows": rows, "cols": cols, "base": base, "ld": ld, "depth": depth,
                  "colw": Signal(dim, name=f"{name}_colw"),
                  "base_colw": Signal(ext_w, name=f"{name}_base_colw"),
                  "last": Signal(ext_w, name=f"{name}_last"),
                  "stride_err": Signal(name=f"{name}_stride_err"),
                  "range_err": Signal(name=f"{name}_range_err")}
            operands.append(op)
        zero_err, shift_err = Signal(name="zero_err"), Signal(name="shift_err")
        overlap_err = Signal()
        classes_err = Signal(name="classes_err")
        epi_err = Signal(name="epi_err")
        aux_err = Signal(name="aux_err")
        gate_err, config_err = Signal(name="gate_err"), Signal(name="config_err")
        has_aux = cmd.epilogue != Epilogue.NONE
        aux_base_colw, aux_last = Signal(ext_w), Signal(ext_w)
        # the per-sample gates: the batch dimension runs over the kept samples (without the
        # skip hardware KEPT is the batch, which the gate's check makes equal to M or K)
        samples = (cmd.gate == Gate.SAMPLES_M) | (cmd.gate == Gate.SAMPLES_K) if cfg.training else 0
        batch = Mux(cmd.gate == Gate.SAMPLES_M, cmd.m, cmd.k)
        m.d.comb += [self.m_run.eq(Mux((cmd.gate == Gate.SAMPLES_M) & cfg.has_skip, self.kept, cmd.m)),
                     self.k_run.eq(Mux((cmd.gate == Gate.SAMPLES_K) & cfg.has_skip, self.kept, cmd.k))]
        m_run, k_run = self.m_run, self.k_run
        # the same, registered in CHECK's first step, with what the decision and ISSUE derive
        # from them registered in the second: the multiplexer from KEPT and the compares
        # behind it were paths of two carry chains into the ISSUE registers (the estimate's
        # worst with the normaliser, whose factor logic shares KEPT's fan-out)
        m_run_q, k_run_q = Signal(dim, name="m_run_q"), Signal(dim, name="k_run_q")
        m_left, k_left = Signal(dim, name="m_left"), Signal(dim, name="k_left")
        rows_one, cols_one = Signal(name="rows_one"), Signal(name="cols_one")
        gated_q = Signal(name="gated_q")
        # a SAMPLES_M MASK reads aux transposed: N x M, packed (ld = ceil(M / V))
        aux_trans = (cmd.gate == Gate.SAMPLES_M) & (cmd.epilogue == Epilogue.MASK) if cfg.training else 0
        aux_rows = Mux(aux_trans, cmd.n, cmd.m)
        aux_ld = Mux(aux_trans, (cmd.m + (cfg.banks - 1)) >> bb, cmd.c_ld)
        aux_colw = Signal(dim)
        eff_shift = self.eff_shift
        # this command's update is normalised by the kept count: a constant False without the
        # normaliser, so the netlist is unchanged
        norm_cmd = ((cmd.opcode == Opcode.GEMM) & self.norm_on & (cmd.gate == Gate.SAMPLES_K)
                    & (cmd.epilogue == Epilogue.UPDATE)) if cfg.kept_norm else 0
        first_err, checks_pass = Signal(ErrorCode), Signal()
        period, k_m1 = Signal(dim), Signal(dim)
        # ``at_end``: step s is the tile's last (s == period - 1), kept one step ahead so the
        # state and the ISSUE counters are enabled by a flip-flop, not a comparator
        period_m2, period_is_one, at_end = Signal(dim), Signal(), Signal()

        # ISSUE counters: step s of the tile at (i0, j0); m_rem/n_rem = rows/columns from i0/j0
        # on, so "last tile row/column" and the valid lanes compare registers with constants
        s = Signal(dim)
        i0, j0 = Signal(dim + 1), Signal(dim + 1)
        m_rem, n_rem = Signal(dim + 1), Signal(dim + 1)
        # "this is the last tile row/column", kept one step ahead so the FSM sees flags only
        last_row = Signal(name="last_row")
        last_col = Signal(name="last_col")
        single_col = Signal(name="single_col")

        m.d.comb += self.step_k.eq(s)
        m.d.sync += [self.issue.valid.eq(0), self.issue.first.eq(0), self.issue.last.eq(0),
                     self.cmd_start.eq(0), self.tile.eq(0), self.bubble.eq(0), self.cmd_done.eq(0)]

        # MACs of each valid step, three register stages behind the issue (only totals matter,
        # and a command's DRAIN lasts far longer): the step's valid rows and columns are
        # registered once more before their product, which was a route of 3.1 ns and two carry
        # chains from cols_valid (9.28 ns, the static placer's seed 2 at 5096382)
        step_valid = Signal()
        rows_valid, cols_valid = Signal(range(R + 1)), Signal(range(C + 1))
        step_valid_q = Signal(name="macs_step_valid")
        rows_q, cols_q = Signal(range(R + 1), name="macs_rows"), Signal(range(C + 1), name="macs_cols")
        m.d.sync += [step_valid_q.eq(step_valid), rows_q.eq(rows_valid), cols_q.eq(cols_valid),
                     self.macs.eq(Mux(step_valid_q, mul_small(rows_q, cols_q, C), 0)),
                     step_valid.eq(0)]

        # The state is one-hot, one flip-flop per state, and each state's next value is its own
        # small sum of products: decoding a binary state and chaining the transitions of
        # every state made the enables of the ISSUE counters the slowest logic of the design.
        state = Signal(len(_STATES), init=1)  # IDLE
        at = {name: state[n] for n, name in enumerate(_STATES)}
        # without the training hardware a LOSS is an unknown opcode
        runs = (cmd.opcode == Opcode.GEMM) | (is_loss & cfg.training)
        # the decision step's branches take the command's kind from registers filled at CHECK's
        # first step, not decoded from ``cmd`` there: that decode, into the enables of the
        # ISSUE registers across the sequencer, was ec89ee3's critical path at seed 2 (10.9 ns)
        loss_q, samples_q = Signal(name="is_loss_q"), Signal(name="samples_q")
        leave_at_halt = at["CHECK"] & step[0] & ~runs  # HALT or a bad opcode
        # A's rows - 1 for CHECK's multiplier comes from the sequencer's own copy of m, k,
        # trans_a and "LOSS", loaded with cmd from the program word: cmd drives the whole
        # accelerator from across the die, and from it the decrement and pick were a8901ff's
        # seed 2 critical path (cmd into mul_a, 8.39 ns, one net of 3.41). A KeptRegister,
        # so Yosys keeps it apart from cmd.
        src = self.prog_data
        m.submodules.copy_a_shape = a_shape = KeptRegister(2 * dim + 2)
        m.d.comb += a_shape.d.eq(Mux(at["DECODE"],
                                     Cat(src.m, src.k, src.trans_a, src.opcode == Opcode.LOSS),
                                     a_shape.q))
        a_m, a_k = a_shape.q[:dim], a_shape.q[dim:2 * dim]
        a_trans, a_loss = a_shape.q[2 * dim], a_shape.q[2 * dim + 1]
        decide = at["CHECK"] & step[self.check_cycles - 1]
        loss_over = at["LOSS"] & self.loss_done
        tiles_done = at["ISSUE"] & at_end & last_col & last_row
        # a checked GEMM gated by the batch decision, or by the kept samples when none is kept:
        # skipped
        gated = ((cmd.gate != 0) & self.batch_skip) | (samples & (self.kept == 0)) if cfg.has_skip else 0
        mac_on = Signal()  # the shift-and-add multiplier of the skipped MACs runs
        skip_count = Signal(range(2 * dim + 1))
        skip_mul, skip_bits, skip_mk = Signal(2 * dim), Signal(dim), Signal(3 * dim)
        skip_over = at["SKIP"] & (skip_count == 0)
        fetch_ok = at["FETCH"] & ~pc[-1]
        wait_over = at["WAIT"] & (wait == 1)
        one_wait = self._prog_latency == 1
        nxt = {
            "IDLE": (at["IDLE"] & ~self.start) | (at["FETCH"] & pc[-1]) | leave_at_halt
                    | (decide & ~checks_pass) | (loss_over & self.loss_error),
            "FETCH": (at["IDLE"] & self.start) | (at["DRAIN"] & self.writer_done)
                     | (loss_over & ~self.loss_error) | skip_over,
            "WAIT": (fetch_ok & (not one_wait)) | (at["WAIT"] & ~wait_over),
            "DECODE": wait_over | (fetch_ok & one_wait),
            "CHECK": at["DECODE"] | (at["CHECK"] & ~leave_at_halt & ~decide),
            "ISSUE": (decide & checks_pass & ~loss_q & ~gated_q) | (at["ISSUE"] & ~tiles_done),
            "DRAIN": tiles_done | (at["DRAIN"] & ~self.writer_done),
            # without the training hardware LOSS is never entered: a constant, for synthesis
            "LOSS": ((decide & checks_pass & loss_q) | (at["LOSS"] & ~self.loss_done)
                     if cfg.training else 0),
            "SKIP": ((decide & checks_pass & ~loss_q & gated_q) | (at["SKIP"] & ~skip_over)
                     if cfg.has_skip else 0),
        }
        m.d.sync += [state[n].eq(nxt[name]) for n, name in enumerate(_STATES)]
        m.d.comb += [self.in_command.eq((at["CHECK"] & (cmd.opcode == Opcode.GEMM)) | at["ISSUE"]
                                        | at["DRAIN"] | at["SKIP"]),
                     self.in_loss.eq((at["CHECK"] & is_loss & runs) | at["LOSS"]),
                     self.loss_active.eq(at["LOSS"])]
        m.d.sync += self.loss_start.eq(0)

        def fail(code):
            m.d.sync += [self.error.eq(1), self.error_code.eq(code), self.done.eq(1), self.busy.eq(0)]

        with m.If(at["IDLE"]):
            with m.If(self.start):
                m.d.sync += [self.busy.eq(1), self.done.eq(0), self.error.eq(0),
                             self.error_code.eq(ErrorCode.NONE)]
        with m.If(at["FETCH"]):
            with m.If(pc[-1]):
                fail(ErrorCode.PROG_END)
            with m.Else():
                m.d.sync += wait.eq(self._prog_latency - 1)
        with m.If(at["WAIT"]):
            m.d.sync += wait.eq(wait - 1)
        with m.If(at["DECODE"]):
            m.d.sync += [cmd.eq(self.prog_data), step.eq(1), self.cmd_start.eq(1)]
        with m.If(at["CHECK"]):
            m.d.sync += step.eq(step << 1)
            with m.If(step[0]):
                with m.If(cmd.opcode == Opcode.HALT):
                    m.d.sync += [self.done.eq(1), self.busy.eq(0)]
                with m.Elif(~runs):
                    fail(ErrorCode.BAD_OPCODE)
                m.d.sync += [loss_q.eq(is_loss), samples_q.eq(samples),
                             zero_err.eq((cmd.m == 0) | ((cmd.k == 0) & ~is_loss) | (cmd.n == 0)),
                             eff_shift.eq(cmd.shift + Mux(~is_loss & (cmd.epilogue == Epilogue.UPDATE),
                                                          self.lr_shift, 0) if cfg.training else cmd.shift),
                             classes_err.eq(is_loss & (cmd.m > max_classes(cfg.data_width)) if cfg.training else 0),
                             epi_err.eq(has_aux & (is_loss | (cmd.out_mode == OutMode.ACC)
                                                   | (not cfg.training))),
                             gate_err.eq(((cmd.gate != 0) & (is_loss | (not cfg.training)))
                                         | (samples & ((batch != self.loss_n) | (batch > cfg.max_batch)
                                                       | ((cmd.gate == Gate.SAMPLES_K) & ~cmd.trans_b)
                                                       | ((cmd.gate == Gate.SAMPLES_M)
                                                          & (cmd.epilogue != Epilogue.NONE)
                                                          & (cmd.epilogue != Epilogue.MASK))))
                                         | (norm_cmd & ~self.norm_pow2)),
                             # both decrements, then the pick: the multiplexer in front of the
                             # carry chain made aux_colw a late endpoint of adf40c8's seed 1
                             aux_colw.eq(Mux(aux_trans, (cmd.m - 1) >> bb, (cmd.n - 1) >> bb)),
                             config_err.eq(is_loss & self.skip_config_error if cfg.has_skip else 0),
                             m_run_q.eq(m_run), k_run_q.eq(k_run)]
                if cfg.kept_norm:
                    m.d.sync += self.norm.eq(norm_cmd)
                m.d.sync += [op["colw"].eq((op["cols"] - 1) >> bb) for op in operands]
            with m.If(step[self.gate_step]):
                m.d.sync += [period.eq(Mux(k_run_q > max(R, C), k_run_q, max(R, C))), k_m1.eq(k_run_q - 1),
                             rows_one.eq(m_run_q <= R), cols_one.eq(cmd.n <= C), gated_q.eq(gated),
                             m_left.eq(cmd.m - m_run_q), k_left.eq(cmd.k - k_run_q),
                             shift_err.eq((eff_shift > cfg.acc_width - 1)
                                          | (self.norm & (eff_shift < self.norm_e) if cfg.kept_norm else 0)),
                             aux_base_colw.eq(cmd.aux_base + aux_colw if cfg.training else 0)]
                if cfg.kept_norm:
                    # the exponent of batch / kept off the shift: the step comes 2**e finer
                    # and the writer's normaliser multiplies by the mantissa
                    with m.If(self.norm):
                        m.d.sync += eff_shift.eq(eff_shift - self.norm_e)
                for op in operands:
                    m.d.sync += [op["base_colw"].eq(op["base"] + op["colw"]),
                                 op["stride_err"].eq(op["ld"] <= op["colw"])]
            with m.If(step[2]):
                m.d.sync += [period_m2.eq(period - 2), period_is_one.eq(period == 1)]
            # the later operands' rows - 1 (and the aux region's ld), registered at step 0 and
            # fed to the multiplier from there: each behind its transpose multiplexer and its
            # decrement, into the step multiplexer, made mul_a a 32-input multiplexer tree
            # behind a carry chain (late endpoints of 98ce465 at every seed)
            sources = [(op["rows"] - 1, op["ld"]) for op in operands[1:]]
            if cfg.training:
                sources.append((aux_rows - 1, aux_ld))
            held = [(Signal(dim, name=f"mul_rows_m1_{n}"), Signal(cfg.addr_width, name=f"mul_ld_{n}"))
                    for n in range(1, len(sources) + 1)]
            # A's rows - 1 as the pick of the decremented fields (the same value): the opcode
            # and transpose multiplexers in front of the carry chain made mul_a a late
            # endpoint of adf40c8's seed 1
            # (a_m, a_k, a_trans, a_loss: the sequencer's own copy of the command's fields, above)
            a_rows_m1 = Mux(a_loss | ~a_trans, a_m - 1, a_k - 1)
            with m.If(step[0]):
                m.d.sync += [mul_a.eq(a_rows_m1), mul_b.eq(operands[0]["ld"])]
                for (rows_q, ld_q), (rows_src, ld_src) in zip(held, sources, strict=True):
                    m.d.sync += [rows_q.eq(rows_src), ld_q.eq(ld_src)]
            for n, (rows_q, ld_q) in enumerate(held, start=1):
                with m.If(step[n]):
                    m.d.sync += [mul_a.eq(rows_q), mul_b.eq(ld_q)]
            for n, op in enumerate(operands):
                with m.If(step[n + product_step]):
                    m.d.sync += op["last"].eq(op["base_colw"] + prod)
                with m.If(step[flags_step]):
                    m.d.sync += op["range_err"].eq(op["last"] >= op["depth"])
            if cfg.training:
                # the aux region: the fourth operand (C's shape and ld, or transposed)
                with m.If(step[3 + product_step]):
                    m.d.sync += aux_last.eq(aux_base_colw + prod)
            a, b, c = operands
            with m.If(step[flags_step + 1]):
                # without the training hardware an epilogue is BAD_EPILOGUE before this matters
                m.d.sync += aux_err.eq(has_aux & (aux_last >= cfg.acc_depth) if cfg.training else 0)
            # the four bound compares registered, then combined a cycle later (two compares
            # feeding one AND-OR in one cycle was a path of two carry chains)
            below = Signal(4, name="overlap_below")
            with m.If(step[flags_step]):
                m.d.sync += below.eq(Cat(cmd.c_base <= a["last"], cmd.a_base <= c["last"],
                                         cmd.c_base <= b["last"], cmd.b_base <= c["last"]))
            with m.If(step[flags_step + 1]):
                m.d.sync += overlap_err.eq(quant & ((below[0] & below[1]) | (below[2] & below[3])))
            with m.If(step[flags_step + 2]):
                # the priority encoder of the checks, in the order golden/sequencer.py's
                # check() tests them, registered so the state decision sees one code
                code = ErrorCode.NONE
                for flag, err in reversed(((zero_err, ErrorCode.ZERO_DIM),
                                         (classes_err, ErrorCode.LOSS_CLASSES),
                                         (shift_err, ErrorCode.BAD_SHIFT),
                                         (epi_err, ErrorCode.BAD_EPILOGUE),
                                         (gate_err, ErrorCode.BAD_GATE),
                                         (config_err, ErrorCode.SKIP_CONFIG),
                                         (a["stride_err"], ErrorCode.A_STRIDE),
                                         (a["range_err"], ErrorCode.A_RANGE),
                                         (b["stride_err"], ErrorCode.B_STRIDE),
                                         (b["range_err"], ErrorCode.B_RANGE),
                                         (c["stride_err"], ErrorCode.C_STRIDE),
                                         (c["range_err"], ErrorCode.C_RANGE),
                                         (aux_err, ErrorCode.AUX_RANGE),
                                         (overlap_err, ErrorCode.OVERLAP))):
                    code = Mux(flag, err, code)
                m.d.sync += [first_err.eq(code), checks_pass.eq(code == ErrorCode.NONE)]
            with m.If(step[self.check_cycles - 1]):
                with m.If(~checks_pass):
                    fail(first_err)
                with m.Elif(loss_q):
                    m.d.sync += self.loss_start.eq(1)
                with m.Elif(gated_q):
                    m.d.sync += [skip_count.eq(2 * dim - 1), skip_mk.eq(0), skip_mul.eq(cmd.m),
                                 skip_bits.eq(cmd.k), mac_on.eq(1)]
                with m.Else():
                    m.d.sync += [s.eq(0), at_end.eq(period_is_one),
                                 i0.eq(0), j0.eq(0), m_rem.eq(m_run_q), n_rem.eq(cmd.n),
                                 last_row.eq(rows_one), last_col.eq(cols_one),
                                 single_col.eq(cols_one)]
                    if cfg.has_skip:
                        # the samples not kept: (M - m_run) * (K - k_run) is M*K - m_run*k_run
                        # as one of the two differences is 0
                        with m.If(samples_q):
                            m.d.sync += [skip_count.eq(2 * dim - 1), skip_mk.eq(0), mac_on.eq(1),
                                         skip_mul.eq(Mux(cmd.gate == Gate.SAMPLES_M, m_left, cmd.m)),
                                         skip_bits.eq(Mux(cmd.gate == Gate.SAMPLES_K, k_left, cmd.k))]
        with m.If(at["ISSUE"]):
            valid = s < k_run_q
            m.d.sync += [self.issue.valid.eq(valid), self.issue.first.eq(s == 0),
                         self.issue.last.eq(s == k_m1), self.issue.k.eq(s),
                         self.issue.i0.eq(i0), self.issue.j0.eq(j0),
                         self.tile.eq(s == 0), self.bubble.eq(~valid),
                         step_valid.eq(valid),
                         rows_valid.eq(Mux(m_rem > R, R, m_rem)),
                         cols_valid.eq(Mux(n_rem > C, C, n_rem))]
            with m.If(at_end):
                m.d.sync += [s.eq(0), at_end.eq(period_is_one)]
                with m.If(last_col):
                    m.d.sync += [j0.eq(0), n_rem.eq(cmd.n), last_col.eq(single_col)]
                    with m.If(~last_row):
                        m.d.sync += [i0.eq(i0 + R), m_rem.eq(m_rem - R),
                                     last_row.eq(m_rem <= 2 * R)]
                with m.Else():
                    m.d.sync += [j0.eq(j0 + C), n_rem.eq(n_rem - C), last_col.eq(n_rem <= 2 * C)]
            with m.Else():
                m.d.sync += [s.eq(s + 1), at_end.eq(s == period_m2)]
        with m.If(at["DRAIN"]):
            with m.If(self.writer_done):
                m.d.sync += self.cmd_done.eq(1)
        # SKIP: M*K from the bits of K (the first dim cycles), then M*K*N from the bits of N, one
        # partial product a cycle onto skipped_macs (the counter adds them up); shift registers,
        # not barrel shifters, so each cycle has one adder
        m.d.sync += self.skipped_macs.eq(0)
        if cfg.has_skip:
            with m.If(mac_on):
                m.d.sync += skip_count.eq(skip_count - 1)
                with m.If(skip_count == 0):
                    m.d.sync += mac_on.eq(0)
                with m.If(skip_count >= dim):
                    m.d.sync += [skip_mul.eq(skip_mul << 1), skip_bits.eq(skip_bits >> 1)]
                    with m.If(skip_bits[0]):
                        m.d.sync += skip_mk.eq(skip_mk + skip_mul)
                    with m.If(skip_count == dim):  # M*K is final next cycle: N's bits next
                        m.d.sync += skip_bits.eq(cmd.n)
                with m.Else():
                    m.d.sync += [skip_mk.eq(skip_mk << 1), skip_bits.eq(skip_bits >> 1)]
                    with m.If(skip_bits[0]):
                        m.d.sync += self.skipped_macs.eq(skip_mk)
        with m.If(loss_over):
            with m.If(self.loss_error):
                fail(ErrorCode.BAD_LABEL)
            with m.Else():
                m.d.sync += self.cmd_done.eq(1)
        # the PC: loaded at START, one on when a command ends. One enable and a two-way
        # choice, not a priority chain over every state's branch: the ends arrive from the
        # writer and the loss unit across the die (writer_done, loss_done, loss_error), and
        # behind a chain of multiplexers they made pc adf40c8's second-latest endpoint
        pc_adv = (at["DRAIN"] & self.writer_done) | (loss_over & ~self.loss_error)
        if cfg.has_skip:
            pc_adv = pc_adv | (mac_on & skip_over)
        with m.If((at["IDLE"] & self.start) | pc_adv):
            m.d.sync += pc.eq(Mux(at["IDLE"], self.start_pc, pc + 1))
        return m


def mul_small(a, b, b_max: int):
    """a * b for a small b (<= b_max) as a sum of shifted copies of a: keeps it off the DSPs."""
    acc = 0
    for bit in range(max(1, b_max.bit_length())):
        acc = acc + Mux(b[bit], a << bit, 0)
    return acc
