"""policy="keyframe_snap" in select_frames."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

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
    b = select_frames(reader, 0, 1e9, 8, 0.25)
    assert b.policy == "parity"
    assert b.snap_error_s == (0.0,) * b.nframes
    assert b.summary()["snap_error_s"] == [0.0] * b.nframes


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
    spacing = b.timestamps_s[1] - b.timestamps_s[0]
    assert spacing >= SNAP_MIN_GOP_RATIO * 1.0  # GOP is 1 s
    tol = min(0.25 * spacing, 2.0)
    assert all(key[i] for i in b.frame_indices), "every returned frame must be a keyframe"
    assert b.stats.decoded_frames == b.nframes == 5
    assert p.stats.decoded_frames > 5
    for t, i, e, ip in zip(b.timestamps_s, b.frame_indices, b.snap_error_s, p.frame_indices):
        assert abs(pts[i] - t) <= tol + 1e-9
        assert e == pytest.approx(pts[i] - pts[ip], abs=1e-6)
    assert b.summary()["snap_error_s"] == list(b.snap_error_s)
    # frames are the real keyframes: same pixels as a parity request for those frames
    exact = r.get_frames_nearest([float(pts[i]) for i in b.frame_indices], size=b.size)
    assert (exact.frames == b.frames).all()


def test_snap_survey_long_spacing(reader):
    """Two samples, each ~next to a keyframe, spacing >> GOP on a synthetic-tolerance basis."""
    pts, key = reader.frame_table()
    kf = pts[key]
    if len(kf) < 2:
        pytest.skip("needs two keyframes")
    b = select_frames(reader, 0, reader.metadata.end_s, 2, 0.25, policy="keyframe_snap",
                      snap_tolerance_s=2.0, snap_fraction=0.25)
    spacing = b.timestamps_s[1] - b.timestamps_s[0]
    gop = float(np.median(np.diff(kf)))
    tol = min(0.25 * spacing, 2.0)
    for t, i, e in zip(b.timestamps_s, b.frame_indices, b.snap_error_s):
        if e != 0.0:
            assert key[i] and abs(pts[i] - t) <= tol + 1e-9
    if spacing < SNAP_MIN_GOP_RATIO * gop:
        assert b.snap_error_s == (0.0, 0.0)  # not "much larger than the GOP": parity frames


def test_no_snap_when_spacing_is_small(reader):
    b = select_frames(reader, 0, 4, 16, 0.25, policy="keyframe_snap")
    p = select_frames(reader, 0, 4, 16, 0.25)
    assert b.frame_indices == p.frame_indices and b.snap_error_s == (0.0,) * 16
    assert b.policy == "keyframe_snap"


def test_snap_tolerance_zero_like_keeps_parity(reader):
    p = select_frames(reader, 0, 1e9, 1, 0.25)
    b = select_frames(reader, 0, 1e9, 1, 0.25, policy="keyframe_snap", snap_tolerance_s=1e-9)
    assert b.frame_indices == p.frame_indices or b.snap_error_s[0] == 0.0


@pytest.mark.parametrize("kw", [{"snap_tolerance_s": 0}, {"snap_tolerance_s": float("nan")},
                                {"snap_fraction": 0.5}, {"snap_fraction": 0}, {"policy": "nope"}])
def test_bad_snap_arguments(reader, kw):
    kw = {"policy": "keyframe_snap", **kw}
    with pytest.raises(ValueError):
        select_frames(reader, 0, 5, 2, 0.25, **kw)
