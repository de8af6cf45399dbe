"""Command groups of the ``skiptrain`` command line; each module has ``register(subparsers)``."""
