"""Durations given in seconds (timeouts, retry delays, leases, waits): validated once, in
one way, where they enter cloacina, so that no value the engine cannot represent reaches
it."""

from __future__ import annotations

import math

MAX_SECONDS = 1e9
"""The longest duration cloacina accepts, in seconds (about 31 years)."""

_MAX_TEXT = "1e9"


def seconds(name: str, value: object, *, allow_zero: bool = True, minimum: float = 0.0) -> float:
    """``value`` as a float number of seconds, checked: an ``int`` or ``float`` (not a
    ``bool``, not a ``str``: ``TypeError``), finite, at least ``minimum`` (more than 0
    when ``allow_zero`` is False) and at most :data:`MAX_SECONDS` (``ValueError``).

    ``name`` says what the value is in the error message, e.g. ``"task 'fetch': timeout"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds (an int or a float), "
            f"not {type(value).__name__} {_short_repr(value)}"
        )
    finite = math.isfinite(value) if isinstance(value, float) else True
    low_ok = value >= minimum and (allow_zero or value > 0)
    if not (finite and low_ok and value <= MAX_SECONDS):
        raise ValueError(f"{name} must be {_range(allow_zero, minimum)}, not {_short_repr(value)}")
    return float(value)


def _range(allow_zero: bool, minimum: float) -> str:
    """The accepted range, in words."""
    if minimum > 0:
        return f"a finite number of seconds between {minimum:g} and {_MAX_TEXT}"
    if allow_zero:
        return f"a finite number of seconds between 0 and {_MAX_TEXT}"
    return f"a finite number of seconds more than 0 and at most {_MAX_TEXT}"


def _short_repr(value: object) -> str:
    """``repr(value)``, cut to a readable length (it goes into an error message)."""
    try:
        text = repr(value)
    except Exception:
        return "<unprintable>"
    return text if len(text) <= 60 else text[:57] + "..."
