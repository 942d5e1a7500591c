"""Turn-synchronous batched rollouts on the in-process transformers backend (issue 22): one
left-padded ``generate`` per tick over every live episode, each row with its own frames, records
exactly what batch-1 generation records; ticks agree across processes; a process with nothing to
serve (or no images) still makes the same call."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import DATA

VIDEOS = [str(DATA / v) for v in ("nasa_13013.mp4", "bigbuckbunny.mp4", "h265_video.mp4")]
QUESTIONS = ["Is it Earth? A. yes B. no", "Which animal appears? A. cat B. rabbit"]


def _call(start, end, n, resize):
    args = {"start_time": start, "end_time": end, "nframes": n, "resize": resize}
    return "<tool_call>" + json.dumps({"tool": "frame_select", "arguments": args}) + "</tool_call>"


def _rollouts(tiny_qwen_dir, *, batch_turns, temperature, max_concurrency=None, seed=0):
    """6 episodes (3 videos of different sizes x 2 questions): a scripted first turn fetches frames,
    then the tiny model generates freely with the frames in context."""
    from eva_fast.agent import AgentConfig, get_backend
    from eva_fast.agent._transformers import TransformersBackend
    from eva_fast.train import RolloutEngine

    backend = TransformersBackend(tiny_qwen_dir, batch_turns=batch_turns, generation_kwargs={"top_k": 0, "top_p": 1.0})
    first = get_backend("scripted", replies=[_call(0, 5, 3, 0.3)], then=backend)
    vids = VIDEOS * 2
    qs = [q for q in QUESTIONS for _ in VIDEOS]
    torch.manual_seed(seed)
    engine = RolloutEngine(first, AgentConfig(max_turns=3, max_new_tokens=24, temperature=temperature),
                           max_concurrency=max_concurrency)
    return engine.run_sync(vids, qs), backend


def test_batched_turns_equal_batch_one_at_temperature_zero(tiny_qwen_dir):
    batched, backend = _rollouts(tiny_qwen_dir, batch_turns=True, temperature=0.0)
    alone, _ = _rollouts(tiny_qwen_dir, batch_turns=False, temperature=0.0)
    # one tick served all six model turns, their prompts padded to the longest (frames of three sizes)
    (tick, *_) = batched.ticks
    assert tick.episodes == tick.rows == 6 and tick.padding_waste > 0.1 and tick.prefill_ms > 0
    assert alone.ticks == []
    sizes = {t.tool_calls[0].frames.plan.size for t in batched.trajectories}
    assert len(sizes) == 3
    for a, b in zip(batched.trajectories, alone.trajectories, strict=True):
        assert a.stop_reason == b.stop_reason and not a.stop_reason.startswith("exception"), a.error
        ta, tb = a.tokens, b.tokens
        assert ta.prompt_ids == tb.prompt_ids and ta.response_mask == tb.response_mask
        assert ta.response_ids == tb.response_ids  # token for token
        assert sum(ta.response_mask) >= 8  # the model wrote (the scripted first turn is in the prompt)
        assert torch.allclose(torch.tensor(ta.response_logprobs), torch.tensor(tb.response_logprobs), atol=1e-5, rtol=0)
        assert [t.completion_token_ids for t in a.turns] == [t.completion_token_ids for t in b.turns]


def test_batched_sampling_logprobs_equal_a_forward_pass(tiny_qwen_dir):
    """At temperature > 0 each recorded logprob is log_softmax(logits / T) of a plain forward of the
    episode's own (unpadded) ids and frames at that token."""
    from eva_fast.vision import pack_qwen25vl

    temperature = 0.8
    batch, backend = _rollouts(tiny_qwen_dir, batch_turns=True, temperature=temperature, max_concurrency=4)
    # at most 4 episodes in flight: ticks of 4 then 2 (and the later turns of each)
    assert [t.episodes for t in batch.ticks][:2] == [4, 2]
    model = backend.model
    checked = 0
    for traj in batch.trajectories:
        tr = traj.tokens
        ids = torch.tensor(tr.prompt_ids + tr.response_ids)[None]
        packed = pack_qwen25vl(tr.frames)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           mm_token_type_ids=(ids == backend.image_token_id).int(), pixel_values=packed.pixel_values,
                           image_grid_thw=packed.image_grid_thw).logits[0].float()
        logp = torch.log_softmax(logits / temperature, -1)
        n = len(tr.prompt_ids)
        for k, (tok, m, lp) in enumerate(zip(tr.response_ids, tr.response_mask, tr.response_logprobs)):
            if m:
                assert lp == pytest.approx(float(logp[n + k - 1, tok]), abs=2e-4), (k, lp)
                checked += 1
    assert checked > 100


def test_a_process_without_turns_or_images_makes_the_same_call(tiny_qwen_dir):
    """Distributed ticks: when another process's batch carries images, this process's call runs
    the vision tower too (a dummy 28x28 row), without changing its own rows; when this process has
    no turn left it still calls generate (one dummy row) while another process is live."""
    from eva_fast.agent import AgentConfig
    from eva_fast.agent._transformers import TransformersBackend
    from eva_fast.train import RolloutEngine

    reference = TransformersBackend(tiny_qwen_dir)
    plain = RolloutEngine(reference, AgentConfig(max_turns=1, max_new_tokens=8)).run_sync(VIDEOS[:2], QUESTIONS)

    backend = TransformersBackend(tiny_qwen_dir)
    agreements = []
    other = iter([[1, 1, 64], [1, 0, 8], [0, 0, 0]])  # the other process: images in tick 1, live in tick 2, then done

    def sync(values):
        theirs = next(other)
        agreements.append((list(values), theirs))
        return [max(a, b) for a, b in zip(values, theirs)]

    backend.batcher.sync = sync
    vision_patches = []
    hook = backend.model.model.visual.register_forward_hook(lambda m, args, out: vision_patches.append(args[0].shape[0]))
    calls = []
    original = backend.model.generate
    backend.model.generate = lambda **kw: calls.append((kw["input_ids"].shape, kw["max_new_tokens"])) or original(**kw)
    try:
        batch = RolloutEngine(backend, AgentConfig(max_turns=1, max_new_tokens=8)).run_sync(VIDEOS[:2], QUESTIONS)
    finally:
        hook.remove()
        backend.model.generate = original
    # tick 1: 2 episodes without frames + the dummy image row, at the agreed longest turn (64);
    # tick 2: nothing live here, another process is: one dummy row; then everyone agrees to stop
    assert [t.episodes for t in batch.ticks] == [2, 0] and [t.rows for t in batch.ticks] == [3, 1]
    assert [(s[0], n) for s, n in calls] == [(3, 64), (1, 8)]
    assert vision_patches == [4]  # one black 28x28 frame: 4 patches, through the vision tower once
    assert [a[0] for a in agreements] == [[1, 0, 8], [0, 0, 0], [0, 0, 0]]
    for a, b in zip(batch.trajectories, plain.trajectories, strict=True):  # the own rows are unchanged
        assert a.tokens.response_ids == b.tokens.response_ids and len(a.tokens.response_ids) <= 8


def test_turn_batcher_waits_for_every_live_episode_and_a_failed_tick_fails_its_turns():
    import asyncio

    from eva_fast.agent._ticks import TickStats, TurnBatcher, TurnRequest

    seen = []

    def run_tick(requests, agreed):
        seen.append(sorted(r.session for r in requests))
        if len(seen) == 3:
            raise RuntimeError("engine died")
        return [f"{r.session}:{len(seen)}" for r in requests], TickStats(len(requests), len(requests))

    batcher = TurnBatcher(run_tick)

    async def episode(name, turns, tool_s):
        out = []
        try:
            for _ in range(turns):
                try:
                    out.append(await batcher.submit(TurnRequest(name, 8, 0.0)))
                except RuntimeError as e:  # the agent loop ends the episode ("exception", backend)
                    out.append(str(e))
                    break
                await asyncio.sleep(tool_s)  # tool work between turns: the others wait for it
        finally:
            batcher.episode_done()
        return out

    async def main():
        batcher.expect(3)
        res = await asyncio.gather(episode("a", 3, 0.05), episode("b", 1, 0.0), episode("c", 3, 0.0))
        await batcher.drain()
        return res

    a, b, c = asyncio.run(main())
    # c is back at once, but each tick waits for a's slower tool work: a and c always share a tick
    assert seen == [["a", "b", "c"], ["a", "c"], ["a", "c"]]
    assert a == ["a:1", "a:2", "engine died"] and b == ["b:1"] and c == ["c:1", "c:2", "engine died"]
    assert [t.episodes for t in batcher.ticks] == [3, 2]  # the failed tick recorded no stats
    assert not batcher.active
    with pytest.raises(ValueError, match="max_concurrency"):
        batcher.expect(2, 0)
