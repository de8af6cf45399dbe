"""The sequencer: fetches commands from program memory, checks them, and issues their tiles."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .command import ErrorCode, Opcode, OutMode, command_layout, issue_layout


class Sequencer(wiring.Component):
    """Runs a program of commands from program memory until HALT or an error.

    Per GEMM command: FETCH (1 cycle) and DECODE (1) read and latch the command; CHECK
    (``check_cycles``) validates it with one shared multiplier for the three operand extents;
    ISSUE walks the output tiles (tile rows i0, then tile columns j0), each for
    period = max(K, R, C) steps of which the first K are valid; DRAIN waits for the result
    writer's ``writer_done``. HALT ends after its first CHECK cycle. An invalid command ends the
    program with ``error`` set, ``error_code`` telling why, and ``pc`` at the offending slot;
    the sequencer is then idle again and never waits on anything that cannot come.

    The cycle count of every program is thus a closed formula (golden/sequencer.py).
    """

    #: cycles in CHECK for a GEMM (multiplier in, product, three extents, compare)
    check_cycles = 6

    def __init__(self, cfg: Config):
        self._cfg = cfg
        dim = cfg.dim_width
        R, C = cfg.rows, cfg.cols
        super().__init__({
            "start": In(1),
            "start_pc": In(unsigned(cfg.prog_addr_width)),
            "prog_addr": Out(unsigned(cfg.prog_addr_width)),
            "prog_data": In(command_layout(cfg)),
            "busy": Out(1), "done": Out(1), "error": Out(1),
            "error_code": Out(ErrorCode), "pc": Out(unsigned(cfg.prog_addr_width + 1)),
            "cmd": Out(command_layout(cfg)),
            "cmd_start": Out(1),
            "issue": Out(issue_layout(cfg)),
            "writer_done": In(1),
            # events for the performance counters
            "in_command": Out(1),      # CHECK, ISSUE or DRAIN of a command (phase = cmd.phase)
            "tile": Out(1), "bubble": Out(1), "cmd_done": Out(1),
            "macs": Out(range(R * C + 1)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        V, bb = cfg.banks, cfg.bank_bits
        dim = cfg.dim_width
        m = Module()
        cmd = self.cmd

        pc = Signal(cfg.prog_addr_width + 1)  # one bit more: running off the end is an error
        m.d.comb += [self.prog_addr.eq(pc), self.pc.eq(pc)]

        # CHECK: operand extents last = base + (rows-1)*ld + (cols-1)//V, through one multiplier
        step = Signal(range(self.check_cycles))
        mul_a, mul_b = Signal(dim), Signal(cfg.addr_width)
        prod = Signal(dim + cfg.addr_width)
        m.d.sync += prod.eq(mul_a * mul_b)
        ext_w = dim + cfg.addr_width + 2
        last_a, last_b, last_c = Signal(ext_w), Signal(ext_w), Signal(ext_w)

        def stored(trans, rows, cols):
            return Mux(trans, cols, rows), Mux(trans, rows, cols)

        a_rows, a_cols = stored(cmd.trans_a, cmd.m, cmd.k)
        b_rows, b_cols = stored(cmd.trans_b, cmd.k, cmd.n)
        c_rows, c_cols = cmd.m, cmd.n
        operands = [(a_rows, a_cols, cmd.a_base, cmd.a_ld, last_a),
                    (b_rows, b_cols, cmd.b_base, cmd.b_ld, last_b),
                    (c_rows, c_cols, cmd.c_base, cmd.c_ld, last_c)]

        # ISSUE counters
        s = Signal(dim)
        i0, j0 = Signal(dim + 1), Signal(dim + 1)
        period_m1 = Signal(dim)
        rows_valid, cols_valid = Signal(range(R + 1)), Signal(range(C + 1))

        m.d.sync += [self.issue.valid.eq(0), self.issue.first.eq(0), self.issue.last.eq(0),
                     self.cmd_start.eq(0), self.tile.eq(0), self.bubble.eq(0),
                     self.cmd_done.eq(0), self.macs.eq(0)]

        def fail(code):
            m.d.sync += [self.error.eq(1), self.error_code.eq(code), self.done.eq(1)]
            m.next = "IDLE"

        with m.FSM(name="state"):
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [pc.eq(self.start_pc), self.done.eq(0), self.error.eq(0),
                                 self.error_code.eq(ErrorCode.NONE)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.busy.eq(1)
                with m.If(pc[-1]):
                    fail(ErrorCode.PROG_END)
                with m.Else():
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [cmd.eq(self.prog_data), step.eq(0), self.cmd_start.eq(1)]
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += [self.busy.eq(1), self.in_command.eq(cmd.opcode == Opcode.GEMM)]
                m.d.sync += step.eq(step + 1)
                # feed the multiplier: A at step 0, B at 1, C at 2; product 1 step later
                for n, (rows, cols, base, ld, last) in enumerate(operands):
                    with m.If(step == n):
                        m.d.sync += [mul_a.eq(rows - 1), mul_b.eq(ld)]
                    with m.If(step == n + 2):
                        m.d.sync += last.eq(base + prod + ((cols - 1) >> bb))
                with m.If(step == 0):
                    with m.If(cmd.opcode == Opcode.HALT):
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Elif(cmd.opcode != Opcode.GEMM):
                        fail(ErrorCode.BAD_OPCODE)
                with m.If(step == self.check_cycles - 1):
                    c_depth = Mux(cmd.out_mode == OutMode.QUANT, cfg.spad_depth, cfg.acc_depth)
                    words = lambda cols: ((cols - 1) >> bb) + 1
                    quant = cmd.out_mode == OutMode.QUANT
                    overlap = quant & (((cmd.c_base <= last_a) & (cmd.a_base <= last_c)) |
                                       ((cmd.c_base <= last_b) & (cmd.b_base <= last_c)))
                    with m.If((cmd.m == 0) | (cmd.k == 0) | (cmd.n == 0)):
                        fail(ErrorCode.ZERO_DIM)
                    with m.Elif(cmd.shift > cfg.acc_width - 1):
                        fail(ErrorCode.BAD_SHIFT)
                    with m.Elif(cmd.a_ld < words(a_cols)):
                        fail(ErrorCode.A_STRIDE)
                    with m.Elif(last_a >= cfg.spad_depth):
                        fail(ErrorCode.A_RANGE)
                    with m.Elif(cmd.b_ld < words(b_cols)):
                        fail(ErrorCode.B_STRIDE)
                    with m.Elif(last_b >= cfg.spad_depth):
                        fail(ErrorCode.B_RANGE)
                    with m.Elif(cmd.c_ld < words(c_cols)):
                        fail(ErrorCode.C_STRIDE)
                    with m.Elif(last_c >= c_depth):
                        fail(ErrorCode.C_RANGE)
                    with m.Elif(overlap):
                        fail(ErrorCode.OVERLAP)
                    with m.Else():
                        period = Mux(cmd.k > max(R, C), cmd.k, max(R, C))
                        m.d.sync += [s.eq(0), i0.eq(0), j0.eq(0), period_m1.eq(period - 1)]
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += [self.busy.eq(1), self.in_command.eq(1)]
                valid = s < cmd.k
                m.d.sync += [self.issue.valid.eq(valid), self.issue.first.eq(s == 0),
                             self.issue.last.eq(s == cmd.k - 1), self.issue.k.eq(s),
                             self.issue.i0.eq(i0), self.issue.j0.eq(j0),
                             self.tile.eq(s == 0), self.bubble.eq(~valid)]
                with m.If(valid):
                    m.d.sync += self.macs.eq(mul_small(rows_valid, cols_valid, C))
                m.d.comb += [rows_valid.eq(Mux(cmd.m - i0 >= R, R, cmd.m - i0)),
                             cols_valid.eq(Mux(cmd.n - j0 >= C, C, cmd.n - j0))]
                with m.If(s == period_m1):
                    m.d.sync += s.eq(0)
                    with m.If(j0 + C >= cmd.n):
                        m.d.sync += j0.eq(0)
                        with m.If(i0 + R >= cmd.m):
                            m.next = "DRAIN"
                        with m.Else():
                            m.d.sync += i0.eq(i0 + R)
                    with m.Else():
                        m.d.sync += j0.eq(j0 + C)
                with m.Else():
                    m.d.sync += s.eq(s + 1)
            with m.State("DRAIN"):
                m.d.comb += [self.busy.eq(1), self.in_command.eq(1)]
                with m.If(self.writer_done):
                    m.d.sync += [pc.eq(pc + 1), self.cmd_done.eq(1)]
                    m.next = "FETCH"
        return m


def mul_small(a, b, b_max: int):
    """a * b for a small b (<= b_max) as a sum of shifted copies of a: keeps it off the DSPs."""
    acc = 0
    for bit in range(max(1, b_max.bit_length())):
        acc = acc + Mux(b[bit], a << bit, 0)
    return acc
