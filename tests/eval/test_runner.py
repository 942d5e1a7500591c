"""The runner with the real AgentLoop: resume, --limit, --retry-errors, shards + merge, and a
SIGKILLed run that resumes with nothing lost and nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from eva_fast.agent import AgentConfig, AgentLoop, get_backend
from eva_fast.eval import load_records, load_samples, run_benchmark, should_retry
from tests.conftest import DATA
from tests.eval._slow_backend import SlowBackend
from tests.eval.conftest import MINI, REPO, run_cli

TOOL_CALL = ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 4, "nframes": 3, '
             '"resize": 0.25}}</tool_call>')


def _loop(backend) -> AgentLoop:
    return AgentLoop(backend, AgentConfig(max_turns=4))


def _strip_timings(x):
    """Records without wall-clock fields (they differ between runs by nature)."""
    if isinstance(x, dict):
        return {k: _strip_timings(v) for k, v in x.items()
                if not (k.endswith("_ms") or k in ("timings", "wall_s"))}
    if isinstance(x, list):
        return [_strip_timings(v) for v in x]
    return x


def test_resume_limit_and_retry_errors(tmp_path):
    out = tmp_path / "out"
    first = run_benchmark(_loop(SlowBackend(delay_s=0, fail_on="digit")), MINI, DATA, out, limit=6, concurrency=3)
    assert (first.ran, first.skipped_cached) == (6, 0)
    assert [r["index"] for r in first.records] == list(range(6))
    failed = [r for r in first.records if should_retry(r)]
    assert [r["index"] for r in failed] == [5]  # "Which digit ..." raised in the backend
    assert failed[0]["stop_reason"].startswith("exception") and failed[0]["answer"] == ""
    # resume with a larger limit: only the new questions run, errors are kept without --retry-errors
    second = run_benchmark(_loop(SlowBackend(delay_s=0, fail_on="digit")), MINI, DATA, out, concurrency=3)
    assert (second.ran, second.skipped_cached, second.retried) == (2, 6, 0)
    # retry the error with a backend that no longer fails
    third = run_benchmark(_loop(SlowBackend(delay_s=0)), MINI, DATA, out, retry_errors=True)
    assert (third.ran, third.retried) == (1, 1)
    recs = load_records(out / "mini_bench.jsonl")
    assert [r["index"] for r in recs] == list(range(8))
    assert not any(should_retry(r) for r in recs)
    assert recs[5]["answer"] == "B" and recs[5]["gt"] == "B"
    cache = load_records(out / "mini_bench.cache.jsonl")
    assert sorted(r["index"] for r in cache) == list(range(8))  # the failed line was dropped, not duplicated
    summary = json.loads((out / "mini_bench.summary.json").read_text())
    assert summary["total"] == 8 and summary["correct"] == third.summary.correct
    # a different agent configuration must not resume into the same files
    with pytest.raises(ValueError, match="different run"):
        run_benchmark(_loop(SlowBackend(delay_s=0)), MINI, DATA, out, run_info={"agent_config": {"max_turns": 9}})


def test_shards_merged_equal_unsharded(tmp_path):
    def loop():
        return _loop(get_backend("scripted", replies=[TOOL_CALL, "<answer>A</answer>"]))

    whole = run_benchmark(loop(), MINI, DATA, tmp_path / "whole", concurrency=4)
    assert whole.summary.total == 8 and all(r["num_rounds"] == 2 for r in whole.records)
    assert all(r["visual_tokens"] > 0 and r["trajectory"]["turns"][0]["tool_calls"][0]["frames"]
               for r in whole.records)
    shard_files = []
    for i in range(3):
        res = run_benchmark(loop(), MINI, DATA, tmp_path / "shards", shard=(i, 3), concurrency=2)
        assert [r["index"] for r in res.records] == list(range(i, 8, 3))
        shard_files.append(str(res.results_path))
    merged = tmp_path / "merged.jsonl"
    res = run_cli("eval", "merge", *shard_files, "--benchmark", str(MINI), "--out", str(merged))
    assert res.returncode == 0, res.stderr
    assert _strip_timings(load_records(merged)) == _strip_timings(load_records(whole.results_path))
    # merging an incomplete set is refused unless asked for
    res = run_cli("eval", "merge", *shard_files[:2], "--benchmark", str(MINI), "--out", str(merged))
    assert res.returncode == 2 and "have no record" in res.stderr


def _questions() -> dict[str, int]:
    return {s.question.splitlines()[0]: s.index for s in load_samples(MINI)}


def test_sigkill_mid_run_then_resume(tmp_path):
    out, log = tmp_path / "out", tmp_path / "asked.txt"
    cache = out / "mini_bench.cache.jsonl"
    args = ["eval", "run", str(MINI), "--video-root", str(DATA), "--out", str(out), "--concurrency", "2",
            "--backend", "tests.eval._slow_backend:SlowBackend", "--backend-arg", f"log_path={log}", "--no-progress"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen([sys.executable, "-m", "eva_fast.cli", *args, "--backend-arg", "delay_s=0.4"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if cache.exists() and cache.read_bytes().count(b"\n") >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.communicate()}")
            time.sleep(0.02)
        else:
            pytest.fail("no records written within 120 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    complete_lines = cache.read_bytes().split(b"\n")[:-1]  # a line torn by the kill has no newline yet
    done_before = {json.loads(line)["index"] for line in complete_lines}
    assert 3 <= len(done_before) < 8, "the kill must land mid-run"
    with open(cache, "ab") as f:  # as if the kill had hit in the middle of a write
        f.write(b'{"index": 7, "gt": "B", "answer": "B", "stop_re')
    res = run_cli(*args, "--backend-arg", "delay_s=0.4")  # the same command again
    assert res.returncode == 0, res.stderr
    assert f"{len(done_before)} question(s) already done, {8 - len(done_before)} to run" in res.stderr
    cached = [r["index"] for r in load_records(cache)]
    assert sorted(cached) == list(range(8))  # exactly one line per question, torn line gone
    results = load_records(out / "mini_bench.jsonl")
    assert [r["index"] for r in results] == list(range(8))
    asked = Counter(_questions()[q] for q in log.read_text().splitlines())
    assert set(asked) == set(range(8))
    assert all(asked[i] == 1 for i in done_before)  # finished work was never redone
    assert sum(asked.values()) <= 8 + 2  # at most the 2 in flight at the kill ran twice
