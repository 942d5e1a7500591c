"""bench/bench_resize.py: rows are written after each system's output was compared with cv2's."""

from __future__ import annotations

import json

from tests.video.test_resize import _reference_is_ipp_avx512


def test_quick_run_checks_then_writes_rows(tmp_path, capsys):
    from eva_fast.bench import bench_resize

    rows = bench_resize.main(["--quick", "--results-dir", str(tmp_path)])
    written = [json.loads(line) for line in (tmp_path / "resize.jsonl").read_text().splitlines()]
    assert written == json.loads(json.dumps(rows)) and len(rows) == 2 * 3  # 2 cases x eva_fast, opencv_1t, opencv
    for r in rows:
        assert r["status"] == "ok" and r["ms_per_call"] > 0 and r["workload"].count("->") == 1
        assert r["check"]["equal_fraction_vs_opencv"] == 1.0 or (
            r["system"] == "eva_fast" and not _reference_is_ipp_avx512() and r["check"]["max_abs_diff"] <= 1)
        if r["system"] == "eva_fast":
            assert r["ratio_vs_eva_fast"] == 1.0
    assert "equal to cv2" in capsys.readouterr().out
