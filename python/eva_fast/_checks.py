"""Argument checks shared by every layer: one definition of "an int", "a positive int", "a finite
number" and "one of". Each check raises ``ValueError`` naming the argument, the value received and
what is allowed (``bool`` is never accepted as a number, although Python makes it an ``int``)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def is_int(value: object) -> bool:
    """``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """``value`` is an ``int`` or a ``float`` and not a ``bool`` (finite or not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(name: str, value: object, *, allow_none: bool = False) -> int | None:
    """``value`` if it is an int >= 1 (or None where ``allow_none``).

    Raises:
        ValueError: ``"{name} must be a positive int[ or None], got {value!r}"``.
    """
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")
    return value


def int_in_range(name: str, value: object, low: int, high: int, *, note: str = "") -> int:
    """``value`` if it is an int in ``[low, high]``.

    Raises:
        ValueError: ``"{name} must be an int in {low}..{high}{note}, got {value!r}"``.
    """
    if not is_int(value) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}{note}, got {value!r}")
    return value


def positive_number(name: str, value: object, *, what: str = "number") -> float:
    """``float(value)`` if it is a finite int or float > 0.

    Raises:
        ValueError: ``"{name} must be a positive {what}, got {value!r}"``.
    """
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive {what}, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``.

    Raises:
        ValueError: ``"{name} must be one of {allowed}, got {value!r}"``.
    """
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value
