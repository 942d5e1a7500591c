"""Harness pieces: rows, stats, frame checks, workload plans, table."""

import json

import numpy as np
import pytest

from eva_fast.bench import _harness as H
from eva_fast.bench._workloads import make_workloads, plan_call
from eva_fast.video import VideoReader, select_frames

from ._media import find


def test_environment_has_machine_and_versions():
    env = H.environment()
    assert env["machine"]["cores"] >= 1 and env["machine"]["cpu"] is not None
    assert "torch" in env["versions"] and "eva_fast" in env["versions"]
    assert "sha" in env["commit"]


def test_make_row_has_every_key_and_appends(tmp_path):
    env = H.environment()
    row = H.make_row(env, "test", system="x", status="ok")
    assert set(H.ROW_KEYS) <= set(row)
    path = H.append_rows([row, row], tmp_path)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["system"] == "x"
    assert len(H.load_rows(tmp_path)) == 2
    assert H.latest_run(H.load_rows(tmp_path))[0]["run_id"] == env["run_id"]


def test_summarize_and_repeats():
    s = H.summarize([H.Sample(0.010, 0.02), H.Sample(0.030, 0.02), H.Sample(0.020, 0.02)])
    assert s["ms"]["median"] == pytest.approx(20.0) and s["ms"]["min"] == pytest.approx(10.0)
    assert s["ms"]["p90"] == pytest.approx(28.0)
    assert H.repeats_for(0.1, 3, 4.0) == 3
    assert H.repeats_for(3.0, 3, 4.0) == 1
    assert H.repeats_for(100.0, 3, 4.0) == 1


def test_compare_frames():
    a = [np.zeros((2, 28, 28, 3), np.uint8)]
    b = [np.full((2, 28, 28, 3), 1, np.uint8)]
    c = H.compare_frames(b, a, [[1, 2]], [(1, 2)], 2.0)
    assert c.ok and c.max_abs_diff == 1 and c.mean_abs_diff == pytest.approx(1.0)
    assert not H.compare_frames(b, a, [[1, 3]], [(1, 2)], 2.0).ok  # wrong index fails
    assert not H.compare_frames(b, a, [None], [(1, 2)], 0.5).ok  # pixels over tolerance
    assert H.compare_frames(b, a, [None], [(1, 2)], None).ok  # reported only
    assert not H.compare_frames([b[0][:1]], a, [None], [(1, 2)], None).ok  # wrong count


def test_plans_match_select_frames():
    path = find("nasa_13013.mp4")
    if path is None:
        pytest.skip("nasa_13013.mp4 not available")
    r = VideoReader(path)
    for wl in make_workloads(r.metadata, ("survey", "zoom", "detail", "trajectory")):
        for call in wl.calls:
            p = plan_call(call, r)
            b = select_frames(r, call.start_time, call.end_time, call.nframes, call.resize)
            assert p == b.plan
