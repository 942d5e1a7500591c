"""A seek never returns concealed frames that a decode from an earlier keyframe reconstructs
(issue 12, item 3): the default GOP-parallel path equals a serial one-decoder decode, and both equal
the ffmpeg command line decoding from the start of the file.

Two causes are covered. cockatoo.mp4 (H.264 4:4:4, x264 core 142) is decoded by FFmpeg with the
workarounds for that x264 version's bugs only when the decoder has seen the version SEI in the first
access unit: eva_fast hands the build number to every decoder (FFmpeg's ``x264_build`` option). A
spliced stream whose second part sends its parameter sets only before its first keyframe cannot be
decoded from its later keyframes at all: the decoder backs off to earlier keyframes until one works
and remembers the unclean ones for the file.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from eva_fast.video import VideoReader, select_frames
from tests.conftest import DATA, read_frames_csv

COCKATOO = DATA / "cockatoo.mp4"


def _ffmpeg_rgb_frames(ffmpeg: str, path, indices: list[int]) -> np.ndarray:
    """uint8 [len(indices), H, W, 3]: frames ``indices`` (presentation order) as the ffmpeg command
    line decodes them, from the start of the file."""
    m = VideoReader(path).metadata
    sel = "+".join(f"eq(n\\,{i})" for i in indices)
    out = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-vf", f"select={sel},format=rgb24", "-fps_mode", "passthrough",
         "-f", "rawvideo", "-"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(out, dtype=np.uint8).reshape(len(indices), m.height, m.width, 3)


def test_cockatoo_default_gop_workers_equals_one_worker_and_is_clean():
    """The issue's case: select_frames(r, 0, 14, 8, 0.5) with the default gop_workers flagged 4 of 8
    frames corrupt (112 decode errors, pixels ~100 levels off the one-worker decode)."""
    par = select_frames(VideoReader(COCKATOO), 0, 14, 8, 0.5)
    ser = select_frames(VideoReader(COCKATOO, gop_workers=1), 0, 14, 8, 0.5)
    assert par.stats.gop_workers == 2  # the request is split across GOP workers
    assert not any(par.corrupt) and not any(ser.corrupt)
    assert par.stats.decode_errors == 0 and ser.stats.decode_errors == 0
    assert par.plan.frame_indices == ser.plan.frame_indices
    assert torch.equal(par.frames, ser.frames)


@pytest.mark.parametrize("index", [76, 77, 145, 146, 160, 279])  # keyframes at 76 (3.8 s) and 145 (7.25 s)
@pytest.mark.parametrize("threads", [0, 1])
def test_cockatoo_seek_to_a_later_keyframe_equals_ffmpeg_from_the_start(ffmpeg, index, threads):
    """A fresh reader seeks straight to the 3.8 s / 7.25 s keyframe; FFmpeg decoding from frame 0
    (which reads x264's version SEI) is the reference. Before the fix these came out concealed
    (and differently so from run to run with frame threads)."""
    rows = read_frames_csv("cockatoo.mp4")
    t = rows[index]["pts_time"] - rows[0]["pts_time"]
    got = VideoReader(COCKATOO, threads=threads, gop_workers=1).get_frames_played_at([t])
    assert not got.corrupt[0] and got.stats.decode_errors == 0
    assert got.stats.seeks == 1 and got.stats.decoded_frames < index + 1  # it did seek past frame 0
    ref = _ffmpeg_rgb_frames(ffmpeg, COCKATOO, [index])
    np.testing.assert_array_equal(got.frames[0].numpy(), ref[0])


# --------------------------------------------------------------------------- back-off


def _annexb_nals(data: bytes):
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", data)]
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(data)
        if e < len(data) and data[e - 1] == 0:
            e -= 1
        yield data[s:e]


def _x264_part(ffmpeg: str, source: str, seconds: int, sps_id: int) -> bytes:
    """An H.264 elementary stream (20 fps, a keyframe every 10 frames) whose SPS/PPS (id ``sps_id``)
    are kept only before its first keyframe."""
    raw = subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", f"{source}=size=160x96:rate=20", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-bf", "0", "-x264-params", f"sps-id={sps_id}",
         "-f", "h264", "-"],
        check=True, capture_output=True,
    ).stdout
    seen, keep = set(), []
    for nal in _annexb_nals(raw):
        kind = nal[3] & 0x1F
        if kind in (7, 8):  # SPS, PPS
            if kind in seen:
                continue
            seen.add(kind)
        keep.append(b"\x00" + nal)
    return b"".join(keep)


@pytest.fixture(scope="module")
def spliced(ffmpeg, tmp_path_factory):
    """2 s of testsrc2 (parameter sets id 0, in the mp4 header) then 3 s of testsrc (id 1, in band
    before its first keyframe only), keyframes every 0.5 s: decodable from 0 s and 2 s, but not from
    the keyframes at 2.5 .. 4.5 s, as a stream spliced without repeating its parameter sets is."""
    probe = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    if "libx264" not in probe:
        pytest.skip("this ffmpeg has no libx264 encoder")
    path = tmp_path_factory.mktemp("spliced") / "spliced.mp4"
    data = _x264_part(ffmpeg, "testsrc2", 2, 0) + _x264_part(ffmpeg, "testsrc", 3, 1)
    subprocess.run([ffmpeg, "-v", "error", "-y", "-r", "20", "-f", "h264", "-i", "-", "-c", "copy", str(path)],
                   input=data, check=True)
    return path


def test_spliced_stream_is_what_the_backoff_test_needs(ffmpeg, spliced):
    clean = subprocess.run([ffmpeg, "-v", "error", "-i", str(spliced), "-f", "null", "-"], capture_output=True, text=True)
    assert clean.stderr == ""  # decodes cleanly from the start
    late = subprocess.run([ffmpeg, "-v", "error", "-ss", "4.6", "-i", str(spliced), "-f", "null", "-"],
                          capture_output=True, text=True)
    assert "non-existing PPS 1" in late.stderr  # and not from its last keyframe
    assert VideoReader(spliced).metadata.keyframe_pts_s == pytest.approx([i * 0.5 for i in range(10)])


def test_seek_backs_off_to_a_keyframe_that_decodes_and_remembers_the_unclean_ones(ffmpeg, spliced):
    ref = _ffmpeg_rgb_frames(ffmpeg, spliced, list(range(100)))  # decoded from the start
    r = VideoReader(spliced, gop_workers=1)
    got = r.get_frames_played_at([4.6])  # frame 92, GOP of the 4.5 s keyframe
    assert not got.corrupt[0]
    np.testing.assert_array_equal(got.frames[0].numpy(), ref[92])
    # 4.5 -> 4.0 -> 3.5 -> 3.0 -> 2.5 -> 2.0 s, where the parameter sets are
    assert got.stats.keyframe_backoffs == 5
    assert r._dec.unclean_keyframes_s == pytest.approx([2.5, 3.0, 3.5, 4.0, 4.5])
    # A later request on the same reader, and a new reader of the same file, start at 2 s directly.
    again = r.get_frames_played_at([3.3])
    other = VideoReader(spliced, gop_workers=1).get_frames_nearest([4.1])
    for b, i in ((again, 66), (other, 82)):
        assert b.stats.keyframe_backoffs == 0 and b.stats.decode_errors == 0 and not b.corrupt[0]
        np.testing.assert_array_equal(b.frames[0].numpy(), ref[i])
    assert r.total_stats.keyframe_backoffs == 5


def test_gop_parallel_path_backs_off_too_and_equals_the_serial_frames(ffmpeg, spliced, tmp_path):
    # A copy is a different file for the shared table (path, size, mtime): nothing is known yet.
    path = tmp_path / "copy.mp4"
    shutil.copyfile(spliced, path)
    ref = _ffmpeg_rgb_frames(ffmpeg, path, list(range(100)))
    times = [i * 0.25 + 0.01 for i in range(20)]
    idx = [5 * i for i in range(20)]  # the frame shown at t (20 fps)
    par = VideoReader(path, gop_workers=2).get_frames_played_at(times)
    assert par.stats.gop_workers == 2 and par.stats.keyframe_backoffs >= 1
    assert not par.corrupt.any()
    np.testing.assert_array_equal(par.frames.numpy(), ref[idx])
    ser = VideoReader(path, gop_workers=1).get_frames_played_at(times)
    assert torch.equal(par.frames, ser.frames) and not ser.corrupt.any()
