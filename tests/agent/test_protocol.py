"""EVA's protocol pieces against the published evaluation's own regular expressions (the
reference), on hand-written and generated replies; and linear time on hostile 10 MB replies."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_fast.agent._protocol import (
    ERR_NO_NFRAMES,
    ERR_NO_TIMES,
    ERR_NOT_JSON,
    call_argument_strings,
    extract_answer,
    first_user_text,
    frame_label,
    label_seconds,
    parse_tool_calls,
    tool_call_blocks,
    tool_turn_tail,
)

# --- the reference's expressions (eval-eva.py), used as the independent oracle ---------------
REF_ANSWER = r"<answer>\s*(.*?)\s*</answer>"
REF_ANSWER_V2 = r"[Aa]nswer[\.:\s]\s*(\w)(\W.{,100}|)$"
REF_BLOCK = r"<tool_call>(.*?)</tool_call>"
REF_ARGS = r'{\s*"tool":\s*"frame_select",\s*"(?:arguments|parameters)":\s*({.*?})\s*}'


def ref_answer(text: str) -> str:
    m = re.search(REF_ANSWER, text, re.DOTALL)
    ans = m.group(1).strip() if m else ""
    if ans == "":
        m = re.search(REF_ANSWER_V2, text, re.DOTALL)
        ans = m.group(1).strip() if m else ""
    return ans


def ref_args(text: str) -> list[str] | None:
    m = re.search(REF_BLOCK, text, re.DOTALL)
    if not m:
        return None
    return re.findall(REF_ARGS, m.group(1).strip(), re.DOTALL)


FRAGMENTS = [
    "<answer>", "</answer>", "<tool_call>", "</tool_call>", "Answer: ", "answer.", "B", " ", "\n", "}", "{",
    '{"tool": "frame_select", "arguments": ', '{"tool":"frame_select","parameters":', '{ "tool": "other", "arguments": ',
    '{"start_time": 1, "end_time": 5, "nframes": 4}', '"x": {"y": 1}', " } ", "}}", "(C) text", "A", "é", "\t",
]
replies = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)


@settings(max_examples=400, deadline=None)
@given(replies)
def test_answer_matches_reference_regexes(text):
    assert extract_answer(text) == ref_answer(text)


@settings(max_examples=400, deadline=None)
@given(replies)
def test_tool_call_arguments_match_reference_regexes(text):
    ref = ref_args(text)
    blocks = tool_call_blocks(text, "first")
    if ref is None:
        assert blocks == []
    else:
        assert [a for b in blocks for a in call_argument_strings(b)] == ref


@pytest.mark.parametrize("text, answer", [
    ("I think <answer> B </answer>", "B"),
    ("<answer>A. the red car</answer> and <answer>C</answer>", "A. the red car"),
    ("<answer>   </answer> so the Answer: D", "D"),
    ("The answer is C.", ""),  # 'is' sits between 'answer' and the letter
    ("Answer: C. Because of the frames", "C"),
    ("answer:\n\nB", "B"),
    ("<answer>B", ""),  # unterminated tag, no trailing letter
    ("Final Answer: (C)", ""),  # the letter must follow the separator directly (\s* only)
])
def test_answer_cases(text, answer):
    assert extract_answer(text) == answer == ref_answer(text)


def test_parse_aliases_extra_keys_and_errors():
    reply = (
        "plan <tool_call>"
        '{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 10, "nframes": 8, "why": "look"}}\n'
        '{"tool": "frame_select", "parameters": {"start_time": 3, "end_time": 4, "nframes": 2, "resize": null}}\n'
        '{"tool": "frame_select", "arguments": {"start_time": 3, "nframes": 2}}\n'
        '{"tool": "frame_select", "arguments": {"start_time": 3, "end_time": 9}}\n'
        '{"tool": "frame_select", "arguments": {start_time: 3}}'
        "</tool_call>"
    )
    has_block, calls = parse_tool_calls(reply)
    assert has_block
    assert [c.error for c in calls] == [None, None, ERR_NO_TIMES, ERR_NO_NFRAMES, ERR_NOT_JSON]
    assert calls[0].arguments["why"] == "look"
    assert calls[0].tool_arguments() == {"start_time": 0, "end_time": 10, "nframes": 8, "resize": 1.0}
    assert calls[1].tool_arguments() == {"start_time": 3, "end_time": 4, "nframes": 2, "resize": 1.0}
    with pytest.raises(ValueError, match="no_start_or_end_time"):
        calls[2].tool_arguments()


def test_several_blocks_first_is_parity_all_is_optional():
    reply = ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 1, "nframes": 1}}</tool_call>'
             '<tool_call>{"tool": "frame_select", "arguments": {"start_time": 5, "end_time": 6, "nframes": 2}}</tool_call>')
    _, first = parse_tool_calls(reply, "first")
    _, every = parse_tool_calls(reply, "all")
    assert [c.arguments["start_time"] for c in first] == [0]
    assert [c.arguments["start_time"] for c in every] == [0, 5]
    assert len(ref_args(reply)) == 1  # the reference executes only the first block
    with pytest.raises(ValueError, match="which"):
        tool_call_blocks(reply, "some")


def test_first_user_turn_and_tail():
    assert first_user_text("  What? A. x  ", duration_s=13.013, height=270, width=480) == (
        "Video Length: 12 seconds. Original video resolution: 270p. What? A. x")
    assert first_user_text("Q", duration_s=0.9, height=720, width=1280).startswith("Video Length: 1 seconds. Original video resolution: 720p.")
    assert tool_turn_tail(" Q? ") == (
        "\nIf more information is needed, call the frame selection tool again.\n\nQuestion: Q?</tool_response>")
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError, match="duration_s"):
            first_user_text("Q", duration_s=bad, height=10, width=10)


def test_labels_follow_the_reference_formula():
    # int(start + i * (end - start) / max(1, n - 1)), from the call's own arguments
    assert label_seconds(0, 13, 4) == [0, 4, 8, 13]
    assert label_seconds(59.5, 125, 3) == [59, 92, 125]
    assert label_seconds(7, 100, 1) == [7]
    assert label_seconds(-5, 3, 3) == [-5, -1, 3]  # int() truncates toward zero
    # the reference's own expression on the raw values, exceptions included (issue #12 item 4): its
    # episode then ends with stop reason "exception"
    with pytest.raises(ValueError, match="NaN"):  # end - start overflows: step = -inf, 0 * -inf = nan
        label_seconds(1e308, -1e308, 2)
    with pytest.raises(TypeError, match="unsupported operand"):
        label_seconds("10", 20, 2)
    with pytest.raises(OverflowError):
        label_seconds(10**400, 10**400 + 10, 2)  # exact int difference, then int + float overflows
    assert label_seconds(10**30, 10**30 + 5, 2) == [int(1e30), int(1e30 + 5)]  # ints subtract exactly
    assert frame_label(0, 92) == "Frame 0 at [01:32]: "
    assert frame_label(3, 3725) == "\nFrame 3 at [62:05]: "
    assert frame_label(1, -5) == "\nFrame 1 at [-1:55]: "  # floor semantics, as the reference's // and %
    assert frame_label(2, 7, "seconds") == "\nFrame 2 at 7 seconds:"
    assert frame_label(0, 7, "none") is None


@pytest.mark.parametrize("reply", [
    "<tool_call>" * 1_000_000,
    '<tool_call>{"tool": "frame_select", "arguments": {' * 200_000 + "</tool_call>",
    "<answer>" + " " * 10_000_000,
    "answer:" + " " * 10_000_000 + "x",
    "x" * 10_000_000,
], ids=["open-tags", "open-calls", "answer-spaces", "letter-spaces", "plain"])
def test_hostile_10mb_replies_parse_in_linear_time(reply):
    t0 = time.perf_counter()
    extract_answer(reply)
    parse_tool_calls(reply, "first")
    parse_tool_calls(reply, "all")
    assert time.perf_counter() - t0 < 5.0


def test_deeply_nested_json_is_a_call_error():
    reply = '<tool_call>{"tool": "frame_select", "arguments": {"start_time": ' + "[" * 100_000 + "}}</tool_call>"
    _, calls = parse_tool_calls(reply)
    assert [c.error for c in calls] == [ERR_NOT_JSON]
    json.dumps([c.raw[:10] for c in calls])
