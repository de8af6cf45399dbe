"""The ``skiptrain`` command line.

Each command group lives in its own module under :mod:`skiptrain.commands` and exposes
``register(subparsers)``; heavy imports (torch, amaranth, cocotb) happen inside the command so
``skiptrain --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import ConfigError

#: command modules, in the order their commands appear in --help
COMMAND_MODULES = ["flow", "hardware", "synth", "train"]


class CliError(Exception):
    """A bad argument or input file; printed as ``skiptrain: error: ...`` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skiptrain",
        description="Generate, co-simulate, synthesize and train with a gradient-skipping "
                    "DNN training accelerator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"skiptrain.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except (CliError, ConfigError) as e:
        parser.exit(2, f"skiptrain: error: {e}\n")
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
