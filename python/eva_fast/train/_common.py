"""Pieces every eva_fast trainer shares: loading records with a video preflight, the tokenizer and
renderer of a checkpoint, LoRA defaults for Qwen2.5-VL, and the checkpoint files a saved model needs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from eva_fast._logging import get_logger
from eva_fast.agent import load_chat_template
from eva_fast.train._frames import resolve_video
from eva_fast.train._records import RecordError, TrajectoryRecord, load_records
from eva_fast.video import VideoError, VideoReader

logger = get_logger("train")

#: LoRA targets: the language model's attention and MLP projections (not the vision tower, whose
#: MLP uses the same names).
QWEN25VL_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
#: Files of a checkpoint folder that transformers' ``save_pretrained`` of the model and tokenizer does
#: not write but a served checkpoint needs (vLLM reads the image processor settings).
CHECKPOINT_EXTRAS = ("preprocessor_config.json", "chat_template.json", "chat_template.jinja", "video_preprocessor_config.json")


def load_training_records(
    path: str | os.PathLike,
    *,
    video_root: str | os.PathLike | None = None,
    skip_bad_samples: bool = False,
    check_videos: bool = True,
) -> tuple[list[TrajectoryRecord], list[str]]:
    """Records of a jsonl file, with malformed lines and (optionally) missing/unreadable videos
    found before training starts.

    Args:
        path: the jsonl file (format ``eva_fast.trajectory``).
        video_root: folder relative video paths are resolved against.
        skip_bad_samples: drop bad records (their reasons are returned) instead of raising.
        check_videos: open each distinct video once (header only) to find missing or unreadable files.

    Returns:
        ``(records, skipped)``: the good records and one ``"file:line: reason"`` per dropped record.

    Raises:
        FileNotFoundError: the data file is missing, or a video is (without ``skip_bad_samples``).
        RecordError: a malformed record (without ``skip_bad_samples``).
        eva_fast.video.VideoError: an unreadable video (without ``skip_bad_samples``).
    """
    skipped: list[str] = []
    records = load_records(path, skip_bad=skip_bad_samples, errors=skipped)
    if check_videos:
        status: dict[str, str | None] = {}
        keep = []
        for r in records:
            if not any(p["type"] == "frame" for _, p in r.image_parts()):
                keep.append(r)
                continue
            video = resolve_video(r, video_root)
            if video not in status:
                try:
                    reader = VideoReader(video)
                    close = getattr(reader, "close", None)
                    if close is not None:
                        close()
                    status[video] = None
                except (FileNotFoundError, VideoError) as e:
                    status[video] = f"{type(e).__name__}: {e}"
            if status[video] is None:
                keep.append(r)
            elif skip_bad_samples:
                skipped.append(f"{r.where}: video {video!r}: {status[video]}")
            else:
                raise RecordError(f"{r.where}: video {video!r} cannot be read: {status[video]}")
        records = keep
    if skipped:
        logger.warning("skipped %d bad training record(s) of %s; first: %s", len(skipped), path, skipped[0])
    if not records:
        raise RecordError(f"{path}: no usable training records" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return records, skipped


def load_tokenizer(model_path: str | os.PathLike) -> Any:
    """The checkpoint's tokenizer, with its chat template set from the checkpoint's template files
    (so a saved tokenizer carries it) and a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer  # heavy; eva_fast.train imports this module for data work too

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.chat_template = load_chat_template(model_path, tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def base_model_and_tokenizer(model: Any, processing_class: Any = None) -> tuple[str | None, Any]:
    """A trainer's base checkpoint path (a folder or hub id given as ``model``, else the loaded
    model's ``name_or_path``) and its tokenizer (``processing_class``, else the checkpoint's, see
    :func:`load_tokenizer`).

    Raises:
        ValueError: a loaded model without a path and no ``processing_class``.
    """
    base = os.fspath(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", None)
    if processing_class is None:
        if not base:
            raise ValueError("pass processing_class (the tokenizer) with a loaded model")
        processing_class = load_tokenizer(base)
    return base, processing_class


def copy_checkpoint_extras(src: str | os.PathLike | None, dst: str | os.PathLike) -> list[str]:
    """Copy :data:`CHECKPOINT_EXTRAS` that ``dst`` lacks from the base checkpoint ``src``; returns
    the names copied (nothing when ``src`` is not a local folder)."""
    if src is None or not Path(src).is_dir():
        return []
    copied = []
    for name in CHECKPOINT_EXTRAS:
        s, d = Path(src) / name, Path(dst) / name
        if s.is_file() and not d.exists():
            shutil.copyfile(s, d)
            copied.append(name)
    return copied


def default_lora_targets(target_modules: Sequence[str] | str | None) -> Sequence[str] | str:
    """The LoRA targets to use: the caller's, else :data:`QWEN25VL_LORA_TARGETS`."""
    return QWEN25VL_LORA_TARGETS if not target_modules else target_modules


class CheckpointExtrasMixin:
    """After each save, copy :data:`CHECKPOINT_EXTRAS` from the base checkpoint
    (``self.base_model_path``) into the saved folder, on the process that writes checkpoints only
    (``args.should_save``): transformers calls ``_save`` on every process, and a second writer
    raced the first (a rank copying into a folder not made yet failed a two-process run)."""

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            copy_checkpoint_extras(self.base_model_path, output_dir or self.args.output_dir)


class ResumeWeightsMixin:
    """Resume a trainer with the checkpoint's weights for models whose saved keys differ from their
    module names (Qwen2.5-VL: saved as ``visual.*`` / ``model.*``, held as ``model.visual.*`` /
    ``model.language_model.*``).

    transformers 5.x's ``Trainer._load_from_checkpoint`` loads ``model.safetensors`` with a plain
    ``load_state_dict(strict=False)``, without the key conversion ``from_pretrained`` applies, so
    *no* weight is restored and training silently restarts from the initial weights
    (huggingface/transformers#43701; seen here with transformers 5.23: the resumed loss jumped
    back to the first step's). This loads the checkpoint through ``from_pretrained`` (transformers'
    own key mapping) and copies it strictly into the live model. PEFT adapters, DeepSpeed and FSDP
    checkpoints keep transformers' own paths.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        target = self.model if model is None else model
        plain = self.accelerator.unwrap_model(target)
        has_weights = any(
            (Path(resume_from_checkpoint) / n).is_file()
            for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
        )
        if (not has_weights or hasattr(plain, "peft_config") or self.is_deepspeed_enabled or self.is_fsdp_enabled
                or not hasattr(type(plain), "from_pretrained")):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(plain.parameters()).dtype
        saved = type(plain).from_pretrained(resume_from_checkpoint, dtype=dtype, device_map=None)
        plain.load_state_dict(saved.state_dict(), strict=True)
        logger.info("resumed model weights from %s (%d tensors)", resume_from_checkpoint, len(saved.state_dict()))
        del saved


def log_skipped_samples(trainer: Any, skipped: Any) -> None:
    """Log ``skipped_samples``: samples the collator skipped (``skip_bad_samples``) since this run
    started, summed over all processes (one ``gather`` per micro-batch: ``compute_loss`` runs on
    every process in lockstep), so a bad video seen by any rank shows in the main process's logs.

    Args:
        trainer: an eva_fast trainer (TRL's ``_metrics`` dict, an accelerator); the mode (train or
            eval) is the model's.
        skipped: the batch's ``eva_num_skipped`` (int or 0-d tensor); None (no collator count)
            logs nothing.
    """
    if skipped is None:
        return
    mode = "train" if trainer.model.training else "eval"
    acc = trainer.accelerator
    local = torch.as_tensor(skipped, dtype=torch.long, device=acc.device).reshape(1)
    totals = trainer.__dict__.setdefault("_eva_skipped_samples", {"train": 0, "eval": 0})
    totals[mode] += int(acc.gather(local).sum().item())
    trainer._metrics[mode]["skipped_samples"] = [float(totals[mode])]
