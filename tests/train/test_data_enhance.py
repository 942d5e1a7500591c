"""``eva-fast data enhance`` against a real OpenAI-compatible HTTP server process (scripted teacher):
failure collection from eval results and rollout dumps, the exact generation prompt (examples +
frames), validation (empty, answer in question, duplicate, self-check), a malformed reply, an
unreadable video, the append to the RL set with provenance, resume without duplicates."""

from __future__ import annotations

import json
import string

import pytest

from eva_fast.train import load_rl_set
from eva_fast.train.data import (
    PROMPT_DIR,
    DedupeIndex,
    FailureCase,
    collect_failures,
    normalize_text,
    pick_examples,
    static_problems,
)
from tests.conftest import DATA
from tests.train.conftest import Q, run_scripted, tool_call

GEN_COCKATOO = json.dumps([
    {"question": "What bird is shown?", "answer": "a cockatoo", "category": "objects"},
    {"question": "What color is the bird?", "answer": "white", "category": "objects"},
    {"question": "Is the bird a cockatoo?", "answer": "Cockatoo"},
    {"question": "What animal is this?", "answer": "A rabbit!", "category": "objects"},
    {"question": " ", "answer": "x"},
])


def test_validation_rules():
    assert normalize_text("  What's  THE bird?! ") == "what s the bird"
    assert static_problems("What bird?", "a cockatoo", 8) is None
    assert static_problems("", "x", 8) == "empty_question"
    assert static_problems("What?", "  ", 8) == "empty_answer"
    assert static_problems("What?", "one two three", 2) == "answer_too_long"
    assert static_problems("Is the bird a cockatoo?", "Cockatoo.", 8) == "answer_in_question"
    assert static_problems("Is it a cat?", "at", 8) is None  # whole words only
    idx = DedupeIndex()
    idx.add("a/v.mp4", "What is it?", "a cat")
    assert idx.is_duplicate("a/v.mp4", "what is it", "a dog")        # same question, same video
    assert idx.is_duplicate("b/w.mp4", "What is it?", "A cat.")      # same question and answer anywhere
    assert not idx.is_duplicate("b/w.mp4", "What is it?", "a dog")


def test_examples_rotate_over_categories():
    fs = [FailureCase(f"q{i}", "A", "B", c, "v", f"s{i}") for i, c in enumerate("aabbc")]
    assert [f.category for f in pick_examples(fs, 3, 0)] == ["a", "b", "c"]
    assert [f.category for f in pick_examples(fs, 3, 1)] == ["b", "c", "a"]
    assert [f.category for f in pick_examples(fs, 4, 2)] == ["c", "a", "b", "a"]
    assert pick_examples(fs, 3, 5, seed=1) == pick_examples(fs, 3, 5, seed=1)


@pytest.fixture
def failures(tmp_path):
    """An eval result file (one wrong, one right) and a GRPO-style rollout dump (one wrong with gt
    and category, one right by its reward field)."""
    from eva_fast.eval import Sample
    from eva_fast.eval import record_from_trajectory as eval_record

    wrong, _ = run_scripted([tool_call(0, 12, 2, 0.25), "<answer>B</answer>"])
    right, _ = run_scripted([tool_call(0, 12, 2, 0.25), "<answer>A</answer>"])
    ev = tmp_path / "eval.jsonl"
    ev.write_text("".join(json.dumps(eval_record(Sample(i, "nasa_13013.mp4", Q, None, "A", ("objects",)), "b", t, 0.1))
                          + "\n" for i, t in enumerate((wrong, right))))
    roll = tmp_path / "rollouts.jsonl"
    count_q, _ = run_scripted([tool_call(0, 12, 2, 0.25), "<answer>three</answer>"], question="How many stars?")
    roll.write_text(json.dumps({**count_q.to_dict(), "gt": "two", "type": "open", "category": "counting"}) + "\n"
                    + json.dumps({**right.to_dict(), "rewards": {"accuracy": 1.0}}) + "\n")
    return ev, roll


def test_enhance_end_to_end(failures, scripted_server, tmp_path, capsys):
    from eva_fast.cli import main

    ev, roll = failures
    srv = scripted_server({"replies": ["no script"], "routes": [
        {"match": "its length is 14 seconds", "replies": [f"Here you go:\n```json\n{GEN_COCKATOO}\n```"]},
        {"match": "its length is 5 seconds", "replies": ["Sorry, I cannot help with that."]},
        {"match": "Question: What bird is shown?", "replies": ["a cockatoo"]},
        {"match": "Question: What color is the bird?", "replies": ["black"]},
    ]})
    junk = tmp_path / "broken.mp4"
    junk.write_bytes(b"not a video")
    videos = tmp_path / "videos.txt"
    videos.write_text("\n".join([str(DATA / "nasa_13013.mp4"), str(DATA / "bigbuckbunny.mp4"),
                                 str(DATA / "cockatoo_vp9.webm"), str(DATA / "av1_video.mkv"), str(junk)]) + "\n")
    rl = tmp_path / "rl.jsonl"
    rl.write_text(json.dumps({"video": "bigbuckbunny.mp4", "question": "What animal is this?", "answer": "a rabbit",
                              "type": "open", "category": "objects"}) + "\n")
    out = tmp_path / "enhance"
    args = ["data", "enhance", "--failures", str(ev), str(roll), "--videos", str(videos), "--rl-set", str(rl),
            "--video-root", str(DATA), "--out", str(out), "--base-url", srv.base_url, "--examples", "2",
            "--questions-per-video", "5", "--frames", "4", "--resize", "0.25", "--self-check", "--concurrency", "1",
            "--no-progress"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["generated"], summary["accepted"], summary["appended_to_rl_set"]) == (5, 1, 1)

    # failures: the wrong eval record and the wrong rollout, by category
    fails = [json.loads(line) for line in open(out / "enhance.failures.jsonl")]
    assert [(f["category"], f["gt"], f["answer"]) for f in fails] == [("objects", "A", "B"), ("counting", "two", "three")]

    # the generation prompt: examples (categories in turn), then 4 labelled frames, then the request
    gen = [r["body"]["messages"] for r in srv.requests() if "its length is 14" in r["body"]["messages"][0]["content"][0]["text"]]
    assert len(gen) == 1 and len(gen[0]) == 1
    parts = gen[0][0]["content"]
    examples = (f"- [counting] Question: How many stars?\n  Right answer: two. The agent answered: three.\n"
                f"- [objects] Question: {Q}\n  Right answer: A. The agent answered: B.")
    head = string.Template((PROMPT_DIR / "enhance_generate.txt").read_text()).substitute(
        examples=examples, nframes=4, duration_s=14)
    tail = string.Template((PROMPT_DIR / "enhance_request.txt").read_text()).substitute(n=5, max_words=8)
    assert parts[0] == {"type": "text", "text": head} and parts[-1] == {"type": "text", "text": tail}
    assert [p["text"] if p["type"] == "text" else "<img>" for p in parts[1:-1]] == [
        "Frame 0 at [00:00]: ", "<img>", "\nFrame 1 at [00:04]: ", "<img>", "\nFrame 2 at [00:09]: ", "<img>",
        "\nFrame 3 at [00:13]: ", "<img>"]
    # only unseen videos were used: nasa (a failure's video) and bigbuckbunny (in the RL set) are not
    texts = [r["body"]["messages"][0]["content"][0]["text"] for r in srv.requests()]
    assert sum("its length is" in t for t in texts) == 2
    assert sum(t.startswith("Frame 0") for t in texts) == 2  # self-checks: frames first, then the question

    report = json.loads((out / "enhance.report.json").read_text())
    assert report["failure_cases"] == {"inputs": 4, "right": 2, "failures": 2, "skipped": {}}
    assert report["videos"] == {"candidates": 5, "unseen": 3, "from_cache": 0, "processed_now": 3, "errors": 2}
    assert report["replies_and_rejections"] == {
        "items": 5, "rejected:answer_in_question": 1, "rejected:duplicate": 1, "rejected:empty_question": 1,
        "rejected:self_check_failed": 1, "reply_error": 1, "reply_parsed": 1, "reply_unparsable": 1}
    cache = [json.loads(line) for line in open(out / "enhance.cache.jsonl")]
    errors = sorted(c["error"].split(":")[0] for c in cache if c["error"])
    assert errors == ["unparsable reply", "video"]

    # the RL set: the old line, then the accepted one with provenance; it loads
    rows = load_rl_set(rl)
    assert [r.question for r in rows] == ["What animal is this?", "What bird is shown?"]
    new = rows[1]
    assert (new.video, new.answer, new.type, new.category, new.source) == (
        "cockatoo_vp9.webm", "a cockatoo", "open", "objects", "enhance:enhance")
    assert new.id.startswith("enhance:") and new.provenance["examples"] == [f"{roll}:1", f"{ev}:1"]
    assert new.provenance["self_check_rouge"] == 1.0 and new.provenance["nframes"] == 4

    # rerun: everything from the cache, nothing asked, nothing appended twice
    n = len(srv.requests())
    assert main(args) == 0
    capsys.readouterr()
    assert len(srv.requests()) == n and len(load_rl_set(rl)) == 2
    assert json.loads((out / "enhance.report.json").read_text())["videos"]["from_cache"] == 3


def test_collect_failures_skips_what_cannot_be_scored(failures, tmp_path):
    ev, roll = failures
    other = tmp_path / "other.jsonl"
    t, _ = run_scripted(["<answer>A</answer>"])
    other.write_text(json.dumps(t.to_dict()) + "\n" + "{not json\n")
    ask = tmp_path / "ask.json"  # eva-fast ask --json: one pretty-printed trajectory
    ask.write_text(json.dumps({**t.to_dict(), "gt": "B"}, indent=1))
    fails, stats = collect_failures([ev, roll, other, ask])
    assert len(fails) == 3 and stats["skipped"] == {"no_ground_truth": 1, "unreadable": 1}
    assert stats["by_category"] == {"counting": 1, "objects": 1, "uncategorized": 1}
    assert fails[-1].source == f"{ask}:1" and (fails[-1].gt, fails[-1].answer) == ("B", "A")
