"""A memory of V independent banks with per-bank addresses: the scratchpad and the accumulator memory."""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

#: DP16KD port configurations: (data width, words, low address bits unused in that mode)
_DP16KD_MODES = ((18, 1024, 4), (9, 2048, 3), (4, 4096, 2), (2, 8192, 1), (1, 16384, 0))
IMPLEMENTATIONS = ("inferred", "ecp5")


def read_port_signature(banks: int, addr_width: int, shape) -> wiring.Signature:
    """A read port as seen by the reader: one address per bank, data two cycles later."""
    return wiring.Signature({
        "addr": Out(data.ArrayLayout(unsigned(addr_width), banks)),
        "data": In(data.ArrayLayout(shape, banks)),
    })


def write_port_signature(banks: int, addr_width: int, shape) -> wiring.Signature:
    """A write port as seen by the writer: per-bank address, data and enable."""
    return wiring.Signature({
        "addr": Out(data.ArrayLayout(unsigned(addr_width), banks)),
        "data": Out(data.ArrayLayout(shape, banks)),
        "en": Out(banks),
    })


def dp16kd_plan(width: int, depth: int) -> tuple[int, int, int, int, int]:
    """(primitive width, primitive words, address shift, slices across width, pieces in depth)
    using the fewest DP16KD, then the fewest depth pieces (each costs an output multiplexer)."""
    best = None
    for w, words, shift in _DP16KD_MODES:
        across, pieces = -(-width // w), -(-depth // words)
        key = (across * pieces, pieces)
        if best is None or key < best[0]:
            best = (key, (w, words, shift, across, pieces))
    return best[1]


def dp16kd(width: int, *, adb, dob, we=0, ada=0, dia=0, init: dict | None = None) -> Instance:
    """One DP16KD, both ports ``width`` bits wide: port A writes (``we``, ``ada``, ``dia``), port
    B reads (``adb``) into ``dob`` through its output register (REGMODE_B = OUTREG); ``init``:
    INITVAL_xx parameters. Addresses are the 14 AD bits as the mode wants them."""
    ports = {"i_CLKA": ClockSignal(), "i_CEA": 1, "i_OCEA": 1, "i_RSTA": 0,
             "i_WEA": we, "i_CSA0": 0, "i_CSA1": 0, "i_CSA2": 0,
             "i_CLKB": ClockSignal(), "i_CEB": 1, "i_OCEB": 1, "i_RSTB": 0,
             "i_WEB": 0, "i_CSB0": 0, "i_CSB1": 0, "i_CSB2": 0}
    ada, dia = Value.cast(ada), Value.cast(dia)
    for i in range(14):
        ports[f"i_ADA{i}"] = ada[i] if i < len(ada) else 0
        ports[f"i_ADB{i}"] = adb[i]
    for i in range(18):
        ports[f"i_DIA{i}"] = dia[i] if i < len(dia) else 0
        ports[f"i_DIB{i}"] = 0
        ports[f"o_DOB{i}"] = dob[i]
    return Instance("DP16KD",
                    p_DATA_WIDTH_A=width, p_DATA_WIDTH_B=width,
                    p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
                    p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                    p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                    p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED",
                    **(init or {}), **ports)


class BankedMemory(wiring.Component):
    """``banks`` synchronous memories of ``depth`` words, read and written bank by bank.

    Every bank has its own address on every port, which is what lets a skewed matrix row or
    column (see :mod:`skiptrain.layout`) be read in one cycle. Every pin of the memory array is
    driven by or drives a flip-flop, because block RAMs are spread over the die and the routes
    to them are long: inputs (addresses, write data and enables) are registered here, so a
    write lands ``write_latency`` = 1 cycle after it is presented and read data appears
    ``read_latency`` = 3 cycles after the address (input register, array, output register;
    ECP5 block RAM read without its output register has a 5.8 ns clock-to-out).

    ``impl="inferred"``: Amaranth memories plus one register (Yosys maps them, without using
    the block RAM's own output register). ``impl="ecp5"``: DP16KD instances with
    ``REGMODE="OUTREG"`` (0.96 ns clock-to-out), one copy per read port, port A writing and
    port B reading; tiled across width and depth by :func:`dp16kd_plan`.

    Reads are not transparent: the design never reads and writes one word in the same cycle
    (the sequencer rejects overlapping operands; the host is shut out while it runs).

    Members
    -------
    read : In(read_port_signature).array(read_ports)
    write : In(write_port_signature)
    """

    read_latency = 3
    write_latency = 1

    def __init__(self, banks: int, shape, depth: int, read_ports: int, impl: str = "inferred"):
        for name, v, lo in (("banks", banks, 1), ("depth", depth, 2), ("read_ports", read_ports, 1)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}={v!r}: must be an integer >= {lo}")
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl={impl!r}: must be one of {IMPLEMENTATIONS}")
        self._banks, self._shape, self._depth, self._n_read = banks, Shape.cast(shape), depth, read_ports
        self._impl = impl
        self._aw = max(1, (depth - 1).bit_length())
        super().__init__({
            "read": In(read_port_signature(banks, self._aw, shape)).array(read_ports),
            "write": In(write_port_signature(banks, self._aw, shape)),
        })

    def elaborate(self, platform):
        m = Module()
        # the input registers: what the banks below see
        aw, shape, banks = self._aw, self._shape, self._banks
        self._raddr = [[Signal(aw, name=f"r{p}_addr{b}") for b in range(banks)] for p in range(self._n_read)]
        self._waddr = [Signal(aw, name=f"w_addr{b}") for b in range(banks)]
        self._wdata = [Signal(shape, name=f"w_data{b}") for b in range(banks)]
        self._wen = [Signal(name=f"w_en{b}") for b in range(banks)]
        for b in range(banks):
            m.d.sync += [self._waddr[b].eq(self.write.addr[b]), self._wdata[b].eq(self.write.data[b]),
                         self._wen[b].eq(self.write.en[b])]
            for p in range(self._n_read):
                m.d.sync += self._raddr[p][b].eq(self.read[p].addr[b])
        for b in range(banks):
            if self._impl == "inferred":
                self._inferred_bank(m, b)
            else:
                self._dp16kd_bank(m, b)
        return m

    def _inferred_bank(self, m, b):
        m.submodules[f"bank{b}"] = mem = memory.Memory(shape=self._shape, depth=self._depth, init=[])
        for p in range(self._n_read):
            rp = mem.read_port()
            m.d.comb += rp.addr.eq(self._raddr[p][b])
            m.d.sync += self.read[p].data[b].eq(rp.data)
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(self._waddr[b]), wp.data.eq(self._wdata[b]), wp.en.eq(self._wen[b])]

    def _dp16kd_bank(self, m, b):
        width = self._shape.width
        w, words, shift, across, pieces = dp16kd_plan(width, self._depth)
        low = (words - 1).bit_length()  # address bits inside one primitive
        wdata = Value.cast(self._wdata[b])
        waddr, wen = self._waddr[b], self._wen[b]

        def address(addr, byte_enables):
            bits = [Const(0, 1)] * shift
            if w == 18:  # in 18-bit mode AD0/AD1 are the byte enables
                bits[0] = bits[1] = Const(int(byte_enables), 1)
            word = Cat(addr, Const(0, low))[:low]  # zero-extended when the bank is shallower
            return Cat(*bits, word, Const(0, 14 - shift - low))

        for p in range(self._n_read):
            raddr = self._raddr[p][b]
            piece_data = []
            for piece in range(pieces):
                slices = []
                for s in range(across):
                    dob = Signal(18, name=f"bank{b}_r{p}_d{piece}_s{s}_dob")
                    hit = (waddr[low:] == piece) if pieces > 1 else Const(1, 1)
                    din = wdata[s * w:min((s + 1) * w, width)]
                    m.submodules[f"bank{b}_r{p}_d{piece}_s{s}"] = dp16kd(
                        w, we=wen & hit, ada=address(waddr, True), dia=din,
                        adb=address(raddr, False), dob=dob)
                    slices.append(dob[:w])
                piece_data.append(Cat(*slices)[:width])
            if pieces == 1:
                m.d.comb += self.read[p].data[b].eq(piece_data[0])
            else:
                # the piece select waits for the data: the array's address register and its
                # output register
                sel = raddr[low:]
                for stage in range(self.read_latency - 1):
                    d = Signal.like(sel, name=f"bank{b}_r{p}_sel_d{stage}")
                    m.d.sync += d.eq(sel)
                    sel = d
                out = piece_data[0]
                for piece in range(1, pieces):
                    out = Mux(sel == piece, piece_data[piece], out)
                m.d.comb += self.read[p].data[b].eq(out)
