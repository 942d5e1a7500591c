"""``EvaCollator``: training records -> ``Qwen2_5_VLForConditionalGeneration`` inputs, frames decoded on the fly.

Per sample: the record's frames are decoded again by eva_fast's decoder exactly as the agent's
``frame_select`` calls chose them (checked against the record), packed by eva_fast's packer, and
the conversation is rendered by the renderer the agent's ``transformers`` backend uses
(:class:`eva_fast.agent.ChatRenderer`): training sees the agent's tokens and pixels. Labels are the
assistant turns (content + ``<|im_end|>``); everything else is -100.

The collator runs where the DataLoader calls it: in its worker processes when
``dataloader_num_workers > 0``, each with its own cache of open videos.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from eva_fast._checks import positive_int
from eva_fast._logging import get_logger
from eva_fast.agent import ChatRenderer
from eva_fast.train._frames import ReaderCache, record_frames
from eva_fast.train._records import RecordError, TrajectoryRecord
from eva_fast.video import VideoError
from eva_fast.vision import pack_qwen25vl, tokens_for_size

logger = get_logger("train")

IGNORE_INDEX = -100


class SampleTooLongError(RecordError):
    """A sample longer than ``max_length`` tokens (samples are never truncated: that would cut image pads)."""


@dataclass
class EncodedSample:
    """One record as model inputs (before batching).

    Attributes:
        input_ids: int64 ``[L]``, image pads expanded.
        labels: int64 ``[L]``: the id on assistant content and end-of-turn tokens, -100 elsewhere.
        pixel_values: ``[P, 1176]`` (``pixel_dtype``) or None without images.
        image_grid_thw: int64 ``[T, 3]`` or None.
        frames: the uint8 frame runs that were packed (``[T_i, H_i, W_i, 3]``), in order.
        record: the record.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    frames: list[torch.Tensor]
    record: TrajectoryRecord

    @property
    def num_trained_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def as_record(row: Any) -> TrajectoryRecord:
    """A record from a collator row: a :class:`TrajectoryRecord`, a record dict, or a dataset row
    ``{"record": <JSON text>, "where": "file:line"}`` (see :func:`records_dataset`)."""
    if isinstance(row, TrajectoryRecord):
        return row
    if isinstance(row, dict) and isinstance(row.get("record"), str):
        return TrajectoryRecord.from_dict(json.loads(row["record"]), row.get("where") or "<dataset>", row.get("base_dir"))
    if isinstance(row, dict):
        return TrajectoryRecord.from_dict(row)
    raise TypeError(f"collator rows must be TrajectoryRecord, record dicts or dataset rows, got {type(row).__name__}")


def records_dataset(records: Sequence[TrajectoryRecord]) -> Any:
    """A ``datasets.Dataset`` of records (columns ``record`` (JSON text), ``where``, ``base_dir``) for
    TRL's trainers, which take ``datasets`` objects; :class:`EvaCollator` turns its rows back into records."""
    from datasets import Dataset  # optional (the train extra)

    return Dataset.from_dict({
        "record": [r.to_json() for r in records],
        "where": [r.where for r in records],
        "base_dir": [r.base_dir or "" for r in records],
    })


class EvaCollator:
    """Batches training records into ``Qwen2_5_VLForConditionalGeneration`` inputs.

    Args:
        renderer: the chat renderer (tokenizer + the checkpoint's chat template).
        video_root: folder relative video paths are resolved against (None: as written).
        max_length: longest sample in tokens (None: no limit). Longer samples are bad samples:
            never truncated, because cutting image pads breaks the vision/text alignment.
        pad_token_id: id used to right-pad ``input_ids`` (default the tokenizer's pad, else EOS).
        skip_bad_samples: skip a sample whose video is missing/unreadable, whose frames do not
            match its record, or that is too long (logged with its ``file:line``, counted in
            ``eva_num_skipped``) instead of raising.
        pixel_dtype: ``pixel_values`` dtype (float32 is bit-exact with transformers' processor;
            bfloat16 halves the bytes moved).
        readers: cache of open videos (default a new one: 8 readers, CPU decoding).
        pack_backend: ``pack_qwen25vl`` backend (None: auto).

    Calling it on a list of rows returns::

        {"input_ids": int64 [B, L], "attention_mask": int64 [B, L], "labels": int64 [B, L],
         "mm_token_type_ids": int32 [B, L] (1 on image pads; transformers derives M-RoPE positions
         from it), "pixel_values": [P, 1176], "image_grid_thw": int64 [T, 3] (with images),
         "eva_num_skipped": int64 [] (samples skipped in this batch)}

    Raises (per bad sample, without ``skip_bad_samples``):
        RecordError (incl. FrameMismatchError, SampleTooLongError), FileNotFoundError,
        eva_fast.video.VideoError. With ``skip_bad_samples``, RuntimeError when every sample of a
        batch is bad.
    """

    def __init__(
        self,
        renderer: ChatRenderer,
        *,
        video_root: str | os.PathLike | None = None,
        max_length: int | None = None,
        pad_token_id: int | None = None,
        skip_bad_samples: bool = False,
        pixel_dtype: torch.dtype = torch.float32,
        readers: ReaderCache | None = None,
        pack_backend: str | None = None,
    ) -> None:
        positive_int("max_length", max_length, allow_none=True)
        self.renderer = renderer
        self.video_root = None if video_root is None else str(video_root)
        self.max_length = max_length
        tok = renderer.tokenizer
        if pad_token_id is None:
            pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if pad_token_id is None:
            raise ValueError("the tokenizer has no pad or eos token; pass pad_token_id")
        self.pad_token_id = int(pad_token_id)
        self.skip_bad_samples = skip_bad_samples
        self.pixel_dtype = pixel_dtype
        self.readers = readers or ReaderCache()
        self.pack_backend = pack_backend

    def encode(self, record: TrajectoryRecord) -> EncodedSample:
        """One record as model inputs (see :class:`EncodedSample`).

        Raises:
            RecordError, FrameMismatchError, SampleTooLongError, FileNotFoundError, VideoError.
        """
        frames = record_frames(record, self.readers, self.video_root)
        tokens = [tokens_for_size(f.shape[1], f.shape[2]) for f in frames for _ in range(f.shape[0])]
        try:
            rendered = self.renderer.render(record.template_messages(), tokens)
        except ValueError as e:
            raise RecordError(f"{record.where}: {e}") from e
        if self.max_length is not None and len(rendered) > self.max_length:
            raise SampleTooLongError(
                f"{record.where}: {len(rendered)} tokens > max_length {self.max_length} (samples are never truncated; "
                "raise max_length)"
            )
        ids = torch.tensor(rendered.input_ids, dtype=torch.long)
        mask = torch.tensor(rendered.assistant_mask, dtype=torch.bool)
        labels = torch.where(mask, ids, torch.full_like(ids, IGNORE_INDEX))
        pv = grid = None
        if frames:
            packed = pack_qwen25vl([f.cpu() for f in frames], dtype=self.pixel_dtype, backend=self.pack_backend)
            pv, grid = packed.pixel_values, packed.image_grid_thw
        return EncodedSample(ids, labels, pv, grid, frames, record)

    def encode_rows(self, rows: Sequence[Any]) -> tuple[list[EncodedSample], int]:
        """Encode rows, skipping bad ones when ``skip_bad_samples``; returns (samples, skipped)."""
        out, skipped = [], 0
        for row in rows:
            try:
                out.append(self.encode(as_record(row)))
            except (RecordError, FileNotFoundError, VideoError) as e:
                if not self.skip_bad_samples:
                    raise
                skipped += 1
                logger.warning("skipping a bad training sample: %s", e)
        if not out:
            raise RuntimeError(f"every sample of a batch of {len(rows)} was bad (see the warnings above)")
        return out, skipped

    def pad(self, samples: Sequence[EncodedSample]) -> dict[str, torch.Tensor]:
        """Right-pad encoded samples into a batch (see the class docstring for the keys)."""
        n = max(len(s.input_ids) for s in samples)
        b = len(samples)
        input_ids = torch.full((b, n), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, n), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((b, n), dtype=torch.long)
        for i, s in enumerate(samples):
            m = len(s.input_ids)
            input_ids[i, :m] = s.input_ids
            labels[i, :m] = s.labels
            attention[i, :m] = 1
        batch: dict[str, torch.Tensor] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "mm_token_type_ids": ((input_ids == self.renderer.image_token_id) & attention.bool()).to(torch.int32),
        }
        pvs = [s.pixel_values for s in samples if s.pixel_values is not None]
        if pvs:
            batch["pixel_values"] = torch.cat(pvs)
            batch["image_grid_thw"] = torch.cat([s.image_grid_thw for s in samples if s.image_grid_thw is not None])
        return batch

    def __call__(self, rows: Sequence[Any]) -> dict[str, torch.Tensor]:
        samples, skipped = self.encode_rows(rows)
        batch = self.pad(samples)
        batch["eva_num_skipped"] = torch.tensor(skipped)
        return batch
