"""The one exception type flaxtrain raises for bad input: a one-line message naming problem and fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FlaxtrainError(ValueError):
    """Bad input, config or files. The message is one line: what is wrong, then how to fix it."""


def nearest(name: str, choices: Iterable[str]) -> str:
    """Returns ` (did you mean 'x'?)` for the closest valid name, or a list of the valid names."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (valid: {', '.join(repr(c) for c in choices)})"
