"""Training on a GPU (marked ``cuda``: skipped without one; run by the GPU check): SFT steps in bf16,
and a GRPO step whose rollouts decode with NVDEC, pack with Triton and generate on the GPU."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import DATA
from tests.train.conftest import ForcedReplies, call

pytestmark = pytest.mark.cuda


def test_sft_steps_in_bf16(tiny_qwen_dir, eva_records, tmp_path):
    from eva_fast.train import EvaSFTConfig, EvaSFTTrainer

    args = EvaSFTConfig(output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=2, learning_rate=1e-2,
                        bf16=True, gradient_checkpointing=True, report_to=[], save_strategy="no", disable_tqdm=True,
                        logging_steps=1, decode_device="cuda", pixel_dtype="bfloat16")
    trainer = EvaSFTTrainer(str(tiny_qwen_dir), args, train_dataset=eva_records)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_grpo_step_on_the_gpu(tiny_qwen_dir, tmp_path):
    from eva_fast.agent import get_backend
    from eva_fast.train import EvaGRPOConfig, EvaGRPOTrainer
    from eva_fast.train._rl_data import RLSample

    samples = [RLSample(video=str(DATA / "nasa_13013.mp4"), question=q, answer="A", type="mcq")
               for q in ("Is it Earth? A. yes B. no", "Is it day? A. yes B. no")]
    args = EvaGRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=4, max_steps=1,
                         learning_rate=1e-4, temperature=1.0, beta=0.0, judge="none", max_turns=2, max_new_tokens=64,
                         bf16=True, gradient_checkpointing=False, report_to=[], save_strategy="no", disable_tqdm=True,
                         logging_steps=1, decode_device="cuda", rollout_concurrency=1)
    trainer = EvaGRPOTrainer(str(tiny_qwen_dir), args, train_dataset=samples)
    outputs = []
    orig = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda rows: outputs.append(orig(rows)) or outputs[-1]
    backend = get_backend("transformers", model=trainer.model, tokenizer=trainer._tokenizer)
    # episodes run one after another (rollout_concurrency=1), two per question: the first answers
    # right, the second wrong, so each group's rewards differ and its advantages are not all 0 (the
    # first GPU run forced the same answer everywhere: every advantage 0, loss 0, nothing learned)
    forced = ForcedReplies(backend, [call(0, 12, 3, 0.3), "<answer>A</answer>", call(0, 12, 3, 0.3), "<answer>B</answer>"] * 2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    try:
        trainer.train()
    finally:
        forced.restore()
    (out,) = outputs
    assert out["pixel_values"].is_cuda and out["image_grid_thw"].shape[0] == 4 * 3
    adv = out["advantages"].float().cpu()
    assert (adv != 0).all() and torch.allclose(adv.view(2, 2).sum(1), torch.zeros(2), atol=1e-5), adv
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    assert trainer._eva_last.trajectories[0].turns[0].tool_calls[0].frames is not None
