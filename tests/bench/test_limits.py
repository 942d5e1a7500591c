"""bench_limits' issue #24 rows on the CPU: decoders-per-request sweeps checked against the first
count's frames, and the long-video survey rows (the long video stood in by a test clip)."""

from __future__ import annotations

import json

from eva_fast.bench import _videos, bench_limits
from tests.conftest import DATA


def test_sweep_and_anchor_rows_on_the_cpu(tmp_path, monkeypatch):
    made = []

    def fake_long_video(height, minutes, media_dir, cache_dir=None, gop=50, log=print):
        made.append((height, minutes, gop))
        return _videos.BenchVideo("nasa", str(DATA / "nasa_13013.mp4"), "long")

    monkeypatch.setattr(_videos, "make_long_video", fake_long_video)
    out = tmp_path / "limits.jsonl"
    rc = bench_limits.main(["--device", "cpu", "--video", str(DATA / "nasa_13013.mp4"), "--gop-workers", "1", "2", "0",
                            "--sweep-calls", "survey64", "dense", "--anchor-minutes", "110", "--anchor-gop", "125",
                            "--media-dir", str(DATA), "--out", str(out)])
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    sweep = [r for r in rows if r["kind"] == "workers"]
    assert [(r["call"], r["workers_arg"]) for r in sweep] == [
        ("survey64", 1), ("dense", 1), ("survey64", 2), ("dense", 2), ("survey64", 0), ("dense", 0)]
    assert all(r["frames_equal_first"] and r["decoded"] > 0 for r in sweep)
    assert [r["gop_workers_used"] for r in sweep[:2]] == [1, 1] and sweep[2]["gop_workers_used"] == 2
    assert made == [(720, 110, 125)]
    anchors = [r for r in rows if r["kind"] == "anchor"]
    assert [(r["device"], r["policy"]) for r in anchors] == [("cpu", "parity"), ("cpu", "keyframe_snap")]
    assert all(r["ok"] and r["frames"] == 256 and r["goal_s"] is None for r in anchors)
    summary = rows[-1]
    assert summary["kind"] == "summary" and summary["checks_failed"] == 0 and summary["goals"] == {}
