// The raw harness: drives the Verilator model of skiptrain_top through its host bus from plain
// C++, with no cocotb and no VPI, so `skiptrain bench cosim` can set the co-simulation's speed
// beside the simulator's own. Built and run by cocotb_tests/raw.py, which writes the script and
// reads the results back.
//
// Usage: raw_harness SCRIPT RESULTS
//
// SCRIPT, one operation a line (numbers in hex unless said otherwise):
//   latency N          decimal: r_valid comes exactly N rising edges after the one taking r_en
//   x N                decimal: reset for N rising edges (rst = 1, bus idle)
//   w ADDR DATA        one write: w_en high for one cycle
//   r ADDR             one read; RESULTS gets "r ADDR DATA"
//   d BUDGET           decimal: run until done rises, at most BUDGET edges after the latest write;
//                      RESULTS gets "d CYCLES WALL_NS CPU_NS" (edges from that write's edge to
//                      the one after which done is high, the wall and the process CPU time of
//                      that loop) or "t CYCLES"
//
// Timing is the cocotb bench's (cocotb_tests/bus.py): inputs change between a rising edge and
// the next falling one, the model samples them on the rising edge, outputs are read after it.
// A protocol violation (r_valid early or late, done with busy high) ends the run with exit
// code 2 and a message naming the edge.

#include "Vskiptrain_top.h"
#include "verilated.h"

#include <chrono>
#include <ctime>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace {

std::unique_ptr<VerilatedContext> context;
std::unique_ptr<Vskiptrain_top> top;
uint64_t edges = 0;  // rising edges since the start

[[noreturn]] void fail(const std::string& msg) {
    std::fprintf(stderr, "raw_harness: edge %" PRIu64 ": %s\n", edges, msg.c_str());
    std::exit(2);
}

// One clock cycle: a falling edge, then the rising edge that samples the inputs set before.
inline void cycle() {
    top->clk = 0;
    top->eval();
    top->clk = 1;
    top->eval();
    ++edges;
}

// A hex string as 32-bit words, word 0 the lowest (Verilator's order for wide ports).
std::vector<uint32_t> words_of(const std::string& hex) {
    std::vector<uint32_t> out;
    for (size_t end = hex.size(); end > 0;) {
        size_t begin = end >= 8 ? end - 8 : 0;
        out.push_back(static_cast<uint32_t>(std::stoul(hex.substr(begin, end - begin), nullptr, 16)));
        end = begin;
    }
    return out;
}

// Ports up to 64 bits are integers, wider ones VlWide arrays of 32-bit words.
template <typename T>
void set_port(T& port, const std::vector<uint32_t>& w, const char* name) {
    constexpr size_t words = [] {
        if constexpr (VlIsVlWide<T>::value) return T::Words;
        else return (sizeof(T) + 3) / 4;
    }();
    for (size_t i = words; i < w.size(); ++i)
        if (w[i]) fail(std::string("a value wider than the port ") + name);
    if constexpr (VlIsVlWide<T>::value) {
        for (size_t i = 0; i < words; ++i) port[i] = i < w.size() ? w[i] : 0;
    } else {
        uint64_t v = 0;
        for (size_t i = 0; i < w.size() && i < 2; ++i) v |= static_cast<uint64_t>(w[i]) << (32 * i);
        port = static_cast<T>(v);
    }
}

template <typename T>
std::string hex_of(const T& port) {
    std::string out;
    char buf[17];
    if constexpr (VlIsVlWide<T>::value) {
        for (size_t i = T::Words; i-- > 0;) {
            std::snprintf(buf, sizeof buf, "%08" PRIx32, static_cast<uint32_t>(port[i]));
            out += buf;
        }
    } else {
        std::snprintf(buf, sizeof buf, "%016" PRIx64, static_cast<uint64_t>(port));
        out = buf;
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s SCRIPT RESULTS\n", argv[0]);
        return 2;
    }
    std::ifstream script(argv[1]);
    if (!script) fail(std::string("cannot read the script ") + argv[1]);
    std::ofstream results(argv[2]);
    if (!results) fail(std::string("cannot write the results ") + argv[2]);

    context = std::make_unique<VerilatedContext>();
    top = std::make_unique<Vskiptrain_top>(context.get());
    top->rst = 1;
    top->host___05Fw_en = 0;
    top->host___05Fr_en = 0;
    unsigned latency = 0;
    uint64_t last_write = 0;

    std::string line;
    for (unsigned n = 1; std::getline(script, line); ++n) {
        std::istringstream in(line);
        std::string op, a, b;
        in >> op >> a >> b;
        if (op.empty()) continue;
        if (op == "latency") {
            latency = static_cast<unsigned>(std::stoul(a));
        } else if (op == "x") {
            top->rst = 1;
            top->host___05Fw_en = 0;
            top->host___05Fr_en = 0;
            for (unsigned long i = std::stoul(a); i > 0; --i) cycle();
            top->rst = 0;
        } else if (op == "w") {
            set_port(top->host___05Faddr, words_of(a), "host__addr");
            set_port(top->host___05Fw_data, words_of(b), "host__w_data");
            top->host___05Fw_en = 1;
            cycle();
            last_write = edges;
            top->host___05Fw_en = 0;
        } else if (op == "r") {
            if (latency == 0) fail("a read before the 'latency' line");
            set_port(top->host___05Faddr, words_of(a), "host__addr");
            top->host___05Fr_en = 1;
            for (unsigned e = 1; e <= latency; ++e) {
                cycle();
                top->host___05Fr_en = 0;
                if (e < latency && top->host___05Fr_valid)
                    fail("r_valid " + std::to_string(e) + " edge(s) after a read of " + a +
                         ", expected exactly " + std::to_string(latency));
            }
            if (!top->host___05Fr_valid)
                fail("no r_valid " + std::to_string(latency) + " edges after a read of " + a);
            results << "r " << a << " " << hex_of(top->host___05Fr_data) << "\n";
        } else if (op == "d") {
            const uint64_t budget = std::stoull(a);
            const auto t0 = std::chrono::steady_clock::now();
            const std::clock_t c0 = std::clock();
            while (!top->done) {
                if (edges - last_write >= budget) break;
                cycle();
            }
            const auto t1 = std::chrono::steady_clock::now();
            const std::clock_t c1 = std::clock();
            if (!top->done) {
                results << "t " << (edges - last_write) << "\n";
                break;  // a hang: the caller reports it
            }
            if (top->busy) fail("done rose with busy still 1");
            results << "d " << (edges - last_write) << " "
                    << std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()
                    << " " << static_cast<long long>((c1 - c0) * (1e9 / CLOCKS_PER_SEC)) << "\n";
        } else {
            fail("script line " + std::to_string(n) + ": unknown operation '" + op + "'");
        }
    }
    top->final();
    results.flush();
    return results ? 0 : 2;
}
