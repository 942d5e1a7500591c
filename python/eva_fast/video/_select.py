"""``select_frames``: EVA's ``frame_select`` tool on eva_fast's decoder (:func:`plan_frames` +
:func:`decode_plan`)."""

from __future__ import annotations

import os
import time
from typing import Any

from eva_fast.video._options import FrameOptions
from eva_fast.video._plan import FrameBatch, _decode, plan_frames
from eva_fast.video._policy import MAX_NFRAMES, MAX_RESIZE, BudgetResult
from eva_fast.video._reader import VideoReader, normalize_device


def select_frames(
    video: str | os.PathLike | VideoReader,
    start_time: float,
    end_time: float,
    nframes: int,
    resize: float = 1.0,
    *,
    options: FrameOptions | None = None,
    device: str = "cpu",
    max_nframes: int | None = MAX_NFRAMES,
    max_resize: float | None = MAX_RESIZE,
    budget: BudgetResult | None = None,
    **settings: Any,
) -> FrameBatch:
    """EVA's ``frame_select(start_time, end_time, nframes, resize)`` tool:
    ``decode_plan(reader, plan_frames(reader, ...))``.

    The policy (budget, clamping, sample times, frame choice, size, ``keyframe_snap``) is
    :func:`plan_frames`'s; the arguments are its arguments (``options`` / ``**settings``: the
    :class:`FrameOptions`; ``max_nframes``, ``max_resize``, ``budget``) plus:

    Args:
        video: a path or an open :class:`VideoReader` (reuse one across calls of a trajectory).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (NVDEC decode + CUDA resize; frames come back on
            that GPU, ready on torch's current stream; see :class:`VideoReader` for the stream
            contract and the CPU fallback, which ``stats.backend`` / ``stats.fallback_reason`` record).
            With an open reader it must be the reader's device.

    Returns:
        FrameBatch with ``frames`` uint8 ``[T, H, W, 3]`` and ``plan``.

    Raises:
        TypeError: ``options`` is not a FrameOptions, or a setting is not one of its fields.
        ValueError: invalid arguments (the message names the value and the allowed range), an
            output above the reader's ``max_output_bytes``, or a closed reader.
        FileNotFoundError, NotAVideoError, NoVideoStreamError, UnsupportedCodecError,
        CorruptVideoError: see :class:`VideoReader`.
    """
    t_start = time.perf_counter()
    own = not isinstance(video, VideoReader)
    reader = VideoReader(video, device=device) if own else video
    try:
        if reader.device != normalize_device(device):
            raise ValueError(f"device={device!r} but the VideoReader was opened on {reader.device!r}")
        plan = plan_frames(reader, start_time, end_time, nframes, resize, options=options, max_nframes=max_nframes,
                           max_resize=max_resize, budget=budget, **settings)
        return _decode(reader, plan, t_start)
    finally:
        if own:
            reader.close()
