"""The eva-fast CLI on real videos: `frames --json` picks the policy's frames; `--out` writes them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA, read_frames_csv


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eva_fast.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("video, stream", [("nasa_13013.mp4", 3), ("cockatoo_vp9.webm", 0), ("bigbuckbunny.mp4", 0)])
def test_frames_json_picks_policy_indices(video, stream):
    res = _run("frames", str(DATA / video), "--start", "1.5", "--end", "4.5", "--nframes", "6", "--resize", "0.5", "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    for key in ("timestamps", "frame_indices", "size", "nframes", "resize", "tokens_per_frame"):
        assert key in s
    rows = read_frames_csv(video, stream)
    fps = (len(rows) - 1) / (rows[-1]["pts_time"] - rows[0]["pts_time"])  # CFR: from the frame list
    ts = np.linspace(1.5, 4.5 - 1e-3, 6)
    assert s["frame_indices"] == [int(np.round(t * fps)) for t in ts]
    assert s["nframes"] == 6 and s["resize"] == 0.5
    assert s["size"][0] % 28 == 0 and s["size"][1] % 28 == 0
    assert s["tokens_per_frame"] == s["size"][0] // 28 * s["size"][1] // 28


def test_frames_out_writes_pngs_and_contact_sheet(tmp_path):
    res = _run("frames", str(DATA / "nasa_13013.mp4"), "--start", "0", "--end", "13", "--nframes", "4",
               "--resize", "0.25", "--out", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert len(s["files"]) == 4
    for f in s["files"]:
        assert np.asarray(Image.open(f)).shape == (s["size"][0], s["size"][1], 3)
    assert Image.open(s["contact_sheet"]).size[0] > 0


def test_frames_human_readable_and_errors():
    res = _run("frames", str(DATA / "nasa_13013.mp4"), "--start", "0", "--end", "5", "--nframes", "3")
    assert res.returncode == 0 and "frames decoded" in res.stdout
    bad = _run("frames", str(DATA / "nasa_13013.mp4"), "--start", "0", "--end", "5", "--nframes", "0")
    assert bad.returncode == 2 and "nframes" in bad.stderr
    missing = _run("frames", "does_not_exist.mp4", "--start", "0", "--end", "5", "--nframes", "1")
    assert missing.returncode == 2 and "does_not_exist.mp4" in missing.stderr


def test_info_prints_build_info():
    res = _run("info")
    assert res.returncode == 0
    info = json.loads(res.stdout)
    assert info["ffmpeg_version"] and "cuda" in info and info["compiler"]
    res = _run("info", str(DATA / "nasa_13013_rotated.mp4"))
    assert json.loads(res.stdout)["video"]["rotation_deg"] in (90, 270)


def test_cli_defaults_come_from_the_config_dataclass_and_the_video_literals(monkeypatch):
    """`ask` takes its agent defaults from AgentConfig and its frame flags from FrameOptions, `frames`
    its choices from eva_fast.video's Literals: change the source and the CLI follows (nothing restated)."""
    import dataclasses

    from eva_fast import cli
    from eva_fast.agent import AgentConfig
    from eva_fast.video import POLICIES, RESAMPLES, SMART_RESIZE_BY, FrameOptions

    f = {x.name: x for x in dataclasses.fields(AgentConfig)}
    g = {x.name: x for x in dataclasses.fields(FrameOptions)}
    monkeypatch.setattr(f["max_turns"], "default", 9)
    monkeypatch.setattr(g["maxp"], "default", 333)
    args = cli.build_parser().parse_args(["ask", "v.mp4", "q"])
    assert (args.max_turns, args.maxp) == (9, 333)
    assert (args.max_new_tokens, args.temperature, args.max_visual_tokens) == (
        f["max_new_tokens"].default, f["temperature"].default, g["max_visual_tokens"].default)
    frames = cli.build_parser().parse_args(["frames", "v.mp4", "--start", "0", "--end", "1", "--nframes", "2"])
    assert (frames.resample, frames.policy, frames.smart_resize_by) == (RESAMPLES[0], POLICIES[0], SMART_RESIZE_BY[0])
    actions = {a.dest: a for a in cli.build_parser()._subparsers._group_actions[0].choices["frames"]._actions}
    assert tuple(actions["resample"].choices) == RESAMPLES and tuple(actions["policy"].choices) == POLICIES
