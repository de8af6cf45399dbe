"""rtl/banked_memory.py: the DP16KD netlist against the inferred one, cycle by cycle, under Icarus.

Yosys ships DP16KD only as a black box (share/ecp5/cells_sim.v declares its parameters and
nothing else), so :data:`DP16KD_MODEL` below models the cell for the configurations
BankedMemory produces: both ports the same width (18, 9, 4, 2 or 1 bits), port A writing,
port B reading, REGMODE_B = OUTREG, chip selects tied off; it stops the simulation on anything
else. It follows the Lattice sysMEM usage guide (FPGA-TN-02204): the word address sits in
AD[13:s] with s = 4, 3, 2, 1, 0 for those widths, AD1:AD0 are byte enables in 18-bit mode, and
OUTREG adds a register after the read register; INITVAL_00..3F preload 18-bit mode
(16 words of 18 bits in 20 each, Yosys's own DP16KD mapping). What the test proves is that the instances are
wired right (address bits, data slices, the depth multiplexer and its delay) under that reading.
"""

import random
import shutil
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.banked_memory import BankedMemory, dp16kd_plan

DP16KD_MODEL = """
module DP16KD(DIA0, DIA1, DIA2, DIA3, DIA4, DIA5, DIA6, DIA7, DIA8, DIA9, DIA10, DIA11, DIA12,
  DIA13, DIA14, DIA15, DIA16, DIA17, ADA0, ADA1, ADA2, ADA3, ADA4, ADA5, ADA6, ADA7, ADA8, ADA9,
  ADA10, ADA11, ADA12, ADA13, CEA, OCEA, CLKA, WEA, RSTA, CSA0, CSA1, CSA2, DOA0, DOA1, DOA2,
  DOA3, DOA4, DOA5, DOA6, DOA7, DOA8, DOA9, DOA10, DOA11, DOA12, DOA13, DOA14, DOA15, DOA16,
  DOA17, DIB0, DIB1, DIB2, DIB3, DIB4, DIB5, DIB6, DIB7, DIB8, DIB9, DIB10, DIB11, DIB12, DIB13,
  DIB14, DIB15, DIB16, DIB17, ADB0, ADB1, ADB2, ADB3, ADB4, ADB5, ADB6, ADB7, ADB8, ADB9, ADB10,
  ADB11, ADB12, ADB13, CEB, OCEB, CLKB, WEB, RSTB, CSB0, CSB1, CSB2, DOB0, DOB1, DOB2, DOB3, DOB4,
  DOB5, DOB6, DOB7, DOB8, DOB9, DOB10, DOB11, DOB12, DOB13, DOB14, DOB15, DOB16, DOB17);
  parameter DATA_WIDTH_A = 18;
  parameter DATA_WIDTH_B = 18;
  parameter REGMODE_A = "NOREG";
  parameter REGMODE_B = "NOREG";
  parameter RESETMODE = "SYNC";
  parameter ASYNC_RESET_RELEASE = "SYNC";
  parameter CSDECODE_A = "0b000";
  parameter CSDECODE_B = "0b000";
  parameter WRITEMODE_A = "NORMAL";
  parameter WRITEMODE_B = "NORMAL";
  parameter GSR = "ENABLED";
  @INITVAL_PARAMS@
  input DIA0, DIA1, DIA2, DIA3, DIA4, DIA5, DIA6, DIA7, DIA8, DIA9, DIA10, DIA11, DIA12, DIA13,
    DIA14, DIA15, DIA16, DIA17, ADA0, ADA1, ADA2, ADA3, ADA4, ADA5, ADA6, ADA7, ADA8, ADA9, ADA10,
    ADA11, ADA12, ADA13, CEA, OCEA, CLKA, WEA, RSTA, CSA0, CSA1, CSA2, DIB0, DIB1, DIB2, DIB3,
    DIB4, DIB5, DIB6, DIB7, DIB8, DIB9, DIB10, DIB11, DIB12, DIB13, DIB14, DIB15, DIB16, DIB17,
    ADB0, ADB1, ADB2, ADB3, ADB4, ADB5, ADB6, ADB7, ADB8, ADB9, ADB10, ADB11, ADB12, ADB13, CEB,
    OCEB, CLKB, WEB, RSTB, CSB0, CSB1, CSB2;
  output DOA0, DOA1, DOA2, DOA3, DOA4, DOA5, DOA6, DOA7, DOA8, DOA9, DOA10, DOA11, DOA12, DOA13,
    DOA14, DOA15, DOA16, DOA17, DOB0, DOB1, DOB2, DOB3, DOB4, DOB5, DOB6, DOB7, DOB8, DOB9, DOB10,
    DOB11, DOB12, DOB13, DOB14, DOB15, DOB16, DOB17;
  localparam W = DATA_WIDTH_A;
  localparam S = W == 18 ? 4 : W == 9 ? 3 : W == 4 ? 2 : W == 2 ? 1 : 0;
  localparam DEPTH = 16384 >> S;
  wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
  wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
  wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
  reg [17:0] mem [0:16383];
  reg [17:0] rd_q, out_q;
  integer i;
  initial begin
    for (i = 0; i < 16384; i = i + 1) mem[i] = 0;
    // INITVAL_rr: 16 words of 18 bits in 20 each (18-bit mode: word rr*16 + i)
    @INITVAL_LOAD@
    rd_q = 0; out_q = 0;
    if (DATA_WIDTH_B != W || (W != 18 && W != 9 && W != 4 && W != 2 && W != 1)) begin
      $display("MODEL-ERROR widths %0d/%0d not modelled", DATA_WIDTH_A, DATA_WIDTH_B); $finish; end
    if (REGMODE_A != "NOREG" || (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG") || CSDECODE_A != "0b000"
        || CSDECODE_B != "0b000" || RESETMODE != "SYNC") begin
      $display("MODEL-ERROR configuration not modelled"); $finish; end
  end
  always @(posedge CLKA) begin
    if ({CSA2, CSA1, CSA0} !== 3'b000 || RSTA !== 1'b0) begin $display("MODEL-ERROR port A controls"); $finish; end
    if (W == 18 && WEA && {ADA1, ADA0} !== 2'b11) begin $display("MODEL-ERROR partial byte write"); $finish; end
    if (CEA && WEA) mem[ada[13:S]] <= dia & ((1 << W) - 1);
  end
  always @(posedge CLKB) begin
    if ({CSB2, CSB1, CSB0} !== 3'b000 || RSTB !== 1'b0 || WEB !== 1'b0) begin $display("MODEL-ERROR port B controls"); $finish; end
    if (CEB) rd_q <= mem[adb[13:S]];
    if (OCEB) out_q <= rd_q;
  end
  wire [17:0] dob = REGMODE_B == "OUTREG" ? out_q : rd_q;
  assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = dob;
  assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = 18'b0;
endmodule
"""
DP16KD_MODEL = DP16KD_MODEL.replace("@INITVAL_PARAMS@", "\n  ".join(
    f"parameter [319:0] INITVAL_{r:02X} = 320'h0;" for r in range(64))).replace(
    "@INITVAL_LOAD@", "\n    ".join(
        f"for (i = 0; i < 16; i = i + 1) mem[{r * 16} + i] = INITVAL_{r:02X} >> (20 * i);"
        for r in range(64)))


class _Pair(wiring.Component):
    """Both implementations with shared inputs; ``same`` is 1 while every read port agrees."""

    def __init__(self, banks, width, depth, ports):
        self.args = (banks, signed(width), depth, ports)
        aw = (depth - 1).bit_length()
        super().__init__({"raddr": In(unsigned(aw * banks * ports)), "waddr": In(unsigned(aw * banks)),
                          "wdata": In(unsigned(width * banks)), "wen": In(banks), "same": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inf = inf = BankedMemory(*self.args, impl="inferred")
        m.submodules.ecp = ecp = BankedMemory(*self.args, impl="ecp5")
        for mem in (inf, ecp):
            m.d.comb += [mem.write.addr.as_value().eq(self.waddr), mem.write.data.as_value().eq(self.wdata),
                         mem.write.en.eq(self.wen)]
            for p in range(self.args[3]):
                n = len(mem.read[p].addr.as_value())
                m.d.comb += mem.read[p].addr.as_value().eq(self.raddr[p * n:(p + 1) * n])
        m.d.comb += self.same.eq(_all_equal(inf, ecp, self.args[3]))
        return m


def _all_equal(a, b, ports):
    ok = 1
    for p in range(ports):
        ok = ok & (a.read[p].data.as_value() == b.read[p].data.as_value())
    return ok


TB = """
module tb;
  reg clk = 0, rst = 1;
  reg [{RA}-1:0] raddr = 0; reg [{WA}-1:0] waddr = 0; reg [{WD}-1:0] wdata = 0; reg [{B}-1:0] wen = 0;
  wire same;
  top dut(.clk(clk), .rst(rst), .raddr(raddr), .waddr(waddr), .wdata(wdata), .wen(wen), .same(same));
  integer cycle, errors = 0, k;
  always #5 clk = ~clk;
  initial begin
    @(negedge clk); rst = 0;
    for (cycle = 0; cycle < {N}; cycle = cycle + 1) begin
      // a small address window, so reads hit written words often
      for (k = 0; k < {RA}; k = k + 1) raddr[k] = $random({SEED});
      for (k = 0; k < {WA}; k = k + 1) waddr[k] = $random({SEED});
      for (k = 0; k < {WD}; k = k + 1) wdata[k] = $random({SEED});
      wen = $random({SEED});
      @(negedge clk);
      if (same !== 1'b1) begin errors = errors + 1;
        if (errors < 5) $display("MISMATCH at cycle %0d", cycle); end
    end
    $display("DONE errors=%0d", errors);
    $finish;
  end
endmodule
"""


@pytest.mark.parametrize("banks,width,depth,ports", [
    (2, 16, 512, 2),    # 18-bit mode, one primitive per copy
    (4, 40, 256, 1),    # three 18-bit slices across the width
    (2, 16, 4096, 2),   # 4-bit mode: four slices
    (2, 5, 32768, 1),   # two pieces in depth: the output multiplexer and its delayed select
])
def test_dp16kd_netlist_matches_inferred(tmp_path, banks, width, depth, ports):
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        pytest.fail("Icarus Verilog (iverilog) is not installed; run scripts/setup.sh")
    dut = _Pair(banks, width, depth, ports)
    (tmp_path / "top.v").write_text(verilog.convert(dut, name="top", emit_src=False))
    (tmp_path / "dp16kd.v").write_text(DP16KD_MODEL)
    aw = (depth - 1).bit_length()
    seed = "seed"
    tb = TB.format(RA=aw * banks * ports, WA=aw * banks, WD=width * banks, B=banks, N=3000, SEED=seed)
    tb = tb.replace("module tb;", f"module tb;\n  integer seed = {random.Random(depth).randint(1, 1 << 30)};")
    (tmp_path / "tb.v").write_text(tb)
    b = subprocess.run([iverilog, "-g2005", "-o", "sim.vvp", "-s", "tb", "tb.v", "top.v", "dp16kd.v"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert b.returncode == 0, b.stderr
    r = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "MODEL-ERROR" not in r.stdout, r.stdout
    assert "DONE errors=0" in r.stdout, f"{dp16kd_plan(width, depth)}:\n{r.stdout[-2000:]}"
