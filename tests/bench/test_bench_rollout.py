"""`bench/bench_rollout.py` end to end at its smallest: batched turns and batch 1 on one clip, rows
whose numbers agree with each other and whose correctness check passed."""

import json

import pytest

from eva_fast.bench.bench_rollout import main

from ._media import find

pytestmark = pytest.mark.slow


def test_quick_run_writes_checked_rows(tmp_path, capsys):
    video = find("nasa_13013.mp4")
    if video is None:
        pytest.skip("nasa_13013.mp4 not available")
    out = tmp_path / "rollout.jsonl"
    rc = main(["--questions", "1", "--generations", "3", "--batch1-generations", "2", "--reps", "1",
               "--modes", "batched,batch1", "--videos", str(video), "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["batched", "batch1"] and [r["episodes"] for r in rows] == [3, 2]
    batched, alone = rows
    for r in rows:
        assert r["check"]["ok"] and r["check"]["tokens_equal"] and r["check"]["tokens_checked"] > 0, r["check"]
        assert r["episodes_per_s"] == pytest.approx(r["episodes"] / (r["wall_ms"] / 1e3), rel=1e-3)
        assert 0 < r["model_ms"] <= r["wall_ms"] and 0 < r["prefill_share"] < 1 and 0 < r["frame_work_share"] < 1
        assert r["frames_decoded"] <= r["frames_requested"] and r["decode_step_ms"] > 0
    # 3 turns each: batch 1 makes a call per episode turn, batched one per tick of all 3 episodes
    assert alone["generate_calls"] == 2 * 3 and alone["concurrency"] == 1.0
    assert batched["generate_calls"] == 3 and batched["concurrency"] == 3.0
    assert batched["generated_tokens"] == pytest.approx(alone["generated_tokens"] * 3 / 2, rel=0.2)
    assert "x batch-1's episodes/s" in capsys.readouterr().out


def test_max_s_stops_the_run_wherever_it_is(tmp_path):
    """``--max-s`` is a deadline, not only a guess: at it the bench stops (here before any mode
    finished: exit 3, no row), so the GPU check's step timeout never kills it first."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "rollout.jsonl"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "eva_fast.bench.bench_rollout", "--questions", "1", "--generations",
                           "2", "--reps", "1", "--max-s", "0", "--out", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "--max-s 0 s reached during setup: stopped; rows written for no mode" in proc.stdout
    assert not out.exists() or out.read_text() == ""
