"""GRPO for real on CPU: a tiny Qwen2.5-VL SFT-trained until it writes EVA tool calls, then GRPO with
its own multi-turn rollouts (2 questions x 4 episodes x 2 steps). Checks: parameters change,
group advantages are zero-mean, the loss forward gets the rollouts' own frames, the mask is 1
exactly on generated tokens, recomputed logprobs equal the sampling ones, the group frame cache,
hostile episodes, checkpoint and resume, and TRL's hook contract."""

from __future__ import annotations

import inspect

import pytest
import torch

from tests.conftest import DATA
from tests.train.conftest import call

pytestmark = pytest.mark.slow

VIDEO = "nasa_13013.mp4"
QUESTIONS = [("Is it Earth? A. yes B. no", "A"), ("Is it night? A. yes B. no", "B")]
# 110 steps: the policy then writes a valid call in every sampled episode (at 70 it did in ~90 % of
# episodes with 2 threads but ~40 % with 1, and GRPO's own samples decided whether the test passed)
SFT_STEPS = 110
TORCH_THREADS = 2


@pytest.fixture(scope="module", autouse=True)
def fixed_torch_threads():
    """The module's SFT and sampling run with the same torch thread count alone or in a full run
    (other tests leave it set, e.g. the fuzz harness's 1): float reductions, and so sampled tokens,
    depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def policy_dir(tiny_qwen_dir, tmp_path_factory, cuda_layout_lm_head_module):
    """The tiny model SFT-trained on short EVA episodes (one tool call, then the answer) until it
    writes the tool call itself. Each question is answered A in one record and B in another: the
    policy is sure of the call and unsure of the answer, so a group's sampled episodes differ in
    reward (GRPO gets nonzero advantages) while nearly all fetch frames."""
    from eva_fast.train import EvaSFTConfig, EvaSFTTrainer, record_from_trajectory

    from tests.train.conftest import run_episode

    recs = []
    for q, _ in QUESTIONS:
        for answer in ("A", "B"):
            t = run_episode(VIDEO, q, [call(0, 12, 2, 0.1), f"<answer>{answer}</answer>"])
            recs.append(record_from_trajectory(t, gt=answer))
    out = tmp_path_factory.mktemp("policy")
    args = EvaSFTConfig(output_dir=str(out), max_steps=SFT_STEPS, per_device_train_batch_size=2, learning_rate=1e-2,
                        lr_scheduler_type="constant", use_cpu=True, bf16=False, gradient_checkpointing=False,
                        report_to=[], save_strategy="no", disable_tqdm=True, logging_steps=10, seed=0)
    trainer = EvaSFTTrainer(str(tiny_qwen_dir), args, train_dataset=recs)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < 0.2, losses
    trainer.save_model(str(out))
    return out


@pytest.fixture(scope="module")
def cuda_layout_lm_head_module():
    """Module-scoped form of ``cuda_layout_lm_head`` (see tests/train/conftest.py)."""
    import trl.trainer.utils as tu

    mp = pytest.MonkeyPatch()
    mp.setattr(tu, "_use_triton", lambda device: True, raising=True)
    yield
    mp.undo()


def _samples():
    from eva_fast.train._rl_data import RLSample

    return [RLSample(video=str(DATA / VIDEO), question=q, answer=a, type="mcq") for q, a in QUESTIONS]


def _config(out, **kw):
    from eva_fast.train import EvaGRPOConfig

    base = dict(output_dir=str(out), num_generations=4, per_device_train_batch_size=8, max_steps=2, learning_rate=1e-4,
                temperature=0.7, beta=0.0, judge="none", max_turns=3, max_new_tokens=48, use_cpu=True, bf16=False,
                gradient_checkpointing=False, report_to=[], save_strategy="no", disable_tqdm=True, logging_steps=1,
                seed=0, dump_every_steps=1, dump_num=2)
    base.update(kw)
    return EvaGRPOConfig(**base)


class Spy:
    """Wraps the trainer's generation step and the vision tower to keep what the loss saw."""

    def __init__(self, trainer):
        self.outputs, self.batches, self.vision_inputs = [], [], []
        orig = trainer._generate_and_score_completions

        def wrapped(inputs):
            out = orig(inputs)
            self.outputs.append(out)
            self.batches.append(trainer._eva_last)
            return out

        trainer._generate_and_score_completions = wrapped
        visual = trainer.model.model.visual
        self.hook = visual.register_forward_pre_hook(
            lambda mod, args, kwargs: self.vision_inputs.append((args[0] if args else kwargs["hidden_states"]).detach().clone()),
            with_kwargs=True)


def test_grpo_trains_on_its_own_multi_turn_rollouts(policy_dir, tmp_path):
    from eva_fast.train import EvaGRPOTrainer
    from eva_fast.vision import pack_qwen25vl

    trainer = EvaGRPOTrainer(str(policy_dir), _config(tmp_path / "grpo"), train_dataset=_samples())
    spy = Spy(trainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 2 and len(spy.outputs) == 2

    # the rollouts are real episodes: the policy generated tool calls that fetched frames
    trajs = [t for b in spy.batches for t in b.trajectories]
    assert len(trajs) == 16
    # turn-synchronous batching: the first tick served all 8 episodes of the step in one generate
    assert all(b.ticks and b.ticks[0].episodes == 8 for b in spy.batches), [b.ticks for b in spy.batches]
    assert trainer.loss_type == "grpo"
    assert sum(1 for t in trajs for c in t.tool_calls if c.frames is not None) >= 12, [t.stop_reason for t in trajs]
    # the groups' episodes differ in reward (the policy is unsure of the answer): nonzero
    # advantages, so the GRPO loss has a gradient (beta is 0: nothing else moves the parameters)
    assert any(o["advantages"].abs().max() > 0.1 for o in spy.outputs), [o["advantages"] for o in spy.outputs]

    # parameters changed
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and any("language_model" in n for n in changed)

    tok = trainer._tokenizer
    for out, batch in zip(spy.outputs, spy.batches):
        # group advantages are zero-mean (2 groups of 4 consecutive episodes)
        adv = out["advantages"].view(2, 4)
        assert torch.allclose(adv.mean(1), torch.zeros(2), atol=1e-5)
        # mask: 1 exactly on what the model generated, found independently from the turns' ids
        for i, t in enumerate(batch.trajectories):
            ids = out["completion_ids"][i][out["completion_mask"][i].bool()].tolist()
            mask = out["tool_mask"][i][out["completion_mask"][i].bool()].tolist()
            generated = [tid for turn in t.turns for tid in turn.completion_token_ids]
            assert [x for x, m in zip(ids, mask) if m] == generated
            tool_text = tok.decode([x for x, m in zip(ids, mask) if not m])
            if any(c.frames is not None for c in t.tool_calls):
                assert tool_text.startswith("\n<|im_start|>tool\n<tool_response>")
        # pixel_values fed to the loss are the rollouts' frames, in order
        frames = [run for t in batch.trajectories if t.tokens for run in t.tokens.frames]
        assert torch.equal(out["pixel_values"], pack_qwen25vl(frames).pixel_values)

    # the loss forward's vision tower got those pixels (TRL shuffles the samples of a generation
    # batch, so compare the multiset of patch rows through their column sums)
    for o in spy.outputs:
        p = o["pixel_values"]
        assert any(v.shape == p.shape and torch.allclose(v.sum(0), p.sum(0), rtol=0, atol=1e-3)
                   for v in spy.vision_inputs)

    # observability: per-step metrics and the rollout dumps
    logged = trainer.state.log_history[0]
    for key in ("reward", "rewards/accuracy/mean", "rewards/format/mean", "eva/rounds", "eva/visual_tokens",
                "eva/tool_call_validity", "eva/frame_cache_hit_rate", "time/generate_ms", "time/decode_ms",
                "time/model_ms", "eva/rollout_ticks", "eva/rollout_concurrency", "eva/padding_waste",
                "eva/prefill_share", "eva/infra_failures"):
        assert key in logged, (key, sorted(logged))
    dumps = sorted((tmp_path / "grpo" / "rollouts").glob("step-*"))
    assert any(p.suffix == ".jsonl" for p in dumps) and any(p.suffix == ".png" for p in dumps)
    # the dumps are what data enhancement mines for failures
    from eva_fast.train.data._enhance import collect_failures

    failures, stats = collect_failures([str(p) for p in dumps if p.suffix == ".jsonl"])
    assert stats["inputs"] == 16 and stats["right"] + stats["failures"] + sum(stats["skipped"].values()) == 16


def test_loss_forward_logprobs_equal_the_sampling_logprobs(policy_dir, tmp_path):
    """Same parameters: TRL's loss-side per-token logprobs (its fused LM head, temperature-scaled)
    equal the logprobs recorded while sampling, on every generated token — prompt, completion and
    frames line up. With ``judge="policy"`` (beta 0: no reference model) the CSV judge is a frozen
    copy of the initial policy, and it can only take accuracy away."""
    from eva_fast.train import EvaGRPOTrainer

    trainer = EvaGRPOTrainer(str(policy_dir), _config(tmp_path / "lp", max_steps=1, learning_rate=0.0, judge="policy"),
                             train_dataset=_samples())
    rows = [trainer.train_dataset[i % 2] for i in range(8)]
    rows = [rows[0]] * 4 + [rows[1]] * 4
    trainer.model.train()
    out = trainer._generate_and_score_completions(rows)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, att, out["completion_ids"].size(1), pixel_values=out.get("pixel_values"),
            image_grid_thw=out.get("image_grid_thw"), num_images=out.get("num_images"),
            mm_token_type_ids=out.get("mm_token_type_ids"))
    mask = (out["completion_mask"] * out["tool_mask"]).bool()
    sampled = out["sampling_per_token_logps"]
    assert mask.sum() > 50
    assert torch.allclose(logps[mask], sampled[mask], atol=2e-4, rtol=0), (logps[mask] - sampled[mask]).abs().max()

    judge_model = trainer.reward_context.judge.backend.model
    assert judge_model is not trainer.model and not any(p.requires_grad for p in judge_model.parameters())
    m = trainer._metrics["train"]
    # some answers are right (the policy answers A or B), the judge was asked about those, and the
    # accuracy reward is at most the plain accuracy
    (accuracy,) = m["eva/mcq_accuracy"]
    assert accuracy > 0 and len(m["eva/judge_agreement"]) == 1, dict(m)
    assert m["rewards/accuracy/mean"][-1] <= accuracy


def test_group_frame_cache_decodes_shared_calls_once(policy_dir):
    from eva_fast.agent import AgentConfig, get_backend
    from eva_fast.train import RolloutEngine
    from eva_fast.video import select_frames

    from tests.train.conftest import ForcedReplies

    backend = get_backend("transformers", model_path=str(policy_dir))
    first = call(0, 12, 3, 0.2)
    replies = [first, "<answer>A</answer>"] * 3 + [first, call(0, 12, 5, 0.2), "<answer>A</answer>"]
    forced = ForcedReplies(backend, replies)
    engine = RolloutEngine(backend, AgentConfig(max_turns=3), max_concurrency=1)
    try:
        batch = engine.run_sync([DATA / VIDEO] * 4, [QUESTIONS[0][0]] * 4)
    finally:
        forced.restore()
    c = batch.cache
    # 4 identical first calls of 3 frames, then a 5-frame call that shares 2 of its frames with them
    # (frames 0 and 195 of linspace(0, 12, n)); 3 + 3 new frames are decoded in all
    want = select_frames(str(DATA / VIDEO), 0, 12, 5, 0.2)
    got = batch.trajectories[3].turns[1].tool_calls[0].frames
    assert got.plan.frame_indices == want.plan.frame_indices
    assert c.calls == 5 and c.frames_requested == 17 and c.calls_fully_cached == 3
    assert c.frames_decoded == 3 + len(set(want.plan.frame_indices) - set(select_frames(str(DATA / VIDEO), 0, 12, 3, 0.2).plan.frame_indices))
    for t in batch.trajectories:
        assert t.tokens is not None and torch.equal(t.tokens.frames[0], select_frames(str(DATA / VIDEO), 0, 12, 3, 0.2).frames)
    unshared = RolloutEngine(backend, AgentConfig(max_turns=3), share_frames=False, max_concurrency=1)
    forced = ForcedReplies(backend, [first, "<answer>A</answer>"] * 4)
    try:
        b2 = unshared.run_sync([DATA / VIDEO] * 4, [QUESTIONS[0][0]] * 4)
    finally:
        forced.restore()
    assert b2.cache.frames_requested == 0  # no cache: every episode decoded its own 3 frames
    assert sum(t.tool_calls[0].frames is not None for t in b2.trajectories) == 4


def test_hostile_episodes_score_zero_and_training_goes_on(policy_dir, tmp_path):
    from eva_fast.agent import get_backend
    from eva_fast.train import EvaGRPOTrainer

    from tests.train.conftest import ForcedReplies

    hostile = [
        '<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 5, "nframes": 1000000000}}</tool_call>',
        "<tool_call>{unterminated <answer",
        '<tool_call>{"tool": "frame_select", "arguments": {"start_time": "soon", "end_time": 5, "nframes": 2}}</tool_call>',
        "<answer>",
    ]
    trainer = EvaGRPOTrainer(str(policy_dir), _config(tmp_path / "h", max_steps=1), train_dataset=_samples())
    spy = Spy(trainer)
    backend = get_backend("transformers", model=trainer.model, tokenizer=trainer._tokenizer)
    forced = ForcedReplies(backend, hostile * 2)
    try:
        trainer.train()
    finally:
        forced.restore()
    assert trainer.state.global_step == 1
    (batch,) = spy.batches
    trajs = batch.trajectories
    acc, fmt = _rewards(trajs, ["A"] * 8, ["mcq"] * 8)
    assert acc == [0.0] * 8 and fmt == [0.0] * 8
    assert {t.stop_reason for t in trajs} >= {"call_frame_select_failed", "no_answer_no_tool_call"}
    # hostile output is the model's: scored (0), so its tokens stay in the loss
    assert trainer.state.log_history[0]["eva/infra_failures"] == 0.0
    assert spy.outputs[0]["tool_mask"].sum(1).gt(0).all()

    # a 10 MB reply from a server backend: the episode stops, the rewards are 0
    from eva_fast.agent import AgentConfig
    from eva_fast.train import RolloutEngine

    huge = "<tool_call>" + "x" * 10_000_000
    b = RolloutEngine(get_backend("scripted", replies=[huge]), AgentConfig()).run_sync([DATA / VIDEO], ["Q? A. x B. y"])
    (t,) = b.trajectories
    assert t.stop_reason == "no_answer_no_tool_call"
    assert _rewards([t], ["A"], ["mcq"]) == ([0.0], [0.0])


def _rewards(trajs, answers, types):
    """(accuracy, format) per episode from the registered reward functions, without a judge."""
    import asyncio

    from eva_fast.train.rewards import RewardContext, accuracy_reward, format_reward_fn

    ctx = RewardContext(0.1)
    kw = dict(completions=None, trajectory=trajs, answer=answers, type=types, ctx=ctx)

    async def run():
        return await accuracy_reward(**kw), await format_reward_fn(**kw)

    return asyncio.run(run())


def test_infrastructure_failures_are_unscored_and_masked(policy_dir, tmp_path):
    """Episodes whose backend failed (here: the second turn of two of each question's four episodes)
    get no reward (TRL's unscorable: advantage 0, out of the group baseline) and no tokens in the
    loss (their tool_mask row is 0: neither the policy term nor the KL term reaches them); counted
    in eva/infra_failures. Before: they scored 0 and were pushed down with a negative advantage."""
    from eva_fast.agent._transformers import TransformersBackend, _TransformersSession
    from eva_fast.train import EvaGRPOTrainer

    from tests.train.conftest import ForcedReplies

    trainer = EvaGRPOTrainer(str(policy_dir), _config(tmp_path / "infra", max_steps=1, beta=0.04, dump_every_steps=0),
                             train_dataset=_samples())
    spy = Spy(trainer)
    opened = {}

    class Session(_TransformersSession):
        def __init__(self, backend):
            super().__init__(backend)
            self.turns = 0
            self.fails = False

        async def generate(self, messages, **kw):
            if self.turns == 0:
                q = messages[1].content
                opened[q] = opened.get(q, 0) + 1
                self.fails = opened[q] % 2 == 0  # the 2nd and 4th episode of each question
            self.turns += 1
            if self.turns == 2 and self.fails:
                raise ConnectionError("server down")
            return await super().generate(messages, **kw)

    class FlakyBackend(TransformersBackend):
        def session(self):
            return Session(self)

    backend = FlakyBackend(model=trainer.model, tokenizer=trainer._tokenizer,
                           generation_kwargs=trainer._sampling_kwargs())
    trainer._rollout_backend = backend
    # every episode: a tool call, then answer A (right for question 1, wrong for question 2)
    forced = ForcedReplies(backend, [call(0, 12, 2, 0.1)] * 8 + ["<answer>A</answer>"] * 4)
    try:
        trainer.train()
    finally:
        forced.restore()
    (out,), (batch,) = spy.outputs, spy.batches
    trajs = batch.trajectories
    failed = [t.stop_reason == "exception" and t.error_source == "backend" for t in trajs]
    assert failed == [False, True, False, True] * 2, [(t.stop_reason, t.error) for t in trajs]
    assert [t.answer for t in trajs] == ["A", "", "A", ""] * 2
    mask = out["completion_mask"] * out["tool_mask"]
    adv = out["advantages"]
    for i, f in enumerate(failed):
        assert (mask[i].sum() == 0) == f  # failed episodes: nothing of theirs in the loss
        if f:
            assert adv[i] == 0
    # the scored episodes of a group all scored alike (1.0 and 0.1): the failures did not pull the
    # baseline down, so every advantage is 0 (with the failures scored 0 the right ones got > 0)
    assert torch.all(adv == 0), adv
    log = trainer.state.log_history[0]
    assert log["eva/infra_failures"] == 4.0
    assert log["reward"] == pytest.approx((1.0 + 1.0 + 0.1 + 0.1) / 4)  # the mean over scored episodes
    assert log["rewards/accuracy/mean"] == pytest.approx(0.5) and log["rewards/format/mean"] == pytest.approx(0.05)


def test_checkpoint_and_resume(policy_dir, tmp_path):
    from eva_fast.train import EvaGRPOTrainer

    out = tmp_path / "ck"
    t1 = EvaGRPOTrainer(str(policy_dir), _config(out, max_steps=1, save_strategy="steps", save_steps=1, dump_every_steps=0),
                        train_dataset=_samples())
    t1.train()
    saved = {n: p.detach().clone() for n, p in t1.model.named_parameters()}
    assert (out / "checkpoint-1" / "model.safetensors").is_file() and (out / "checkpoint-1" / "preprocessor_config.json").is_file()
    t2 = EvaGRPOTrainer(str(policy_dir), _config(out, max_steps=2, save_strategy="no", dump_every_steps=0),
                        train_dataset=_samples())
    loaded = {}
    orig = t2._load_from_checkpoint

    def spy(path, model=None):
        orig(path, model)
        loaded.update({n: p.detach().clone() for n, p in t2.model.named_parameters()})

    t2._load_from_checkpoint = spy
    t2.train(resume_from_checkpoint=str(out / "checkpoint-1"))
    assert t2.state.global_step == 2
    assert loaded and all(torch.equal(loaded[n], saved[n]) for n in saved)


def test_trl_contract():
    """The private TRL hooks this trainer relies on (module docstring of eva_fast.train._grpo)."""
    import trl
    from eva_fast.train._grpo import TESTED_TRL
    from trl import GRPOTrainer

    assert trl.__version__ in TESTED_TRL
    assert list(inspect.signature(GRPOTrainer._generate).parameters) == ["self", "prompts"]
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for needle in ("self._generate(prompts)", "if self.tools and any(imgs for imgs in tool_images) and self._is_vlm",
                   "self.processing_class.image_processor(images=flat_images", 'output["tool_mask"] = tool_mask',
                   "forward_kwargs.pop(\"pixel_values\", None)"):
        assert needle in src, needle
    assert "extra_fields" in inspect.getsource(GRPOTrainer._generate_and_score_completions)
    sig = inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
    assert {"pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids"} <= set(sig)
    # unscorable episodes: the gathered rewards of _calculate_rewards, NaN = None, all-NaN rows get
    # advantage 0; the loss masks with completion_mask * tool_mask (what _mask_unscorable zeroes)
    assert list(inspect.signature(GRPOTrainer._calculate_rewards).parameters) == [
        "self", "inputs", "prompts", "completions", "completion_ids_list"]
    for needle in ("rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)",
                   "unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)",
                   "advantages = torch.nan_to_num(advantages, nan=0.0)"):
        assert needle in src, needle
    assert "reward if reward is not None else torch.nan" in inspect.getsource(GRPOTrainer._calculate_rewards)
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    assert 'mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]' in loss_src
    assert 'if self.loss_type in ["grpo", "sapo"]:' in loss_src


def test_config_and_data(tmp_path):
    from eva_fast.train import EvaGRPOConfig
    from eva_fast.train._grpo import balance_types
    from eva_fast.train._rl_data import RLSample

    with pytest.raises(ValueError, match="judge"):
        EvaGRPOConfig(output_dir=str(tmp_path), judge="gpt")
    with pytest.raises(ValueError, match="judge_base_url"):
        EvaGRPOConfig(output_dir=str(tmp_path), judge="openai")
    with pytest.raises(ValueError, match="format_reward"):
        EvaGRPOConfig(output_dir=str(tmp_path), format_reward=0.5 * 2)
    v = str(DATA / VIDEO)
    mcq = [RLSample(video=v, question=f"q{i}? A. x B. y", answer="A", type="mcq") for i in range(10)]
    opn = [RLSample(video=v, question=f"o{i}?", answer="a cat", type="open") for i in range(27)]
    out = balance_types(mcq + opn, 0.1)
    assert sum(s.type == "mcq" for s in out) == 3 and sum(s.type == "open" for s in out) == 27
    out = balance_types(mcq + opn, 0.5)
    assert sum(s.type == "mcq" for s in out) == 10 and sum(s.type == "open" for s in out) == 10
    with pytest.raises(ValueError, match="0 multiple-choice"):
        balance_types(opn, 0.1)


def test_videos_resolve_under_roots_by_source(tmp_path):
    from eva_fast.train._grpo import EvaGRPOTrainer, load_roots, video_path
    from eva_fast.train._rl_data import RLSample

    (tmp_path / "roots.yaml").write_text(f"llava-video: {DATA}\n")
    roots = load_roots(tmp_path / "roots.yaml")
    a = RLSample(video=VIDEO, question="q? A. x B. y", answer="A", type="mcq", source="llava-video#12")
    b = RLSample(video=VIDEO, question="q? A. x B. y", answer="A", type="mcq", source="other:3")
    assert video_path(a, "/elsewhere", roots) == str(DATA / VIDEO)
    assert video_path(b, "/elsewhere", roots) == f"/elsewhere/{VIDEO}"
    args = _config(tmp_path, roots=str(tmp_path / "roots.yaml"), video_root="/elsewhere")
    with pytest.raises(FileNotFoundError, match="1 question"):
        EvaGRPOTrainer._samples([a, b], args, None)
    assert EvaGRPOTrainer._samples([a], args, None) == [a]


def test_two_processes_log_and_dump_every_episode(policy_dir, tmp_path):
    """``eva-fast train grpo`` under ``accelerate launch`` with two processes (each runs one
    question's 4 episodes): the rollout dump holds all 8 episodes of both processes, and the logged
    eva/* metrics, token count and frame-cache totals are those of all 8, recomputed from the dump."""
    import json

    import yaml
    from eva_fast.agent import NORMAL_STOP_REASONS

    from tests.train.conftest import launch_failure, launch_two_processes

    rl = tmp_path / "rl.jsonl"
    rl.write_text("".join(json.dumps({"video": str(DATA / VIDEO), "question": q, "answer": a, "type": "mcq"}) + "\n"
                          for q, a in QUESTIONS))
    out = tmp_path / "grpo"
    cfg = dict(model_name_or_path=str(policy_dir), train_file=str(rl), output_dir=str(out), num_generations=4,
               per_device_train_batch_size=4, max_steps=2, learning_rate=1e-4, temperature=0.7, beta=0.0, judge="none",
               max_turns=3, max_new_tokens=48, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
               save_strategy="steps", save_steps=2, disable_tqdm=True, logging_steps=1, seed=0, dump_every_steps=1,
               dump_num=1)
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(cfg))
    proc = launch_two_processes("train", "grpo", "--config", str(tmp_path / "grpo.yaml"))
    assert proc.returncode == 0, launch_failure(proc)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    logs = [h for h in json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2]
    tokens = requested = 0
    for log, dump in zip(logs, sorted((out / "rollouts").glob("step-*.jsonl"))):
        eps = [json.loads(line) for line in dump.read_text().splitlines()]
        assert len(eps) == 8 and {e["process"] for e in eps} == {0, 1}
        assert sorted(e["trajectory"]["question"] for e in eps) == sorted([q for q, _ in QUESTIONS] * 4)
        trajs = [e["trajectory"] for e in eps]
        assert log["eva/rounds"] == pytest.approx(sum(t["num_rounds"] for t in trajs) / 8)
        assert log["eva/visual_tokens"] == pytest.approx(sum(t["visual_tokens"] for t in trajs) / 8)
        stops = [t["stop_reason"] if t["stop_reason"] in NORMAL_STOP_REASONS else
                 ("exception" if t["stop_reason"].startswith("exception") else "tool_error") for t in trajs]
        for r in (*NORMAL_STOP_REASONS, "tool_error", "exception"):
            assert log[f"eva/stop/{r}"] == pytest.approx(stops.count(r) / 8), r
        # each episode's sequence holds at least its last round's prompt + completion (total_tokens)
        tokens += sum(t["total_tokens"] for t in trajs)
        assert log["num_tokens"] >= tokens > 0
        requested += sum(len(c["frames"]["frame_indices"]) for t in trajs for turn in t["turns"]
                         for c in turn["tool_calls"] if c.get("frames"))
    assert summary["frames_requested"] == requested


def test_two_processes_with_synced_generation_and_the_judge_do_not_hang(tiny_qwen_dir, tmp_path):
    """Issue 22: under ZeRO-3/FSDP transformers syncs ``generate`` across processes, so every
    process must make the same number of calls (and run the vision tower alike). Two processes on
    gloo with generation synced so (``tests/train/_synced_cli.py``), episodes of different lengths on
    each (process 0: a tool call, then the answer; process 1: two tool calls, then the answer) and
    the CSV judge on (asked only for right answers: process 0's question is answered right, process
    1's wrong). Before the fix: one ``generate`` per episode turn and per judged episode (8 + 4
    calls against 12), and the run hung. Now: the same ticks and calls on both processes."""
    import json

    import yaml

    from tests.train.conftest import launch_failure, launch_two_processes

    tok = __import__("transformers").AutoTokenizer.from_pretrained(tiny_qwen_dir)
    eot = tok.convert_tokens_to_ids("<|im_end|>")

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"] + [eot]

    scripts = {"0": [ids(call(0, 12, 2, 0.1)), ids("<answer>A</answer>")],
               "1": [ids(call(0, 12, 2, 0.1)), ids(call(4, 8, 2, 0.1)), ids("<answer>A</answer>")]}
    force = tmp_path / "force.json"
    force.write_text(json.dumps({"assistant": tok("<|im_start|>assistant", add_special_tokens=False)["input_ids"],
                                 "scripts": scripts}))
    rl = tmp_path / "rl.jsonl"
    rl.write_text("".join(json.dumps({"video": str(DATA / VIDEO), "question": q, "answer": a, "type": "mcq"}) + "\n"
                          for q, a in QUESTIONS))  # answers A and B: one process's episodes right, the other's wrong
    out = tmp_path / "grpo"
    cfg = dict(model_name_or_path=str(tiny_qwen_dir), train_file=str(rl), output_dir=str(out), num_generations=4,
               per_device_train_batch_size=4, max_steps=1, learning_rate=1e-4, temperature=0.7, beta=0.04,
               judge="reference", max_turns=4, max_new_tokens=64, use_cpu=True, bf16=False,
               gradient_checkpointing=False, report_to="none", save_strategy="steps", save_steps=1, disable_tqdm=True,
               logging_steps=1, seed=0, dump_every_steps=1, dump_num=0)
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(cfg))
    counts = tmp_path / "counts"
    counts.mkdir()
    proc = launch_two_processes("train", "grpo", "--config", str(tmp_path / "grpo.yaml"), timeout=300,
                                module="tests.train._synced_cli",
                                env={"EVA_FAST_TEST_FORCE": str(force), "EVA_FAST_TEST_COUNTS": str(counts)})
    assert proc.returncode == 0, launch_failure(proc)
    (dump,) = sorted((out / "rollouts").glob("step-*.jsonl"))
    eps = [json.loads(line) for line in dump.read_text().splitlines()]
    rounds = {p: sorted(e["trajectory"]["num_rounds"] for e in eps if e["process"] == p) for p in (0, 1)}
    assert rounds == {0: [2] * 4, 1: [3] * 4}, rounds
    assert all(e["stop_reason"] == "answer_found" and e["answer"] == "A" for e in eps)
    right = {p for p in (0, 1) for e in eps if e["process"] == p and e["answer"] == e["gt"]}
    assert len(right) == 1  # the judge had prompts on one process only
    per_rank = [json.loads((counts / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rollouts: 3 ticks (process 0 joins the third with a dummy row); judge: 1 tick; same vision calls
    assert per_rank[0] == per_rank[1] and per_rank[0]["generate"] == 4, per_rank
    logs = [h for h in json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert logs[0]["eva/rollout_ticks"] == 3 and "eva/judge_agreement" in logs[0], logs[0]
