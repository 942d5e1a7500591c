"""Video API: open videos, read frames by time, and EVA's frame-selection tool.

    from eva_fast.video import FrameOptions, VideoReader, select_frames, plan_frames, decode_plan
    batch = select_frames("video.mp4", start_time=0, end_time=60, nframes=16, resize=0.5)
    batch.frames  # uint8 [16, H, W, 3], H and W multiples of 28
    batch.plan    # FramePlan: window, times, indices, size, budget; to_dict() / from_dict()
    batch.stats   # DecodeStats: decoder work
    select_frames("video.mp4", 0, 60, 16, 0.5, options=FrameOptions(policy="keyframe_snap"))

Modules: ``_reader`` (``VideoReader`` over ``eva_fast._C``: metadata, frames by time, GOP-parallel
CPU decoding, NVDEC), ``_policy`` (EVA's request validation, clamping, sample times, frame choice,
sizes, token budget: pure host math), ``_options`` (``FrameOptions``: every frame setting, its
default, unit and check, and the CLI flags made from it), ``_plan`` (``FramePlan`` = one resolved
call, ``plan_frames``, ``decode_plan``, ``FrameBatch``), ``_select`` (``select_frames`` = plan +
decode), ``_gop`` (decode-work accounting).
"""

from eva_fast.video._options import FrameOptions, add_frame_option_flags, frame_options_from_flags
from eva_fast.video._plan import (
    SNAP_MIN_GOP_RATIO,
    FrameBatch,
    FramePlan,
    check_plan,
    decode_plan,
    plan_frames,
    resample_like_processor,
)
from eva_fast.video._policy import (
    DEFAULT_MAX_OUTPUT_BYTES,
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
    estimate_visual_tokens,
    frame_index_for_time,
    output_size,
    sample_timestamps,
)
from eva_fast.video._reader import (
    CorruptVideoError,
    DecodedFrames,
    DecodeStats,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoError,
    VideoMetadata,
    VideoReader,
)
from eva_fast.video._select import select_frames

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "MAX_NFRAMES",
    "MAX_RESIZE",
    "POLICIES",
    "RESAMPLES",
    "SMART_RESIZE_BY",
    "SNAP_MIN_GOP_RATIO",
    "BudgetResult",
    "CorruptVideoError",
    "DecodeStats",
    "DecodedFrames",
    "FrameBatch",
    "FrameOptions",
    "FramePlan",
    "FrameRequest",
    "NoVideoStreamError",
    "NotAVideoError",
    "Policy",
    "Resample",
    "SmartResizeBy",
    "UnsupportedCodecError",
    "VideoError",
    "VideoMetadata",
    "VideoReader",
    "add_frame_option_flags",
    "aligned_size",
    "apply_token_budget",
    "check_plan",
    "clamp_window",
    "decode_plan",
    "estimate_visual_tokens",
    "frame_index_for_time",
    "frame_options_from_flags",
    "output_size",
    "plan_frames",
    "resample_like_processor",
    "sample_timestamps",
    "select_frames",
]
