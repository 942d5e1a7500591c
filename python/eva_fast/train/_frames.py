"""Frames of a training record, decoded again on the fly: the same ``select_frames`` call the agent
made, on a per-process cache of open videos, checked against what the record says it returned."""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from eva_fast import (
    video,
    vision,  # vision.EvaQwen2VLImageProcessor loads transformers on first use
)
from eva_fast._checks import positive_int
from eva_fast._logging import get_logger
from eva_fast.agent import plan_tool_call
from eva_fast.train._records import RecordError, TrajectoryRecord
from eva_fast.video import decode_plan

logger = get_logger("train")


class FrameMismatchError(RecordError):
    """A record's frames do not decode to what it recorded (other video, other settings); the
    message names the sample."""


class ReaderCache:
    """Open :class:`eva_fast.video.VideoReader`\\ s of one process, least recently used first out.

    A long video is opened once per process (DataLoader worker) and reused by every sample that
    needs it. The cache is per process id: after a ``fork`` (DataLoader workers) a child never uses
    its parent's open files, it opens its own.

    Args:
        max_open: readers kept open (>= 1).
        device: decoding device of the readers (``"cpu"`` or ``"cuda[:N]"``).
    """

    def __init__(self, max_open: int = 8, device: str = "cpu") -> None:
        self.max_open = positive_int("max_open", max_open)
        self.device = device
        self._pid = os.getpid()
        self._readers: OrderedDict[str, Any] = OrderedDict()
        self.opened = 0

    def get(self, path: str) -> Any:
        """The reader of ``path`` (opened on first use).

        Raises:
            FileNotFoundError, eva_fast.video.VideoError: see ``VideoReader``.
        """
        if os.getpid() != self._pid:  # forked: the parent's readers share file offsets with it
            self._pid, self._readers = os.getpid(), OrderedDict()
        r = self._readers.get(path)
        if r is not None:
            self._readers.move_to_end(path)
            return r
        r = video.VideoReader(path, device=self.device)
        self.opened += 1
        self._readers[path] = r
        while len(self._readers) > self.max_open:
            _, old = self._readers.popitem(last=False)
            close = getattr(old, "close", None)
            if close is not None:
                close()
        return r

    def __getstate__(self) -> dict[str, Any]:  # spawned DataLoader workers get an empty cache
        return {"max_open": self.max_open, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_open"], state["device"])


def resolve_video(record: TrajectoryRecord, video_root: str | os.PathLike | None) -> str:
    """The record's video path: absolute as is; relative under ``video_root`` (else the current folder)."""
    p = Path(record.video)
    if not p.is_absolute() and video_root is not None:
        p = Path(video_root) / p
    return str(p)


def record_frames(
    record: TrajectoryRecord,
    readers: ReaderCache,
    video_root: str | os.PathLike | None = None,
    image_processor: Any = None,
) -> list[torch.Tensor]:
    """The record's images in conversation order, as runs of uint8 ``[T_i, H_i, W_i, 3]`` CPU (or
    reader-device) tensors: consecutive frames of one call form one run; each image file is a run of 1.

    Frame parts are planned again (:func:`eva_fast.agent.plan_tool_call`, the loop's own planning:
    the call's arguments and the record's ``frame_options``) and checked before anything is decoded: the frame
    indices and the output size must equal the recorded ones, and the video's size and duration
    must equal ``video_meta``; then the plan is decoded (:func:`eva_fast.video.decode_plan`). Image parts are read from their files (relative to the record's file) and
    prepared by ``image_processor`` (:meth:`EvaQwen2VLImageProcessor.prepare_image`).

    Raises:
        FrameMismatchError: a call resolves to other frames or another size, or the video's
            metadata differs from the record's (the message names the sample and the call).
        FileNotFoundError, eva_fast.video.VideoError: the video or an image cannot be read.
    """
    runs: list[torch.Tensor] = []
    parts = record.image_parts()
    if not parts:
        return runs
    reader = None
    batches: dict[tuple[int, int], Any] = {}
    options = record.frame_options
    if any(p["type"] == "frame" for _, p in parts):
        reader = readers.get(resolve_video(record, video_root))
        meta = reader.metadata
        vm = record.video_meta
        if vm and (vm["width"] != meta.width or vm["height"] != meta.height
                   or not math.isclose(vm["duration_s"], meta.duration_s, rel_tol=0, abs_tol=1e-3)):
            raise FrameMismatchError(
                f"{record.where}: video {reader.path!r} is {meta.width}x{meta.height}, {meta.duration_s:.3f} s but the "
                f"record was made on {vm['width']}x{vm['height']}, {vm['duration_s']:.3f} s"
            )
    # a run is (batch key, first index, last index) of consecutive frames of one call, or an image
    pending: list[Any] = []

    def flush() -> None:
        if pending and isinstance(pending[0], tuple):
            key, i0, i1 = pending[0]
            runs.append(batches[key].frames[i0 : i1 + 1])
        elif pending:
            runs.append(pending[0][None])
        pending.clear()

    for k, p in parts:
        if p["type"] == "frame":
            key = (k, p["call"])
            if key not in batches:
                call = record.calls[k][p["call"]]
                a = call.arguments
                try:
                    plan = plan_tool_call(reader, a, options)
                except ValueError as e:
                    raise FrameMismatchError(f"{record.where}: message {k} call {p['call']} ({a}): {e}") from e
                if tuple(plan.frame_indices) != call.frame_indices or tuple(plan.size) != call.size:
                    raise FrameMismatchError(
                        f"{record.where}: message {k} call {p['call']} ({a}) now resolves to frames "
                        f"{list(plan.frame_indices)[:8]} at {tuple(plan.size)} but the record has "
                        f"{list(call.frame_indices)[:8]} at {call.size}: not the video or settings the agent used"
                    )
                batch = decode_plan(reader, plan)
                if any(batch.corrupt):
                    logger.warning("%s: message %d call %d has frames from damaged stream data", record.where, k, p["call"])
                batches[key] = batch
            i = p["index"]
            if pending and isinstance(pending[0], tuple) and pending[0][0] == key and pending[0][2] == i - 1:
                pending[0] = (key, pending[0][1], i)
            else:
                flush()
                pending.append((key, i, i))
        else:
            if image_processor is None:
                image_processor = vision.EvaQwen2VLImageProcessor()
            path = Path(p["path"])
            if not path.is_absolute() and record.base_dir is not None:
                path = Path(record.base_dir) / path
            if not path.is_file():
                raise FileNotFoundError(f"{record.where}: image file {str(path)!r} does not exist")
            with Image.open(path) as img:
                frame = image_processor.prepare_image(img)
            flush()
            pending.append(frame)
    flush()
    return runs
