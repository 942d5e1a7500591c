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
    assert format_reward(traj, False) == 0.1 and format_reward(traj, 0.0) == 0.1
    assert format_reward(traj, True) == 0.0 and format_reward(traj, 1.0) == 0.0
    assert format_reward(traj, 0.0, value=0.05) == 0.05
    # a graded answer reward is topped up to the value, never past it
    assert format_reward(traj, 0.04) == pytest.approx(0.06) and format_reward(traj, 0.3) == 0.0
    no_call = run_episode("nasa_13013.mp4", "Q? A. x B. y", ["<answer>A</answer>"])
    assert format_reward(no_call, False) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        format_reward(traj, False, value=1.0)
    with pytest.raises(ValueError, match="accuracy"):
        format_reward(traj, 1.5)


def _grpo_rewards(trajs, answers, types, names=("accuracy", "format"), judge=None, logged=None):
    """The GRPO reward functions as TRL calls them (async, keyword arguments), per episode."""
    from eva_fast.train.rewards import RewardContext, bind_rewards

    ctx = RewardContext(0.1, judge)
    funcs = bind_rewards(list(names), ctx)

    async def run():
        kw = dict(prompts=[None] * len(trajs), completions=[None] * len(trajs), completion_ids=[None] * len(trajs),
                  trajectory=trajs, answer=answers, type=types,
                  log_metric=(lambda k, v: logged.append((k, v))) if logged is not None else None)
        import inspect

        return [await f(**kw) if inspect.iscoroutinefunction(f) else f(**kw) for f in funcs]

    return [f.__name__ for f in funcs], asyncio.run(run())


def test_open_ended_reward_is_monotone_in_rouge(eva_trajectories):
    """accuracy + format never decreases as the answer's ROUGE grows (issue 22: with the format
    reward added below a 0.5 'correct' threshold, 'a man in' (0.47) outscored 'a man in red' (0.53))."""
    import dataclasses
    import itertools

    traj, _ = eva_trajectories[0]  # made a valid tool call: the format reward applies
    ref = "an old man in a red coat walks his small dog along the beach at sunset"
    words = ref.split()
    answers = {" ".join(words[:k]) for k in range(len(words) + 1)}
    answers |= {" ".join(w for j, w in enumerate(words) if j % step) for step in (2, 3, 4)}
    answers |= {" ".join(c) for c in itertools.combinations(["man", "red", "dog", "beach", "cat", "car", "snow"], 3)}
    answers |= {"", "nothing shared here", "a man in", "a man in red", "dog", "sunset beach"}
    answers = sorted(answers)
    trajs = [dataclasses.replace(traj, answer=a) for a in answers]
    names, (acc, fmt) = _grpo_rewards(trajs, [ref] * len(trajs), ["open"] * len(trajs))
    assert names == ["accuracy", "format"]
    rouge = [rouge_reward(a, ref) for a in answers]
    assert acc == pytest.approx(rouge)  # the answer reward is the ROUGE mean
    total = [a + f for a, f in zip(acc, fmt)]
    assert total == pytest.approx([max(r, 0.1) for r in rouge])
    # the grid covers the old threshold and the format value, from 0 to 1
    assert min(rouge) == 0.0 and max(rouge) == 1.0 and any(0.4 < r < 0.5 for r in rouge) and any(0.5 < r < 0.6 for r in rouge)
    assert any(0 < r < 0.1 for r in rouge) or any(r == 0 for r in rouge)
    order = sorted(range(len(answers)), key=lambda i: rouge[i])
    for i, j in itertools.pairwise(order):
        assert total[j] >= total[i] - 1e-12, (answers[i], rouge[i], total[i], answers[j], rouge[j], total[j])


def test_infrastructure_failures_are_unscored_hostile_output_scores_zero(eva_trajectories):
    """A backend or video failure gets None from every reward (TRL's "unscorable"); an episode the
    model broke itself (the reference's arithmetic raising on its arguments) is scored 0."""
    import dataclasses

    from eva_fast.agent import AgentConfig, AgentLoop, get_backend

    from tests.conftest import DATA

    traj, gt = eva_trajectories[0]
    server_down = AgentLoop(get_backend("scripted", replies=[RuntimeError("server down")]), AgentConfig()).run_sync(
        str(DATA / "nasa_13013.mp4"), "Q? A. x B. y")
    assert (server_down.stop_reason, server_down.error_source) == ("exception", "backend")
    no_video = AgentLoop(get_backend("scripted", replies=["x"]), AgentConfig()).run_sync("/nonexistent.mp4", "Q? A. x B. y")
    assert (no_video.stop_reason, no_video.error_source) == ("exception", "video")
    # the published evaluation raises on an infinite label time: the model's doing
    hostile = AgentLoop(get_backend("scripted", replies=[
        '<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 1e400, "nframes": 2}}</tool_call>'
    ]), AgentConfig()).run_sync(str(DATA / "nasa_13013.mp4"), "Q? A. x B. y")
    assert (hostile.stop_reason, hostile.error_source) == ("exception", "model_output"), hostile.error
    assert [rewards.infra_failure(t) for t in (server_down, no_video, hostile, traj)] == [True, True, False, False]
    # a failure that carries a (wrong) answer still stays unscored
    late = dataclasses.replace(server_down, answer=gt)
    for qtype, a in (("mcq", gt), ("open", "Earth")):
        _, (acc, fmt) = _grpo_rewards([server_down, no_video, late, hostile, traj], [a] * 5, [qtype] * 5)
        assert acc[:3] == [None] * 3 and fmt[:3] == [None] * 3
        assert acc[3] == 0.0 and fmt[3] == 0.0
        assert acc[4] is not None and fmt[4] is not None
    assert Trajectory_roundtrip(server_down).error_source == "backend"


def Trajectory_roundtrip(t):
    from eva_fast.agent import Trajectory

    return Trajectory.from_dict(t.to_dict())


def test_reward_registry(eva_trajectories):
    from eva_fast.train.rewards import REWARDS, bind_rewards, get_reward, register_reward

    assert {"accuracy", "format"} <= set(REWARDS)
    with pytest.raises(ValueError, match="unknown reward 'nope'.*accuracy"):
        get_reward("nope")
    with pytest.raises(ValueError, match="twice"):
        bind_rewards(["accuracy", "accuracy"], None)
    # adding a reward: one function, one line; then it is a name in the config
    @register_reward("test_rounds")
    def rounds(completions, trajectory, *, ctx, **kwargs):
        return [1.0 / t.num_rounds for t in trajectory]

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_reward("test_rounds")(lambda **kw: [])
        trajs = [t for t, _ in eva_trajectories]
        names, (acc, r) = _grpo_rewards(trajs, [g for _, g in eva_trajectories], ["mcq"] * 4, ("accuracy", "test_rounds"))
        assert names == ["accuracy", "test_rounds"] and acc == [1.0] * 4 and r == [1 / 3] * 4
        # or by dotted path
        assert get_reward("eva_fast.train.rewards.rouge_reward") is rouge_reward
    finally:
        del REWARDS["test_rounds"]


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
    res = failing.judge_sync(traj, "A")  # the judge failed: no score (the episode is left unscored)
    assert res.reward is None and res.policy_correct and "server down" in res.error
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
