"""Minimal GOP work: the decode floor of an exact frame request.

An exact decoder must decode, for each requested frame, every frame from the keyframe that opens its
GOP up to the frame itself; targets that share a GOP share that work (one forward pass from the
keyframe to the furthest target). ``decoded_frames / minimal_gop_work`` is the decode-work ratio
reported by ``eva-fast bench``: 1.0 is the floor for any exact decoder.

Frames are counted in presentation order. With B-frames an exact decoder may have to feed a few
reference packets past the last target (they are decoded but not output), so decoders that count
output frames land at 1.0 and ones that count every decoded picture may sit slightly above it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def gop_starts(keyframe_flags: Sequence[bool]) -> np.ndarray:
    """For each frame (presentation order), the index of the keyframe that opens its GOP.

    Frames before the first keyframe (broken starts) belong to a GOP starting at frame 0.
    """
    flags = np.asarray(keyframe_flags, dtype=bool)
    idx = np.where(flags, np.arange(len(flags)), 0)
    return np.maximum.accumulate(idx) if len(idx) else idx


def minimal_gop_work(
    frame_pts: Sequence[float], keyframe_flags: Sequence[bool], target_frame_indices: Sequence[int]
) -> int:
    """Frames an exact decoder must decode to produce ``target_frame_indices``.

    Args:
        frame_pts: every frame's pts (seconds, sorted: presentation order), as from
            ``VideoReader.frame_table()``; only its length is used to validate indices.
        keyframe_flags: keyframe flag per frame, same length.
        target_frame_indices: requested frames (0-based presentation indices, any order,
            duplicates allowed).

    Returns:
        Sum over the GOPs touched of ``(furthest target in the GOP) - (GOP's keyframe) + 1``.

    Raises:
        ValueError: lengths differ or an index is out of range.
    """
    n = len(frame_pts)
    if len(keyframe_flags) != n:
        raise ValueError(f"frame_pts ({n}) and keyframe_flags ({len(keyframe_flags)}) differ in length")
    targets = np.asarray(list(target_frame_indices), dtype=np.int64)
    if targets.size == 0:
        return 0
    if targets.min() < 0 or targets.max() >= n:
        raise ValueError(f"target frame indices must be in [0, {n - 1}], got {targets.min()}..{targets.max()}")
    starts = gop_starts(keyframe_flags)[targets]
    furthest: dict[int, int] = {}
    for s, t in zip(starts.tolist(), targets.tolist()):
        if t > furthest.get(s, -1):
            furthest[s] = t
    return int(sum(t - s + 1 for s, t in furthest.items()))
