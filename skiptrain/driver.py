"""Host-side driver of the accelerator, independent of the simulator or board behind it.

A *bus* object supplies three coroutines: ``write(addr, data)``, ``read(addr) -> int`` and
``wait_done()`` (returns when the ``done`` output is high). :class:`Driver` turns them into
memory loads, program loads, runs and readback, following :mod:`skiptrain.hostmap`.
"""

from __future__ import annotations

import numpy as np

from .config import Config
from .hostmap import READBACK_CSRS, Csr, Ctrl, HostMap, Region, Status
from .isa import Command, encode


def lines_digest(lines: dict) -> str:
    """SHA-256 of memory lines ({memory: {line: [values]}} or {memory: [[line, values]]}), the
    same whoever read them (a bench compares a step's hundreds of lines with one string)."""
    import hashlib
    import json

    norm = {}
    for mem in sorted(lines):
        items = lines[mem].items() if isinstance(lines[mem], dict) else lines[mem]
        norm[mem] = sorted([int(w), [int(v) for v in vals]] for w, vals in items)
    return hashlib.sha256(json.dumps(norm, separators=(",", ":")).encode()).hexdigest()


#: the skip registers by their short names (golden Scenario.SKIP_KEYS)
SKIP_CSRS = {"ctrl": Csr.SKIP_CTRL, "conf_tau": Csr.CONF_TAU, "batch_tau": Csr.BATCH_TAU,
             "tcp_bound": Csr.TCP_BOUND,
             "rate": Csr.SKIP_RATE, "seed": Csr.SKIP_SEED}


class Driver:
    def __init__(self, bus, cfg: Config):
        self.bus, self.cfg, self.map = bus, cfg, HostMap(cfg)

    def _width(self, memory: str) -> int:
        return self.cfg.data_width if memory == "spad" else self.cfg.acc_width

    @staticmethod
    def _region(memory: str) -> Region:
        try:
            return {"spad": Region.SPAD, "acc": Region.ACC}[memory]
        except KeyError:
            raise ValueError(f"memory={memory!r}: must be 'spad' or 'acc'") from None

    async def write_line(self, memory: str, index: int, values) -> None:
        await self.bus.write(self.map.addr(self._region(memory), index),
                             HostMap.pack_line(values, self._width(memory)))

    async def read_line(self, memory: str, index: int) -> list[int]:
        word = await self.bus.read(self.map.addr(self._region(memory), index))
        return HostMap.unpack_line(word, self._width(memory), self.cfg.banks)

    async def write_lines(self, memory: str, image: np.ndarray, lines) -> None:
        """Write the given lines of a banks x depth image."""
        for w in lines:
            await self.write_line(memory, int(w), image[:, w])

    async def read_lines(self, memory: str, lines) -> dict[int, list[int]]:
        return {int(w): await self.read_line(memory, int(w)) for w in lines}

    async def load_program(self, commands, at: int = 0) -> None:
        for n, c in enumerate(commands):
            word = encode(c, self.cfg) if isinstance(c, Command) else int(c)
            await self.bus.write(self.map.addr(Region.PROG, at + n), word)

    async def write_csr(self, csr: Csr, value: int) -> None:
        await self.bus.write(self.map.addr(Region.CSR, csr), value)

    async def read_csr(self, csr: int) -> int:
        return await self.bus.read(self.map.addr(Region.CSR, csr))

    async def write_skip(self, regs: dict) -> None:
        """Write the skip registers named in ``regs`` (keys of golden Scenario.SKIP_KEYS:
        ctrl, conf_tau, batch_tau, rate, seed)."""
        for key, value in regs.items():
            if key not in SKIP_CSRS:
                raise ValueError(f"skip register {key!r}: must be one of {', '.join(SKIP_CSRS)}")
            await self.write_csr(SKIP_CSRS[key], int(value))

    async def start(self, start_pc: int = 0, clear: bool = True) -> None:
        await self.write_csr(Csr.START_PC, start_pc)
        await self.write_csr(Csr.CTRL, Ctrl.START | (Ctrl.CLEAR if clear else 0))

    async def status(self) -> dict:
        return Status.decode(await self.read_csr(Csr.STATUS))

    async def counters(self) -> dict:
        """The counters and the KEPT register (hostmap.READBACK_CSRS)."""
        return {name: await self.read_csr(csr) for name, csr in READBACK_CSRS.items()}

    async def run(self, start_pc: int = 0) -> dict:
        """Start, wait for done, and return the status with the counters."""
        await self.start(start_pc)
        await self.bus.wait_done()
        st = await self.status()
        st["counters"] = await self.counters()
        return st
