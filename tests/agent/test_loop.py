"""The agent loop driven by scripted model turns on a real video: the tool turn's exact content,
the budget fallback, every stop reason, hostile output, one reader per trajectory, JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch

import eva_fast.agent._loop as loop_mod
from eva_fast.agent import AgentConfig, AgentLoop, AgentState, ImagePart, TextPart, Trajectory, get_backend
from eva_fast.agent._protocol import SYSTEM_PROMPT
from eva_fast.video import FrameOptions, VideoReader, select_frames
from tests.conftest import DATA

VIDEO = str(DATA / "nasa_13013.mp4")  # 480x270, 13.013 s, 29.97 fps
Q = "What is shown? A. Earth B. Mars"


def call(start, end, n, resize=None, key="arguments", **extra):
    args = {"start_time": start, "end_time": end, "nframes": n, **extra}
    if resize is not None:
        args["resize"] = resize
    return json.dumps({"tool": "frame_select", key: args})


def run(replies, **cfg):
    backend = get_backend("scripted", replies=replies)
    traj = AgentLoop(backend, AgentConfig(**cfg)).run_sync(VIDEO, Q)
    return traj, backend


def test_tool_turn_content_is_exact():
    reply = f"Plan: look twice. <tool_call>{call(0, 13, 3, 0.5)}\n{call(4, 6, 2, 0.25, key='parameters', x=1)}</tool_call>"
    traj, backend = run([reply, "<answer>A</answer>"])
    assert (traj.answer, traj.stop_reason, traj.num_rounds) == ("A", "answer_found", 2)
    first, second = backend.requests
    assert [(m.role, m.content) for m in first] == [
        ("system", SYSTEM_PROMPT),
        ("user", "Video Length: 12 seconds. Original video resolution: 270p. " + Q),
    ]
    tool = second[-1]
    assert tool.role == "tool" and second[-2].content == reply
    texts = [p.text if isinstance(p, TextPart) else "<img>" for p in tool.content]
    assert texts == [
        "<tool_response>",
        "Frame 0 at [00:00]: ", "<img>", "\nFrame 1 at [00:06]: ", "<img>", "\nFrame 2 at [00:13]: ", "<img>",
        "\nFrame 3 at [00:04]: ", "<img>", "\nFrame 4 at [00:06]: ", "<img>",
        "\nIf more information is needed, call the frame selection tool again.\n\nQuestion: " + Q + "</tool_response>",
    ]
    # the images are the frame tool's own frames, in call order
    images = [p for p in tool.content if isinstance(p, ImagePart)]
    ref_a = select_frames(VIDEO, 0, 13, 3, 0.5)
    ref_b = select_frames(VIDEO, 4, 6, 2, 0.25)
    got = [p.batch.frames[p.index] for p in images]
    for g, r in zip(got, [*ref_a.frames, *ref_b.frames]):
        assert torch.equal(g, r)
    c0, c1 = traj.turns[0].tool_calls
    assert c0.frames.plan.size == (140, 252) and c1.frames.plan.size == (56, 112)
    assert c0.frames.plan.frame_indices == ref_a.plan.frame_indices and c1.frames.first_frame == 3
    assert traj.visual_tokens == 3 * 45 + 2 * 8 == traj.estimated_visual_tokens
    assert traj.turns[1].prompt_tokens + traj.turns[1].completion_tokens == traj.total_tokens


def test_budget_fallback_applies_and_labels_use_the_call_arguments():
    # 480x270 at resize 1: round(270/28)=10 x round(480/28)=17 = 170 tokens/frame; 64 frames = 10880
    traj, _ = run([f"<tool_call>{call(0, 12, 64)}</tool_call>", "Answer: B"],
                  frame_options=FrameOptions(max_visual_tokens=1000))
    fr = traj.turns[0].tool_calls[0].frames
    k = (1000 / 10880) ** (1 / 3)  # maxp=720 > 270 leaves resize at 1, then the cube-root step
    assert fr.plan.budget_steps == ("maxp", "cube_root")
    assert fr.nframes == int(64 * k) == 28 and fr.plan.resize == pytest.approx(k)
    assert fr.plan.estimated_visual_tokens == fr.to_dict()["estimated_visual_tokens_requested"] == 10880
    assert fr.label_s == [int(i * 12 / 27) for i in range(28)]
    assert traj.answer == "B"


def _stop(replies, **cfg):
    return run(replies, **cfg)[0]


@pytest.mark.parametrize("replies, reason", [
    (["<answer>C</answer>"], "answer_found"),
    (["blah. Answer: D"], "answer_found"),
    (["I am not sure."], "no_answer_no_tool_call"),
    (["<tool_call>" + call(0, 5, 2)], "no_answer_no_tool_call"),  # unterminated
    (['<tool_call>{"tool": "zoom", "arguments": {"x": 1}}</tool_call>'], "no_valid_tool_call"),
    (['<tool_call>{"tool": "frame_select", "arguments": {"start_time": 1}}\n'
      '{"tool": "frame_select", "arguments": {"start_time": 1, "end_time": 2}}\n'
      '{"tool": "frame_select", "arguments": {oops}}</tool_call>'],
     "no_start_or_end_time; no_nframes; arguments_not_json"),
    ([f"<tool_call>{call(0, 5, 10**9)}</tool_call>"], "call_frame_select_failed"),
    (['<tool_call>{"tool": "frame_select", "arguments": {"start_time": NaN, "end_time": 5, "nframes": 2}}</tool_call>'],
     "call_frame_select_failed"),
    # string times: the reference's tool parses them, then its label arithmetic raises TypeError
    ([f"<tool_call>{call('0', '5', 2)}</tool_call>"], "exception"),
    ([f"<tool_call>{call(0, 5, 2, resize=-1)}</tool_call>"], "call_frame_select_failed"),
    ([f"<tool_call>{call(0, 5, 2, 0.2)}</tool_call>"] * 2, "max_turns_exceeded"),
])
def test_every_stop_reason(replies, reason):
    traj = _stop(replies, max_turns=2)
    assert traj.stop_reason == reason
    assert traj.num_rounds == len(replies)


def test_call_errors_keep_details_and_partial_failure_continues():
    reply = f"<tool_call>{call(0, 5, 10**9)}\n{call(1, 3, 2, 0.25)}</tool_call>"
    traj, backend = run([reply, "<answer>A</answer>"])
    bad, good = traj.turns[0].tool_calls
    # 10**9 frames: the budget keeps 41 million 56x56 frames, refused by the reader's byte limit
    # (the reference's tool process dies of memory: the same call error)
    assert bad.error == "call_frame_select_failed" and "max_output_bytes" in bad.error_detail
    assert good.error is None and good.frames.nframes == 2
    tool = backend.requests[1][-1]
    assert sum(isinstance(p, ImagePart) for p in tool.content) == 2
    assert tool.content[1].text == "Frame 0 at [00:01]: "  # frames numbered over successful calls only
    assert traj.stop_reason == "answer_found"


def test_negative_times_are_clamped_and_labelled_like_the_reference():
    traj, backend = run([f"<tool_call>{call(-5, 3, 3, 0.25)}</tool_call>", "<answer>A</answer>"])
    fr = traj.turns[0].tool_calls[0].frames
    assert (fr.plan.start_s, fr.plan.end_s) == (0.0, 3.0) and fr.label_s == [-5, -1, 3]
    assert backend.requests[1][-1].content[1].text == "Frame 0 at [-1:55]: "


def test_hostile_10mb_reply_stops_cleanly():
    big = "<tool_call>" + '{"tool": "frame_select", "arguments": {' * 200_000 + "x" * 1_000_000
    traj = _stop([big])
    assert traj.stop_reason == "no_answer_no_tool_call" and traj.num_rounds == 1
    assert len(json.dumps(traj.to_dict())) > 9_000_000  # the reply is kept whole; call raw text is capped


def test_exceptions_become_stop_reasons():
    """As the reference's records: stop_reason "exception" and the exception in "error"."""
    traj = _stop([RuntimeError("server exploded")])
    assert traj.stop_reason == "exception" and traj.error == "RuntimeError: server exploded"
    traj = _stop([f"<tool_call>{call(0, 5, 2, 0.2)}</tool_call>"])  # script runs out on turn 2
    assert traj.stop_reason == "exception" and traj.error.startswith("RuntimeError: scripted backend ran out")
    missing = AgentLoop(get_backend("scripted", replies=["x"])).run_sync(DATA / "no_such_video.mp4", Q)
    assert missing.stop_reason == "exception" and missing.error.startswith("FileNotFoundError")
    assert missing.num_rounds == 0


def test_one_reader_per_trajectory(monkeypatch):
    opened = []

    class CountingReader(VideoReader):
        def __init__(self, *a, **k):
            opened.append(a)
            super().__init__(*a, **k)

    monkeypatch.setattr(loop_mod, "VideoReader", CountingReader)
    traj = _stop([f"<tool_call>{call(0, 5, 2, 0.2)}</tool_call>"] * 3 + ["<answer>B</answer>"], max_turns=6)
    assert traj.stop_reason == "answer_found" and len(traj.tool_calls) == 3 and len(opened) == 1


def test_events_json_round_trip_and_config_validation():
    events = []
    backend = get_backend("scripted", replies=[f"<tool_call>{call(0, 5, 2, 0.2)}</tool_call>", "<answer>B</answer>"])
    traj = AgentLoop(backend).run_sync(VIDEO, Q, system="custom system", on_event=lambda e, t, turn: events.append(e))
    assert events == ["generated", "tools", "generated", "stopped"]
    assert backend.requests[0][0].content == "custom system" and traj.system == "custom system"
    d = json.loads(json.dumps(traj.to_dict()))
    back = Trajectory.from_dict(d)
    assert back.to_dict() == traj.to_dict()
    assert d["timings_ms"]["decode"] > 0 and (traj.duration_s, traj.width, traj.height) == (pytest.approx(13.013), 480, 270)
    for bad in (dict(max_turns=0), dict(temperature=-1), dict(tool_call_blocks="x"),
                dict(timestamp_fmt="hh"), dict(decode_device="tpu"), dict(frame_options={"maxp": 360})):
        with pytest.raises(ValueError, match="AgentConfig"):
            AgentConfig(**bad)
    for bad in (dict(max_visual_tokens=0), dict(maxp=True)):  # frame settings: checked by FrameOptions
        with pytest.raises(ValueError, match="FrameOptions"):
            FrameOptions(**bad)
    with pytest.raises(TypeError):
        AgentLoop(backend).run_sync(VIDEO, 42)
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("nope")
    assert [s.value for s in AgentState] == ["pending", "generating", "parsing", "processing_tools", "terminated"]


def test_all_blocks_option_runs_every_block():
    reply = f"<tool_call>{call(0, 2, 1, 0.2)}</tool_call> then <tool_call>{call(5, 7, 1, 0.2)}</tool_call>"
    first = _stop([reply, "<answer>A</answer>"])
    every = _stop([reply, "<answer>A</answer>"], tool_call_blocks="all")
    assert len(first.tool_calls) == 1 and len(every.tool_calls) == 2
