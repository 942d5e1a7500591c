"""SFT of EVA on TRL's ``SFTTrainer`` (paper §3.2, the cold start: multi-turn trajectories, 2 epochs).

TRL keeps what it owns (the loss, optimizer, accelerate / DeepSpeed / FSDP, logging, checkpoints,
resume). eva_fast supplies the data: :class:`EvaCollator` renders each stored trajectory with the
agent's own renderer, decodes its frames again with eva_fast's decoder and packer, and masks the
labels to the assistant turns. Why not TRL's own vision SFT path (``../shared/design/training.md``):
its images column puts placeholders before the first user turn, not inside tool turns; its
assistant-only loss needs the stock template byte for byte; ``max_length`` (1024 by default)
truncates image pads; and ``AutoProcessor`` needs torchvision. So the trainer gets our collator,
``skip_prepare_dataset`` and ``remove_unused_columns=False``; nothing of TRL's loss changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from eva_fast._checks import check_choice, positive_int
from eva_fast._logging import get_logger
from eva_fast.agent import ChatRenderer
from eva_fast.train._collator import EvaCollator, records_dataset
from eva_fast.train._common import (
    CheckpointExtrasMixin,
    ResumeWeightsMixin,
    base_model_and_tokenizer,
    load_training_records,
    log_skipped_samples,
)
from eva_fast.train._frames import ReaderCache
from eva_fast.train._records import TrajectoryRecord

logger = get_logger("train")

try:
    from trl import SFTConfig, SFTTrainer
except ImportError as e:  # pragma: no cover - trl is the train extra
    raise ImportError("eva_fast.train needs TRL: pip install 'trl==1.16.0' peft accelerate rouge-score") from e

_PIXEL_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class EvaDataArguments:
    """Data and frame options shared by eva_fast's trainer configs."""

    train_file: str | None = field(default=None, metadata={"help": "training records (jsonl, format eva_fast.trajectory)"})
    eval_file: str | None = field(default=None, metadata={"help": "optional evaluation records (jsonl)"})
    video_root: str | None = field(default=None, metadata={"help": "folder that relative video paths are resolved against"})
    skip_bad_samples: bool = field(
        default=False,
        metadata={"help": "skip (and log) records whose video is missing/unreadable, whose frames do not match, or that "
                  "are longer than max_length, instead of stopping"},
    )
    check_videos: bool = field(default=True, metadata={"help": "open every video once before training (find missing files early)"})
    reader_cache_size: int = field(default=8, metadata={"help": "open videos kept per DataLoader worker"})
    decode_device: str = field(default="cpu", metadata={"help": "where frames are decoded: 'cpu' or 'cuda[:N]'"})
    pixel_dtype: str = field(default="float32", metadata={"help": "pixel_values dtype: float32, bfloat16 or float16"})

    def _check_data(self) -> None:
        check_choice("pixel_dtype", self.pixel_dtype, _PIXEL_DTYPES)
        positive_int("reader_cache_size", self.reader_cache_size)


@dataclass
class EvaSFTConfig(SFTConfig, EvaDataArguments):
    """TRL's ``SFTConfig`` with eva_fast's data and frame options (:class:`EvaDataArguments`).

    Defaults that differ from TRL's, and why: ``max_length`` 32768 (EVA trajectories run to ~20k
    tokens; a longer sample is a bad sample, never truncated), ``remove_unused_columns=False`` and
    ``dataset_kwargs={"skip_prepare_dataset": True}`` (the collator builds the inputs), ``packing``
    and ``padding_free`` refused (they cannot keep images with their samples). EVA's paper recipe
    (§4.1): 2 epochs, batch 8 (``per_device_train_batch_size`` x GPUs x
    ``gradient_accumulation_steps``), bf16 on GPUs.
    """

    max_length: int | None = field(default=32768, metadata={"help": "longest sample in tokens (longer ones are bad samples)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "must stay False: the collator reads the records"})
    dataset_kwargs: dict[str, Any] | None = field(default_factory=lambda: {"skip_prepare_dataset": True})
    freeze_vision_tower: bool = field(default=False, metadata={"help": "train only the language model (vision tower frozen)"})

    def __post_init__(self) -> None:
        if self.remove_unused_columns:
            raise ValueError("EvaSFTConfig.remove_unused_columns must be False: the collator reads the record column")
        if self.packing or self.padding_free:
            raise ValueError("EvaSFTConfig: packing and padding_free are not supported for EVA's multi-turn vision samples")
        self.dataset_kwargs = dict(self.dataset_kwargs or {}, skip_prepare_dataset=True)
        self._check_data()
        super().__post_init__()


def freeze_vision_tower(model: Any) -> int:
    """Stop gradients into Qwen2.5-VL's vision tower (the ``visual`` module, however wrapped);
    returns the parameters frozen.

    Raises:
        ValueError: the model has no ``visual`` module.
    """
    n = 0
    for name, module in model.named_modules():
        if name == "visual" or name.endswith(".visual"):
            for p in module.parameters():
                p.requires_grad_(False)
                n += 1
    if n == 0:
        raise ValueError("freeze_vision_tower: the model has no 'visual' module (not a Qwen2.5-VL model?)")
    return n


def make_collator(args: EvaDataArguments, renderer: Any, max_length: int | None) -> EvaCollator:
    """The :class:`EvaCollator` a config describes."""
    return EvaCollator(
        renderer,
        video_root=args.video_root,
        max_length=max_length,
        skip_bad_samples=args.skip_bad_samples,
        pixel_dtype=getattr(torch, args.pixel_dtype),
        readers=ReaderCache(args.reader_cache_size, args.decode_device),
    )


def trainer_records(trainer: str, args: EvaDataArguments, train_dataset: Any, eval_dataset: Any
                    ) -> tuple[list[TrajectoryRecord], list[TrajectoryRecord], list[str]]:
    """Training and evaluation records of a trainer (given, from a jsonl path, or from
    ``args.train_file`` / ``args.eval_file``) and the ``file:line: reason`` of the skipped ones.

    Raises:
        ValueError: no training records.
    """
    train, skipped = _records(train_dataset, args, args.train_file)
    if not train:
        raise ValueError(f"{trainer}: no training records (give train_dataset or args.train_file)")
    evals, skipped_eval = _records(eval_dataset, args, args.eval_file)
    return train, evals, skipped + skipped_eval


def _records(data: Any, args: EvaDataArguments, file: str | None) -> tuple[list[TrajectoryRecord], list[str]]:
    if data is None:
        if file is None:
            return [], []
        return load_training_records(
            file, video_root=args.video_root, skip_bad_samples=args.skip_bad_samples, check_videos=args.check_videos
        )
    if isinstance(data, (str, os.PathLike)):
        return load_training_records(
            data, video_root=args.video_root, skip_bad_samples=args.skip_bad_samples, check_videos=args.check_videos
        )
    return list(data), []


class EvaSFTTrainer(ResumeWeightsMixin, CheckpointExtrasMixin, SFTTrainer):
    """TRL's ``SFTTrainer`` on EVA trajectories (see the module docstring).

    Args:
        model: checkpoint folder (or hub id) of a Qwen2.5-VL model, or a loaded model.
        args: :class:`EvaSFTConfig`.
        train_dataset: records (list of :class:`TrajectoryRecord`) or a jsonl path; None reads
            ``args.train_file``.
        eval_dataset: likewise, or ``args.eval_file``.
        processing_class: the tokenizer (default: the checkpoint's, with its chat template).
        peft_config: a ``peft`` config for LoRA (see :data:`eva_fast.train.QWEN25VL_LORA_TARGETS`).
        **kwargs: other ``SFTTrainer`` arguments (callbacks, optimizers, ...).

    Raises:
        ValueError: no training data; RecordError / FileNotFoundError / VideoError for bad data
        (see ``skip_bad_samples``).
    """

    def __init__(
        self,
        model: Any,
        args: EvaSFTConfig,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, EvaSFTConfig):
            raise TypeError(f"args must be an EvaSFTConfig, got {type(args).__name__}")
        self.base_model_path, processing_class = base_model_and_tokenizer(model, processing_class)
        train, evals, self.skipped_records = trainer_records("EvaSFTTrainer", args, train_dataset, eval_dataset)
        renderer = ChatRenderer(processing_class, processing_class.chat_template)
        collator = make_collator(args, renderer, args.max_length)
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=records_dataset(train),
            eval_dataset=records_dataset(evals) if evals else None,
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )
        if args.freeze_vision_tower:
            freeze_vision_tower(self.model)
        self._metrics["train"]["skipped_records"] = [float(len(self.skipped_records))]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # the collator reports samples it skipped in this batch; it is not a model input
        log_skipped_samples(self, inputs.pop("eva_num_skipped", None))
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
