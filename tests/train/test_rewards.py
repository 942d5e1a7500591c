"""EVA's rewards against hand-computed values, rouge-score's own scorer, and a scripted CSV judge."""

from __future__ import annotations

import asyncio

import pytest
import torch

from eva_fast.agent import ImagePart, TextPart, get_backend
from eva_fast.train import rewards
from eva_fast.train.rewards import CSVJudge, format_reward, judge_answer, mcq_accuracy, rouge_reward
from tests.train.conftest import run_episode


@pytest.mark.parametrize("answer, gt, want", [
    ("B", "B", 1.0), (" b ", "B", 1.0), ("A", "B", 0.0), ("", "B", 0.0), ("  ", " ", 0.0), ("B.", "B", 0.0),
])
def test_mcq_accuracy_is_evas_rule(answer, gt, want):
    assert mcq_accuracy(answer, gt) == want


def test_mcq_accuracy_of_a_trajectory(eva_trajectories):
    traj, gt = eva_trajectories[0]
    assert mcq_accuracy(traj, gt) == 1.0 and mcq_accuracy(traj, "B") == 0.0
    assert rewards.final_answer("I think so. Answer: C") == "C"


def test_rouge_reward_hand_computed_and_against_rouge_score():
    # "a b c" vs "a b d": ROUGE-1 F = 2/3, ROUGE-2 F = 1/2 (bigram "a b" of 2), ROUGE-L F = 2/3 (LCS "a b")
    assert rouge_reward("a b c", "a b d") == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3, abs=1e-12)
    assert rouge_reward("The cats are sitting", "the cat sits") == pytest.approx(
        _rouge_score_mean("the cat sits", "The cats are sitting"), abs=1e-12)
    assert rouge_reward("exactly this", "exactly this") == 1.0
    assert rouge_reward("nothing shared", "different words") == 0.0
    assert rouge_reward("", "x") == 0.0
    # stemming: "running dogs" matches "run dog" fully
    assert rouge_reward("running dogs", "run dog") == 1.0


def _rouge_score_mean(reference, prediction):
    from rouge_score import rouge_scorer

    s = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(reference, prediction)
    return (s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure) / 3


def test_format_reward(eva_trajectories):
    traj, _ = eva_trajectories[0]
    assert format_reward(traj, correct=False) == 0.1
    assert format_reward(traj, correct=True) == 0.0
    assert format_reward(traj, correct=False, value=0.05) == 0.05
    no_call = run_episode("nasa_13013.mp4", "Q? A. x B. y", ["<answer>A</answer>"])
    assert format_reward(no_call, correct=False) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        format_reward(traj, correct=False, value=1.0)


@pytest.mark.parametrize("text, want", [
    ("B", "B"), ("b.", "B"), ("(C) the dog", "C"), ("<answer>D</answer>", "D"), ("The answer: A", "A"), ("no idea", ""),
])
def test_judge_answer(text, want):
    assert judge_answer(text) == want


def test_csv_judge_sees_only_the_last_rounds_frames(eva_trajectories):
    traj, gt = eva_trajectories[0]
    judge_backend = get_backend("scripted", replies=["A"])
    judge = CSVJudge(judge_backend)
    res = judge.judge_sync(traj, gt)
    assert (res.reward, res.policy_correct, res.judge_answer, res.judge_correct, res.frames) == (1.0, True, "A", True, 2)
    (msgs,) = judge_backend.requests
    (user,) = msgs
    images = [p for p in user.content if isinstance(p, ImagePart)]
    texts = [p.text for p in user.content if isinstance(p, TextPart)]
    last = traj.turns[1].tool_calls[0].frames  # the second (last) round: 2 frames of [4, 8] s at 0.3
    assert [p.batch.plan.frame_indices[p.index] for p in images] == list(last.plan.frame_indices)
    assert texts[0] == "Frame 0 at [00:04]: " and texts[-1].endswith(
        "Question: What is shown? A. Earth B. Mars\nAnswer with the option's letter from the given choices directly.")
    from eva_fast.video import select_frames

    ref = select_frames(traj.video_path, 4, 8, 2, 0.3)
    assert torch.equal(torch.stack([p.batch.frames[p.index] for p in images]), ref.frames)
    # the judge's second reply is wrong: reward 0, policy still right
    res2 = CSVJudge(get_backend("scripted", replies=["B"])).judge_sync(traj, gt)
    assert (res2.reward, res2.policy_correct, res2.judge_correct) == (0.0, True, False)


def test_csv_judge_is_not_asked_when_the_policy_is_wrong_and_never_raises(eva_trajectories):
    traj, _ = eva_trajectories[0]
    backend = get_backend("scripted", replies=[])
    judge = CSVJudge(backend)
    assert judge.judge_sync(traj, "B").reward == 0.0 and backend.requests == []
    failing = CSVJudge(get_backend("scripted", replies=[RuntimeError("server down")]))
    res = failing.judge_sync(traj, "A")
    assert res.reward == 0.0 and res.policy_correct and "server down" in res.error
    no_frames = run_episode("nasa_13013.mp4", "Q? A. x B. y", ["<answer>A</answer>"])
    res = judge.judge_sync(no_frames, "A")
    assert res.reward == 0.0 and "no frames" in res.error
    with pytest.raises(ValueError, match="question"):
        CSVJudge(backend, prompt="no placeholder")


def test_csv_judge_with_the_tiny_model(eva_trajectories, tiny_backend):
    """The interface end to end with an in-process transformers judge (a random model: its answer is
    whatever it says; the reward is 1 only if that is the right letter)."""
    traj, gt = eva_trajectories[1]
    res = asyncio.run(CSVJudge(tiny_backend, max_new_tokens=4).judge(traj, gt))
    assert res.error is None and res.policy_correct and res.frames == 2
    assert res.reward == (1.0 if res.judge_answer == gt else 0.0)


def test_csv_judge_serves_its_frames_from_the_group_cache(eva_trajectories):
    """In GRPO the judge's frames come from the question's frame cache (the episode's own frames):
    the same pixels as a fresh decode, and nothing decoded twice."""
    from eva_fast.train import GroupFrameCache
    from eva_fast.video import VideoReader, select_frames

    traj, gt = eva_trajectories[0]
    with VideoReader(traj.video_path) as reader:
        cache = GroupFrameCache(reader)
        backend = get_backend("scripted", replies=["A"])
        judge = CSVJudge(backend)
        for _ in range(2):
            res = asyncio.run(judge.judge(traj, gt, reader=reader, frame_tool=cache))
            assert res.reward == 1.0 and res.frames == 2
        assert cache.stats.calls == 2 and cache.stats.frames_decoded == 2 and cache.stats.calls_fully_cached == 1
        images = [p for p in backend.requests[-1][0].content if isinstance(p, ImagePart)]
        ref = select_frames(traj.video_path, 4, 8, 2, 0.3)
        assert torch.equal(torch.stack([p.batch.frames[p.index] for p in images]), ref.frames)
