"""SFT for real: the tiny Qwen2.5-VL trained by ``eva-fast train sft --config`` on four real-video
EVA trajectories (~30 steps): the loss falls, checkpoints save, training resumes where it left off,
the saved model runs ``eva-fast ask``; LoRA merges into a model the agent loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

STEPS = 30


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eva_fast.cli", *args], capture_output=True, text=True, timeout=timeout)


def _log_losses(state_file) -> dict[int, float]:
    state = json.loads(state_file.read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


@pytest.fixture(scope="module")
def sft_run(tiny_qwen_dir, eva_records_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "out"
    cfg = {
        "model_name_or_path": str(tiny_qwen_dir), "train_file": str(eva_records_file), "output_dir": str(out),
        "max_steps": STEPS, "per_device_train_batch_size": 1, "learning_rate": 0.01, "lr_scheduler_type": "constant",
        "logging_steps": 1, "save_strategy": "steps", "save_steps": 15, "use_cpu": True, "bf16": False,
        "gradient_checkpointing": False, "report_to": "none", "seed": 0, "disable_tqdm": True,
    }
    cfg_path = out.parent / "sft.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = _cli("train", "sft", "--config", str(cfg_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, cfg_path, summary


def test_loss_falls_and_checkpoints_save(sft_run):
    out, _, summary = sft_run
    assert summary["steps"] == STEPS and summary["skipped_records"] == 0
    losses = _log_losses(out / f"checkpoint-{STEPS}" / "trainer_state.json")
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = losses[1], sum(losses[s] for s in range(STEPS - 4, STEPS + 1)) / 5
    # a random model starts near ln(151936) = 11.9; memorising four conversations drives it far down
    assert first > 11 and last < 0.5 * first, losses
    for d in (out / "checkpoint-15", out / f"checkpoint-{STEPS}", out):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "generation_config.json"):
            assert (d / name).is_file(), (d, name)


def test_resume_continues_the_same_run(sft_run):
    """Resuming from checkpoint-15 repeats steps 16-17 with the same data, weights and RNG: the
    same losses as the uninterrupted run."""
    out, cfg_path, _ = sft_run
    resumed = out.parent / "resumed"
    proc = _cli("train", "sft", "--config", str(cfg_path), "--output_dir", str(resumed), "--max_steps", "17",
                "--save_steps", "17", "--resume_from_checkpoint", str(out / "checkpoint-15"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = _log_losses(out / f"checkpoint-{STEPS}" / "trainer_state.json")
    again = _log_losses(resumed / "checkpoint-17" / "trainer_state.json")
    assert again[16] == pytest.approx(first[16], rel=1e-4) and again[17] == pytest.approx(first[17], rel=1e-4)


def test_saved_model_runs_eva_fast_ask(sft_run, tmp_path):
    out, _, _ = sft_run
    traj_path = tmp_path / "traj.json"
    from tests.conftest import DATA

    proc = _cli("ask", str(DATA / "nasa_13013.mp4"), "What is shown? A. Earth B. Mars", "--model", str(out),
                "--max-new-tokens", "24", "--max-turns", "2", "--json", str(traj_path), "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    traj = json.loads(traj_path.read_text())
    assert traj["num_rounds"] >= 1 and not traj["stop_reason"].startswith("exception"), traj["error"]


def test_lora_merges_into_a_loadable_model(tiny_qwen_dir, eva_records, tmp_path):
    from eva_fast.agent import get_backend
    from eva_fast.train import EvaSFTConfig, EvaSFTTrainer
    from eva_fast.train._cli import peft_config_from, save_final
    from trl import ModelConfig

    args = EvaSFTConfig(output_dir=str(tmp_path / "lora"), max_steps=2, per_device_train_batch_size=1, learning_rate=0.05,
                        use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[], save_strategy="no",
                        disable_tqdm=True, logging_steps=1)
    peft = peft_config_from(ModelConfig(use_peft=True, lora_r=4, lora_alpha=8))
    trainer = EvaSFTTrainer(str(tiny_qwen_dir), args, train_dataset=eva_records[:2], peft_config=peft)
    lora = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n and "language_model" in n for n in lora)  # no adapter in the vision tower
    trainer.train()
    save_final(trainer, str(tmp_path / "lora"))
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    backend = get_backend("transformers", model_path=str(tmp_path / "lora"))
    base = get_backend("transformers", model_path=str(tiny_qwen_dir))
    merged = dict(backend.model.named_parameters())
    changed = [n for n, p in base.model.named_parameters() if not torch.equal(p, merged[n])]
    assert changed and all("language_model" in n for n in changed)
    # the saved merge (adapter from disk onto a fresh base) equals merging the live trained model
    live = dict(trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().named_parameters())
    assert all(torch.allclose(live[n], merged[n], rtol=0, atol=1e-6) for n in changed)


def test_config_errors(tmp_path):
    from eva_fast.train import EvaSFTConfig

    with pytest.raises(ValueError, match="remove_unused_columns"):
        EvaSFTConfig(output_dir=str(tmp_path), remove_unused_columns=True)
    with pytest.raises(ValueError, match="packing"):
        EvaSFTConfig(output_dir=str(tmp_path), packing=True)
    with pytest.raises(ValueError, match="pixel_dtype"):
        EvaSFTConfig(output_dir=str(tmp_path), pixel_dtype="int8")
    proc = _cli("train", "sft", "--output_dir", str(tmp_path), "--train_file", "x.jsonl", "--use_cpu", "true", "--bf16", "false")
    assert proc.returncode == 2 and "model_name_or_path is required" in proc.stderr


def test_two_processes_count_every_skipped_sample(tiny_qwen_dir, eva_records, tmp_path):
    """``skip_bad_samples`` in a two-process run (torchrun, gloo): one of the four records was made
    on another video (the collator refuses it), each step's 2 x 2 samples hold it once, and
    ``skipped_samples`` counts it in every step whichever process drew it (2 after 2 steps)."""
    import copy

    from eva_fast.train import write_records

    from tests.conftest import DATA
    from tests.train.conftest import launch_failure, launch_two_processes

    bad = copy.deepcopy(eva_records[0])
    bad.video = str(DATA / "nasa_13013_vfr.mp4")  # another video: its frames no longer match the record
    write_records(tmp_path / "sft.jsonl", [*eva_records[1:], bad])
    out = tmp_path / "out"
    cfg = {
        "model_name_or_path": str(tiny_qwen_dir), "train_file": str(tmp_path / "sft.jsonl"), "output_dir": str(out),
        "max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 0.01, "logging_steps": 1,
        "save_strategy": "steps", "save_steps": 2, "use_cpu": True, "bf16": False, "gradient_checkpointing": False,
        "report_to": "none", "seed": 0, "disable_tqdm": True, "skip_bad_samples": True,
    }
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(cfg))
    proc = launch_two_processes("train", "sft", "--config", str(tmp_path / "sft.yaml"))
    assert proc.returncode == 0, launch_failure(proc)
    logs = [h for h in json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [(h["step"], h["skipped_samples"], h["epoch"]) for h in logs] == [(1, 1.0, 1.0), (2, 2.0, 2.0)]
