"""Training EVA (paper §3.2-§4.1) on TRL: the trajectory data format, the collator that decodes frames
on the fly, EVA's rewards, and the trainers.

    from eva_fast.train import EvaSFTConfig, EvaSFTTrainer
    args = EvaSFTConfig(output_dir="out/sft", train_file="sft.jsonl", video_root="/data/videos", num_train_epochs=2)
    EvaSFTTrainer("Qwen/Qwen2.5-VL-7B-Instruct", args).train()

Data: one JSON line per conversation (``eva_fast.train._records``, format ``eva_fast.trajectory``
v2): the messages exactly as the agent loop renders them, tool turns holding references to the
``frame_select`` calls (never pixels). :func:`record_from_trajectory` converts ``eva-fast ask
--json`` and eval results. :class:`EvaCollator` turns records into model inputs with the agent's
own renderer and frame path. The trainers need ``trl==1.16.0`` (imported on first use):
:class:`EvaSFTTrainer` (SFT) and :class:`EvaKTOTrainer` (KTO on records with ``label``). The RL
question set (GRPO) is :mod:`eva_fast.train._rl_data` (:func:`load_rl_set`); building the data
(public-dataset readers, teacher trajectories, KTO labels, the RL set, data enhancement) is
:mod:`eva_fast.train.data`; the whole recipe, stage after stage with provenance, is
:mod:`eva_fast.train._recipe` (``eva-fast recipe``, ``configs/recipe/eva.yaml``).

Training builds on the agent's public names only (``eva_fast.agent``: the renderer, the loop's own
call planning ``plan_tool_call``, the protocol's labels, the token-level backend), so records,
collator, rollouts and rewards see exactly what the agent sees. Modules: ``_records`` (the format),
``_frames`` + ``_collator`` (records -> frames -> model inputs), ``_rollout`` + ``_vllm`` (GRPO
episodes and their shared frame cache), ``rewards`` (EVA's reward functions), ``_common``,
``_sft``, ``_kto`` (+ ``_kto_weights``), ``_grpo`` (the trainers on TRL), ``_cli``/``_data_cli``/
``_recipe_cli`` (``eva-fast train`` / ``eva-fast data`` / ``eva-fast recipe``), ``_recipe`` (the runner).
"""

import importlib

from eva_fast.agent import ChatRenderer, RenderedChat
from eva_fast.train._collator import IGNORE_INDEX, EncodedSample, EvaCollator, SampleTooLongError, records_dataset
from eva_fast.train._common import QWEN25VL_LORA_TARGETS, load_training_records
from eva_fast.train._frames import FrameMismatchError, ReaderCache, record_frames
from eva_fast.train._kto_weights import PAPER_CHOSEN_FRACTION, KTOWeights, recommended_kto_weights
from eva_fast.train._records import (
    FORMAT,
    VERSION,
    RecordedCall,
    RecordError,
    TrajectoryRecord,
    iter_records,
    load_records,
    record_from_image_conversation,
    record_from_trajectory,
    write_records,
)
from eva_fast.train._rl_data import QA_TYPES, RLDataError, RLSample, iter_rl_set, load_rl_set, write_rl_set
from eva_fast.train._rollout import CacheStats, GroupFrameCache, RolloutBatch, RolloutEngine

_LAZY = {
    "EvaGRPOConfig": "eva_fast.train._grpo",
    "EvaGRPOTrainer": "eva_fast.train._grpo",
    "VLLMRolloutBackend": "eva_fast.train._vllm",
    "EvaSFTConfig": "eva_fast.train._sft",
    "EvaSFTTrainer": "eva_fast.train._sft",
    "EvaDataArguments": "eva_fast.train._sft",
    "freeze_vision_tower": "eva_fast.train._sft",
    "EvaKTOConfig": "eva_fast.train._kto",
    "EvaKTOTrainer": "eva_fast.train._kto",
    "EvaKTOCollator": "eva_fast.train._kto",
    "permute_visual": "eva_fast.train._kto",
}


def __getattr__(name: str):
    # trainers import TRL (and through it accelerate/datasets): load them only when asked for
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eva_fast.train' has no attribute {name!r}")


__all__ = [
    "CacheStats",
    "EvaGRPOConfig",
    "EvaGRPOTrainer",
    "GroupFrameCache",
    "RolloutBatch",
    "RolloutEngine",
    "VLLMRolloutBackend",
    "FORMAT",
    "PAPER_CHOSEN_FRACTION",
    "QA_TYPES",
    "IGNORE_INDEX",
    "QWEN25VL_LORA_TARGETS",
    "VERSION",
    "ChatRenderer",
    "EncodedSample",
    "EvaCollator",
    "EvaDataArguments",
    "EvaKTOCollator",
    "EvaKTOConfig",
    "EvaKTOTrainer",
    "EvaSFTConfig",
    "EvaSFTTrainer",
    "FrameMismatchError",
    "KTOWeights",
    "RLDataError",
    "RLSample",
    "ReaderCache",
    "RecordError",
    "RecordedCall",
    "RenderedChat",
    "SampleTooLongError",
    "TrajectoryRecord",
    "freeze_vision_tower",
    "iter_records",
    "iter_rl_set",
    "load_records",
    "load_rl_set",
    "permute_visual",
    "load_training_records",
    "record_frames",
    "record_from_image_conversation",
    "record_from_trajectory",
    "recommended_kto_weights",
    "records_dataset",
    "write_records",
    "write_rl_set",
]
