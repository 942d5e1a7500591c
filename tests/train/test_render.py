"""One rendering for inference and training: the collator's ids equal what the agent loop's
transformers backend fed the model, turn by turn; labels are exactly the assistant turns; the
backend's token trace is the real sequence, with the model's own log-probabilities."""

from __future__ import annotations

import torch

from eva_fast.agent import AgentConfig, AgentLoop
from eva_fast.train import EvaCollator, record_from_trajectory
from tests.conftest import DATA
from tests.train.conftest import EPISODES, ForcedReplies

IM_START_ASSISTANT = "<|im_start|>assistant\n"
IM_END = "<|im_end|>"


def _forced_episode(backend, episode):
    video, question, gt, replies = episode
    forced = ForcedReplies(backend, replies)
    try:
        traj = AgentLoop(backend, AgentConfig()).run_sync(str(DATA / video), question)
    finally:
        forced.restore()
    assert traj.stop_reason == "answer_found" and traj.answer == gt, (traj, traj.error)
    return traj, forced


def test_collator_ids_equal_the_backends_model_inputs(tiny_backend, renderer):
    """Two tool turns, several frames: every prompt the backend fed the model is a prefix of the
    collated sample, which is the whole trace plus the template's closing newline."""
    traj, forced = _forced_episode(tiny_backend, EPISODES[0])
    assert len(forced.prompts) == 3 and sum(len(c.frames.plan.frame_indices) for c in traj.tool_calls) == 5
    sample = EvaCollator(renderer).encode(record_from_trajectory(traj))
    ids = sample.input_ids.tolist()
    for prompt in forced.prompts:
        assert ids[: len(prompt)] == prompt
    trace = traj.tokens
    assert trace is not None
    full = trace.prompt_ids + trace.response_ids
    assert ids == full + renderer.tokenizer("\n", add_special_tokens=False)["input_ids"]
    # the trace's generated positions are exactly the collator's trained positions
    trained = (sample.labels != -100).tolist()
    assert trained[len(trace.prompt_ids) : len(full)] == [bool(m) for m in trace.response_mask]
    assert not any(trained[: len(trace.prompt_ids)]) and not trained[-1]
    # the frames the model saw in generation are the frames the collator packs
    assert [tuple(f.shape) for f in trace.frames] == [tuple(f.shape) for f in sample.frames]
    for a, b in zip(trace.frames, sample.frames):
        assert torch.equal(a, b)


def test_labels_are_exactly_the_assistant_turns(eva_records, renderer):
    """Trained tokens, found independently: each '<|im_start|>assistant\\n' ... '<|im_end|>' span of the
    rendered text (content and end-of-turn token, nothing of system, user, tool or image pads)."""
    col = EvaCollator(renderer)
    for rec in eva_records:
        sample = col.encode(rec)
        text = renderer.text(rec.template_messages())
        spans, pos = [], 0
        while (start := text.find(IM_START_ASSISTANT, pos)) >= 0:
            end = text.index(IM_END, start) + len(IM_END)
            spans.append(text[start + len(IM_START_ASSISTANT) : end])
            pos = end
        assert spans == [m["content"] + IM_END for m in rec.messages if m["role"] == "assistant"]
        runs, cur = [], []
        for tok, lab in zip(sample.input_ids.tolist(), sample.labels.tolist()):
            if lab != -100:
                assert lab == tok
                cur.append(tok)
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        decoded = [renderer.tokenizer.decode(r, skip_special_tokens=False) for r in runs]
        assert decoded == spans
        assert not (sample.labels[sample.input_ids == renderer.image_token_id] != -100).any()


def test_trace_logprobs_equal_a_forward_pass(tiny_backend):
    """The sampling log-probabilities the backend records per generated token equal
    log_softmax(logits) of one forward pass over the whole sequence with the same frames."""
    traj, _ = _forced_episode(tiny_backend, EPISODES[1])
    trace = traj.tokens
    from eva_fast.vision import pack_qwen25vl

    ids = torch.tensor([trace.prompt_ids + trace.response_ids])
    packed = pack_qwen25vl(trace.frames)
    with torch.no_grad():
        logits = tiny_backend.model(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=packed.pixel_values,
            image_grid_thw=packed.image_grid_thw,
            mm_token_type_ids=(ids == tiny_backend.image_token_id).int(),
        ).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    n = len(trace.prompt_ids)
    want = [float(lp[n + i - 1, t]) for i, t in enumerate(trace.response_ids) if trace.response_mask[i]]
    got = [g for g, m in zip(trace.response_logprobs, trace.response_mask) if m]
    assert len(got) == trace.num_generated_tokens > 20
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=0)
    assert all(g == 0.0 for g, m in zip(trace.response_logprobs, trace.response_mask) if not m)


def test_renderer_refuses_a_template_that_is_not_prefix_stable(renderer):
    from eva_fast.agent import ChatRenderer

    bad = ChatRenderer(renderer.tokenizer, "{% for m in messages|reverse %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "u2"}]
    import pytest

    with pytest.raises(ValueError, match="prefix-stable"):
        bad.render(msgs)
