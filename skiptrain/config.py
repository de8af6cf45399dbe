"""The accelerator config: the one contract read by rtl/, golden/, the benches and fpga/.

A :class:`Config` is frozen and validated on construction; every error names the field, the
value and the rule. It round-trips through JSON (:meth:`Config.to_json`, :meth:`Config.from_json`)
and is written next to generated Verilog, so a netlist always travels with the parameters that
made it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Config", "ConfigError", "PRESETS", "preset", "MULTIPLIERS", "MEMORIES"]

#: Multiplier implementations. ``behavioral`` is plain RTL (simulation, iCE40 inference);
#: ``ecp5`` instantiates MULT18X18D with its input and output registers (Yosys does not pack
#: fabric registers into the DSP, and without them the array clocks at about half speed).
MULTIPLIERS = ("behavioral", "ecp5")

#: Memory implementations. ``inferred`` lets Yosys map the banks (simulation, iCE40); ``ecp5``
#: instantiates DP16KD with its output register, whose clock-to-out is 0.96 ns instead of the
#: 5.8 ns Yosys's own (output-register-less) mapping gives, which alone caps the clock at ~120 MHz.
MEMORIES = ("inferred", "ecp5")

#: Pipeline depth of the multiplier, both implementations: DSP input register, DSP output
#: register, one fabric register after the DSP (the structure that reached 179 MHz on ECP5).
MULTIPLIER_LATENCY = 3


class ConfigError(ValueError):
    """A config field breaks a rule; the message names the field, the value and the rule."""


def _is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def _bits(x: int) -> int:
    """Bits needed to hold the unsigned values 0..x."""
    return max(1, int(x).bit_length())


@dataclass(frozen=True)
class Config:
    """Parameters of one generated accelerator.

    Members
    -------
    rows, cols:
        Systolic array size R x C (PE rows feed on op(A) rows, PE columns on op(B) columns).
    data_width, frac_bits:
        Operand format: signed fixed point, ``data_width`` bits in total, ``frac_bits`` of them
        after the binary point.
    acc_width:
        Accumulator width; wraps modulo 2**acc_width like the RTL. At least
        ``2 * data_width + 8`` so 256 worst-case products cannot overflow.
    spad_depth:
        Words per bank of the operand scratchpad (``banks`` banks of ``data_width`` bits).
    acc_depth:
        Words per bank of the accumulator memory (``banks`` banks of ``acc_width`` bits).
    prog_depth:
        Commands the program memory holds.
    dim_width:
        Bits of the M, K, N fields of a command.
    counter_width:
        Bits of each performance counter.
    max_batch:
        Entries of the kept list (the per-sample skip's sample indices): the largest batch a
        command gated by the kept samples (``Gate.SAMPLES_M``, ``SAMPLES_K``) may name.
    multiplier:
        One of :data:`MULTIPLIERS`; changes the netlist, never the behaviour or the timing.
    memory:
        One of :data:`MEMORIES`; likewise.
    training:
        Build the training hardware: the loss unit (LOSS), the write-back epilogues (RELU,
        MASK, UPDATE), stochastic rounding. Without it the accelerator runs GEMM programs only
        (a LOSS stops with BAD_OPCODE, an epilogue with BAD_EPILOGUE), its writer is 7 cycles
        shorter, and it is small enough for the iCE40 UP5K (preset ``tiny_gemm``).
    kept_norm:
        Build the kept-count normaliser: with SKIP_CTRL bit 7 set, the update of a
        ``Gate.SAMPLES_K`` GEMM is scaled by batch / kept, so the gradient is normalised by the
        kept samples instead of the batch (``rtl/normaliser.py``). It costs two 18x18
        multipliers per bank and makes the result writer 2 cycles longer for every command,
        which is why it is off unless asked for (``configs/default_kept_norm.json``).
    gradient_skip:
        Build the gradient-skip hardware with the training hardware: the confidence
        comparator, the per-sample skip (lane LFSRs, compactor, kept list), the skip controller
        and its LFSR, the skip registers, KEPT and the skip counters. Without it (``False``) the
        accelerator still trains, every sample kept, with the same cycle counts: a gated command
        stops with BAD_GATE, the skip registers, KEPT, STATUS.BATCH_SKIPPED and the skip
        counters read 0 (writes to the registers are ignored). It is there to measure what the
        skip hardware costs in area and clock (``configs/default_no_skip.json``). Without the
        training hardware there is no skip hardware either way (:attr:`has_skip`).
    """

    rows: int = 8
    cols: int = 8
    data_width: int = 16
    frac_bits: int = 8
    acc_width: int = 40
    spad_depth: int = 4096
    acc_depth: int = 2048
    prog_depth: int = 64
    dim_width: int = 16
    counter_width: int = 48
    max_batch: int = 256
    multiplier: str = "behavioral"
    memory: str = "inferred"
    training: bool = True
    kept_norm: bool = False
    gradient_skip: bool = True
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        ints = ("rows", "cols", "data_width", "frac_bits", "acc_width", "spad_depth",
                "acc_depth", "prog_depth", "dim_width", "counter_width", "max_batch")
        for f in ints:
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{f}={v!r}: must be an integer")
        self._check("rows", 1 <= self.rows <= 32, "must be in 1..32")
        self._check("cols", 1 <= self.cols <= 32, "must be in 1..32")
        self._check("data_width", 2 <= self.data_width <= 32, "must be in 2..32")
        self._check("frac_bits", 0 <= self.frac_bits < self.data_width,
                    f"must be in 0..data_width-1 = 0..{self.data_width - 1}")
        self._check("acc_width", 2 * self.data_width + 8 <= self.acc_width <= 64,
                    f"must be in 2*data_width+8..64 = {2 * self.data_width + 8}..64 "
                    "(8 guard bits over a full product; 64 is the golden model's integer width)")
        for f in ("spad_depth", "acc_depth", "prog_depth"):
            v = getattr(self, f)
            self._check(f, _is_pow2(v) and 2 <= v <= 1 << 20, "must be a power of two in 2..2**20")
        self._check("dim_width", 4 <= self.dim_width <= 24, "must be in 4..24")
        self._check("counter_width", 24 <= self.counter_width <= 64, "must be in 24..64")
        self._check("max_batch", _is_pow2(self.max_batch) and self.banks <= self.max_batch <= min(1 << self.dim_width, 4096),
                    f"must be a power of two in banks..min(2**dim_width, 4096) = "
                    f"{self.banks}..{min(1 << self.dim_width, 4096)}")
        self._check("multiplier", self.multiplier in MULTIPLIERS, f"must be one of {MULTIPLIERS}")
        self._check("memory", self.memory in MEMORIES, f"must be one of {MEMORIES}")
        self._check("training", isinstance(self.training, bool), "must be true or false")
        self._check("kept_norm", isinstance(self.kept_norm, bool), "must be true or false")
        self._check("gradient_skip", isinstance(self.gradient_skip, bool), "must be true or false")
        if self.kept_norm:
            self._check("kept_norm", self.training, "needs training=True (it scales the update epilogue)")
            self._check("kept_norm", self.gradient_skip,
                        "needs gradient_skip=True (it normalises by the per-sample skip's kept count)")
            self._check("acc_width", self.acc_width >= 19,
                        "must be at least 19 with kept_norm=True (the normaliser splits the step "
                        "into a 17-bit low part and a signed high part)")
        if self.multiplier == "ecp5":
            self._check("data_width", self.data_width <= 18,
                        "must be at most 18 with multiplier='ecp5' (MULT18X18D is 18x18)")
        # the name is part of folder names (build/synth/NAME_TARGET, the cosim builds)
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name):
            raise ConfigError(f"name={self.name!r}: must be 1-64 letters, digits, '_', '.' or '-', "
                              "starting with a letter or digit (it names output folders)")

    def _check(self, f: str, ok: bool, rule: str):
        if not ok:
            raise ConfigError(f"{f}={getattr(self, f)!r}: {rule}")

    # ---- derived quantities (never stored, so they cannot disagree) -------------------------
    @property
    def banks(self) -> int:
        """Memory banks V: the smallest power of two >= max(rows, cols).

        Matrices are stored skewed across the banks (see :mod:`skiptrain.layout`), so a row or
        a column of up to V elements is read in one cycle whatever the transpose.
        """
        v = 1
        while v < max(self.rows, self.cols):
            v <<= 1
        return max(v, 2)

    @property
    def has_skip(self) -> bool:
        """The gradient-skip hardware is built: ``training`` and ``gradient_skip``."""
        return self.training and self.gradient_skip

    @property
    def bank_bits(self) -> int:
        return (self.banks - 1).bit_length()

    @property
    def spad_addr_width(self) -> int:
        return (self.spad_depth - 1).bit_length()

    @property
    def acc_addr_width(self) -> int:
        return (self.acc_depth - 1).bit_length()

    @property
    def addr_width(self) -> int:
        """Width of the base and leading-dimension fields of a command (fits either memory)."""
        return max(self.spad_addr_width, self.acc_addr_width)

    @property
    def prog_addr_width(self) -> int:
        return (self.prog_depth - 1).bit_length()

    @property
    def shift_width(self) -> int:
        """Width of the requantization shift field (0..acc_width-1 are legal)."""
        return _bits(self.acc_width - 1)

    @property
    def multiplier_latency(self) -> int:
        return MULTIPLIER_LATENCY

    @property
    def max_dim(self) -> int:
        return (1 << self.dim_width) - 1

    @property
    def data_min(self) -> int:
        return -(1 << (self.data_width - 1))

    @property
    def data_max(self) -> int:
        return (1 << (self.data_width - 1)) - 1

    # ---- variants and serialisation -----------------------------------------------------------
    def replace(self, **changes) -> "Config":
        """A new validated config with some fields changed."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown config field(s) {sorted(unknown)}; "
                              f"fields are {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["derived"] = {"banks": self.banks, "multiplier_latency": self.multiplier_latency}
        return d

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """The config a dict of every field gives (as :meth:`to_dict` writes it). A missing
        field is refused rather than defaulted (a file that left out ``rows`` would otherwise
        build another array than it says); ``derived``, if given, must match what the fields
        give (it is computed, never read)."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        derived = d.pop("derived", None)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(d) - set(names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {sorted(unknown)}; fields are {sorted(names)}")
        missing = [n for n in names if n not in d]
        if missing:
            raise ConfigError(f"missing config field(s) {missing}: a config gives every field "
                              "(Config.to_json writes one; start from a file in configs/)")
        cfg = cls(**d)
        if derived is not None:
            want = cfg.to_dict()["derived"]
            if not isinstance(derived, dict) or set(derived) - set(want):
                raise ConfigError(f"derived={derived!r}: must be an object with keys among "
                                  f"{sorted(want)} (computed from the fields; it may be left out)")
            for key, value in derived.items():
                if value != want[key] or type(value) is not type(want[key]):
                    raise ConfigError(f"derived.{key}={value!r}: does not match the fields, which "
                                      f"give {want[key]!r} (derived values are computed; leave "
                                      "'derived' out or correct it)")
        return cfg

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Config":
        """A config from a JSON file's path, or from JSON text. Errors in a file name the file."""
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        if p is None:
            return cls._from_text(str(text_or_path))
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        if not p.is_file():
            kind = "a directory" if p.is_dir() else "not a regular file"
            raise ConfigError(f"config file {str(p)!r} is {kind}: must be a JSON file")
        try:
            text = p.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text ({e.reason} at byte "
                              f"{e.start}): must be a JSON file") from None
        except OSError as e:
            raise ConfigError(f"config file {str(p)!r} cannot be read: {e.strerror}") from None
        try:
            return cls._from_text(text)
        except ConfigError as e:
            raise ConfigError(f"config file {str(p)!r}: {e}") from None

    @classmethod
    def _from_text(cls, text: str) -> "Config":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        return cls.from_dict(d)


#: Named presets. ``tiny`` keeps tests fast; ``tiny_gemm`` (no training hardware) fits the iCE40 UP5K;
#: ``default`` is the 8x8 array.
PRESETS: dict[str, Config] = {
    "tiny": Config(rows=2, cols=2, data_width=8, frac_bits=4, acc_width=24, spad_depth=512,
                   acc_depth=256, prog_depth=16, dim_width=8, counter_width=24, max_batch=32,
                   name="tiny"),
    # the tiny GEMM engine without the training hardware: what fits the iCE40 UP5K
    "tiny_gemm": Config(rows=2, cols=2, data_width=8, frac_bits=4, acc_width=24, spad_depth=512,
                        acc_depth=256, prog_depth=16, dim_width=8, counter_width=24, max_batch=32,
                        training=False, name="tiny_gemm"),
    "small": Config(rows=4, cols=4, spad_depth=1024, acc_depth=256, prog_depth=32, name="small"),
    "default": Config(name="default"),
}


def preset(name: str) -> Config:
    """The preset called ``name``; unknown names raise :class:`ConfigError` listing the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"preset={name!r}: unknown preset; choose one of {sorted(PRESETS)}") from None
