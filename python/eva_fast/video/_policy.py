"""EVA's frame-tool policy: argument validation, clamping, timestamps, frame choice, output size
and the visual-token budget fallback.

Parity target: the frame tool of the published EVA evaluation (wangruohui/EfficientVideoAgent,
``select_frame_fallback.py`` as described in ``shared/design/qwen25vl-layout.md`` §5 and the
eva_fast issue #2 spec). Times are seconds from the first frame of the video stream.
Everything here is pure host math, so it is unit-tested against hand-computed values.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from eva_fast.vision._smart_resize import FACTOR, MAX_PIXELS, MIN_PIXELS, smart_resize

#: Largest ``nframes`` one call may ask for (EVA's surveys use up to 256).
MAX_NFRAMES = 1024
#: Largest ``resize`` factor accepted (EVA uses 0.05-1.0; above 1 the frame is upscaled).
MAX_RESIZE = 8.0
#: Reference defaults of the visual-token budget per tool call and its resolution cap.
DEFAULT_MAX_VISUAL_TOKENS = 12_000
DEFAULT_MAXP = 720


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return out


@dataclass(frozen=True)
class FrameRequest:
    """One ``frame_select`` call as the model made it, validated.

    Attributes:
        start_time: window start, seconds from the first frame (any finite value; clamped later).
        end_time: window end, seconds (any finite value; clamped later).
        nframes: frames asked for, integer in ``[1, MAX_NFRAMES]``.
        resize: scale factor applied to the original resolution, finite, in ``(0, MAX_RESIZE]``.

    Raises:
        ValueError: a non-finite or non-numeric time, ``nframes`` that is not a positive integer
            up to ``MAX_NFRAMES`` (integral floats such as ``16.0`` are accepted), or ``resize``
            outside ``(0, MAX_RESIZE]``.
    """

    start_time: float
    end_time: float
    nframes: int
    resize: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_time", _as_float("start_time", self.start_time))
        object.__setattr__(self, "end_time", _as_float("end_time", self.end_time))
        n = self.nframes
        if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(float(n)) or float(n) != int(n):
            raise ValueError(f"nframes must be a positive integer, got {n!r}")
        n = int(n)
        if not 1 <= n <= MAX_NFRAMES:
            raise ValueError(f"nframes must be in [1, {MAX_NFRAMES}], got {n}")
        object.__setattr__(self, "nframes", n)
        r = _as_float("resize", self.resize)
        if not 0 < r <= MAX_RESIZE:
            raise ValueError(f"resize must be in (0, {MAX_RESIZE}], got {self.resize!r}")
        object.__setattr__(self, "resize", r)


def clamp_window(start_time: float, end_time: float, stream_end_s: float) -> tuple[float, float]:
    """Clamp a window to the stream: ``start = max(start, 0)``, ``end = min(end, stream_end_s)``;
    if then ``end <= start`` the whole stream ``[0, stream_end_s]`` is used.

    ``stream_end_s`` is the last frame's pts + 1/fps, seconds from the first frame.
    """
    start = max(start_time, 0.0)
    end = min(end_time, stream_end_s)
    if end <= start:
        return 0.0, stream_end_s
    return start, end


def sample_timestamps(start_s: float, end_s: float, nframes: int) -> list[float]:
    """EVA's sample times: the midpoint for one frame; otherwise ``nframes`` evenly spaced points
    from ``start_s`` to ``end_s - eps`` inclusive (``numpy.linspace``), with
    ``eps = min(1e-3, (end_s - start_s) / (4 * nframes))``.
    """
    if nframes == 1:
        return [(start_s + end_s) / 2.0]
    eps = min(1e-3, (end_s - start_s) / (4 * nframes))
    stop = end_s - eps
    step = (stop - start_s) / (nframes - 1)
    # numpy.linspace: start + i * step, with the last point exactly ``stop``.
    out = [start_s + i * step for i in range(nframes)]
    out[-1] = stop
    return out


def frame_index_for_time(t_s: float, average_fps: float, num_frames: int) -> int:
    """Constant-frame-rate frame choice of the reference (decord): ``round(t * fps)`` (ties to
    even), clamped to ``[0, num_frames - 1]``."""
    return min(max(round(t_s * average_fps), 0), num_frames - 1)


def estimate_visual_tokens(nframes: int, width: int, height: int, resize: float) -> int:
    """The reference's token estimate: ``nframes * max(1, round(H*r/28)) * max(1, round(W*r/28))``."""
    return nframes * max(1, round(height * resize / FACTOR)) * max(1, round(width * resize / FACTOR))


@dataclass(frozen=True)
class BudgetResult:
    """Outcome of the token-budget fallback.

    Attributes:
        nframes: frames after the fallback.
        resize: resize factor after the fallback.
        estimated_tokens: the reference estimate for the requested ``nframes``/``resize``.
        final_estimated_tokens: the estimate after the fallback.
        steps: which fallbacks applied: ``()``, ``("maxp",)`` or ``("maxp", "cube_root")``.
    """

    nframes: int
    resize: float
    estimated_tokens: int
    final_estimated_tokens: int
    steps: tuple[str, ...]


def apply_token_budget(
    nframes: int,
    resize: float,
    width: int,
    height: int,
    max_visual_tokens: int | None = DEFAULT_MAX_VISUAL_TOKENS,
    maxp: int = DEFAULT_MAXP,
) -> BudgetResult:
    """EVA's per-call visual-token budget and fallback.

    If the estimate exceeds ``max_visual_tokens``: ``r = min(r, min(1, maxp / min(W, H)))``; if
    still over, ``k = (budget / estimate) ** (1/3)``, ``nframes = max(1, int(nframes * k))`` and
    ``r = r * k``. ``max_visual_tokens=None`` disables the budget.
    """
    estimate = estimate_visual_tokens(nframes, width, height, resize)
    if max_visual_tokens is None or estimate <= max_visual_tokens:
        return BudgetResult(nframes, resize, estimate, estimate, ())
    steps = ["maxp"]
    resize = min(resize, min(1.0, maxp / min(width, height)))
    current = estimate_visual_tokens(nframes, width, height, resize)
    if current > max_visual_tokens:
        steps.append("cube_root")
        k = (max_visual_tokens / current) ** (1.0 / 3.0)
        nframes = max(1, int(nframes * k))
        resize = resize * k
        current = estimate_visual_tokens(nframes, width, height, resize)
    return BudgetResult(nframes, resize, estimate, current, tuple(steps))


def output_size(
    width: int, height: int, resize: float, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Output ``(h', w')`` for a frame of ``width x height`` (as displayed) at ``resize``:
    ``w' = max(1, round(W*r/28))*28`` (likewise ``h'``), then Qwen2.5-VL's ``smart_resize`` so the
    model never resamples again."""
    w = max(1, round(width * resize / FACTOR)) * FACTOR
    h = max(1, round(height * resize / FACTOR)) * FACTOR
    return smart_resize(h, w, FACTOR, min_pixels, max_pixels)
