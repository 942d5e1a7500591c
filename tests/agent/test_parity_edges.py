"""Untrusted tool arguments get the published evaluation's outcome (issue #12 item 4).

Each expectation below is derived by hand from the reference (wangruohui/EfficientVideoAgent @
758ad8d): ``eval-eva.py`` computes ``estimated_tokens(nframes, resize)`` =
``int(nframes) * max(1, round(H*r/28)) * max(1, round(W*r/28))`` on the raw JSON values, applies the
maxp and cube-root fallbacks (``nframes = max(1, int(nframes * r))``), adds the final estimate to
``estimated_visual_tokens``, then runs ``select_frame_fallback.py`` with ``--k str(v)`` arguments
(argparse: ``--nframes`` ``type=int``, ``--resize`` ``type=float``, times as seconds or
``[[HH:]MM:]SS``); a failing tool process is ``call_frame_select_failed``; after a successful call it
labels the frames with ``int(start + i * (end - start) / max(1, n - 1))`` on the raw values, and any
exception in the episode gives a record with ``stop_reason: "exception"`` and ``error:
"<Type>: <message>"``. The video is nasa_13013.mp4: 480x270, so at resize 1.0 a frame is
``round(270/28) * round(480/28) = 10 * 17 = 170`` estimated tokens; the budget is 12 000, maxp 720.
"""

from __future__ import annotations

import json

import pytest

from eva_fast.agent import AgentConfig, AgentLoop, get_backend
from eva_fast.agent._protocol import reference_tool_call
from eva_fast.video import FrameOptions
from tests.conftest import DATA

VIDEO = str(DATA / "nasa_13013.mp4")
Q = "What is shown? A. Earth B. Mars"


def _run(args: dict | str):
    text = args if isinstance(args, str) else json.dumps(args)
    reply = '<tool_call>{"tool": "frame_select", "arguments": ' + text + "}</tool_call>"
    backend = get_backend("scripted", replies=[reply, "<answer>A</answer>"])
    return AgentLoop(backend, AgentConfig(max_turns=3)).run_sync(VIDEO, Q)


def test_integral_float_nframes_under_budget_is_refused_like_the_reference_tool():
    """``"nframes": 4.0``: the estimate uses int(4.0) = 4 (680 tokens, under budget), so 4.0 reaches
    the tool as "--nframes 4.0", which argparse's int() rejects. eva_fast used to serve it."""
    traj = _run({"start_time": 0, "end_time": 10, "nframes": 4.0})
    call = traj.turns[0].tool_calls[0]
    assert traj.stop_reason == "call_frame_select_failed" and traj.num_rounds == 1
    assert call.error == "call_frame_select_failed" and "'4.0' is not an integer" in call.error_detail
    assert call.estimated_visual_tokens == 680 == traj.estimated_visual_tokens  # counted as the reference does


def test_float_nframes_over_budget_becomes_an_int_and_is_served():
    """100.0 frames at 1.0 = 17 000 > 12 000: maxp keeps r = 1 (720/270 > 1), the cube root gives
    k = (12000/17000)^(1/3), nframes = int(100.0 * k) = 89, an int: the tool accepts it."""
    traj = _run({"start_time": 0, "end_time": 10, "nframes": 100.0, "resize": 1.0})
    fr = traj.turns[0].tool_calls[0].frames
    k = (12000 / 17000) ** (1 / 3)
    assert traj.stop_reason == "answer_found" and fr.nframes == int(100.0 * k) == 89
    assert fr.plan.resize == pytest.approx(k) and fr.plan.budget_steps == ("maxp", "cube_root")


def test_1500_frames_at_resize_0_1_are_served_not_capped_at_1024():
    """round(27/28) * round(48/28) = 2 tokens a frame: 3 000 estimated, under budget; the reference
    serves 1500 frames. The agent path has no frame cap (the budget bounds tokens, the reader's
    max_output_bytes the decoded bytes: 1500 x 56 x 84 x 3 = 21 MB here)."""
    traj = _run({"start_time": 0, "end_time": 13, "nframes": 1500, "resize": 0.1})
    call = traj.turns[0].tool_calls[0]
    assert traj.stop_reason == "answer_found", (traj.stop_reason, call.error_detail)
    assert call.frames.nframes == 1500 and call.estimated_visual_tokens == 3000
    assert call.frames.plan.size == (56, 84)  # 28x56 as the reference writes it, 56x84 after smart_resize


def test_resize_above_8_is_served_when_the_budget_brings_it_down():
    """1 frame at 9.0: round(270*9/28) * round(480*9/28) = 87 * 154 = 13 398 > 12 000, maxp caps r at
    min(1, 720/270) = 1: 170 tokens, served (eva_fast's API caps resize at 8)."""
    traj = _run({"start_time": 0, "end_time": 10, "nframes": 1, "resize": 9})
    fr = traj.turns[0].tool_calls[0].frames
    assert traj.stop_reason == "answer_found" and fr.plan.resize == 1.0 and fr.plan.size == (280, 476)


@pytest.mark.parametrize("start", ["2", "00:02"])
def test_string_start_time_ends_the_episode_with_an_exception(start):
    """The tool parses "2" or "00:02" and serves the call; then the reference's label arithmetic
    computes 6 - "2" and raises: its record has stop_reason "exception" and the error. eva_fast used
    to report call_frame_select_failed."""
    traj = _run({"start_time": start, "end_time": 6, "nframes": 2})
    assert traj.stop_reason == "exception" and traj.num_rounds == 1
    assert traj.error == "TypeError: unsupported operand type(s) for -: 'int' and 'str'"


@pytest.mark.parametrize(
    "args, detail",
    [
        ({"start_time": "abc", "end_time": 6, "nframes": 2}, "is not seconds"),  # the tool's float() fails
        ({"start_time": True, "end_time": 6, "nframes": 2}, "'True' is not seconds"),
        ({"start_time": 0, "end_time": None, "nframes": 2}, "'None' is not seconds"),
        ({"start_time": 0, "end_time": 6, "nframes": True}, "'True' is not an integer"),
        ({"start_time": 0, "end_time": 6, "nframes": -3}, "positive"),
        ({"start_time": 0, "end_time": 6, "nframes": 2, "resize": 0}, "resize must be > 0"),
        # argparse (Python <= 3.12) takes "-1e-05" for an option: usage error (3.13 would accept it)
        ({"start_time": -1e-05, "end_time": 6, "nframes": 2}, "reads as an option"),
    ],
)
def test_values_the_reference_tool_process_rejects_are_call_errors(args, detail):
    traj = _run(args)
    call = traj.turns[0].tool_calls[0]
    assert traj.stop_reason == "call_frame_select_failed" and call.error == "call_frame_select_failed"
    assert detail in call.error_detail, call.error_detail


def test_string_nframes_under_budget_is_served():
    """int("3") in the estimate and in the tool: 3 frames (eva_fast used to refuse a string)."""
    traj = _run({"start_time": 0, "end_time": 6, "nframes": "3", "resize": 0.5})
    assert traj.stop_reason == "answer_found" and traj.turns[0].tool_calls[0].frames.nframes == 3


@pytest.mark.parametrize(
    "args, error",
    [
        # over budget: the cube-root step computes "300" * k
        ({"start_time": 0, "end_time": 6, "nframes": "300", "resize": 1.0}, "TypeError: can't multiply sequence"),
        # the estimate computes 270 * "0.5" (a str) / 28
        ({"start_time": 0, "end_time": 6, "nframes": 2, "resize": "0.5"}, "TypeError: unsupported operand type(s) for /"),
        ({"start_time": 0, "end_time": 6, "nframes": 2, "resize": float("inf")}, "OverflowError: cannot convert float infinity"),
        # an infinite time is clamped by the tool and served; the label int(nan) raises
        ({"start_time": 0, "end_time": float("inf"), "nframes": 2}, "ValueError: cannot convert float NaN to integer"),
    ],
)
def test_arguments_the_reference_cannot_compute_with_end_the_episode(args, error):
    traj = _run(args)
    assert traj.stop_reason == "exception" and traj.error.startswith(error), traj.error


def test_reference_tool_call_matches_the_reference_arithmetic():
    W, H = 480, 270
    r = reference_tool_call({"start_time": "01:02", "end_time": 90, "nframes": "8", "resize": None}, FrameOptions(), height=H,
                            width=W)
    assert (r.start_time, r.end_time, r.nframes, r.resize, r.refusal) == (62.0, 90.0, 8, 1.0, None)
    assert r.estimated_visual_tokens == 8 * 170 and r.request_nframes == 8
    big = reference_tool_call({"start_time": 0, "end_time": 9, "nframes": 64, "resize": 1.0}, FrameOptions(), height=1080,
                              width=1920)
    # 64 * 39 * 69 = 172 224 > 12 000; maxp: r = 720/1080; 64 * 26 * 46 = 76 544; cube root
    k = (12000 / (64 * 26 * 46)) ** (1 / 3)
    assert big.nframes == int(64 * k) and big.resize == pytest.approx(720 / 1080 * k)
    assert big.budget.steps == ("maxp", "cube_root") and big.estimated_visual_tokens == big.budget.final_estimated_tokens
