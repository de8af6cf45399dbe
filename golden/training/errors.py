"""The training library's parameter errors: the parameter, its value and the rule, apart.

:class:`OptionError` is a ValueError whose text is the library's own (``lr must be a number >
0, got -1``), and which keeps the parameter's name, the value and the rule separately, so a
front end names the parameter its own way: ``skiptrain train`` says ``--lr=-1.0: must be a
number > 0``. A rule may name other parameters as ``{name}`` (``less than {epochs}``): the
library writes the name, the front end its spelling of it.
"""

from __future__ import annotations

import math

__all__ = ["OptionError", "number_rule"]


class _Names(dict):
    def __init__(self, namer):
        super().__init__()
        self.namer = namer

    def __missing__(self, key):
        return self.namer(key)


class OptionError(ValueError):
    """ValueError of one parameter.

    Members
    -------
    name:
        The parameter (``batch_size``; a policy option by its option name, ``batch_tau``).
    value:
        The value given.
    rule:
        What the value must be, after "must be" (may name parameters as ``{name}``).
    where:
        Context, e.g. ``policy conf_sample`` (None: none).
    index:
        The entry of a list value that breaks the rule (None: the value itself).
    text:
        The library's message, where it is not ``[where: ]name must be rule, got value``.
    """

    def __init__(self, name: str, value, rule: str, *, where: str | None = None,
                 index: int | None = None, text: str | None = None):
        self.name, self.value, self.rule = name, value, rule
        self.where, self.index, self.text = where, index, text
        super().__init__(self.message())

    def rule_text(self, namer=None) -> str:
        """The rule with the parameters it names spelled by ``namer`` (default: their names)."""
        return self.rule.format_map(_Names(namer or (lambda n: n)))

    def message(self) -> str:
        """The library's message."""
        if self.text is not None:
            return self.text
        name = self.name if self.index is None else f"{self.name}[{self.index}]"
        head = f"{self.where}: " if self.where else ""
        return f"{head}{name} must be {self.rule_text()}, got {self.value!r}"

    def with_context(self, name: str, where: str | None = None, text: str | None = None):
        """The same error for the parameter called ``name`` (e.g. a policy's parameter under its
        option name), in ``where``."""
        return OptionError(name, self.value, self.rule, where=where or self.where,
                           index=self.index, text=text)


def number_rule(value, rule: str) -> str:
    """``rule`` ("a number > 0", "a number in [0.0, inf)") said of a finite number when
    ``value`` is infinite or NaN, so the message states why inf does not pass."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
        return rule.replace("a number", "a finite number", 1)
    return rule
