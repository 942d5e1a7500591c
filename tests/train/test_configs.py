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
