"""rtl/rom.py: the inferred table against the table itself (Amaranth simulator), and the DP16KD
netlist against the inferred one, cycle by cycle, under Icarus (with test_banked_memory's model
of the cell, which preloads INITVAL)."""

import random
import shutil
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from test_banked_memory import DP16KD_MODEL

from rtl.rom import Rom
from skiptrain import numerics

EXP = numerics.exp_table(8)
LOG = numerics.log_table(8)


def _unelaborated(rom: Rom) -> Rom:
    rom._MustUse__silence = True  # only its plan is looked at here
    return rom


def test_rom_checks_its_parameters():
    with pytest.raises(ValueError, match="impl='xilinx'"):
        Rom([1, 2], impl="xilinx")
    with pytest.raises(ValueError, match="unsigned"):
        Rom([1, -2])
    with pytest.raises(ValueError, match="at least one word"):
        Rom([])


def test_rom_stores_up_to_the_last_nonzero_block():
    # exp(-d) rounds to 0 from d = 11.78 on: the 4096-word exp table keeps 3 blocks of 1024
    rom = _unelaborated(Rom(EXP, "ecp5"))
    last = max(i for i, v in enumerate(EXP) if v)
    assert rom.stored_words == -(-(last + 1) // 1024) * 1024 == 3072
    assert rom.dp16kd_count == 3
    assert _unelaborated(Rom(LOG, "ecp5")).dp16kd_count == 3  # 2304 words of 11 bits: 3 deep
    words = rom.init_words(2, 0)
    assert words[:last + 1 - 2048] == list(EXP[2048:last + 1])


@pytest.mark.parametrize("table", [EXP, LOG], ids=["exp", "log"])
def test_inferred_rom_reads_the_table_two_cycles_later(table):
    rom = Rom(table)
    rng = random.Random(7)
    addrs = [0, 1, len(table) - 1, rom.stored_words - 1] + [rng.randrange(len(table)) for _ in range(300)]
    if rom.stored_words < len(table):
        addrs += [rom.stored_words, len(table) - 1]
    got = []

    async def bench(ctx):
        for a in addrs + [0, 0]:
            ctx.set(rom.addr, a)
            await ctx.tick()
            got.append(ctx.get(rom.data))

    sim = Simulator(rom)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # the value sampled after tick k belongs to the address set before tick k - 1
    for k, a in enumerate(addrs):
        assert got[k + 1] == table[a], f"read {k} (addr {a}): got {got[k + 1]}, expected {table[a]}"


class _Pair(wiring.Component):
    """Both implementations on one address; ``same`` is 1 while they agree."""

    def __init__(self, table):
        self.table = table
        self.aw = (len(table) - 1).bit_length()
        super().__init__({"addr": In(self.aw), "same": Out(1), "data": Out(max(table).bit_length())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inf = inf = Rom(self.table, "inferred")
        m.submodules.ecp = ecp = Rom(self.table, "ecp5")
        m.d.comb += [inf.addr.eq(self.addr), ecp.addr.eq(self.addr),
                     self.same.eq(inf.data == ecp.data), self.data.eq(inf.data)]
        return m


TB = """
module tb;
  reg clk = 0, rst = 1;
  reg [{AW}-1:0] addr = 0;
  wire same;
  wire [{DW}-1:0] data;
  top dut(.clk(clk), .rst(rst), .addr(addr), .same(same), .data(data));
  integer cycle, errors = 0, nonzero = 0, seed = {SEED};
  always #5 clk = ~clk;
  initial begin
    @(negedge clk); rst = 0;
    for (cycle = 0; cycle < {N}; cycle = cycle + 1) begin
      addr = cycle < {DEPTH} ? cycle : $random(seed);
      @(negedge clk);
      if (data != 0) nonzero = nonzero + 1;
      if (same !== 1'b1) begin errors = errors + 1;
        if (errors < 5) $display("MISMATCH at cycle %0d", cycle); end
    end
    $display("DONE errors=%0d nonzero=%0d", errors, nonzero);
    $finish;
  end
endmodule
"""


@pytest.mark.parametrize("table", [EXP, LOG], ids=["exp", "log"])
def test_dp16kd_rom_matches_inferred(tmp_path, table):
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        pytest.fail("Icarus Verilog (iverilog) is not installed; run scripts/setup.sh")
    dut = _Pair(table)
    (tmp_path / "top.v").write_text(verilog.convert(dut, name="top", emit_src=False))
    (tmp_path / "dp16kd.v").write_text(DP16KD_MODEL)
    n = 1 << dut.aw
    (tmp_path / "tb.v").write_text(TB.format(AW=dut.aw, DW=len(dut.data), SEED=11, N=n + 2000, DEPTH=n))
    b = subprocess.run([iverilog, "-g2005", "-o", "sim.vvp", "-s", "tb", "tb.v", "top.v", "dp16kd.v"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert b.returncode == 0, b.stderr
    r = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "MODEL-ERROR" not in r.stdout, r.stdout
    assert "DONE errors=0" in r.stdout, r.stdout[-2000:]
    # every address was read: most words are non-zero, so a netlist of zeros cannot pass
    nonzero = int(r.stdout.split("nonzero=")[1].split()[0])
    assert nonzero > sum(1 for v in table if v) // 2, r.stdout[-500:]
