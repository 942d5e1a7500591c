"""Video API: open videos, read frames by time, and EVA's frame-selection tool.

    from eva_fast.video import VideoReader, select_frames
    batch = select_frames("video.mp4", start_time=0, end_time=60, nframes=16, resize=0.5)
    batch.frames  # uint8 [16, H, W, 3], H and W multiples of 28
"""

from eva_fast.video._policy import (
    DEFAULT_MAX_VISUAL_TOKENS,
    DEFAULT_MAXP,
    MAX_NFRAMES,
    MAX_RESIZE,
    BudgetResult,
    FrameRequest,
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
from eva_fast.video._select import FrameBatch, select_frames

__all__ = [
    "DEFAULT_MAXP",
    "DEFAULT_MAX_VISUAL_TOKENS",
    "MAX_NFRAMES",
    "MAX_RESIZE",
    "BudgetResult",
    "CorruptVideoError",
    "DecodeStats",
    "DecodedFrames",
    "FrameBatch",
    "FrameRequest",
    "NoVideoStreamError",
    "NotAVideoError",
    "UnsupportedCodecError",
    "VideoError",
    "VideoMetadata",
    "VideoReader",
    "apply_token_budget",
    "clamp_window",
    "estimate_visual_tokens",
    "frame_index_for_time",
    "output_size",
    "sample_timestamps",
    "select_frames",
]
