"""`bench/bench_eval_client.py` end to end on one short clip: the eval runner against the instant
server, rows with a passing pixel check and a consistent CPU split."""

import json

import pytest

from eva_fast.bench import _harness as H
from eva_fast.bench.bench_eval_client import RESULTS_NAME, main

from ._media import find


@pytest.fixture(scope="module")
def video():
    path = find("nasa_13013.mp4")
    if path is None:
        pytest.skip("nasa_13013.mp4 not available")
    return path


def test_quick_run_writes_checked_rows(video, tmp_path, capsys):
    rc = main(["--quick", "--systems", "before,png,ppm", "--results-dir", str(tmp_path), "--plot"])
    assert rc == 0
    rows = H.load_rows(tmp_path, RESULTS_NAME)
    assert [r["system"] for r in rows] == ["before", "png", "ppm"]
    for r in rows:
        json.dumps(r)
        assert r["commit"] and r["machine"]["cores"] >= 1
        if r["status"] == "skipped":  # no git history for the old backend: said, never silent
            assert r["system"] == "before" and r["reason"]
            continue
        assert r["status"] == "ok", r
        c = r["check"]
        assert c["ok"] and c["pixels_exact"] and c["earlier_urls_resent_unchanged"]
        assert c["frames"] == c["frames_encoded"] == 98  # survey 64 + zoom 32 + detail 2, each encoded once
        st = r["profile"]["stage_cpu_ms_per_question"]
        assert st["decode"] > 0 and st["encode"] > 0 and st["http"] > 0
        assert sum(st.values()) == pytest.approx(r["profile"]["cpu_ms_per_question"], rel=0.02)
        assert r["one_core_questions_per_s"] == pytest.approx(1000 / r["throughput"]["cpu_ms_per_question"], rel=1e-3)
        if r["system"] == "ppm":
            assert c["mime"] == ["image/x-portable-pixmap"]
            assert c["identical_to_before"] in (True, None)
    assert (tmp_path / "plots" / "eval_client.png").is_file()
    assert "| nasa_13013 | png |" in capsys.readouterr().out
