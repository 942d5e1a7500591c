"""Scoring: EVA's accuracy.py rule on results files with known contents.

Two checks: (1) a hand-computed expectation on a file whose every line is chosen to hit one rule;
(2) agreement with an independent line-by-line restatement of the reference rule (written here
from reading accuracy.py, sharing no code with eva_fast.eval) on many generated files.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from eva_fast.eval import JsonlFormatError, score_file, score_records, should_retry
from tests.eval.conftest import run_cli


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# index, gt, answer (or missing), stop_reason (or missing), rounds, tokens
KNOWN = [
    {"index": 0, "gt": "A", "answer": "A", "stop_reason": "answer_found", "num_rounds": 2, "total_tokens": 1000},
    {"index": 1, "gt": "B", "answer": " b\n", "stop_reason": "answer_found", "num_rounds": 3, "total_tokens": 2000},
    {"index": 2, "gt": "C", "answer": "", "stop_reason": "no_answer_no_tool_call", "num_rounds": 1,
     "total_tokens": 500},
    {"index": 3, "gt": "D", "stop_reason": "max_turns_exceeded", "num_rounds": 6, "total_tokens": 9000},  # no answer
    {"index": 4, "gt": "A", "answer": None, "stop_reason": "exception", "error": "boom", "num_rounds": 0,
     "total_tokens": 0},  # str(None) = "None": not empty, wrong
    {"index": 5, "gt": "A", "answer": "B", "stop_reason": "answer_found", "num_rounds": 2, "total_tokens": 1500.5},
    {"index": 6, "gt": "A", "answer": "Answer: A", "num_rounds": 4, "total_tokens": 3000},  # no stop_reason
    {"index": 7, "gt": " e ", "answer": "E", "stop_reason": "answer_found", "num_rounds": 2, "total_tokens": 1000,
     "estimated_visual_tokens": 800},
]


def test_known_file_hand_computed(tmp_path):
    path = _write(tmp_path / "result_known.jsonl", KNOWN)
    s = score_file(path)
    # right: 0 (A=A), 1 (" b\n" -> B), 7 (" e " vs "E"); empty: 2 ("") and 3 (missing)
    assert (s.total, s.correct, s.empty_answers) == (8, 3, 2)
    assert s.accuracy == 3 / 8
    assert s.avg_rounds == (2 + 3 + 1 + 6 + 0 + 2 + 4 + 2) / 8 == 2.5
    assert s.avg_total_tokens == (1000 + 2000 + 500 + 9000 + 0 + 1500.5 + 3000 + 1000) / 8
    assert s.stop_reasons == {"answer_found": 4, "no_answer_no_tool_call": 1, "max_turns_exceeded": 1,
                              "exception": 1, "missing_stop_reason": 1}
    assert s.errors == 1 and s.avg_estimated_visual_tokens == 800
    res = run_cli("eval", "score", str(path))
    assert res.returncode == 0, res.stderr
    assert "accuracy: 3/8 = 37.5000%" in res.stdout
    assert "failed (empty answer): 2" in res.stdout
    assert "avg rounds: 2.5000" in res.stdout
    assert "avg total_tokens: 2250.0625" in res.stdout
    assert "missing_stop_reason: 1" in res.stdout


def reference_restated(path: Path) -> dict:
    """EVA's accuracy.py rule, restated independently: every line counts; num_rounds and
    total_tokens must be numbers; str(gt/answer, default '').strip().upper(); empty answer wrong."""
    total = right = empty = 0
    rounds = tokens = 0.0
    reasons = Counter()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        rec = json.loads(line)
        total += 1
        reasons[str(rec.get("stop_reason", "missing_stop_reason"))] += 1
        for key in ("num_rounds", "total_tokens"):
            if not isinstance(rec.get(key), (int, float)):
                raise ValueError(f"line {n}: {key}")
        rounds += rec["num_rounds"]
        tokens += rec["total_tokens"]
        answer = str(rec.get("answer", "")).strip().upper()
        if not answer:
            empty += 1
        elif answer == str(rec.get("gt", "")).strip().upper():
            right += 1
    return {"total": total, "right": right, "empty": empty, "acc": right / total, "rounds": rounds / total,
            "tokens": tokens / total, "reasons": dict(reasons)}


def _random_record(rng: random.Random, i: int) -> dict:
    letters = ["A", "B", "C", "D", "E", "F"]
    variants = [lambda x: x, str.lower, lambda x: f" {x} ", lambda x: f"{x}\n", lambda x: f"({x})", lambda x: ""]
    rec = {"index": i, "gt": rng.choice(letters + [" a", None, 3]), "num_rounds": rng.randint(0, 8),
           "total_tokens": rng.choice([rng.randint(0, 40000), rng.random() * 1e4])}
    roll = rng.random()
    if roll < 0.7:
        rec["answer"] = rng.choice(variants)(rng.choice(letters))
    elif roll < 0.8:
        rec["answer"] = None
    elif roll < 0.9:
        rec["answer"] = rng.choice(["  ", "\t", "None", "a b", "Answer: A", 1])
    if rng.random() < 0.9:
        rec["stop_reason"] = rng.choice(["answer_found", "max_turns_exceeded", "no_valid_tool_call",
                                         "arguments_not_json; no_nframes", "exception: RuntimeError: x", None])
    return rec


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_independent_restatement(tmp_path, seed):
    rng = random.Random(seed)
    recs = [_random_record(rng, i) for i in range(rng.randint(1, 60))]
    path = _write(tmp_path / "r.jsonl", recs)
    ref = reference_restated(path)
    s = score_file(path)
    assert (s.total, s.correct, s.empty_answers) == (ref["total"], ref["right"], ref["empty"])
    assert s.accuracy == ref["acc"]
    assert s.avg_rounds == pytest.approx(ref["rounds"], rel=1e-12)
    assert s.avg_total_tokens == pytest.approx(ref["tokens"], rel=1e-12)
    assert s.stop_reasons == ref["reasons"]


def test_strict_fields_and_bad_lines(tmp_path):
    ok = dict(KNOWN[0])
    for bad, msg in (({k: v for k, v in ok.items() if k != "num_rounds"}, "missing required field `num_rounds`"),
                     ({**ok, "total_tokens": None}, "field `total_tokens` is None"),
                     ({**ok, "num_rounds": "2"}, "field `num_rounds` must be a number, got str")):
        path = _write(tmp_path / "f.jsonl", [ok, bad])
        with pytest.raises(ValueError, match=rf"f.jsonl:2: {msg}"):
            score_file(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        score_file(empty)
    torn = tmp_path / "torn.jsonl"
    torn.write_text(json.dumps(ok) + "\n" + '{"index": 1, "gt": "A", "ans')
    with pytest.raises(JsonlFormatError, match="torn.jsonl:2: not valid JSON"):
        score_file(torn)
    res = run_cli("eval", "score", str(torn))
    assert res.returncode == 2 and "torn.jsonl:2:" in res.stderr


def test_categories_and_duplicates():
    recs = [{"index": 0, "gt": "A", "answer": "A", "num_rounds": 1, "total_tokens": 1, "categories": ["x", "y"]},
            {"index": 1, "gt": "A", "answer": "B", "num_rounds": 1, "total_tokens": 1, "categories": ["x"]},
            {"index": 1, "gt": "A", "answer": "A", "num_rounds": 1, "total_tokens": 1, "categories": ["x"]}]
    s = score_records(recs)
    assert (s.categories["x"].total, s.categories["x"].correct) == (3, 2)
    assert (s.categories["y"].total, s.categories["y"].correct) == (1, 1)
    assert s.duplicate_indices == [1] and s.total == 3  # counted every time, like the reference
    s2 = score_records(recs[:2], categories_by_index={0: ("p",), 1: ("q",)}, expected_indices=range(4))
    assert set(s2.categories) == {"p", "q"} and s2.missing_indices == [2, 3]


def test_retry_rule_matches_the_agent():
    from eva_fast.agent import NORMAL_STOP_REASONS as AGENT_NORMAL
    from eva_fast.eval import NORMAL_STOP_REASONS

    assert set(NORMAL_STOP_REASONS) == set(AGENT_NORMAL)
    assert not should_retry({"stop_reason": "answer_found"})
    assert should_retry({"stop_reason": "answer_found", "error": "x"})
    assert should_retry({"stop_reason": "exception: ValueError: x"})
    assert should_retry({"stop_reason": "no_start_or_end_time"})
    assert should_retry({})
