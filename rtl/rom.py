"""A read-only table with a registered address and a registered output: the loss unit's exp and log tables."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .banked_memory import dp16kd

IMPLEMENTATIONS = ("inferred", "ecp5")

#: DP16KD in its 18-bit mode: 1024 words; the low 4 address bits are byte enables / unused
_WORDS, _WIDTH, _ADDR_SHIFT = 1024, 18, 4


class Rom(wiring.Component):
    """``table[addr]``, ``latency`` = 2 cycles after ``addr`` (every cycle a new read).

    The table's trailing zeros are not stored past a 1024-word boundary (one DP16KD's depth,
    so "past the stored words" is a test of the top address bits alone): an address past the
    stored words reads 0.

    ``impl="inferred"``: an Amaranth memory with a synchronous read port, and a register. ``impl="ecp5"``: DP16KD block RAMs in 18-bit mode with ``REGMODE="OUTREG"``: the
    address register is the block RAM's own, and the data leaves from its output register
    (0.96 ns clock-to-out rather than 5.6 ns without it, which was the training accelerator's
    critical path). A table deeper than 1024 words is tiled in depth; the piece select, delayed
    with the data, picks among the output registers in the cycle the data is used, a single
    multiplexer level behind a register. Wider than 18 bits, it is tiled across width.

    Members
    -------
    addr : In(addr_width)
    data : Out(width)
    """

    latency = 2

    def __init__(self, table, impl: str = "inferred"):
        table = [int(v) for v in table]
        try:
            if not table:
                raise ValueError("table: must have at least one word")
            if min(table) < 0:
                raise ValueError(f"table: words must be unsigned, got {min(table)}")
            if impl not in IMPLEMENTATIONS:
                raise ValueError(f"impl={impl!r}: must be one of {IMPLEMENTATIONS}")
        except ValueError:
            self._MustUse__silence = True  # refused: never elaborated, nothing to warn about
            raise
        self._addr_width = max(1, (len(table) - 1).bit_length())
        self._width = max(1, max(table).bit_length())
        stored = len(table)
        while stored > 1 and table[stored - 1] == 0:
            stored -= 1
        stored = min(len(table), -(-stored // _WORDS) * _WORDS)
        self._table, self._stored, self._impl = table, stored, impl
        super().__init__({"addr": In(self._addr_width), "data": Out(self._width)})

    @property
    def stored_words(self) -> int:
        return self._stored

    @property
    def dp16kd_count(self) -> int:
        """Block RAMs the ``ecp5`` implementation uses."""
        return -(-self._stored // _WORDS) * -(-self._width // _WIDTH)

    def elaborate(self, platform):
        m = Module()
        addr, stored = self.addr, self._stored
        past = Signal()  # the address is past the stored words: read 0
        if stored < (1 << self._addr_width):
            low = (_WORDS - 1).bit_length() if stored % _WORDS == 0 else 0
            m.d.comb += past.eq(addr[low:] >= stored >> low)
        past_1, past_2 = Signal(name="past_1"), Signal(name="past_2")
        m.d.sync += [past_1.eq(past), past_2.eq(past_1)]
        if self._impl == "inferred":
            m.submodules.table = mem = memory.Memory(shape=unsigned(self._width), depth=stored,
                                                     init=self._table[:stored])
            port = mem.read_port()  # its address register is the block RAM's
            m.d.comb += port.addr.eq(addr)
            word = Signal(self._width)
            m.d.sync += word.eq(port.data)
            m.d.comb += self.data.eq(Mux(past_2, 0, word))
        else:
            self._dp16kd(m, past_2)
        return m

    def _dp16kd(self, m, past_2):
        width, stored = self._width, self._stored
        pieces, across = -(-stored // _WORDS), -(-width // _WIDTH)
        low = (_WORDS - 1).bit_length()
        word_addr = Cat(self.addr, Const(0, low))[:low]
        adb = Cat(Const(0, _ADDR_SHIFT), word_addr)
        piece_words = []
        for piece in range(pieces):
            slices = []
            for s in range(across):
                dob = Signal(_WIDTH, name=f"d{piece}_s{s}_dob")
                init = {f"p_INITVAL_{row:02X}": self._initval(piece, s, row) for row in range(64)}
                # port A unused (no writes); port B reads through its output register
                m.submodules[f"d{piece}_s{s}"] = dp16kd(_WIDTH, adb=adb, dob=dob, init=init)
                slices.append(dob)
            piece_words.append(Cat(*slices)[:width])
        out = piece_words[0]
        if pieces > 1:
            sel = self.addr[low:]
            for stage in range(self.latency):
                d = Signal.like(sel, name=f"sel_d{stage}")
                m.d.sync += d.eq(sel)
                sel = d
            for piece in range(1, pieces):
                out = Mux(sel == piece, piece_words[piece], out)
        m.d.comb += self.data.eq(Mux(past_2, 0, out))

    def _initval(self, piece: int, s: int, row: int) -> Const:
        """INITVAL_<row>: 16 words of 18 bits, each in 20 (as Yosys's own DP16KD mapping)."""
        value = 0
        for i in range(16):
            a = piece * _WORDS + row * 16 + i
            word = self._table[a] if a < self._stored else 0
            value |= ((word >> (s * _WIDTH)) & ((1 << _WIDTH) - 1)) << (i * 20)
        return Const(value, 320)

    def init_words(self, piece: int, s: int) -> list[int]:
        """The 1024 words piece ``piece``, slice ``s`` holds, read back from its INITVAL
        parameters (what tests compare with the table)."""
        words = []
        for row in range(64):
            v = self._initval(piece, s, row).value
            words.extend((v >> (i * 20)) & ((1 << _WIDTH) - 1) for i in range(16))
        return words
