"""policy="keyframe_snap" in select_frames."""

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from eva_fast.cli import frames_summary
from eva_fast.video import VideoReader, select_frames
from eva_fast.video import SNAP_MIN_GOP_RATIO

ROOT = Path(__file__).resolve().parents[2]


def _video(name):
    for d in (ROOT / "tests" / "data", ROOT.parent / "shared" / "media"):
        if (d / name).is_file():
            return d / name
    pytest.skip(f"{name} not available")


@pytest.fixture(scope="module")
def reader():
    return VideoReader(_video("nasa_13013.mp4"))


def test_parity_is_default_and_has_zero_snap_error(reader):
    b = select_frames(reader, 0, 1e9, 8, 0.25)  # nasa_13013.mp4
    assert b.plan.policy == "parity"
    assert b.plan.snap_error_s == (0.0,) * b.plan.nframes
    assert frames_summary(b)["snap_error_s"] == [0.0] * b.plan.nframes


@pytest.fixture(scope="module")
def short_gop_video(tmp_path_factory):
    """20 s, 10 fps, a keyframe every second (GOP 10, B-frames), made with the ffmpeg CLI."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg command line not available")
    out = tmp_path_factory.mktemp("snap") / "gop1s.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=128x72:rate=10",
         "-t", "20", "-c:v", "libx264", "-preset", "veryfast", "-g", "10", "-keyint_min", "10",
         "-sc_threshold", "0", "-bf", "2", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )
    return out


def test_snap_decodes_only_keyframes_when_all_snap(short_gop_video):
    r = VideoReader(short_gop_video)
    pts, key = r.frame_table()
    b = select_frames(r, 0, 20, 5, 1.0, policy="keyframe_snap")
    p = select_frames(r, 0, 20, 5, 1.0)
    spacing = b.plan.timestamps_s[1] - b.plan.timestamps_s[0]
    assert spacing >= SNAP_MIN_GOP_RATIO * 1.0  # GOP is 1 s
    tol = min(0.25 * spacing, 2.0)
    assert all(key[i] for i in b.plan.frame_indices), "every returned frame must be a keyframe"
    assert b.stats.decoded_frames == b.plan.nframes == 5
    assert p.stats.decoded_frames > 5
    for t, i, e, ip in zip(b.plan.timestamps_s, b.plan.frame_indices, b.plan.snap_error_s, p.plan.frame_indices):
        assert abs(pts[i] - t) <= tol + 1e-9
        assert e == pytest.approx(pts[i] - pts[ip], abs=1e-6)
    assert frames_summary(b)["snap_error_s"] == list(b.plan.snap_error_s)
    # frames are the real keyframes: same pixels as a parity request for those frames
    exact = r.get_frames_nearest([float(pts[i]) for i in b.plan.frame_indices], size=b.plan.size)
    assert (exact.frames == b.frames).all()


def test_snap_survey_moves_both_samples_to_keyframes(short_gop_video):
    """Two samples 19.7 s apart (>= 4 GOPs of 1 s): tolerance min(0.25 * 19.7, 2) = 2 s. 0.3 s snaps
    to the keyframe at 0 s (frame 0, parity frame 3), 19.999 s to the one at 19 s (frame 190,
    parity frame 199); only those two keyframes are decoded."""
    r = VideoReader(short_gop_video)
    b = select_frames(r, 0.3, 20, 2, 1.0, policy="keyframe_snap")
    p = select_frames(r, 0.3, 20, 2, 1.0)
    assert p.plan.frame_indices == (3, 199) and b.plan.frame_indices == (0, 190)
    assert b.plan.snap_error_s == pytest.approx((-0.3, -0.9), abs=1e-9)
    assert b.stats.decoded_frames == 2 and p.stats.decoded_frames > 10


def test_snap_only_samples_within_the_tolerance(short_gop_video):
    """snap_tolerance_s=0.2 over samples 0.3, 5.22, 10.15, 15.07, 19.999 s: only 10.15 and 15.07 lie
    within 0.2 s of a keyframe (10 s, 15 s); the others keep the parity frame."""
    r = VideoReader(short_gop_video)
    b = select_frames(r, 0.3, 20, 5, 1.0, policy="keyframe_snap", snap_tolerance_s=0.2)
    p = select_frames(r, 0.3, 20, 5, 1.0)
    assert p.plan.frame_indices == (3, 52, 101, 151, 199)
    assert b.plan.frame_indices == (3, 52, 100, 150, 199)
    assert b.plan.snap_error_s == pytest.approx((0.0, 0.0, -0.1, -0.1, 0.0), abs=1e-9)
    assert torch.equal(b.frames[[0, 1, 4]], p.frames[[0, 1, 4]])


def test_no_snap_when_spacing_is_small(short_gop_video):
    """16 samples over 20 s are 1.33 s apart, under 4 GOPs: parity frames, although every sample lies
    within 0.5 s of a keyframe (5 samples over the same window do snap: the tests above)."""
    r = VideoReader(short_gop_video)
    b = select_frames(r, 0.3, 20, 16, 1.0, policy="keyframe_snap")
    p = select_frames(r, 0.3, 20, 16, 1.0)
    assert b.plan.frame_indices == p.plan.frame_indices and b.plan.snap_error_s == (0.0,) * 16
    assert any(i % 10 for i in b.plan.frame_indices) and b.plan.policy == "keyframe_snap"


def test_tiny_tolerance_keeps_parity_where_the_default_snaps(short_gop_video):
    r = VideoReader(short_gop_video)
    p = select_frames(r, 0.4, 20, 3, 1.0)
    default = select_frames(r, 0.4, 20, 3, 1.0, policy="keyframe_snap")
    tiny = select_frames(r, 0.4, 20, 3, 1.0, policy="keyframe_snap", snap_tolerance_s=1e-9)
    assert default.plan.frame_indices != p.plan.frame_indices and all(i % 10 == 0 for i in default.plan.frame_indices)
    assert tiny.plan.frame_indices == p.plan.frame_indices and tiny.plan.snap_error_s == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("kw", [{"snap_tolerance_s": 0}, {"snap_tolerance_s": float("nan")},
                                {"snap_fraction": 0.5}, {"snap_fraction": 0}, {"policy": "nope"}])
def test_bad_snap_arguments(reader, kw):
    kw = {"policy": "keyframe_snap", **kw}
    with pytest.raises(ValueError):
        select_frames(reader, 0, 5, 2, 0.25, **kw)
