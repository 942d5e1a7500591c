"""Shared helpers for the Triton kernels: availability probe and launch heuristics."""

from __future__ import annotations

import functools
import importlib.util


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` can succeed (Triton installed). Says nothing about a GPU."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install counts as absent
        return False
    return True


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= ``n`` (``n`` >= 1)."""
    if n < 1:
        raise ValueError(f"next_power_of_2: n must be >= 1, got {n}")
    return 1 << (n - 1).bit_length()
