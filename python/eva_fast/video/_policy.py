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
from typing import Literal, get_args

from eva_fast.vision._smart_resize import FACTOR, MAX_PIXELS, MIN_PIXELS, smart_resize

#: Largest ``nframes`` one ``select_frames`` call may ask for by default (EVA's surveys use up to
#: 256). The agent path has no frame cap: the visual-token budget and ``max_output_bytes`` bound it.
MAX_NFRAMES = 1024
#: Largest ``resize`` factor ``select_frames`` accepts by default (EVA uses 0.05-1.0; above 1 the
#: frame is upscaled). The agent path has no resize cap (the budget and the byte limit bound it).
MAX_RESIZE = 8.0
#: Reference defaults of the visual-token budget per tool call and its resolution cap.
DEFAULT_MAX_VISUAL_TOKENS = 12_000
DEFAULT_MAXP = 720
#: Default limit on the bytes of one call's output frames (``T * H * W * 3``), checked before
#: anything is allocated: 4 GiB (the 12 000-token budget needs at most ~28 MiB).
DEFAULT_MAX_OUTPUT_BYTES = 4 << 30

#: Resize filters: ``"cubic"`` = OpenCV ``INTER_CUBIC`` (Keys a = -0.75, no antialiasing; EVA
#: parity), ``"antialias"`` = Pillow-style antialiased bicubic (a = -0.5, support scaled on downscale).
Resample = Literal["cubic", "antialias"]
RESAMPLES: tuple[str, ...] = get_args(Resample)
#: Frame-choice policies: ``"parity"`` (EVA's published tool) or ``"keyframe_snap"`` (see
#: ``select_frames``).
Policy = Literal["parity", "keyframe_snap"]
POLICIES: tuple[str, ...] = get_args(Policy)
#: Who applies Qwen2.5-VL's smart_resize when it changes the 28-aligned size (frames under
#: ``min_pixels`` or over ``max_pixels``): ``"processor"`` (EVA parity: the frame is made at the
#: reference tool's 28-aligned size, then resampled to the smart_resize size the way the model's
#: processor resamples it) or ``"decoder"`` (one resize from the decoded frame straight to the
#: smart_resize size).
SmartResizeBy = Literal["processor", "decoder"]
SMART_RESIZE_BY: tuple[str, ...] = get_args(SmartResizeBy)


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r} ({type(value).__name__})")
    try:
        out = float(value)
    except OverflowError:  # an int beyond float range (e.g. 10**400)
        out = math.inf
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {_short(value)}")
    return out


def _short(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (a 10**400 argument stays readable)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else f"<int with {len(str(abs(value)))} digits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class FrameRequest:
    """One ``frame_select`` call as the model made it, validated.

    Attributes:
        start_time: window start, seconds from the first frame (any finite value; clamped later).
        end_time: window end, seconds (any finite value; clamped later).
        nframes: frames asked for, a positive integer (integral floats such as ``16.0`` are
            accepted here; caps such as ``MAX_NFRAMES`` are the caller's, see :func:`plan_frames`).
        resize: scale factor applied to the original resolution, finite and > 0 (caps such as
            ``MAX_RESIZE`` are the caller's).

    Raises:
        ValueError: a non-finite or non-numeric time or resize (ints beyond float range
            included), ``nframes`` that is not a positive integer, or ``resize <= 0``.
    """

    start_time: float
    end_time: float
    nframes: int
    resize: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_time", _as_float("start_time", self.start_time))
        object.__setattr__(self, "end_time", _as_float("end_time", self.end_time))
        n = self.nframes
        if isinstance(n, bool) or not isinstance(n, numbers.Real):
            raise ValueError(f"nframes must be a positive integer, got {n!r}")
        if not isinstance(n, numbers.Integral):
            f = float(n)
            if not math.isfinite(f) or f != int(f):
                raise ValueError(f"nframes must be a positive integer, got {n!r}")
        n = int(n)
        if n < 1:
            raise ValueError(f"nframes must be a positive integer, got {n}")
        object.__setattr__(self, "nframes", n)
        r = _as_float("resize", self.resize)
        if not r > 0:
            raise ValueError(f"resize must be > 0, got {self.resize!r}")
        object.__setattr__(self, "resize", r)

    def to_dict(self) -> dict:
        """``{"start_time", "end_time", "nframes", "resize"}`` (JSON-ready)."""
        return {"start_time": self.start_time, "end_time": self.end_time, "nframes": self.nframes,
                "resize": self.resize}


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


def estimate_visual_tokens(nframes: int, resize: float, *, height: int, width: int) -> int:
    """The reference's token estimate: ``int(nframes) * max(1, round(H*r/28)) * max(1, round(W*r/28))``.

    Evaluated in the reference's order with Python's arithmetic (the height and width units first,
    then ``int(nframes)``), so a value the reference cannot use raises the reference's exception
    (``TypeError`` for a string ``resize``, ``ValueError``/``OverflowError`` for a NaN/infinite one).
    """
    h_units = max(1, round(height * resize / FACTOR))
    w_units = max(1, round(width * resize / FACTOR))
    return int(nframes) * h_units * w_units


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
    *,
    height: int,
    width: int,
    max_visual_tokens: int | None = DEFAULT_MAX_VISUAL_TOKENS,
    maxp: int = DEFAULT_MAXP,
) -> BudgetResult:
    """EVA's per-call visual-token budget and fallback.

    If the estimate exceeds ``max_visual_tokens``: ``r = min(r, min(1, maxp / min(W, H)))``; if
    still over, ``k = (budget / estimate) ** (1/3)``, ``nframes = max(1, int(nframes * k))`` and
    ``r = r * k``. ``max_visual_tokens=None`` disables the budget.

    The arithmetic is the published evaluation's, on whatever values it is given (the agent hands
    it the model's raw arguments): a float ``nframes`` stays a float unless the cube-root step
    runs, and values the reference cannot compute with raise its exceptions.
    """
    estimate = estimate_visual_tokens(nframes, resize, height=height, width=width)
    if max_visual_tokens is None or estimate <= max_visual_tokens:
        return BudgetResult(nframes, resize, estimate, estimate, ())
    steps = ["maxp"]
    resize = min(resize, min(1.0, maxp / min(width, height)))
    current = estimate_visual_tokens(nframes, resize, height=height, width=width)
    if current > max_visual_tokens:
        steps.append("cube_root")
        k = (max_visual_tokens / current) ** (1.0 / 3.0)
        nframes = max(1, int(nframes * k))
        resize = resize * k
        current = estimate_visual_tokens(nframes, resize, height=height, width=width)
    return BudgetResult(nframes, resize, estimate, current, tuple(steps))


def output_size(
    resize: float, *, height: int, width: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Output ``(h', w')`` for a frame of ``height x width`` (as displayed) at ``resize``:
    ``h' = max(1, round(H*r/28))*28`` (likewise ``w'``, :func:`aligned_size`), then Qwen2.5-VL's
    ``smart_resize`` so the model never resamples again. Sizes are keyword-only, (height, width)."""
    h, w = aligned_size(resize, height=height, width=width)
    return smart_resize(h, w, FACTOR, min_pixels, max_pixels)


def aligned_size(resize: float, *, height: int, width: int) -> tuple[int, int]:
    """The reference tool's frame size ``(h, w)`` at ``resize``: ``max(1, round(H*r/28))*28`` by
    ``max(1, round(W*r/28))*28`` (``--factor 28``), before Qwen2.5-VL's smart_resize. ``height``
    and ``width`` (pixels, as displayed) are keyword-only so they cannot be swapped."""
    return max(1, round(height * resize / FACTOR)) * FACTOR, max(1, round(width * resize / FACTOR)) * FACTOR
