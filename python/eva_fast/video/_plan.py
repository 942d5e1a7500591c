"""``FramePlan``: what one ``frame_select`` call decodes, computed once (``plan_frames``) and decoded
by ``decode_plan``. ``select_frames`` is the two in a row; the agent loop, the bench and the
training collator (re-decoding recorded tool calls) use the same plan.

Parity target: the frame tool of the published EVA evaluation (``shared/design/qwen25vl-layout.md``
§5, wangruohui/EfficientVideoAgent ``select_frame_fallback.py``); see :func:`plan_frames`.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from eva_fast._checks import check_choice, is_int, positive_int
from eva_fast.video._options import FrameOptions
from eva_fast.video._policy import (
    MAX_NFRAMES,
    MAX_RESIZE,
    POLICIES,
    RESAMPLES,
    SMART_RESIZE_BY,
    BudgetResult,
    FrameRequest,
    Policy,
    Resample,
    SmartResizeBy,
    aligned_size,
    apply_token_budget,
    clamp_window,
    frame_index_for_time,
    sample_timestamps,
)
from eva_fast.video._reader import MAX_SIDE, CorruptVideoError, DecodeStats, VideoMetadata, VideoReader
from eva_fast.vision._smart_resize import FACTOR, smart_resize, tokens_for_size

#: ``policy="keyframe_snap"`` snaps only when the spacing between sample times is at least this many
#: times the video's median keyframe interval ("much larger than the GOP"): then every sample sits in
#: its own GOP, an exact decode costs about half a GOP per frame, and a snapped one costs one frame.
SNAP_MIN_GOP_RATIO = 4.0
#: Version of :meth:`FramePlan.to_dict`'s layout.
PLAN_SCHEMA = 1


@dataclass(frozen=True)
class FramePlan:
    """Everything one ``frame_select`` call decodes, resolved before any decoding.

    Built by :func:`plan_frames`; :func:`decode_plan` turns it into frames. JSON round trip with
    :meth:`to_dict` / :meth:`from_dict`: a plan rebuilt from a stored record decodes to the same
    frames on the same video.

    Attributes:
        request: the call as made (before clamping and the budget).
        video_size: ``(H, W)`` of the video the plan was made for, as displayed (checked by
            :func:`decode_plan`).
        video_num_frames: that video's ``metadata.num_frames`` (checked by :func:`decode_plan`).
        start_s, end_s: the clamped window actually sampled, seconds from the first frame.
        timestamps_s: the T sample times, seconds.
        frame_indices: T chosen frame indices (presentation order, 0-based).
        target_pts_s: T times the decoder is asked for (nearest frame), seconds: ``i / fps`` at
            constant frame rate, the frame table's pts at variable frame rate or where snapped.
        snap_error_s: T values, seconds: pts of the frame chosen minus the parity choice's (all
            zero under ``"parity"``).
        nframes: T, frames returned (after the budget fallback).
        resize: resize factor applied (after the budget fallback).
        aligned_size: ``(h, w)`` the reference tool resizes to, ``max(1, round(H*r/28))*28`` by
            likewise for W, before Qwen2.5-VL's smart_resize.
        size: ``(H', W')`` of the returned frames: ``smart_resize(aligned_size)``, multiples of 28.
        smart_resize_by: ``"processor"`` (parity: when ``size != aligned_size`` the frame is made at
            ``aligned_size`` and resampled to ``size`` as Qwen's processor does) or ``"decoder"``.
        resample: decoder resize filter, ``"cubic"`` (parity) or ``"antialias"``.
        policy: frame-choice policy, ``"parity"`` or ``"keyframe_snap"``.
        budget_steps: token-budget fallbacks applied: ``()``, ``("maxp",)``, ``("maxp", "cube_root")``.
        estimated_visual_tokens: the reference's estimate for the request as made.
        final_estimated_visual_tokens: the reference's estimate after the fallback (what the
            published evaluation adds to ``estimated_visual_tokens`` per call).
        tokens_per_frame: exact LLM tokens per frame, ``(H'/28) * (W'/28)``.

    Raises:
        ValueError: inconsistent fields (lengths other than ``nframes``, sizes that are not
            positive multiples of 28, unknown choices, a token count that does not match ``size``).
    """

    request: FrameRequest
    video_size: tuple[int, int]
    video_num_frames: int
    start_s: float
    end_s: float
    timestamps_s: tuple[float, ...]
    frame_indices: tuple[int, ...]
    target_pts_s: tuple[float, ...]
    snap_error_s: tuple[float, ...]
    nframes: int
    resize: float
    aligned_size: tuple[int, int]
    size: tuple[int, int]
    smart_resize_by: SmartResizeBy
    resample: Resample
    policy: Policy
    budget_steps: tuple[str, ...]
    estimated_visual_tokens: int
    final_estimated_visual_tokens: int
    tokens_per_frame: int

    def __post_init__(self) -> None:
        if not isinstance(self.request, FrameRequest):
            raise ValueError(f"FramePlan.request must be a FrameRequest, got {type(self.request).__name__}")
        n = positive_int("FramePlan.nframes", self.nframes)
        for name in ("timestamps_s", "frame_indices", "target_pts_s", "snap_error_s"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or len(v) != n:
                raise ValueError(f"FramePlan.{name} must be a tuple of nframes={n} values, got {_describe(v)}")
        for name in ("timestamps_s", "target_pts_s", "snap_error_s"):
            if not all(isinstance(x, float) and math.isfinite(x) for x in getattr(self, name)):
                raise ValueError(f"FramePlan.{name} must hold finite floats (seconds)")
        if not all(is_int(i) and i >= 0 for i in self.frame_indices):
            raise ValueError("FramePlan.frame_indices must hold non-negative ints")
        for name in ("start_s", "end_s", "resize"):
            v = getattr(self, name)
            if not isinstance(v, float) or not math.isfinite(v):
                raise ValueError(f"FramePlan.{name} must be a finite float, got {v!r}")
        if not self.resize > 0:
            raise ValueError(f"FramePlan.resize must be > 0, got {self.resize!r}")
        for name in ("size", "aligned_size"):
            hw = getattr(self, name)
            if (not isinstance(hw, tuple) or len(hw) != 2 or not all(is_int(x) for x in hw)
                    or any(x < FACTOR or x % FACTOR or x > MAX_SIDE for x in hw)):
                raise ValueError(
                    f"FramePlan.{name} must be (height, width), positive multiples of {FACTOR} up to {MAX_SIDE}, got {hw!r}"
                )
        vs = self.video_size
        if not isinstance(vs, tuple) or len(vs) != 2 or not all(is_int(x) and x >= 1 for x in vs):
            raise ValueError(f"FramePlan.video_size must be (height, width) positive ints, got {vs!r}")
        positive_int("FramePlan.video_num_frames", self.video_num_frames)
        check_choice("FramePlan.smart_resize_by", self.smart_resize_by, SMART_RESIZE_BY)
        check_choice("FramePlan.resample", self.resample, RESAMPLES)
        check_choice("FramePlan.policy", self.policy, POLICIES)
        if not isinstance(self.budget_steps, tuple) or self.budget_steps not in ((), ("maxp",), ("maxp", "cube_root")):
            raise ValueError(f"FramePlan.budget_steps must be (), ('maxp',) or ('maxp', 'cube_root'), got {self.budget_steps!r}")
        for name in ("estimated_visual_tokens", "final_estimated_visual_tokens"):
            v = getattr(self, name)
            if not is_int(v) or v < 0:
                raise ValueError(f"FramePlan.{name} must be an int >= 0, got {v!r}")
        if self.tokens_per_frame != tokens_for_size(*self.size):
            raise ValueError(
                f"FramePlan.tokens_per_frame={self.tokens_per_frame!r} does not match size {self.size} "
                f"({tokens_for_size(*self.size)} tokens)"
            )

    @property
    def num_visual_tokens(self) -> int:
        """Exact LLM visual tokens of the call: ``nframes * tokens_per_frame``."""
        return self.nframes * self.tokens_per_frame

    @property
    def output_bytes(self) -> int:
        """Bytes of the returned frames, ``T * H' * W' * 3``."""
        return self.nframes * self.size[0] * self.size[1] * 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); :meth:`from_dict` inverts it exactly."""
        out: dict[str, Any] = {"schema": PLAN_SCHEMA}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, FrameRequest):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FramePlan:
        """Rebuild a plan from :meth:`to_dict`'s output (e.g. a stored tool call).

        Raises:
            ValueError: not a plan dict (missing or unknown keys, another schema, bad values).
        """
        if not isinstance(d, dict):
            raise ValueError(f"a FramePlan dict must be a dict, got {type(d).__name__}")
        if d.get("schema", PLAN_SCHEMA) != PLAN_SCHEMA:
            raise ValueError(f"FramePlan dict has schema {d.get('schema')!r}; this eva_fast reads schema {PLAN_SCHEMA}")
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in d]
        unknown = sorted(set(d) - set(names) - {"schema"})
        if missing or unknown:
            raise ValueError(f"not a FramePlan dict: missing keys {missing}, unknown keys {unknown}")
        kw: dict[str, Any] = {}
        for name in names:
            v = d[name]
            if name == "request":
                if not isinstance(v, dict) or set(v) != {"start_time", "end_time", "nframes", "resize"}:
                    raise ValueError(f"FramePlan dict: request must have start_time, end_time, nframes, resize; got {v!r}")
                v = FrameRequest(**v)
            elif isinstance(v, list):
                v = tuple(float(x) if name in _FLOAT_FIELDS and is_int(x) else x for x in v)
            elif name in _FLOAT_FIELDS and is_int(v):
                v = float(v)
            kw[name] = v
        return cls(**kw)

    def __repr__(self) -> str:
        return (
            f"FramePlan(window=[{self.start_s:.3f}, {self.end_s:.3f}] s, nframes={self.nframes}, "
            f"resize={self.resize:.4g}, size={self.size}, tokens={self.num_visual_tokens}, policy={self.policy!r}, "
            f"budget_steps={self.budget_steps})"
        )


#: Fields holding seconds or factors: a hand-written dict may give them as JSON integers.
_FLOAT_FIELDS = ("start_s", "end_s", "resize", "timestamps_s", "target_pts_s", "snap_error_s")


def _describe(v: object) -> str:
    return f"{type(v).__name__} of length {len(v)}" if hasattr(v, "__len__") else repr(v)


def plan_frames(
    reader: VideoReader,
    start_time: float,
    end_time: float,
    nframes: int,
    resize: float = 1.0,
    *,
    options: FrameOptions | None = None,
    max_nframes: int | None = MAX_NFRAMES,
    max_resize: float | None = MAX_RESIZE,
    budget: BudgetResult | None = None,
    **settings: Any,
) -> FramePlan:
    """Resolve one ``frame_select(start_time, end_time, nframes, resize)`` call into a
    :class:`FramePlan` (nothing is decoded; at variable frame rate the first plan on a reader scans
    the file's packets once).

    Policy (parity with the published EVA frame tool; times in seconds from the first frame):

    1. validate (:class:`FrameRequest`, then ``nframes <= max_nframes``, ``resize <= max_resize``),
       then the visual-token budget: if ``nframes * max(1, round(H*r/28)) * max(1, round(W*r/28))
       > max_visual_tokens``, cap ``r`` at ``min(1, maxp / min(W, H))``, and if still over scale
       nframes and r by ``(budget / estimate) ** (1/3)`` (:func:`apply_token_budget`);
    2. clamp the window to ``[0, last pts + 1/fps]`` (:attr:`VideoReader.stream_end_s`; whole
       stream if empty);
    3. sample times: the midpoint for one frame, else ``linspace(start, end - eps, nframes)``;
    4. frame choice: ``round(t * average_fps)`` clamped to the frame count (decord's choice) at
       constant frame rate; at variable frame rate the frame with the nearest pts (from a
       demux-only scan of the file), which is what a time-based request means there;
    5. size: the reference tool's ``max(1, round(W*r/28))*28`` x likewise for H, then Qwen2.5-VL's
       smart_resize. Where smart_resize changes that size (under ``min_pixels``: e.g. 28 x 56 at
       ``resize`` 0.05 on 720p becomes 56 x 84; or over ``max_pixels``), the reference writes the
       28-aligned frame and the model's processor (vLLM's front end: torch uint8 bicubic,
       antialiased) resamples it; ``smart_resize_by="processor"`` (default) reproduces that
       two-step resize, ``"decoder"`` resizes once, straight to the final size (sharper, but not
       what the released checkpoint saw). Either way the frames handed on already satisfy
       smart_resize, so nothing downstream resamples again.

    ``policy="keyframe_snap"`` (explicit, never the default; not EVA parity): when the spacing
    between sample times (the linspace step; the window length for one frame) is at least
    ``SNAP_MIN_GOP_RATIO`` (4) times the median keyframe interval, each sample time within
    ``min(snap_fraction * spacing, snap_tolerance_s)`` of a keyframe is moved to that keyframe, so
    only keyframes are decoded for those samples; the others keep the parity frame. Keyframe times
    come from the container index (``metadata.keyframe_pts_s``), or a demux-only scan when the
    container has none. Because the tolerance is at most a quarter of the spacing, two samples never
    snap to the same keyframe.

    Args:
        reader: the open video.
        start_time, end_time: window, seconds (finite; clamped).
        nframes: frames wanted, a positive integer up to ``max_nframes``.
        resize: factor on the original resolution, in ``(0, max_resize]``.
        options: the frame settings (:class:`FrameOptions`: budget, filter, policy, smart_resize
            path and bounds, snap tolerances); default ``FrameOptions()``, EVA's.
        **settings: :class:`FrameOptions` fields replacing those of ``options`` (a convenience:
            ``plan_frames(r, 0, 60, 16, 0.5, policy="keyframe_snap")``).
        max_nframes: cap on ``nframes`` (default ``MAX_NFRAMES`` = 1024); None: no cap (the token
            budget and the reader's ``max_output_bytes`` still bound the work).
        max_resize: cap on ``resize`` (default ``MAX_RESIZE`` = 8); None: no cap.
        budget: the budget outcome already computed by the caller for this request (the agent
            applies :func:`apply_token_budget` to the model's raw arguments, as the published
            evaluation does before its tool sees them); its ``nframes`` (a positive int) and
            ``resize`` are sampled and its steps and estimates recorded. ``options.max_visual_tokens``
            and ``options.maxp`` are then unused.

    Returns:
        The plan. ``plan.output_bytes`` is within ``reader.max_output_bytes``.

    Raises:
        TypeError: ``reader`` is not a VideoReader, ``options`` not a FrameOptions, or a setting is
            not a FrameOptions field.
        ValueError: invalid arguments (the message names the value and the allowed range), or an
            output above ``reader.max_output_bytes``.
    """
    if not isinstance(reader, VideoReader):
        raise TypeError(f"reader must be a VideoReader, got {type(reader).__name__}")
    request = FrameRequest(start_time, end_time, nframes, resize)
    if max_nframes is not None and request.nframes > max_nframes:
        raise ValueError(f"nframes must be in [1, {max_nframes}], got {request.nframes}")
    if max_resize is not None and request.resize > max_resize:
        raise ValueError(f"resize must be in (0, {max_resize}], got {request.resize!r}")
    options = FrameOptions.build(options, **settings)
    meta = reader.metadata
    if budget is None:
        budget = apply_token_budget(request.nframes, request.resize, height=meta.height, width=meta.width,
                                    max_visual_tokens=options.max_visual_tokens, maxp=options.maxp)
    elif not isinstance(budget, BudgetResult) or not isinstance(budget.nframes, numbers.Integral) or isinstance(
            budget.nframes, bool) or budget.nframes < 1 or not (
            isinstance(budget.resize, numbers.Real) and math.isfinite(budget.resize) and budget.resize > 0):
        raise ValueError(f"budget must be a BudgetResult with a positive int nframes and a resize > 0, got {budget!r}")
    return _plan(reader, request, budget, options)


def _plan(reader: VideoReader, request: FrameRequest, budget: BudgetResult, options: FrameOptions) -> FramePlan:
    """Steps 2-5 of :func:`plan_frames` for a validated request and its budget outcome."""
    meta = reader.metadata
    n, r = int(budget.nframes), float(budget.resize)
    aligned = aligned_size(r, height=meta.height, width=meta.width)
    size = smart_resize(aligned[0], aligned[1], FACTOR, options.min_pixels, options.max_pixels)
    for side in (*size, *aligned):
        if side > MAX_SIDE:
            raise ValueError(
                f"resize={r:.6g} gives {aligned[0]}x{aligned[1]} (height x width) frames (smart_resize: "
                f"{size[0]}x{size[1]}); sides are limited to {MAX_SIDE} pixels"
            )
    reader.check_output_bytes(n, size)
    if options.smart_resize_by == "processor":
        reader.check_output_bytes(n, aligned)

    start_s, end_s = clamp_window(request.start_time, request.end_time, reader.stream_end_s)
    timestamps = sample_timestamps(start_s, end_s, n)
    if meta.is_vfr:
        pts_table, _ = reader.frame_table()
        if len(pts_table) == 0:
            raise CorruptVideoError(f"{meta.path}: the container lists no frames for the video stream; cannot choose frames")
        indices = [_nearest_index(pts_table, t) for t in timestamps]
        targets = [float(pts_table[i]) for i in indices]
    else:
        indices = [frame_index_for_time(t, meta.average_fps, meta.num_frames) for t in timestamps]
        targets = [i / meta.average_fps for i in indices]
    snap_errors: tuple[float, ...] = (0.0,) * n
    if options.policy == "keyframe_snap":
        indices, targets, snap_errors = _snap_to_keyframes(
            reader, timestamps, indices, targets, start_s, end_s, options.snap_tolerance_s, options.snap_fraction
        )
    return FramePlan(
        request=request,
        video_size=(meta.height, meta.width),
        video_num_frames=meta.num_frames,
        start_s=float(start_s),
        end_s=float(end_s),
        timestamps_s=tuple(float(t) for t in timestamps),
        frame_indices=tuple(int(i) for i in indices),
        target_pts_s=tuple(float(t) for t in targets),
        snap_error_s=tuple(float(e) for e in snap_errors),
        nframes=n,
        resize=r,
        aligned_size=aligned,
        size=size,
        smart_resize_by=options.smart_resize_by,
        resample=options.resample,
        policy=options.policy,
        budget_steps=tuple(budget.steps),
        estimated_visual_tokens=int(budget.estimated_tokens),
        final_estimated_visual_tokens=int(budget.final_estimated_tokens),
        tokens_per_frame=tokens_for_size(*size),
    )


@dataclass(frozen=True)
class FrameBatch:
    """The frames one ``frame_select`` call returns, and the plan they were decoded from.

    Attributes:
        frames: uint8 ``[T, H, W, 3]`` RGB in ``[0, 255]``, contiguous, on the reader's device.
            ``H`` and ``W`` are multiples of 28 that already satisfy Qwen2.5-VL's smart_resize.
        pts_s: T decoded frames' pts, seconds from the first frame.
        corrupt: T flags, True for frames from damaged stream data (see ``VideoReader``).
        plan: the :class:`FramePlan` decoded (window, times, indices, size, budget, estimates).
        stats: decoder work for this call.
        total_ms: wall time of the call (planning + decoding), milliseconds.
        video: metadata of the video.

    Everything about *which* frames these are (window, times, indices, size, budget, estimates) is
    the plan's: ``batch.plan.frame_indices``, ``batch.plan.size``, ``batch.plan.num_visual_tokens``.
    """

    frames: torch.Tensor
    pts_s: tuple[float, ...]
    corrupt: tuple[bool, ...]
    plan: FramePlan
    stats: DecodeStats = field(default_factory=DecodeStats)
    total_ms: float = 0.0
    video: VideoMetadata | None = None

    def __repr__(self) -> str:
        p = self.plan
        return (
            f"FrameBatch(frames={tuple(self.frames.shape)} {self.frames.dtype}, window=[{p.start_s:.3f}, "
            f"{p.end_s:.3f}] s, nframes={p.nframes}, resize={p.resize:.4g}, "
            f"tokens={p.num_visual_tokens}, decoded={self.stats.decoded_frames})"
        )


def decode_plan(reader: VideoReader, plan: FramePlan) -> FrameBatch:
    """Decode a :class:`FramePlan` (from :func:`plan_frames`, or rebuilt with
    :meth:`FramePlan.from_dict` from a stored record) on ``reader``.

    The decoder is asked for the frame nearest each ``plan.target_pts_s`` at the plan's size and
    filter (``aligned_size`` first, then the processor's resample, where ``smart_resize_by`` is
    ``"processor"`` and smart_resize changed the size), so the same plan on the same video gives
    the same frames.

    Returns:
        FrameBatch with ``frames`` uint8 ``[T, H, W, 3]`` on the reader's device.

    Raises:
        TypeError: ``plan`` is not a FramePlan.
        ValueError: the plan does not fit this video (see :func:`check_plan`), or the reader is closed.
        CorruptVideoError: the data for a target is missing, or ``on_corrupt="error"`` and a frame is damaged.
    """
    return _decode(reader, plan, time.perf_counter())


def _decode(reader: VideoReader, plan: FramePlan, t_start: float) -> FrameBatch:
    check_plan(reader, plan)
    decode_hw = _decode_size(plan)
    decoded = reader.get_frames_nearest(list(plan.target_pts_s), size=decode_hw, resample=plan.resample)
    frames = decoded.frames
    if decode_hw != plan.size:
        frames = resample_like_processor(frames, plan.size)
    return FrameBatch(
        frames=frames,
        pts_s=tuple(decoded.pts_s.tolist()),
        corrupt=tuple(decoded.corrupt.tolist()),
        plan=plan,
        stats=decoded.stats,
        total_ms=(time.perf_counter() - t_start) * 1e3,
        video=reader.metadata,
    )


def check_plan(reader: VideoReader, plan: FramePlan) -> None:
    """Check that ``plan`` can be decoded from ``reader`` (the video it was made for, indices in
    range, targets consistent with the indices, output within ``max_output_bytes``).

    Raises:
        ValueError: the message names the field and what this video allows.
    """
    if not isinstance(plan, FramePlan):
        raise TypeError(f"plan must be a FramePlan, got {type(plan).__name__}")
    meta = reader.metadata
    if plan.video_size != (meta.height, meta.width) or plan.video_num_frames != meta.num_frames:
        raise ValueError(
            f"plan was made for a {plan.video_size[0]}x{plan.video_size[1]} video of {plan.video_num_frames} frames; "
            f"{meta.path} is {meta.height}x{meta.width} with {meta.num_frames} frames"
        )
    if meta.is_vfr:
        pts_table, _ = reader.frame_table()
        n_frames = len(pts_table)
    else:
        pts_table, n_frames = None, meta.num_frames
    bad = [i for i in plan.frame_indices if i >= n_frames]
    if bad:
        raise ValueError(f"plan frame_indices {bad[:8]} out of range: {meta.path} has frames 0..{n_frames - 1}")
    for k, (i, t) in enumerate(zip(plan.frame_indices, plan.target_pts_s)):
        expected = float(pts_table[i]) if pts_table is not None else i / meta.average_fps
        if abs(t - expected) > 1e-6:
            raise ValueError(
                f"plan target_pts_s[{k}]={t!r} does not match frame {i} of {meta.path} (pts {expected!r} s)"
            )
    reader.check_output_bytes(plan.nframes, plan.size)
    reader.check_output_bytes(plan.nframes, _decode_size(plan))


def _decode_size(plan: FramePlan) -> tuple[int, int]:
    if plan.smart_resize_by == "processor" and plan.aligned_size != plan.size:
        return plan.aligned_size
    return plan.size


def resample_like_processor(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample uint8 ``[T, h, w, 3]`` frames to ``size = (H, W)`` the way Qwen2.5-VL's image
    processor does in vLLM's front end (torchvision ``resize`` on a CPU uint8 tensor: bicubic,
    a = -0.5, antialiased, integer weights; ``shared/design/qwen25vl-layout.md`` §2.3). Runs on the
    CPU; returns uint8 ``[T, H, W, 3]`` contiguous on the input's device."""
    x = frames.to("cpu").permute(0, 3, 1, 2)
    y = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
    return y.permute(0, 2, 3, 1).contiguous().to(frames.device)


def _keyframe_times(reader: VideoReader) -> np.ndarray:
    """Sorted keyframe times (seconds from the first frame): container index, else a demux scan."""
    kf = np.asarray(reader.metadata.keyframe_pts_s, dtype=np.float64)
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
    """The keyframe-snap policy (see :func:`plan_frames`): returns indices, target pts, errors."""
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
