// The Verilator main of the cocotb bench (cocotb_tests/runner.py builds it in place of
// cocotb's own): it toggles the toplevel's clock itself, every SKIPTRAIN_HALF_PERIOD time
// units (the simulation precision), and between the bench's timer deadlines runs the clock
// edges in a tight loop: toggle, evaluate, and dispatch value callbacks only if the bench has
// any (an awaited clock edge). At a deadline, or after a callback, the time step runs the whole
// VPI sequence (timed callbacks, evaluation until settled, ReadWrite, ReadOnly), as cocotb's
// main does for every time step. A clock made by a Verilog delay instead needs --timing and
// that whole sequence on every half cycle: the cocotb bench ran at 83 % of a plain C++
// harness that way (README, "Co-simulation speed").

#include <cstdint>
#include <cstring>
#include <memory>

#include "Vtop.h"
#include "verilated.h"
#include "verilated_vpi.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

#ifndef SKIPTRAIN_HALF_PERIOD
#error "SKIPTRAIN_HALF_PERIOD (half the clock period, in time precision units) must be defined"
#endif

static uint64_t main_time = 0;

double sc_time_stamp() { return static_cast<double>(main_time); }

extern "C" void vlog_startup_routines_bootstrap(void);

namespace {

constexpr uint64_t kHalf = SKIPTRAIN_HALF_PERIOD;
constexpr uint64_t kNever = ~static_cast<uint64_t>(0);

#if VM_TRACE
VerilatedVcdC *trace = nullptr;  // --trace: every time step into dump.vcd (waves=True builds)
#endif

void dump() {
#if VM_TRACE
    if (trace) trace->dump(main_time);
#endif
}

// value-change callbacks can write signals that trigger others: call them until quiet
bool value_callbacks() {
    bool any = VerilatedVpi::callValueCbs();
    if (any) {
        while (VerilatedVpi::callValueCbs()) {
        }
    }
    return any;
}

// the rest of a time step once its inputs (and the clock) are set: evaluate until nothing
// is pending, ReadWrite callbacks, the end of the step, ReadOnly callbacks
void settle_step(Vtop &top) {
    do {
        do {
            top.eval_step();
            VerilatedVpi::clearEvalNeeded();
            VerilatedVpi::doInertialPuts();
            value_callbacks();
        } while (VerilatedVpi::evalNeeded());
        VerilatedVpi::callCbs(cbReadWriteSynch);
        VerilatedVpi::doInertialPuts();
        value_callbacks();
    } while (VerilatedVpi::evalNeeded());
    top.eval_end_step();
    VerilatedVpi::callCbs(cbReadOnlySynch);
    dump();
}

}  // namespace

int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    std::unique_ptr<Vtop> top(new Vtop(""));
    Verilated::fatalOnVpiError(false);

#if VM_TRACE
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--trace") == 0) {
            Verilated::traceEverOn(true);
            trace = new VerilatedVcdC;
            top->trace(trace, 99);
            trace->open("dump.vcd");
        }
    }
#endif
    top->clk = 0;
    uint64_t next_edge = kHalf;  // rising edges at kHalf, 3 kHalf, ...: as `always #half`

    vlog_startup_routines_bootstrap();
    VerilatedVpi::callCbs(cbStartOfSimulation);
    value_callbacks();
    settle_step(*top);

    while (!Verilated::gotFinish()) {
        const uint64_t deadline = VerilatedVpi::cbNextDeadline();
        // edges strictly before the bench's next timer: nothing of the bench runs there
        // unless it awaits an edge (a value callback), which ends the fast loop; with no timer
        // (kNever) only such a callback or the bench finishing ends it
        bool woke = false;
        while (next_edge < deadline && !Verilated::gotFinish()) {
            main_time = next_edge;
            next_edge += kHalf;
            top->clk = !top->clk;
            top->eval_step();
            if (value_callbacks()) {
                woke = true;
                break;
            }
            top->eval_end_step();
            dump();
        }
        if (Verilated::gotFinish()) break;
        if (woke) {
            // the bench ran at this edge: finish the time step with every callback
            VerilatedVpi::doInertialPuts();
            settle_step(*top);
            continue;
        }
        // a timer is due (at a clock edge or between two): the timed callbacks come first in
        // the step, before the edge is evaluated, as with the clock made by a Verilog delay
        main_time = deadline;
        VerilatedVpi::callCbs(cbNextSimTime);
        value_callbacks();
        VerilatedVpi::callTimedCbs();
        value_callbacks();
        if (next_edge == deadline) {
            next_edge += kHalf;
            top->clk = !top->clk;
        }
        settle_step(*top);
    }

    top->final();
    VerilatedVpi::callCbs(cbEndOfSimulation);
#if VM_TRACE
    if (trace) trace->close();
#endif
    return Verilated::threadContextp()->errorCount() > 0 ? 1 : 0;
}
