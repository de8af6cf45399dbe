"""The rows x cols output-stationary systolic array with its result drain."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config

from .pe import PE


class SystolicArray(wiring.Component):
    """R x C PEs; op(A) enters the rows from the left, op(B) the columns from the top.

    Inputs are expected already skewed (:class:`~rtl.skew.Skew`): lane i of ``a`` and of the
    flags one cycle per row later than lane i-1, lane j of ``b`` one cycle per column later.

    Drain: when the ``last`` flag leaves the end of row i, every PE of that row holds its final
    sum in its result register; ``multiplier_latency`` cycles after that the row is selected
    onto ``out_data`` (registered). Rows therefore come out one per cycle, row 0 first,
    ``row_out_latency`` cycles after the last step of the tile entered row 0. A PE's result
    register is rewritten no earlier than C cycles later, so tiles may follow each other every
    max(K, R, C) cycles without a row being lost.

    Members
    -------
    a : In(ArrayLayout(signed(data_width), rows))
    first, last : In(rows)
        Per-row flags, skewed like ``a``.
    b : In(ArrayLayout(signed(data_width), cols))
    out_valid : Out(1)
    out_row : Out(range(rows))
    out_data : Out(ArrayLayout(signed(acc_width), cols))
    """

    def __init__(self, cfg: Config):
        self._cfg = cfg
        R, C = cfg.rows, cfg.cols
        super().__init__({
            "a": In(data.ArrayLayout(signed(cfg.data_width), R)),
            "first": In(R), "last": In(R),
            "b": In(data.ArrayLayout(signed(cfg.data_width), C)),
            "out_valid": Out(1),
            "out_row": Out(range(max(R, 2))),
            "out_data": Out(data.ArrayLayout(signed(cfg.acc_width), C)),
        })

    #: row multiplexer stages: groups of up to 4 rows, then the groups (the PEs of a column
    #: are far apart, so one stage would be a long route plus a deep OR)
    mux_stages = 2

    @property
    def row_out_latency(self) -> int:
        """Cycles from the last step at row 0's input to row 0 of the result at ``out_data``."""
        return self._cfg.cols + self._cfg.multiplier_latency + self.mux_stages

    def elaborate(self, platform):
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        m = Module()
        pe = [[PE(cfg) for _ in range(C)] for _ in range(R)]
        for i in range(R):
            for j in range(C):
                m.submodules[f"pe_{i}_{j}"] = p = pe[i][j]
                left = pe[i][j - 1] if j else None
                m.d.comb += [
                    p.a_in.eq(left.a_out if left else self.a[i]),
                    p.first_in.eq(left.first_out if left else self.first[i]),
                    p.last_in.eq(left.last_out if left else self.last[i]),
                    p.b_in.eq(pe[i - 1][j].b_out if i else self.b[j]),
                ]

        # row i is final when `last` has left its last PE, plus the multiplier pipeline; the
        # last delay stage is one register per column, so no strobe drives more than one
        # column's acc_width-bit multiplexer
        strobes, column_strobes = [], []
        for i in range(R):
            s = pe[i][C - 1].last_out
            for stage in range(cfg.multiplier_latency - 1):
                d = Signal(name=f"row{i}_strobe_d{stage}")
                m.d.sync += d.eq(s)
                s = d
            copies = [Signal(name=f"row{i}_strobe_col{j}") for j in range(C)]
            m.d.sync += [c.eq(s) for c in copies]
            column_strobes.append(copies)
            strobes.append(copies[0])

        # strobes are one-hot by construction, so AND-OR multiplexers select the row
        groups = [range(g, min(g + 4, R)) for g in range(0, R, 4)]
        for j in range(C):
            partial = []
            for n, rows in enumerate(groups):
                p = Signal(signed(cfg.acc_width), name=f"col{j}_group{n}")
                m.d.sync += p.eq(_or_all(Mux(column_strobes[i][j], pe[i][j].result, 0) for i in rows))
                partial.append(p)
            m.d.sync += self.out_data[j].eq(_or_all(partial))
        valid_d, row_d = Signal(), Signal.like(self.out_row)
        m.d.sync += [valid_d.eq(_or_all(strobes)),
                     row_d.eq(_or_all(Mux(strobes[i], i, 0) for i in range(R))),
                     self.out_valid.eq(valid_d), self.out_row.eq(row_d)]
        return m


def _or_all(values):
    values = list(values)
    acc = values[0]
    for v in values[1:]:
        acc = acc | v
    return acc
