"""Peers in their own Python environment (bench/_peer_worker.py): skipped with the reason when the
environment is missing or broken; with scripts/peer_env.sh's torchcodec environment present, the
worker returns the planned frames and its own timings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eva_fast.bench import _harness as H
from eva_fast.bench import _systems
from eva_fast.bench.run import main

from ._media import find

TORCHCODEC_SYSTEMS = ["torchcodec_exact", "torchcodec_approximate", "torchcodec_exact+Resize",
                      "torchcodec_approximate+Resize"]


@pytest.fixture
def video():
    path = find("nasa_13013.mp4")
    if path is None:
        pytest.skip("nasa_13013.mp4 not available")
    return path


@pytest.fixture(autouse=True)
def fresh_peers(monkeypatch):
    """Each test chooses its own peer environments and starts its own workers."""
    _systems.close_peer_workers()
    monkeypatch.setattr(_systems, "_peer_pythons", {})
    yield
    _systems.close_peer_workers()


def _rows(tmp_path, video, *extra):
    rc = main(["--quick", "--videos", "", "--video", str(video), "--workloads", "survey,trajectory",
               "--systems", ",".join(["eva_fast"] + TORCHCODEC_SYSTEMS), "--results-dir", str(tmp_path), *extra])
    assert rc == 0
    return [r for r in H.load_rows(tmp_path) if r["system"] in TORCHCODEC_SYSTEMS]


def test_no_environment_at_the_default_location_is_a_skip_naming_the_script(video, tmp_path, monkeypatch):
    monkeypatch.setattr(_systems, "DEFAULT_PEER_ENVS", tmp_path / "no_envs_here")
    rows = _rows(tmp_path, video)
    assert {r["system"] for r in rows} == set(TORCHCODEC_SYSTEMS)
    for r in rows:
        assert r["status"] == "skipped"
        assert "scripts/peer_env.sh torchcodec" in r["reason"] and "--peer-env torchcodec=" in r["reason"]


def test_peer_env_that_is_not_an_interpreter_is_a_skip(video, tmp_path):
    rows = _rows(tmp_path, video, "--peer-env", f"torchcodec={tmp_path / 'nope' / 'python'}")
    assert rows and all(r["status"] == "skipped" and "not an executable file" in r["reason"] for r in rows)


def test_environment_without_the_peer_is_a_skip_with_the_workers_error(video, tmp_path):
    # A bare virtual environment: the worker starts, then fails to import the peer's libraries.
    env = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    rows = _rows(tmp_path, video, "--peer-env", f"torchcodec={env / 'bin' / 'python'}")
    assert rows and all(r["status"] == "skipped" for r in rows)
    assert all("torchcodec worker: ModuleNotFoundError" in r["reason"] for r in rows), rows[0]["reason"]


def test_bad_peer_env_argument_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="NAME=PYTHON"):
        main(["--quick", "--peer-env", "torchcodec", "--results-dir", str(tmp_path)])


def test_torchcodec_worker_returns_the_planned_frames_and_its_own_times(video, tmp_path):
    py, how = _systems.peer_python("torchcodec")
    if py is None:
        pytest.skip(how)
    rows = _rows(tmp_path, video)
    assert {r["system"] for r in rows} == set(TORCHCODEC_SYSTEMS)
    for r in rows:
        assert r["status"] == "ok", (r["system"], r["reason"])
        assert r["check"]["indices_match"] is True and r["check"]["shape_match"] is True
        if "+Resize" in r["system"]:  # bilinear + antialias: only a loose bound that catches wrong frames
            assert r["check"]["mean_abs_diff"] <= 8.0 and r["check"]["tolerance"]["mean_abs_diff"] == 8.0
        else:  # torchvision bicubic a=-0.75 in float vs OpenCV's fixed point: a level or two at most
            assert r["check"]["mean_abs_diff"] <= 2.0 and r["check"]["tolerance"]["mean_abs_diff"] == 2.0
        assert r["timing"].startswith("measured inside the peer's worker")
        assert len(r["call_ms"]) == len(r["workload"]["calls"]) and all(ms > 0 for ms in r["call_ms"])
        assert sum(r["call_ms"]) <= r["ms"]["median"] * 1.5
        assert r["peer"]["versions"]["torchcodec"] and r["peak_rss_mb"] > 50
        assert r["ratio_vs_eva_fast"] > 0


def test_baseline_build_runs_in_a_worker_with_the_same_frames(video, tmp_path):
    """--baseline: eva_fast from another interpreter's build as a system (here this very build, so its
    frames must equal eva_fast's exactly and both must be timed)."""
    rc = main(["--quick", "--videos", "", "--video", str(video), "--workloads", "survey,trajectory",
               "--systems", "eva_fast", "--baseline", sys.executable, "--results-dir", str(tmp_path)])
    assert rc == 0
    rows = H.load_rows(tmp_path)
    base = [r for r in rows if r["system"] == "eva_fast_baseline"]
    assert {r["workload"]["name"] for r in base} == {"survey", "trajectory"}
    for r in base:
        assert r["status"] == "ok", r["reason"]
        assert r["check"]["indices_match"] is True and r["check"]["max_abs_diff"] == 0
        assert len(r["call_ms"]) == len(r["workload"]["calls"]) and r["ratio_vs_eva_fast"] > 0
        assert r["peer"]["versions"]["eva_fast"]


def test_baseline_is_not_a_default_system():
    assert "eva_fast_baseline" in _systems.all_systems() and "eva_fast_baseline" not in _systems.DEFAULT_SYSTEMS
