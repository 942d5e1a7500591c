"""The vLLM rollout backend's turn-synchronous batching, with a stand-in for TRL's VLLMGeneration
(vLLM itself needs a GPU): every live episode's turn goes into one generate call, ids and frames
travel together, and a process whose episodes are done keeps joining the collective calls while
another process still runs episodes."""

from __future__ import annotations

import json

import pytest
import torch

from eva_fast.agent import AgentConfig
from eva_fast.train import RolloutEngine
from eva_fast.train._vllm import VLLMRolloutBackend
from tests.conftest import DATA
from tests.train.conftest import call

VIDEO = DATA / "nasa_13013.mp4"


class FakeVLLM:
    """``generate(prompts, images, num_generations)`` like TRL's VLLMGeneration: scripted replies
    by turn (the number of assistant prompts in the ids) and question (Q1 takes one more turn)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.calls: list[tuple[int, list[int]]] = []
        self.max_completion_length = None
        self.pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.eot = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def generate(self, prompts, images, num_generations):
        assert num_generations == 1
        self.calls.append((len(prompts), [len(i) if i else 0 for i in (images or [None] * len(prompts))]))
        outs, lps = [], []
        for k, ids in enumerate(prompts):
            runs = sum(1 for j, t in enumerate(ids) if t == self.pad and (j == 0 or ids[j - 1] != self.pad))
            n_img = len(images[k]) if images and images[k] else 0
            assert runs == n_img, (runs, n_img)  # one run of expanded pads per frame sent
            text = self.tok.decode(ids)
            turn = text.count("<|im_start|>assistant")
            last = 3 if "Q1" in text else 2
            reply = call(0, 12, 2, 0.1) if turn < last else "<answer>A</answer>"
            new = self.tok(reply, add_special_tokens=False)["input_ids"] + [self.eot]
            outs.append(new)
            lps.append([[-0.25]] * len(new))
        return prompts, outs, lps, None


@pytest.fixture
def backend(renderer):
    fake = FakeVLLM(renderer.tokenizer)
    return VLLMRolloutBackend(fake, renderer.tokenizer, renderer.chat_template), fake


def test_episodes_share_ticks_and_ids_extend(backend):
    b, fake = backend
    engine = RolloutEngine(b, AgentConfig(max_turns=4))
    batch = engine.run_sync([VIDEO] * 4, ["Q0? A. x B. y"] * 2 + ["Q1? A. x B. y"] * 2)
    trajs = batch.trajectories
    assert [t.stop_reason for t in trajs] == ["answer_found"] * 4
    assert [t.num_rounds for t in trajs] == [2, 2, 3, 3]
    # 3 ticks: all four episodes, all four, then the two Q1 episodes
    assert [n for n, _ in fake.calls] == [4, 4, 2] and [t.episodes for t in b.tick_stats] == [4, 4, 2]
    assert fake.calls[1][1] == [2, 2, 2, 2] and fake.calls[2][1] == [4, 4]
    for t in trajs:
        tr = t.tokens
        gen = [x for x, m in zip(tr.response_ids, tr.response_mask) if m]
        assert gen == [i for turn in t.turns for i in turn.completion_token_ids]
        assert [x for x, m in zip(tr.response_logprobs, tr.response_mask) if m] == [-0.25] * len(gen)
    assert batch.cache.calls_fully_cached >= 3  # the episodes' identical calls share frames


def test_a_finished_process_keeps_joining_the_collective_calls(backend):
    """Two processes: this one has no episode left after its first tick while the other still
    runs; it must keep calling generate (empty) until both agree nothing is live."""
    b, fake = backend

    other_live = [1, 1, 1, 0]  # the other process: live for 3 more ticks

    def sync(values):  # element-wise max with the other process's values
        return [max(values[0], other_live.pop(0)), *values[1:]]

    b.batcher.sync = sync
    engine = RolloutEngine(b, AgentConfig(max_turns=4))
    batch = engine.run_sync([VIDEO], ["Q0? A. x B. y"])
    assert batch.trajectories[0].stop_reason == "answer_found"
    # 2 ticks with this process's episode, then empty ticks while the other process is live
    assert [n for n, _ in fake.calls] == [1, 1, 0] and other_live == []


def test_generation_errors_end_the_episode_not_the_batch(backend):
    b, fake = backend

    def broken(prompts, images, n):
        raise RuntimeError("engine died")

    fake.generate = broken
    batch = RolloutEngine(b, AgentConfig()).run_sync([VIDEO] * 2, ["Q0? A. x B. y"] * 2)
    assert all(t.stop_reason.startswith("exception") and "engine died" in t.error for t in batch.trajectories)
    assert json.dumps(batch.trajectories[0].to_dict())
