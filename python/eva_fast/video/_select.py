"""``select_frames``: EVA's ``frame_select`` tool on eva_fast's decoder."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from eva_fast.video._policy import (
    DEFAULT_MAX_VISUAL_TOKENS,
    DEFAULT_MAXP,
    FrameRequest,
    apply_token_budget,
    clamp_window,
    frame_index_for_time,
    output_size,
    sample_timestamps,
)
from eva_fast.video._reader import DecodeStats, VideoMetadata, VideoReader, normalize_device
from eva_fast.vision._smart_resize import MAX_PIXELS, MIN_PIXELS, tokens_for_size

POLICIES = ("parity", "keyframe_snap")

#: ``policy="keyframe_snap"`` snaps only when the spacing between sample times is at least this many
#: times the video's median keyframe interval ("much larger than the GOP"): then every sample sits in
#: its own GOP, an exact decode costs about half a GOP per frame, and a snapped one costs one frame.
SNAP_MIN_GOP_RATIO = 4.0
#: Default snap tolerance cap (seconds) and fraction of the sample spacing.
DEFAULT_SNAP_TOLERANCE_S = 2.0
DEFAULT_SNAP_FRACTION = 0.25


@dataclass(frozen=True)
class FrameBatch:
    """The frames one ``frame_select`` call returns, with how they were chosen.

    Attributes:
        frames: uint8 ``[T, H, W, 3]`` RGB in ``[0, 255]``, contiguous, on ``device``. ``H`` and
            ``W`` are multiples of 28 that already satisfy Qwen2.5-VL's smart_resize.
        timestamps_s: the T sample times the policy asked for, seconds from the first frame.
        frame_indices: T chosen frame indices (presentation order, 0-based).
        pts_seconds: T chosen frames' pts, seconds from the first frame.
        corrupt: T flags, True for frames from damaged stream data (see ``VideoReader``).
        request: the call as made (before clamping and budget).
        start_s, end_s: the clamped window actually sampled, seconds.
        nframes: frames returned (after the budget fallback; equals T).
        resize: resize factor applied (after the budget fallback).
        size: ``(H, W)`` of each frame.
        tokens_per_frame: LLM tokens per frame, ``(H/28)*(W/28)``.
        estimated_visual_tokens: the reference's estimate for the request as made.
        budget_steps: token-budget fallbacks applied: ``()``, ``("maxp",)``, ``("maxp", "cube_root")``.
        resample: resize filter used (``"cubic"``: OpenCV INTER_CUBIC, EVA parity).
        policy: frame-choice policy (``"parity"`` or ``"keyframe_snap"``).
        stats: decoder work for this call.
        total_ms: wall time of the whole call, milliseconds.
        video: metadata of the video.
        snap_error_s: T values, seconds: pts of the frame returned minus pts of the frame the parity
            policy would return (0.0 where nothing was snapped; all zeros under ``"parity"``).
    """

    frames: torch.Tensor
    timestamps_s: tuple[float, ...]
    frame_indices: tuple[int, ...]
    pts_seconds: tuple[float, ...]
    corrupt: tuple[bool, ...]
    request: FrameRequest
    start_s: float
    end_s: float
    nframes: int
    resize: float
    size: tuple[int, int]
    tokens_per_frame: int
    estimated_visual_tokens: int
    budget_steps: tuple[str, ...]
    resample: str
    policy: str
    stats: DecodeStats = field(default_factory=DecodeStats)
    total_ms: float = 0.0
    video: VideoMetadata | None = None
    snap_error_s: tuple[float, ...] = ()

    @property
    def num_visual_tokens(self) -> int:
        """Exact LLM visual tokens of the batch: ``T * tokens_per_frame``."""
        return self.nframes * self.tokens_per_frame

    def summary(self) -> dict:
        """JSON-ready description (no pixels)."""
        return {
            "video": self.video.path if self.video else None,
            "request": {
                "start_time": self.request.start_time,
                "end_time": self.request.end_time,
                "nframes": self.request.nframes,
                "resize": self.request.resize,
            },
            "window_s": [self.start_s, self.end_s],
            "timestamps": list(self.timestamps_s),
            "frame_indices": list(self.frame_indices),
            "pts_seconds": list(self.pts_seconds),
            "corrupt": list(self.corrupt),
            "size": list(self.size),
            "nframes": self.nframes,
            "resize": self.resize,
            "tokens_per_frame": self.tokens_per_frame,
            "num_visual_tokens": self.num_visual_tokens,
            "estimated_visual_tokens": self.estimated_visual_tokens,
            "budget_steps": list(self.budget_steps),
            "resample": self.resample,
            "policy": self.policy,
            "backend": self.stats.backend,
            "fallback_reason": self.stats.fallback_reason,
            "decoded_frames": self.stats.decoded_frames,
            "seeks": self.stats.seeks,
            "decode_ms": round(self.stats.decode_ms, 3),
            "convert_ms": round(self.stats.convert_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "snap_error_s": list(self.snap_error_s) if self.snap_error_s else [0.0] * self.nframes,
        }

    def __repr__(self) -> str:
        return (
            f"FrameBatch(frames={tuple(self.frames.shape)} {self.frames.dtype}, window=[{self.start_s:.3f}, "
            f"{self.end_s:.3f}] s, nframes={self.nframes}, resize={self.resize:.4g}, "
            f"tokens={self.num_visual_tokens}, decoded={self.stats.decoded_frames})"
        )


def select_frames(
    video: str | os.PathLike | VideoReader,
    start_time: float,
    end_time: float,
    nframes: int,
    resize: float = 1.0,
    *,
    max_visual_tokens: int | None = DEFAULT_MAX_VISUAL_TOKENS,
    maxp: int = DEFAULT_MAXP,
    resample: str = "cubic",
    policy: str = "parity",
    device: str = "cpu",
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    snap_tolerance_s: float = DEFAULT_SNAP_TOLERANCE_S,
    snap_fraction: float = DEFAULT_SNAP_FRACTION,
) -> FrameBatch:
    """EVA's ``frame_select(start_time, end_time, nframes, resize)`` tool.

    Policy (parity with the published EVA frame tool; times in seconds from the first frame):

    1. validate (:class:`FrameRequest`), then the visual-token budget: if
       ``nframes * max(1, round(H*r/28)) * max(1, round(W*r/28)) > max_visual_tokens``, cap
       ``r`` at ``min(1, maxp / min(W, H))``, and if still over scale nframes and r by
       ``(budget / estimate) ** (1/3)`` (:func:`apply_token_budget`);
    2. clamp the window to ``[0, last pts + 1/fps]`` (whole stream if empty);
    3. sample times: the midpoint for one frame, else ``linspace(start, end - eps, nframes)``;
    4. frame choice: ``round(t * average_fps)`` clamped to the frame count (decord's choice) at
       constant frame rate; at variable frame rate the frame with the nearest pts (from a
       demux-only scan of the file), which is what a time-based request means there;
    5. output size ``max(1, round(W*r/28))*28`` x likewise for H, then smart_resize; one resize
       from the decoded frame (``"cubic"`` = OpenCV ``INTER_CUBIC``, a = -0.75, no antialiasing).

    ``policy="keyframe_snap"`` (explicit, never the default; not EVA parity): when the spacing
    between sample times (the linspace step; the window length for one frame) is at least
    ``SNAP_MIN_GOP_RATIO`` (4) times the median keyframe interval, each sample time within
    ``min(snap_fraction * spacing, snap_tolerance_s)`` of a keyframe is moved to that keyframe, so
    only keyframes are decoded for those samples; the others keep the parity frame. Keyframe times
    come from the container index (``metadata.keyframe_pts_seconds``), or a demux-only scan when the
    container has none. Because the tolerance is at most a quarter of the spacing, two samples never
    snap to the same keyframe. ``frame_indices`` are the snapped frames' real indices and
    ``snap_error_s`` holds how far each returned frame moved from the parity choice.

    Args:
        video: a path or an open :class:`VideoReader` (reuse one across calls of a trajectory).
        start_time, end_time: window, seconds (finite; clamped).
        nframes: frames wanted, integer in ``[1, 1024]``.
        resize: factor on the original resolution, in ``(0, 8]``.
        max_visual_tokens: per-call budget (reference default 12 000); None disables it.
        maxp: resolution cap of the first fallback step (reference default 720).
        resample: ``"cubic"`` (parity) or ``"antialias"`` (Pillow-style, better for strong downscales).
        policy: ``"parity"`` (default) or ``"keyframe_snap"`` (see above).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (NVDEC decode + CUDA resize; frames come back on
            that GPU, ready on torch's current stream; see :class:`VideoReader` for the stream
            contract and the CPU fallback, which ``stats.backend`` / ``stats.fallback_reason`` record).
        min_pixels, max_pixels: smart_resize bounds (Qwen2.5-VL-7B's by default).
        snap_tolerance_s: ``"keyframe_snap"`` only: largest move of a sample time, seconds (> 0).
        snap_fraction: ``"keyframe_snap"`` only: largest move as a fraction of the spacing,
            in ``(0, 0.5)``.

    Returns:
        FrameBatch with ``frames`` uint8 ``[T, H, W, 3]``.

    Raises:
        ValueError: invalid arguments (the message names the value and the allowed range).
        FileNotFoundError, NotAVideoError, NoVideoStreamError, UnsupportedCodecError,
        CorruptVideoError: see :class:`VideoReader`.
    """
    t_start = time.perf_counter()
    request = FrameRequest(start_time, end_time, nframes, resize)
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if max_visual_tokens is not None and (isinstance(max_visual_tokens, bool) or int(max_visual_tokens) < 1):
        raise ValueError(f"max_visual_tokens must be a positive int or None, got {max_visual_tokens!r}")
    if isinstance(maxp, bool) or not isinstance(maxp, int) or maxp < 1:
        raise ValueError(f"maxp must be a positive int, got {maxp!r}")
    if policy == "keyframe_snap":
        if not (isinstance(snap_tolerance_s, (int, float)) and np.isfinite(snap_tolerance_s) and snap_tolerance_s > 0):
            raise ValueError(f"snap_tolerance_s must be a positive finite number of seconds, got {snap_tolerance_s!r}")
        if not (isinstance(snap_fraction, (int, float)) and 0 < snap_fraction < 0.5):
            raise ValueError(f"snap_fraction must be in (0, 0.5), got {snap_fraction!r}")
    reader = video if isinstance(video, VideoReader) else VideoReader(video, device=device)
    if reader.device != normalize_device(device):
        raise ValueError(f"device={device!r} but the VideoReader was opened on {reader.device!r}")
    meta = reader.metadata

    budget = apply_token_budget(request.nframes, request.resize, meta.width, meta.height, max_visual_tokens, maxp)
    n, r = budget.nframes, budget.resize
    start_s, end_s = clamp_window(request.start_time, request.end_time, meta.end_s)
    timestamps = sample_timestamps(start_s, end_s, n)

    if meta.is_vfr:
        pts_table, _ = reader.frame_table()
        indices = [_nearest_index(pts_table, t) for t in timestamps]
        targets = [float(pts_table[i]) for i in indices]
    else:
        indices = [frame_index_for_time(t, meta.average_fps, meta.num_frames) for t in timestamps]
        targets = [i / meta.average_fps for i in indices]

    snap_errors = (0.0,) * n
    if policy == "keyframe_snap":
        indices, targets, snap_errors = _snap_to_keyframes(
            reader, timestamps, indices, targets, start_s, end_s, snap_tolerance_s, snap_fraction
        )

    h, w = output_size(meta.width, meta.height, r, min_pixels, max_pixels)
    decoded = reader.get_frames_nearest(targets, size=(h, w), resample=resample)
    return FrameBatch(
        frames=decoded.data,
        timestamps_s=tuple(timestamps),
        frame_indices=tuple(indices),
        pts_seconds=tuple(decoded.pts_seconds.tolist()),
        corrupt=tuple(decoded.corrupt.tolist()),
        request=request,
        start_s=start_s,
        end_s=end_s,
        nframes=n,
        resize=r,
        size=(h, w),
        tokens_per_frame=tokens_for_size(h, w),
        estimated_visual_tokens=budget.estimated_tokens,
        budget_steps=budget.steps,
        resample=resample,
        policy=policy,
        stats=decoded.stats,
        total_ms=(time.perf_counter() - t_start) * 1e3,
        video=meta,
        snap_error_s=snap_errors,
    )


def _keyframe_times(reader: VideoReader) -> np.ndarray:
    """Sorted keyframe times (seconds from the first frame): container index, else a demux scan."""
    kf = np.asarray(reader.metadata.keyframe_pts_seconds, dtype=np.float64)
    if kf.size < 2:
        pts, key = reader.frame_table()
        kf = pts[key]
    return np.sort(kf)


def _snap_to_keyframes(
    reader: VideoReader,
    timestamps: list[float],
    indices: list[int],
    targets: list[float],
    start_s: float,
    end_s: float,
    tolerance_s: float,
    fraction: float,
) -> tuple[list[int], list[float], tuple[float, ...]]:
    """The keyframe-snap policy (see :func:`select_frames`): returns indices, target pts, errors."""
    n = len(timestamps)
    zeros = (0.0,) * n
    kf = _keyframe_times(reader)
    if kf.size < 2:
        return indices, targets, zeros
    gop_s = float(np.median(np.diff(kf)))
    spacing = (timestamps[1] - timestamps[0]) if n > 1 else (end_s - start_s)
    if gop_s <= 0 or spacing < SNAP_MIN_GOP_RATIO * gop_s:
        return indices, targets, zeros
    tol = min(fraction * spacing, tolerance_s)
    meta = reader.metadata
    pts_table = reader.frame_table()[0] if meta.is_vfr else None
    out_idx, out_t, errors = list(indices), list(targets), [0.0] * n
    for i, t in enumerate(timestamps):
        k = float(kf[_nearest_index(kf, t)])
        if abs(k - t) > tol:
            continue
        if pts_table is not None:
            j = _nearest_index(pts_table, k)
            pk = float(pts_table[j])
        else:
            j = frame_index_for_time(k, meta.average_fps, meta.num_frames)
            pk = j / meta.average_fps
        errors[i] = pk - targets[i]
        out_idx[i], out_t[i] = j, pk
    return out_idx, out_t, tuple(errors)


def _nearest_index(pts: np.ndarray, t: float) -> int:
    """Index of the pts nearest ``t`` in a sorted array (ties to the earlier frame)."""
    j = int(np.searchsorted(pts, t, side="left"))
    if j <= 0:
        return 0
    if j >= len(pts):
        return len(pts) - 1
    return j - 1 if t - pts[j - 1] <= pts[j] - t else j
