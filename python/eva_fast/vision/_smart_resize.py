"""Qwen2.5-VL's smart_resize and visual-token accounting (host math, float64, Python rounding).

Spec: ``shared/design/qwen25vl-layout.md`` §2.2 (transformers
``models/qwen2_vl/image_processing_qwen2_vl.py::smart_resize``).
"""

from __future__ import annotations

import math

from eva_fast._checks import is_number, positive_int

#: Patch edge (pixels) x spatial merge size: sizes handed to the model are multiples of this.
FACTOR = 28
#: ``min_pixels`` / ``max_pixels`` of the released Qwen2.5-VL-7B ``preprocessor_config.json``.
MIN_PIXELS = 3136
MAX_PIXELS = 12_845_056


def smart_resize(
    height: int, width: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Size Qwen2.5-VL's processor would resize an image to.

    Args:
        height: image height in pixels, > 0.
        width: image width in pixels, > 0.
        factor: both outputs are multiples of this (28 = patch 14 x merge 2).
        min_pixels: lower bound on ``h' * w'`` (3136 for Qwen2.5-VL).
        max_pixels: upper bound on ``h' * w'`` (12 845 056 in the released checkpoint).

    Returns:
        ``(h', w')``, multiples of ``factor``. Rounding is Python's ``round`` (ties to even), the
        shrink branch floors and the grow branch ceils, as in transformers.

    Raises:
        ValueError: a non-positive size, an aspect ratio above 200, a ``factor`` that is not a
            positive int, or pixel bounds outside ``0 <= min_pixels <= max_pixels``,
            ``max_pixels >= 1``.
    """
    positive_int("smart_resize: factor", factor)
    for name, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if not is_number(v) or not math.isfinite(v) or v < 0:
            raise ValueError(f"smart_resize: {name} must be a finite number >= 0, got {v!r}")
    if max_pixels < 1 or min_pixels > max_pixels:
        raise ValueError(
            f"smart_resize: need 1 <= max_pixels and min_pixels <= max_pixels, got min_pixels={min_pixels!r}, "
            f"max_pixels={max_pixels!r}"
        )
    if height <= 0 or width <= 0:
        raise ValueError(f"smart_resize: height and width must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"smart_resize: absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def tokens_for_size(height: int, width: int, factor: int = FACTOR) -> int:
    """LLM tokens one image of ``height x width`` (multiples of ``factor``) costs: ``(h/28)*(w/28)``.

    Raises:
        ValueError: a size that is not a positive multiple of ``factor``.
    """
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ValueError(f"image size must be positive multiples of {factor}, got {height}x{width}")
    return (height // factor) * (width // factor)
