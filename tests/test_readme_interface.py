"""The README's host-interface tables against the code they describe (fast tier).

Benches that see only the README drive the accelerator from these tables: the command bit
layout, the CSR map, the ID values and the port widths per preset. Each table is parsed
from README.md and compared with skiptrain.isa / skiptrain.hostmap, so neither can change
without the other.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skiptrain.config import preset
from skiptrain.hostmap import Csr, HostMap
from skiptrain.isa import command_fields, command_width

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _table(header_start: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header line starts with ``header_start``."""
    lines = README.splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith(header_start)]
    assert len(starts) == 1, f"README: {len(starts)} tables start with {header_start!r}, expected 1"
    rows = []
    for line in lines[starts[0] + 2:]:
        if not line.startswith("|"):
            break
        # a cell may hold an escaped pipe (\|)
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(cells)
    assert rows, f"README: the table at {header_start!r} has no rows"
    return rows


def _bits(cell: str) -> tuple[int, int]:
    lo, _, hi = cell.partition("..")
    return int(lo), int(hi or lo)


def test_command_layout_table_is_isa_layout():
    rows = _table("| field | width | bits on tiny | bits on default |")
    names = [r[0].strip("`") for r in rows]
    for col, name in ((2, "tiny"), (3, "default")):
        cfg = preset(name)
        assert names == [f for f, _ in command_fields(cfg)], f"{name}: README fields {names}"
        pos = 0
        for row, (field, width) in zip(rows, command_fields(cfg)):
            got = _bits(row[col])
            assert got == (pos, pos + width - 1), \
                f"{name} field {field}: README bits {got}, isa {(pos, pos + width - 1)}"
            symbolic = {"shift_width": cfg.shift_width, "dim_width": cfg.dim_width,
                        "addr_width": cfg.addr_width}
            assert symbolic.get(row[1], None) == width or row[1] == str(width), \
                f"{name} field {field}: README width {row[1]!r}, isa {width}"
            pos += width
        assert pos == command_width(cfg)
    assert "The command is 103 bits on tiny and 149 on default." in README.replace("\n", " ")
    assert (command_width(preset("tiny")), command_width(preset("default"))) == (103, 149)


def test_csr_table_is_hostmap():
    rows = _table("| index | name | |")
    seen = {}
    for index, names, _ in rows:
        first, _, last = index.partition("..")
        plain = [n.strip() for n in re.sub(r"\(.*?\)", "", names).split(",")]
        if last:  # a run: one name per index (CYCLES..BUBBLES) or one name with a suffix list
            count = int(last) - int(first) + 1
            if len(plain) == 1:
                seen[plain[0]] = int(first)
            else:
                assert len(plain) == count, f"README CSR row {index}: {names}"
                seen.update({n: int(first) + i for i, n in enumerate(plain)})
        elif "," in index:
            for i, n in zip(index.split(","), plain):
                seen[n] = int(i)
        else:
            seen[plain[0]] = int(first)
    assert seen == {c.name: int(c) for c in Csr}, f"README CSRs {seen}"


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_port_widths_and_id_table(name):
    cfg, hm = preset(name), HostMap(preset(name))
    row = next(r for r in _table("| preset | V | index_width |") if r[0] == name)
    V, index_width, addr, bus, spad_line, acc_line, command = row[1:]
    assert int(V) == cfg.banks and int(index_width) == hm.index_width
    assert addr == f"{hm.addr_width} bits" and bus == f"{hm.data_width} bits"
    assert spad_line == f"{cfg.banks} x {cfg.data_width} bits"
    assert acc_line == f"{cfg.banks} x {cfg.acc_width} bits"
    assert command == f"{command_width(cfg)} bits"
    assert f"{name} {hm.id_value():#018x}" in README, f"README: no ID {hm.id_value():#018x} for {name}"
