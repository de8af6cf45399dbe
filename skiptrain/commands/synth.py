"""Placeholder until this command group lands; registers nothing."""


def register(subparsers):
    pass
