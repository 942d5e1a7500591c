"""The GPU check's bench scripts in their CPU form: the soak (bench/bench_gpu_soak.py) and the
packer bench's row output (bench/bench_pack.py --out). Their CUDA paths run in scripts/gpu_check.sh."""

from __future__ import annotations

import json

from eva_fast.bench import bench_gpu_soak as soak
from eva_fast.video import VideoReader, select_frames
from tests.conftest import DATA


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_soak_on_cpu_writes_checkpoints_and_summary(tmp_path):
    out = tmp_path / "soak.jsonl"
    rc = soak.main(["--device", "cpu", "--requests", "6", "--every", "3", "--data-dir", str(DATA), "--out", str(out)])
    assert rc == 0
    rows = _rows(out)
    kinds = [r["kind"] for r in rows]
    assert kinds[0] == "env" and kinds.count("check") == len(soak.VIDEOS) and kinds[-1] == "summary"
    cps = [r for r in rows if r["kind"] == "checkpoint"]
    assert [c["requests"] for c in cps] == [3, 6]
    assert all(c["gpu_used_mib"] is None and c["rss_mib"] > 0 and c["backends"] == {"cpu": 3} for c in cps)
    assert cps[1]["check"]["ok"] and cps[0]["check"] is None  # blocks after the first are sampled
    s = rows[-1]
    assert s["requests_done"] == 6 and s["stopped"] == "done" and s["errors"] == 0 and s["ok"]
    assert s["rss_growth_mib"] == round(cps[1]["rss_mib"] - cps[0]["rss_mib"], 1)
    assert all(r["run_id"] == rows[0]["run_id"] and r["device"] == "cpu" for r in rows)


def test_soak_stops_at_its_time_limit_and_says_so(tmp_path):
    out = tmp_path / "soak.jsonl"
    rc = soak.main(["--device", "cpu", "--requests", "500", "--every", "2", "--max-s", "0.01",
                    "--data-dir", str(DATA), "--out", str(out)])
    s = _rows(out)[-1]
    assert rc == 1 and s["kind"] == "summary" and s["stopped"].startswith("time limit") and not s["ok"]
    assert s["requests_done"] < 500


def test_soak_without_the_device_writes_a_summary_saying_why(tmp_path):
    out = tmp_path / "soak.jsonl"
    rc = soak.main(["--device", "cuda:99", "--requests", "5", "--data-dir", str(DATA), "--out", str(out)])
    s = _rows(out)[-1]
    assert rc == 1 and s["kind"] == "summary" and not s["ok"] and "could not open the videos on cuda:99" in s["stopped"]


def test_soak_requests_are_valid_and_reproducible():
    durations = {"a.mp4": 10.0, "b.mp4": 600.0}
    reqs = soak.make_requests(200, durations, seed=3)
    assert reqs == soak.make_requests(200, durations, seed=3)
    for r in reqs:
        assert 0 <= r["start_time"] <= r["end_time"] <= durations[r["video"]]
        assert 1 <= r["nframes"] <= 32 and r["resample"] in ("cubic", "antialias")
    assert {r["policy"] for r in reqs} == {"parity", "keyframe_snap"} and {r["reuse_reader"] for r in reqs} == {True, False}


def test_soak_compare_flags_wrong_frames():
    """The soak's frame check fails on a changed pixel beyond the 8-bit bound or a wrong index."""
    r = VideoReader(DATA / "nasa_13013.mp4")
    a = select_frames(r, 1.0, 5.0, 3, 0.25)
    assert soak.compare(a, a, 8)["ok"]
    b = select_frames(r, 1.0, 5.0, 3, 0.25)
    b.frames[0, 0, 0, 0] = (int(b.frames[0, 0, 0, 0]) + 5) % 256
    res = soak.compare(b, a, 8)
    assert not res["ok"] and res["max_abs_diff"] == 5 and res["indices_match"]
    c = select_frames(r, 2.0, 6.0, 3, 0.25)
    assert not soak.compare(c, a, 8)["indices_match"]
    assert soak.compare(b, a, 10)["ok"]  # 10-bit input: the bound is on the mean (swscale's chroma), not the max


def test_pack_bench_appends_rows_to_out(tmp_path):
    from eva_fast.bench import bench_pack

    out = tmp_path / "pack.jsonl"
    bench_pack.main(["--skip-gpu", "--frames", "2", "--sizes", "56x84", "--reps", "1", "--out", str(out)])
    rows = _rows(out)
    assert {r["backend"] for r in rows} >= {"eva-torch", "hf-pil"}
    assert all(r["device"] == "cpu" and r["frames"] == 2 and (r["height"], r["width"]) == (56, 84) for r in rows)
