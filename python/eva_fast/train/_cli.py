"""``eva-fast train {sft,...} --config x.yaml [--key value ...]``: TRL-style configs (TRL's ``TrlParser``:
a YAML file whose keys are the config fields, overridden by command-line flags)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eva_fast._logging import get_logger
from eva_fast._subcommands import run_subcommand
from eva_fast.train._common import copy_checkpoint_extras, default_lora_targets

logger = get_logger("train")

USAGE = """usage: eva-fast train {sft,kto,grpo} --config CONFIG.yaml [--FIELD VALUE ...]

  sft    supervised fine-tuning on EVA trajectories (EvaSFTConfig + TRL's ModelConfig fields)
  kto    KTO on trajectories labelled chosen/rejected (EvaKTOConfig + ModelConfig; the model is the
         SFT checkpoint, which is also the reference model unless ref_model_name_or_path is set)
  grpo   GRPO with multi-turn EVA rollouts (EvaGRPOConfig + ModelConfig; the model is the SFT+KTO
         checkpoint; rollouts in process or on vLLM with use_vllm)

Every field of the stage's config (and TRL's ModelConfig: model_name_or_path, dtype,
attn_implementation, use_peft, lora_r, ...) can be set in the YAML file or as --field value;
'eva-fast train sft --help' lists them. Run under 'accelerate launch' for several GPUs
(configs/accelerate/*.yaml).
"""


def _model_init_kwargs(model_args: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if model_args.dtype is not None:
        kw["dtype"] = model_args.dtype
    if model_args.attn_implementation is not None:
        kw["attn_implementation"] = model_args.attn_implementation
    return kw


def peft_config_from(model_args: Any) -> Any:
    """TRL's LoRA config from ``ModelConfig`` with eva_fast's default targets (the language model's
    projections, :data:`eva_fast.train.QWEN25VL_LORA_TARGETS`), or None without ``use_peft``."""
    from trl import get_peft_config  # TRL: the train extra, loaded by the train commands only

    if not model_args.use_peft:
        return None
    model_args.lora_target_modules = default_lora_targets(model_args.lora_target_modules)
    return get_peft_config(model_args)


def save_final(trainer: Any, output_dir: str) -> str:
    """Save the trained model so ``eva-fast ask --model DIR`` / ``vllm serve DIR`` load it unchanged.

    A LoRA model is saved as its adapter (``DIR/adapter``, through ``trainer.save_model`` on every
    process, which gathers ZeRO-3 / FSDP shards), then merged on the main process into a fresh copy
    of the base checkpoint read from disk: merging the live model would read only this process's
    shard of each weight under ZeRO-3 or FSDP2 (the shipped multi-GPU configs).
    """
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    if not hasattr(model, "merge_and_unload"):
        trainer.save_model(output_dir)
        return output_dir
    adapter = Path(output_dir) / "adapter"
    trainer.save_model(str(adapter))
    acc.wait_for_everyone()
    if acc.is_main_process:
        from peft import PeftModel  # only for LoRA runs

        base_path = getattr(trainer, "base_model_path", None)
        if not base_path or not Path(base_path).is_dir():
            raise ValueError(f"cannot merge the LoRA adapter in {adapter}: the base checkpoint {base_path!r} is not a "
                             "local folder (the adapter is saved; merge it with peft's merge_and_unload)")
        base_cls = type(model.get_base_model())
        dtype = next(model.get_base_model().parameters()).dtype
        base = base_cls.from_pretrained(base_path, dtype=dtype, device_map=None)
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        merged.save_pretrained(output_dir)
        trainer.processing_class.save_pretrained(output_dir)
        copy_checkpoint_extras(base_path, output_dir)
    acc.wait_for_everyone()
    return output_dir


def loss_curve(trainer: Any) -> list[tuple[int, float]]:
    """``(step, loss)`` of every logged training step."""
    return [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h and "step" in h]


def run_sft(argv: list[str]) -> int:
    from trl import ModelConfig, TrlParser  # TRL: the train extra, loaded by the train commands only

    from eva_fast.train._sft import EvaSFTConfig, EvaSFTTrainer  # imports TRL

    parser = TrlParser((EvaSFTConfig, ModelConfig), prog="eva-fast train sft")
    cfg, model_args = parser.parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required (the Qwen2.5-VL checkpoint to fine-tune)")
    if cfg.train_file is None:
        raise ValueError("train_file is required (records in the eva_fast.trajectory jsonl format)")
    cfg.model_init_kwargs = {**_model_init_kwargs(model_args), **(cfg.model_init_kwargs or {})}
    trainer = EvaSFTTrainer(model_args.model_name_or_path, cfg, peft_config=peft_config_from(model_args))
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    out = save_final(trainer, cfg.output_dir)
    if trainer.accelerator.is_main_process:
        curve = loss_curve(trainer)
        print(json.dumps({"output_dir": out, "steps": trainer.state.global_step, "loss_first": curve[0][1] if curve else None,
                          "loss_last": curve[-1][1] if curve else None, "skipped_records": len(trainer.skipped_records)}))
    return 0


def run_kto(argv: list[str]) -> int:
    from trl import ModelConfig, TrlParser  # TRL: the train extra, loaded by the train commands only

    from eva_fast.train._kto import EvaKTOConfig, EvaKTOTrainer  # imports TRL

    parser = TrlParser((EvaKTOConfig, ModelConfig), prog="eva-fast train kto")
    cfg, model_args = parser.parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required (the SFT checkpoint to start from)")
    if cfg.train_file is None:
        raise ValueError("train_file is required (records with label true/false, e.g. from 'eva-fast data kto-label')")
    cfg.model_init_kwargs = {**_model_init_kwargs(model_args), **(cfg.model_init_kwargs or {})}
    trainer = EvaKTOTrainer(model_args.model_name_or_path, cfg, peft_config=peft_config_from(model_args))
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    out = save_final(trainer, cfg.output_dir)
    if trainer.accelerator.is_main_process:
        curve = loss_curve(trainer)
        print(json.dumps({"output_dir": out, "steps": trainer.state.global_step, "loss_first": curve[0][1] if curve else None,
                          "loss_last": curve[-1][1] if curve else None, "chosen": trainer.num_chosen,
                          "rejected": trainer.num_rejected, "desirable_weight": cfg.desirable_weight,
                          "undesirable_weight": cfg.undesirable_weight, "skipped_records": len(trainer.skipped_records)}))
    return 0


def run_grpo(argv: list[str]) -> int:
    from trl import ModelConfig, TrlParser  # TRL: the train extra, loaded by the train commands only

    from eva_fast.train._grpo import EvaGRPOConfig, EvaGRPOTrainer  # imports TRL

    parser = TrlParser((EvaGRPOConfig, ModelConfig), prog="eva-fast train grpo")
    cfg, model_args = parser.parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required (the SFT+KTO checkpoint to start from)")
    if cfg.train_file is None:
        raise ValueError("train_file is required (the RL question set: video, question, answer, type)")
    cfg.model_init_kwargs = {**_model_init_kwargs(model_args), **(cfg.model_init_kwargs or {})}
    trainer = EvaGRPOTrainer(model_args.model_name_or_path, cfg, peft_config=peft_config_from(model_args))
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    out = save_final(trainer, cfg.output_dir)
    if trainer.accelerator.is_main_process:
        rewards = [h.get("reward") for h in trainer.state.log_history if "reward" in h]
        c = trainer.eva_cache_total
        print(json.dumps({"output_dir": out, "steps": trainer.state.global_step, "reward_first": rewards[0] if rewards else None,
                          "reward_last": rewards[-1] if rewards else None, "frames_requested": c.frames_requested,
                          "frames_decoded": c.frames_decoded, "frame_cache_hit_rate": round(c.hit_rate, 4)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_subcommand("eva-fast train", USAGE, {"sft": run_sft, "kto": run_kto, "grpo": run_grpo}, argv,
                          (ValueError, FileNotFoundError), noun="stage")
