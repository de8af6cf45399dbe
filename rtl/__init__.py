"""Amaranth RTL of the skiptrain accelerator. Every component takes a :class:`skiptrain.config.Config`."""
