"""The kept-count normaliser's factor: batch / kept as a mantissa and an exponent, once per LOSS."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from skiptrain.config import Config
from skiptrain.numerics import NORM_FRAC, norm_table

from .rom import Rom

__all__ = ["NormFactor"]


class NormFactor(wiring.Component):
    """From the KEPT register and the N of the run's last LOSS: ``m`` = entry KEPT of the
    mantissa table (:func:`skiptrain.numerics.norm_table`, a ROM), ``e`` =
    :func:`~skiptrain.numerics.norm_exponent`, and ``batch_pow2`` (N is a power of two: a
    normalised update needs it, as the batch's 1/N is a shift in the LOSS). ``e`` and
    ``batch_pow2`` follow ``kept``/``batch`` :attr:`exp_latency` cycles later, ``m``
    :attr:`latency` cycles later. Both inputs change only when a LOSS ends or at START, well
    before the sequencer's CHECK of the next command reads ``e`` (FETCH, the program read and
    DECODE come first) and long before a row reaches the writer's normaliser.

    Members
    -------
    kept, batch : In(unsigned(dim_width))
    m : Out(unsigned(17))
    e : Out(range(dim_width + 1))
    batch_pow2 : Out(1)
    """

    #: cycles from kept/batch to e and batch_pow2: the priority encoders, then the difference
    exp_latency = 2

    def __init__(self, cfg: Config):
        self._cfg = cfg
        self._table = norm_table(cfg.max_batch)
        dim = cfg.dim_width
        super().__init__({"kept": In(unsigned(dim)), "batch": In(unsigned(dim)),
                          "m": Out(unsigned(NORM_FRAC + 1)), "e": Out(range(dim + 1)),
                          "batch_pow2": Out(1)})

    @property
    def latency(self) -> int:
        """Cycles from ``kept`` to ``m``: the ROM and a register."""
        return Rom.latency + 1

    def elaborate(self, platform):
        cfg, dim = self._cfg, self._cfg.dim_width
        m = Module()
        # entries past max_batch are never used: such a batch fails its SAMPLES gate first
        m.submodules.table = rom = Rom(self._table, impl=cfg.memory)
        m.d.comb += rom.addr.eq(self.kept[:len(rom.addr)])
        m.d.sync += self.m.eq(rom.data)
        # n = floor(log2 batch) (0 for 0), t = ceil(log2 kept) = the bit length of kept - 1
        # (0 for kept <= 1): priority encoders, registered; then e = n - t where positive
        n_val, t_val = Signal(range(dim + 1)), Signal(range(dim + 1))
        km1 = Signal(dim)
        m.d.comb += km1.eq(self.kept - 1)
        for bit in range(dim):  # later bits win: the highest set bit
            with m.If(self.batch[bit]):
                m.d.comb += n_val.eq(bit)
            with m.If(km1[bit] & (self.kept != 0)):
                m.d.comb += t_val.eq(bit + 1)
        n, t, pow2, none = Signal.like(n_val), Signal.like(t_val), Signal(), Signal()
        m.d.sync += [n.eq(n_val), t.eq(t_val), none.eq(self.kept == 0),
                     pow2.eq((self.batch != 0) & ((self.batch & (self.batch - 1)) == 0))]
        # no kept sample: the update is skipped, and e = 0 so that its CHECK never fails on it
        m.d.sync += [self.e.eq(Mux((n > t) & ~none, n - t, 0)), self.batch_pow2.eq(pow2)]
        return m
