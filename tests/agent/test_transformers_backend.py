"""The transformers backend with the tiny random-weight Qwen2.5-VL: prompt ids and pixels equal
transformers' own Qwen2.5-VL processor; the whole loop runs end to end on a real video; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from eva_fast.agent import AgentConfig, AgentLoop, Message, TextPart, Trajectory, get_backend
from eva_fast.agent._transformers import load_chat_template
from eva_fast.agent._types import ImagePart
from eva_fast.video import select_frames
from tests.conftest import DATA

VIDEO = str(DATA / "nasa_13013.mp4")
Q = "What is shown? A. Earth B. Mars"
CALL = '<tool_call>{"tool": "frame_select", "arguments": {"start_time": 1, "end_time": 12, "nframes": 3, "resize": 0.5}}</tool_call>'


@pytest.fixture(scope="module")
def backend(tiny_qwen_dir):
    return get_backend("transformers", model_path=tiny_qwen_dir, device="cpu")


def test_inputs_equal_transformers_processor(backend, tiny_qwen_dir, monkeypatch):
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    # transformers' processor insists on a video processor, which needs torchvision (absent on the
    # CPU test machine); images never touch it, so skip only that class check
    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    a = select_frames(VIDEO, 0, 13, 2, 0.5)
    b = select_frames(VIDEO, 3, 5, 1, 0.25)
    tool = lambda batch, first: Message("tool", (TextPart("<tool_response>"),) + tuple(
        x for i in range(batch.plan.nframes) for x in (TextPart(f"Frame {first + i}: "), ImagePart(batch, i))) + (TextPart("end"),))
    messages = [Message("system", "sys"), Message("user", "Q"), Message("assistant", "call"), tool(a, 0),
                Message("assistant", "again"), tool(b, 0)]
    session = backend.session()
    ours, _ = session.build_inputs(messages)

    tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    proc = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12_845_056),
                               tokenizer=tok, chat_template=load_chat_template(tiny_qwen_dir))
    convo = [{"role": m.role, "content": m.content if isinstance(m.content, str) else [
        {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"} for p in m.content]}
        for m in messages]
    text = proc.apply_chat_template(convo, add_generation_prompt=True, tokenize=False)
    images = [f.numpy() for f in (*a.frames, *b.frames)]
    ref = proc(text=[text], images=images, return_tensors="pt")
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["pixel_values"], ref["pixel_values"])
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert torch.equal(ours["mm_token_type_ids"].long(), ref["mm_token_type_ids"].long())
    assert int((ours["input_ids"] == backend.image_token_id).sum()) == 2 * 45 + 8


def test_end_to_end_with_a_forced_first_turn(backend):
    """The random model rarely calls the tool, so its first turn is scripted: turn 2 runs the real
    model on the frames (decoder -> packer -> generate)."""
    calls = []
    hook = backend.model.model.visual.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    try:
        forced = get_backend("scripted", replies=[CALL], then=backend)
        traj = AgentLoop(forced, AgentConfig(max_new_tokens=6, max_turns=3)).run_sync(VIDEO, Q)
    finally:
        hook.remove()
    assert traj.num_rounds >= 2 and not traj.stop_reason.startswith("exception"), traj.error
    t2 = traj.turns[1]
    assert t2.prompt_tokens > traj.visual_tokens == 3 * 45
    assert calls and calls[0][0] == 3 * 45 * 4  # the vision tower saw the 3 frames' patches
    assert t2.completion_token_ids and len(t2.completion_token_ids) == t2.completion_tokens <= 6
    assert traj.turns[0].timings_ms["pack"] > 0 and t2.timings_ms["generate"] > 0
    # greedy: the first generated token is the argmax of the model's logits on the same inputs
    msgs = [Message("system", traj.system), Message("user", "Video Length: 12 seconds. Original video resolution: 270p. " + Q),
            Message("assistant", CALL)]
    session = backend.session()
    # rebuild the tool turn exactly as the loop did
    fr = traj.turns[0].tool_calls[0].frames
    batch = select_frames(VIDEO, 1, 12, 3, 0.5)
    parts = [TextPart("<tool_response>")]
    for i, s in enumerate(fr.label_s):
        parts += [TextPart(f"{'' if i == 0 else chr(10)}Frame {i} at [00:{s:02d}]: "), ImagePart(batch, i)]
    parts.append(TextPart("\nIf more information is needed, call the frame selection tool again.\n\nQuestion: " + Q + "</tool_response>"))
    msgs.append(Message("tool", tuple(parts)))
    inputs, _ = session.build_inputs(msgs)
    assert inputs["input_ids"].shape[1] == t2.prompt_tokens
    with torch.no_grad():
        logits = backend.model(**inputs).logits[0, -1]
    assert int(logits.argmax()) == t2.completion_token_ids[0]


def test_real_model_first_turn(backend):
    traj = AgentLoop(backend, AgentConfig(max_new_tokens=4, max_turns=2)).run_sync(VIDEO, Q)
    assert traj.num_rounds >= 1 and not traj.stop_reason.startswith("exception"), traj.error
    last = traj.turns[-1]  # the reference's total_tokens: the last round's prompt + completion
    assert traj.total_tokens == last.prompt_tokens + last.completion_tokens > traj.turns[0].completion_tokens


def test_cli_ask_json_and_viz(tiny_qwen_dir, tmp_path):
    out_json, out_png = tmp_path / "t.json", tmp_path / "t.png"
    res = subprocess.run(
        [sys.executable, "-m", "eva_fast.cli", "ask", VIDEO, Q, "--model", str(tiny_qwen_dir), "--device", "cpu",
         "--max-new-tokens", "4", "--max-turns", "3", "--first-turn", "Let me look. " + CALL,
         "--json", str(out_json), "--viz", str(out_png)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "round 1" in res.stdout and "frame_select" in res.stdout and "answer:" in res.stdout
    traj = Trajectory.from_dict(json.loads(out_json.read_text()))
    assert traj.num_rounds >= 2 and traj.tool_calls[0].frames.nframes == 3
    from PIL import Image

    img = np.asarray(Image.open(out_png))
    assert img.shape[0] > 100 and img.shape[1] > 500 and img.std() > 5
