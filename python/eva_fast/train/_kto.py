"""KTO of EVA on TRL's ``KTOTrainer`` (paper §3.2: EVA-KTO, ~11k trajectories labelled chosen /
rejected, 63 % / 37 %; reference model = the SFT checkpoint).

Each training record (format ``eva_fast.trajectory``, ``label`` true = chosen / desirable, false =
rejected / undesirable) is one whole multi-turn episode. The *prompt* is the system turn and the
first user turn (``... <|im_start|>assistant\\n``); the *completion* is everything after it: every
assistant turn and every tool turn with its frames. Only the assistant turns are scored (content +
``<|im_end|>``, exactly the SFT collator's labels); tool text, image pads and template scaffolding
are 0 in the completion mask. Frames are decoded again on the fly by :class:`EvaCollator`.

Why TRL 1.16's KTO path cannot take this as is (``../shared/design/training.md``; line numbers of
``trl/trainer/kto_trainer.py`` 1.16.0): its vision collator puts images only in the prompt and
tokenizes completions text-only (~326-341; a completion with image pads breaks); its completion
mask covers the whole completion, tool turns included (~347); and the KL forward
(``_compute_kl_logps``, ~1337-1372) pairs each prompt with the completion of the previous sample
of the batch while reusing the batch's ``pixel_values`` unchanged, so the frames of a tool turn
would be fed to another sample's tokens.

What :class:`EvaKTOTrainer` changes, and nothing else (the KTO / APO loss, reference handling,
KL clamp, weights, metrics, optimizer, accelerate / DeepSpeed / FSDP and checkpoints stay TRL's):

1. **data collator** (:class:`EvaKTOCollator`, passed as ``data_collator``): per sample the
   agent's own rendering and frames (:class:`EvaCollator`), ``completion_mask`` = the assistant
   mask, ``label``; and the KL rows TRL expects (``KL_input_ids``, ``KL_attention_mask``,
   ``KL_completion_mask``, ``KL_mm_token_type_ids``): row ``i`` = prompt ``i`` + completion
   ``(i - 1) mod B`` (TRL's own rotation), masked to that completion's assistant turns. It adds
   ``KL_sample_order`` (int64 ``[B]``: whose completion each KL row carries) and
   ``eva_images_per_sample`` (int64 ``[B]``) so the trainer can give the KL rows their frames.
2. ``_prepare_dataset`` returns the dataset unchanged: TRL's version tokenizes ``prompt`` /
   ``completion`` text columns; the collator does all of it here.
3. ``compute_loss`` removes eva_fast's extra keys from the batch (``eva_num_skipped``,
   ``KL_sample_order``, ``eva_images_per_sample``; the model would reject them), keeps the KL plan
   for step 4, calls TRL's ``compute_loss``, and then checks that the KL forward went through step 4
   twice (policy and reference): if a TRL release stops calling ``_compute_kl_logps``, training
   stops with an error instead of feeding frames to the wrong samples.
4. ``_compute_kl_logps(model, batch)``: replaces ``pixel_values`` / ``image_grid_thw`` by the KL
   rows' own frames (the batch's per-sample chunks reordered by ``KL_sample_order``,
   :func:`permute_visual`) and calls TRL's method.

Resume: :class:`ResumeWeightsMixin` (transformers 5.x's checkpoint load restores no Qwen2.5-VL
weight, huggingface/transformers#43701), as for SFT and GRPO.

Refused: ``precompute_ref_log_probs`` (TRL's precompute forward, ``compute_ref_log_probs``, passes
no ``pixel_values``). ``loss_type="apo_zero_unpaired"`` works and needs no KL rows.

What a TRL upgrade would break (pinned ``trl==1.16.0``; ``tests/train/test_kto.py`` checks each
point so an upgrade fails loudly): the names and signatures of ``KTOTrainer._compute_kl_logps(model,
batch)``, ``_prepare_dataset(dataset, processing_class, args, dataset_name)`` and
``compute_loss``; the batch keys ``completion_mask``, ``label``, ``KL_input_ids``,
``KL_attention_mask``, ``KL_completion_mask``, ``KL_mm_token_type_ids``; that the main forward's
labels are ``input_ids`` masked by ``completion_mask`` and the KL forward's by
``KL_completion_mask``; that the KL forward takes every other batch key (``pixel_values``,
``image_grid_thw``) as a model input; and the loss formula the weights test recomputes.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from eva_fast._checks import positive_number
from eva_fast._logging import get_logger
from eva_fast.agent import ChatRenderer
from eva_fast.train._collator import IGNORE_INDEX, EncodedSample, EvaCollator, records_dataset
from eva_fast.train._common import (
    CheckpointExtrasMixin,
    ResumeWeightsMixin,
    base_model_and_tokenizer,
    log_skipped_samples,
)
from eva_fast.train._frames import ReaderCache
from eva_fast.train._records import RecordError, TrajectoryRecord

logger = get_logger("train")

try:
    from trl import KTOConfig, KTOTrainer
except ImportError as e:  # pragma: no cover - trl is the train extra
    raise ImportError("eva_fast.train needs TRL: pip install 'trl==1.16.0' peft accelerate rouge-score") from e

from eva_fast.train._kto_weights import recommended_kto_weights, weights_in_recommended_range
from eva_fast.train._sft import EvaDataArguments, freeze_vision_tower, trainer_records

# ---------------------------------------------------------------------------------------------
# collator
# ---------------------------------------------------------------------------------------------


def permute_visual(
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor,
    images_per_sample: torch.Tensor,
    order: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Reorder a batch's packed images by sample: the images of sample ``order[0]``, then of
    ``order[1]``, ...

    Args:
        pixel_values: ``[P, C]`` patches of all images of the batch, sample by sample in order.
        image_grid_thw: int64 ``[N, 3]``, one row per image (``P = sum(t * h * w)``).
        images_per_sample: int64 ``[B]``, images of each sample (``sum = N``).
        order: int64 ``[K]``, sample indices in ``[0, B)`` (a sample may appear several times).

    Returns:
        ``(pixel_values [P', C], image_grid_thw [N', 3])`` on the input's device, or
        ``(None, None)`` when the reordered samples hold no image.

    Raises:
        ValueError: counts that do not add up to the grid, or indices out of range.
    """
    n_img = image_grid_thw.shape[0]
    counts = images_per_sample.to(torch.long).cpu()
    if int(counts.sum()) != n_img or (counts < 0).any():
        raise ValueError(f"images_per_sample {counts.tolist()} does not add up to the {n_img} images of image_grid_thw")
    patches = image_grid_thw.prod(dim=-1).to(torch.long).cpu()
    if int(patches.sum()) != pixel_values.shape[0]:
        raise ValueError(f"image_grid_thw describes {int(patches.sum())} patches, pixel_values has {pixel_values.shape[0]}")
    order = order.to(torch.long).cpu()
    b = counts.numel()
    if order.numel() and (int(order.min()) < 0 or int(order.max()) >= b):
        raise ValueError(f"order {order.tolist()} has indices outside [0, {b})")
    img_start = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    patch_start = torch.cat([torch.zeros(1, dtype=torch.long), patches.cumsum(0)])
    img_idx, patch_idx = [], []
    for j in order.tolist():
        a, z = int(img_start[j]), int(img_start[j + 1])
        if a == z:
            continue
        img_idx.append(torch.arange(a, z))
        patch_idx.append(torch.arange(int(patch_start[a]), int(patch_start[z])))
    if not img_idx:
        return None, None
    dev = pixel_values.device
    return (
        pixel_values.index_select(0, torch.cat(patch_idx).to(dev)),
        image_grid_thw.index_select(0, torch.cat(img_idx).to(image_grid_thw.device)),
    )


class EvaKTOCollator(EvaCollator):
    """Batches labelled training records into ``KTOTrainer`` inputs (see the module docstring).

    Same arguments as :class:`EvaCollator`, plus ``calculate_kl`` (build the KL rows; False for
    ``loss_type="apo_zero_unpaired"``). Calling it on ``B`` rows returns::

        {"input_ids", "attention_mask", "mm_token_type_ids": [B, L] (right-padded),
         "completion_mask": int64 [B, L] (1 on assistant content + <|im_end|> tokens, else 0),
         "pixel_values": [P, 1176], "image_grid_thw": int64 [N, 3] (with images),
         "label": bool [B] (True = chosen),
         "eva_images_per_sample": int64 [B], "eva_num_skipped": int64 [],
         # with calculate_kl:
         "KL_input_ids", "KL_attention_mask", "KL_completion_mask", "KL_mm_token_type_ids": [B, L'],
         "KL_sample_order": int64 [B]}     # KL row i = prompt i + completion of sample order[i]

    KL rows are not truncated either: one is at most the longest prompt plus the longest
    completion of its batch (the ``max_length`` check applies to the samples themselves).

    Raises:
        RecordError: a record without a boolean ``label``, or whose first two messages do not
            render to a prefix of the whole conversation; the errors of :class:`EvaCollator`.
    """

    def __init__(self, *args: Any, calculate_kl: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calculate_kl = calculate_kl

    def prompt_length(self, sample: EncodedSample) -> int:
        """Tokens of the prompt (system + first user turn + ``<|im_start|>assistant\\n``).

        Raises:
            RecordError: the prompt's ids are not a prefix of the conversation's ids.
        """
        rec = sample.record
        prompt = self.renderer.render(rec.template_messages()[:2], add_generation_prompt=True).input_ids
        p = len(prompt)
        if sample.input_ids[:p].tolist() != prompt or p >= len(sample.input_ids):
            raise RecordError(
                f"{rec.where}: the rendered prompt (system + first user turn) is not a prefix of the rendered "
                "conversation: the chat template does not split at the first assistant turn"
            )
        return p

    def encode(self, record: TrajectoryRecord) -> EncodedSample:
        if not isinstance(record.label, bool):
            raise RecordError(f"{record.where}: KTO needs 'label' true (chosen) or false (rejected), got {record.label!r}")
        return super().encode(record)

    def __call__(self, rows: Sequence[Any]) -> dict[str, torch.Tensor]:
        samples, skipped = self.encode_rows(rows)
        batch = self.pad(samples)
        batch["completion_mask"] = (batch.pop("labels") != IGNORE_INDEX).to(torch.long)
        batch["label"] = torch.tensor([s.record.label for s in samples], dtype=torch.bool)
        batch["eva_images_per_sample"] = torch.tensor(
            [0 if s.image_grid_thw is None else s.image_grid_thw.shape[0] for s in samples], dtype=torch.long
        )
        batch["eva_num_skipped"] = torch.tensor(skipped)
        if self.calculate_kl:
            b = len(samples)
            order = [(i - 1) % b for i in range(b)]  # TRL's rotation: (x_1, y_n), (x_2, y_1), ...
            plen = [self.prompt_length(s) for s in samples]
            kl_rows = []
            for i, j in enumerate(order):
                si, sj = samples[i], samples[j]
                kl_rows.append(EncodedSample(
                    input_ids=torch.cat([si.input_ids[: plen[i]], sj.input_ids[plen[j]:]]),
                    labels=torch.cat([torch.full((plen[i],), IGNORE_INDEX, dtype=torch.long), sj.labels[plen[j]:]]),
                    pixel_values=None, image_grid_thw=None, frames=[], record=sj.record,
                ))
            kl = self.pad(kl_rows)
            batch["KL_input_ids"] = kl["input_ids"]
            batch["KL_attention_mask"] = kl["attention_mask"]
            batch["KL_completion_mask"] = (kl["labels"] != IGNORE_INDEX).to(torch.long)
            batch["KL_mm_token_type_ids"] = kl["mm_token_type_ids"]
            batch["KL_sample_order"] = torch.tensor(order, dtype=torch.long)
        return batch


# ---------------------------------------------------------------------------------------------
# config and trainer
# ---------------------------------------------------------------------------------------------


@dataclass
class EvaKTOConfig(KTOConfig, EvaDataArguments):
    """TRL's ``KTOConfig`` with eva_fast's data and frame options (:class:`EvaDataArguments`).

    Defaults that differ from TRL's, and why: ``max_length`` 32768 (EVA trajectories run to ~20k
    tokens; a longer sample is a bad sample, never truncated), ``remove_unused_columns=False`` (the
    collator reads the record column). ``precompute_ref_log_probs`` is refused (TRL's precompute
    forward passes no frames). TRL's KTO needs ``train_sampling_strategy="sequential"`` (its KL rows
    were built per fixed batch); here the KL rows are built per batch by the collator, and the
    records are shuffled once (``shuffle_records``, seeded by ``seed``) so chosen and rejected
    samples mix within batches. The paper's mix is 63 % chosen / 37 % rejected: set
    ``desirable_weight`` / ``undesirable_weight`` (e.g. from :func:`recommended_kto_weights`) or
    ``balance_weights=True``.
    """

    max_length: int | None = field(default=32768, metadata={"help": "longest sample in tokens (longer ones are bad samples)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "must stay False: the collator reads the records"})
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "reference model checkpoint (default: the policy's starting checkpoint, i.e. the SFT model)"},
    )
    shuffle_records: bool = field(
        default=True, metadata={"help": "shuffle the training records once (seeded by `seed`) before sequential batching"}
    )
    balance_weights: bool = field(
        default=False,
        metadata={"help": "set desirable_weight/undesirable_weight from the data's chosen/rejected counts "
                  "(recommended_kto_weights: KTO paper Eq. 8, as TRL recommends)"},
    )
    freeze_vision_tower: bool = field(default=False, metadata={"help": "train only the language model (vision tower frozen)"})

    def __post_init__(self) -> None:
        if self.remove_unused_columns:
            raise ValueError("EvaKTOConfig.remove_unused_columns must be False: the collator reads the record column")
        if self.precompute_ref_log_probs:
            raise ValueError(
                "EvaKTOConfig: precompute_ref_log_probs is not supported (TRL's precompute forward passes no frames); "
                "the reference model runs every step"
            )
        for name in ("desirable_weight", "undesirable_weight"):
            positive_number(f"EvaKTOConfig.{name}", getattr(self, name))
        self._check_data()
        super().__post_init__()
        if self.ddp_find_unused_parameters is None and not (self.gradient_checkpointing_kwargs or {}).get("use_reentrant"):
            # as TRL does for vision-language models: a batch without frames leaves the vision tower unused
            self.ddp_find_unused_parameters = True


def label_counts(records: Sequence[TrajectoryRecord]) -> tuple[int, int]:
    """``(chosen, rejected)`` counts.

    Raises:
        RecordError: a record without a boolean ``label`` (names its ``file:line``).
    """
    chosen = rejected = 0
    for r in records:
        if r.label is True:
            chosen += 1
        elif r.label is False:
            rejected += 1
        else:
            raise RecordError(f"{r.where}: KTO needs 'label' true (chosen) or false (rejected), got {r.label!r}")
    return chosen, rejected


class EvaKTOTrainer(ResumeWeightsMixin, CheckpointExtrasMixin, KTOTrainer):
    """TRL's ``KTOTrainer`` on labelled EVA trajectories (see the module docstring for what it
    overrides and why).

    Args:
        model: checkpoint folder of the SFT model (or a loaded model): the policy starts there and,
            without ``ref_model`` / ``args.ref_model_name_or_path``, TRL loads the reference model
            from the same checkpoint.
        args: :class:`EvaKTOConfig`.
        train_dataset: labelled records or a jsonl path; None reads ``args.train_file``.
        eval_dataset: likewise, or ``args.eval_file``.
        processing_class: the tokenizer (default: the checkpoint's, with its chat template).
        ref_model: a loaded reference model (overrides ``args.ref_model_name_or_path``).
        peft_config: a ``peft`` config for LoRA (the reference is then the model with adapters off).
        **kwargs: other ``KTOTrainer`` arguments (callbacks, optimizers, ...).

    Raises:
        ValueError: no training data; RecordError for unlabelled or bad records (see
        ``skip_bad_samples``), FileNotFoundError / VideoError for missing videos.
    """

    def __init__(
        self,
        model: Any,
        args: EvaKTOConfig,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        ref_model: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, EvaKTOConfig):
            raise TypeError(f"args must be an EvaKTOConfig, got {type(args).__name__}")
        self.base_model_path, processing_class = base_model_and_tokenizer(model, processing_class)
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        train, evals, self.skipped_records = trainer_records("EvaKTOTrainer", args, train_dataset, eval_dataset)
        self.num_chosen, self.num_rejected = label_counts(train)
        label_counts(evals)
        if args.balance_weights:
            if self.num_chosen == 0 or self.num_rejected == 0:
                raise ValueError(f"balance_weights needs both labels; the data has {self.num_chosen} chosen, "
                                 f"{self.num_rejected} rejected")
            w = recommended_kto_weights(self.num_chosen, self.num_rejected)
            args.desirable_weight, args.undesirable_weight = w.desirable_weight, w.undesirable_weight
        logger.info("KTO data: %d chosen, %d rejected; desirable_weight %.3f, undesirable_weight %.3f",
                    self.num_chosen, self.num_rejected, args.desirable_weight, args.undesirable_weight)
        if not weights_in_recommended_range(self.num_chosen, self.num_rejected, args.desirable_weight,
                                            args.undesirable_weight):
            w = recommended_kto_weights(self.num_chosen, self.num_rejected)
            logger.warning(
                "KTO weights outside the recommended range for %d chosen / %d rejected (KTO paper Eq. 8): use e.g. "
                "desirable_weight=%.3f, undesirable_weight=%.3f (or balance_weights=True)",
                self.num_chosen, self.num_rejected, w.desirable_weight, w.undesirable_weight,
            )
        if args.shuffle_records:
            random.Random(args.seed).shuffle(train)
        if ref_model is None and args.ref_model_name_or_path:
            from trl.trainer.utils import create_model_from_path  # only for a separate reference model

            ref_model = create_model_from_path(args.ref_model_name_or_path, **dict(args.model_init_kwargs or {}))
        renderer = ChatRenderer(processing_class, processing_class.chat_template)
        collator = EvaKTOCollator(
            renderer,
            video_root=args.video_root,
            max_length=args.max_length,
            skip_bad_samples=args.skip_bad_samples,
            pixel_dtype=getattr(torch, args.pixel_dtype),
            readers=ReaderCache(args.reader_cache_size, args.decode_device),
            calculate_kl=args.loss_type != "apo_zero_unpaired",
        )
        self._eva_kl_plan: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eva_kl_calls = 0
        super().__init__(
            model=model,
            ref_model=ref_model,
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

    # -- TRL hooks ----------------------------------------------------------------------------

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # TRL tokenizes `prompt`/`completion` text columns here; EvaKTOCollator renders the records.
        return dataset

    @contextlib.contextmanager
    def kl_plan(self, inputs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Take eva_fast's extra keys out of a collated batch and hold the KL rows' frame plan for
        :meth:`_compute_kl_logps` while the block runs; yields the batch TRL sees."""
        inputs = dict(inputs)
        order = inputs.pop("KL_sample_order", None)
        counts = inputs.pop("eva_images_per_sample", None)
        inputs.pop("eva_num_skipped", None)
        if self.calculate_KL and (order is None or counts is None):
            raise ValueError("EvaKTOTrainer needs batches from EvaKTOCollator (KL_sample_order, eva_images_per_sample)")
        self._eva_kl_plan = None if order is None else (order, counts)
        self._eva_kl_calls = 0
        try:
            yield inputs
        finally:
            self._eva_kl_plan = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        log_skipped_samples(self, inputs.get("eva_num_skipped"))
        with self.kl_plan(inputs) as batch:
            out = super().compute_loss(model, batch, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            if self.calculate_KL and self._eva_kl_calls != 2:
                raise RuntimeError(
                    f"TRL's KTOTrainer ran the KL forward through _compute_kl_logps {self._eva_kl_calls} time(s) instead "
                    "of 2 (policy and reference): this TRL version is not the one EvaKTOTrainer was written for "
                    "(trl==1.16.0); the KL rows would not get their own frames"
                )
        return out

    def _compute_kl_logps(self, model, batch):
        if not self.calculate_KL:
            return super()._compute_kl_logps(model, batch)
        if self._eva_kl_plan is None:
            raise RuntimeError("_compute_kl_logps called outside EvaKTOTrainer.compute_loss (no KL frame plan)")
        self._eva_kl_calls += 1
        order, counts = self._eva_kl_plan
        kl_batch = dict(batch)
        if batch.get("pixel_values") is not None:
            pv, grid = permute_visual(batch["pixel_values"], batch["image_grid_thw"], counts, order)
            if pv is None:
                kl_batch.pop("pixel_values")
                kl_batch.pop("image_grid_thw")
            else:
                kl_batch["pixel_values"], kl_batch["image_grid_thw"] = pv, grid
        return super()._compute_kl_logps(model, kl_batch)
