#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite, every tier:
# fast Python and Amaranth-simulator tests, cocotb co-simulation (Icarus, Verilator),
# synthesis (Yosys/nextpnr), training. Extra arguments go to pytest (e.g. -m "not synth").
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit $rc
