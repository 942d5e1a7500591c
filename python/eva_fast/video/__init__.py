"""Video API: open videos, read frames by time, and EVA's frame-selection tool.

    from eva_fast.video import VideoReader, select_frames, plan_frames, decode_plan
    batch = select_frames("video.mp4", start_time=0, end_time=60, nframes=16, resize=0.5)
    batch.frames  # uint8 [16, H, W, 3], H and W multiples of 28
    batch.plan    # FramePlan: window, times, indices, size, budget; to_dict() / from_dict()
"""

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
    DEFAULT_MAX_VISUAL_TOKENS,
    DEFAULT_MAXP,
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
    "DEFAULT_MAXP",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_MAX_VISUAL_TOKENS",
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
    "aligned_size",
    "apply_token_budget",
    "check_plan",
    "clamp_window",
    "decode_plan",
    "estimate_visual_tokens",
    "frame_index_for_time",
    "output_size",
    "plan_frames",
    "resample_like_processor",
    "sample_timestamps",
    "select_frames",
]
