"""The example training configs in configs/ parse into the trainers' config classes (TRL's parser)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU = ["--bf16", "false", "--use_cpu", "true"]


@pytest.mark.parametrize("name, module, cls", [
    ("sft.yaml", "eva_fast.train._sft", "EvaSFTConfig"),
    ("grpo.yaml", "eva_fast.train._grpo", "EvaGRPOConfig"),
    ("kto.yaml", "eva_fast.train._kto", "EvaKTOConfig"),
])
def test_example_configs_parse(name, module, cls):
    import importlib

    from trl import ModelConfig, TrlParser

    config_cls = getattr(importlib.import_module(module), cls)
    cfg, model_args = TrlParser((config_cls, ModelConfig)).parse_args_and_config(
        ["--config", str(ROOT / "configs" / "train" / name), *CPU])
    assert model_args.model_name_or_path and cfg.train_file and cfg.output_dir


def test_accelerate_configs_are_yaml_mappings():
    import yaml

    for p in (ROOT / "configs" / "accelerate").glob("*.yaml"):
        d = yaml.safe_load(p.read_text())
        assert d["compute_environment"] == "LOCAL_MACHINE" and "distributed_type" in d and "mixed_precision" in d, p


#: keys that are paths or bookkeeping, not hyper-parameters
NOT_HYPERPARAMETERS = {"video_root", "output_dir", "roots", "report_to"}


@pytest.mark.parametrize("name", ["sft.yaml", "kto.yaml", "grpo.yaml"])
def test_every_hyperparameter_says_where_it_comes_from(name):
    """Each hyper-parameter line carries "paper (..." (the EVA paper or its released evaluation)
    or "chosen here (reason)"."""
    import re

    import yaml

    text = (ROOT / "configs" / "train" / name).read_text()
    keys = set(yaml.safe_load(text))
    seen = set()
    for line in text.splitlines():
        m = re.match(r"^([a-z_0-9]+):", line)
        if not m or m.group(1) in NOT_HYPERPARAMETERS:
            continue
        seen.add(m.group(1))
        comment = line.partition(" # ")[2].strip()
        assert re.match(r"(paper|chosen here) \(.+\)", comment), f"{name}: {line!r} does not say where its value comes from"
    assert seen == keys - NOT_HYPERPARAMETERS


def test_grpo_config_is_the_papers_objective():
    from trl import ModelConfig, TrlParser

    from eva_fast.train._grpo import EvaGRPOConfig

    cfg, _ = TrlParser((EvaGRPOConfig, ModelConfig)).parse_args_and_config(
        ["--config", str(ROOT / "configs" / "train" / "grpo.yaml"), *CPU])
    assert cfg.loss_type == "grpo" and cfg.num_generations == 8 and cfg.generation_batch_size == 512
    assert cfg.reward_funcs == ["accuracy", "format"] and cfg.reward_weights == [1.0, 1.0]
    assert EvaGRPOConfig(output_dir="x", use_cpu=True, bf16=False).loss_type == "grpo"  # the default too
