"""The RL set format (``eva_fast.train._rl_data``): validation with file:line errors, the agent's
question text, round trip and crash-safe appends."""

from __future__ import annotations

import json

import pytest

from eva_fast.train import RLDataError, RLSample, load_rl_set, write_rl_set


def _file(tmp_path, *lines):
    p = tmp_path / "rl.jsonl"
    p.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return p


def test_prompt_and_round_trip(tmp_path):
    mcq = RLSample("v.mp4", "What is it? ", "b", "mcq", ("a cat", "(B) a dog", "C. a cow"), "objects", "src#1")
    assert mcq.prompt() == "What is it?\nA. a cat\n(B) a dog\nC. a cow"
    open_q = RLSample("/abs/v.mp4", "Where?", "in the kitchen", "open", provenance={"teacher": "m"})
    assert open_q.video_path("/root") == "/abs/v.mp4" and mcq.video_path("/root") == "/root/v.mp4"
    p = tmp_path / "rl.jsonl"
    assert write_rl_set(p, [mcq]) == 1
    p.write_text(p.read_text().rstrip("\n"))  # a file whose last line has no newline
    write_rl_set(p, [open_q], append=True)
    back = load_rl_set(p)
    assert back == [mcq, open_q] and back[1].provenance == {"teacher": "m"}
    assert back[0].where.endswith("rl.jsonl:1") and back[1].to_dict() == open_q.to_dict()


@pytest.mark.parametrize("line, message", [
    ({"video": "v", "question": "q", "answer": "x"}, "'type' must be one of ('mcq', 'open'), got None"),
    ({"video": "v", "question": "q", "answer": "ab", "type": "mcq"}, "one option letter A-Z, got 'ab'"),
    ({"video": "v", "question": "q", "answer": "C", "type": "mcq", "options": ["x", "y"]}, "not one of the option letters"),
    ({"video": "v", "question": "q", "answer": "x", "type": "open", "options": ["a"]}, "an open question has no 'options'"),
    ({"video": "", "question": "q", "answer": "x", "type": "open"}, "'video' must be a non-empty string"),
    ({"video": "v", "question": "q", "answer": "x", "type": "open", "extra": 1}, "unknown fields ['extra']"),
    ({"video": "v", "question": "q", "answer": "x", "type": "open", "options": "a,b"}, "'options' must be a list"),
    ("[1, 2]", "a line must be a JSON object"),
    ("{oops", "not JSON"),
])
def test_bad_lines_are_named(tmp_path, line, message):
    p = _file(tmp_path, {"video": "v", "question": "q", "answer": "x", "type": "open"}, line)
    with pytest.raises(RLDataError, match=r"rl\.jsonl:2: .*" + __import__("re").escape(message)):
        load_rl_set(p)
    errors: list[str] = []
    assert len(load_rl_set(p, skip_bad=True, errors=errors)) == 1 and "rl.jsonl:2" in errors[0]


def test_infer_type_and_video_check(tmp_path):
    p = _file(tmp_path, {"video": "v.mp4", "question": "q", "answer": "A", "options": ["x", "y"]},
              {"video": "v.mp4", "question": "q", "answer": "a dog"})
    assert [s.type for s in load_rl_set(p, infer_type=True)] == ["mcq", "open"]
    with pytest.raises(RLDataError, match="does not exist"):
        load_rl_set(p, infer_type=True, video_root=tmp_path, check_videos=True)
    (tmp_path / "v.mp4").write_bytes(b"")
    assert len(load_rl_set(p, infer_type=True, video_root=tmp_path, check_videos=True)) == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rl_set(tmp_path / "missing.jsonl")
