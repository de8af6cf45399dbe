"""Parts of the accelerator on their own, for ``skiptrain synth --top fpga.units:NAME``.

Each factory takes the Config (with the target's multiplier and memory) and returns the unit
the accelerator instantiates, so the skip hardware's area can be read off without the rest:

    skiptrain synth --preset default --target ecp5 --seeds 0 --top fpga.units:loss_unit ...
    skiptrain synth --preset default --target ecp5 --seeds 0 --top fpga.units:loss_unit_without_comparator ...
    skiptrain synth --preset default --target ecp5 --seeds 0 --top fpga.units:skip_controller ...
    skiptrain synth --preset default --target ecp5 --seeds 0 --top fpga.units:result_writer ...
    skiptrain synth --config configs/default_kept_norm.json --target ecp5 --seeds 0 --top fpga.units:normaliser ...

The comparator's area is the difference of the first two; the result writer (with its
requantizer and epilogues) is there for its path estimate (``python -m fpga.paths``). Out of
context, the units' ports are the design's ports, so nothing is optimised away across them.

The skip hardware as a whole (comparator, per-sample skip, kept list, skip controller,
registers and counters, wherever they sit) is the difference between the default accelerator
and the same accelerator built without it, in cells and in clock:

    skiptrain synth --config configs/default_no_skip.json --target ecp5 --seeds 3 ...
"""

from rtl.loss_unit import LossUnit
from rtl.normaliser import Normaliser
from rtl.result_writer import ResultWriter
from rtl.skip_controller import SkipController
from skiptrain.config import Config


def _no_dsps(unit):
    unit.synthesis_expected_dsps = 0  # no multipliers: the flow's DSP check expects none
    return unit


def loss_unit(cfg: Config) -> LossUnit:
    """The loss unit with its confidence comparator, as in the accelerator."""
    return _no_dsps(LossUnit(cfg))


def loss_unit_without_comparator(cfg: Config) -> LossUnit:
    """The loss unit alone: the comparator left out (its outputs stay 0)."""
    return _no_dsps(LossUnit(cfg, comparator=False))


def skip_controller(cfg: Config) -> SkipController:
    """The mini-batch skip controller with its LFSR."""
    return _no_dsps(SkipController(cfg))


def normaliser(cfg: Config) -> Normaliser:
    """The writer's kept-count normaliser, one lane per bank (needs ``kept_norm``): two
    multipliers a lane."""
    unit = Normaliser(cfg, cfg.banks)
    unit.synthesis_expected_dsps = 2 * cfg.banks
    return unit


def result_writer(cfg: Config) -> ResultWriter:
    """The result writer: requantizer, epilogues (E1's UPDATE sum, the clamp, the copies)
    and its lane-to-bank rotation; multipliers only in the normaliser (``kept_norm``)."""
    unit = ResultWriter(cfg)
    unit.synthesis_expected_dsps = 2 * cfg.banks if cfg.kept_norm else 0
    return unit
