"""The AVX2 yuv444p -> RGB24 converter (csrc/yuv444.cpp) against swscale and the ffmpeg CLI: it must
give swscale's bytes for every (Y, U, V), matrix and range, so 4:4:4 frames are unchanged."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from eva_fast import _C
from eva_fast.video import VideoReader, select_frames
from tests.conftest import DATA, read_frames_csv

# swscale matrix ids (SWS_CS_*): BT.709, FCC, BT.601, SMPTE 240M, BT.2020
MATRICES = [1, 4, 5, 7, 9]


@pytest.fixture
def swscale_only():
    prev = _C._set_yuv444_fast(False)
    yield
    _C._set_yuv444_fast(prev)


@pytest.mark.skipif(not _C._resize_simd_available(), reason="the converter needs AVX2")
@pytest.mark.parametrize("full_range", [False, True])
@pytest.mark.parametrize("matrix", MATRICES)
def test_every_yuv_triple_converts_to_swscale_bytes(matrix, full_range):
    assert _C._yuv444_fast_available(matrix, full_range)  # passed its check against the loaded swscale
    assert _C._yuv444_mismatches_exhaustive(matrix, full_range) == 0  # all 2^24 pixels


def test_cockatoo_frames_are_identical_with_and_without_the_converter(swscale_only):
    path = DATA / "cockatoo.mp4"  # H.264 High 4:4:4, yuv444p
    assert VideoReader(path).metadata.pixel_format == "yuv444p"
    times = [0.0, 3.3, 7.3, 13.9]
    sizes = [None, (168, 308), (364, 644), (720, 1280), (97, 171)]
    slow = [VideoReader(path, gop_workers=1).get_frames_played_at(times, size=s).frames for s in sizes]
    slow_survey = select_frames(VideoReader(path), 0, 14, 16, 0.25)
    _C._set_yuv444_fast(True)
    for s, ref in zip(sizes, slow):
        got = VideoReader(path, gop_workers=1).get_frames_played_at(times, size=s).frames
        assert torch.equal(got, ref), s
    fast_survey = select_frames(VideoReader(path), 0, 14, 16, 0.25)
    assert torch.equal(fast_survey.frames, slow_survey.frames)
    assert fast_survey.stats.convert_ms < slow_survey.stats.convert_ms


@pytest.mark.parametrize("index", [0, 150, 279])
def test_cockatoo_native_frames_equal_the_ffmpeg_cli(ffmpeg, index):
    rows = read_frames_csv("cockatoo.mp4")
    got = VideoReader(DATA / "cockatoo.mp4").get_frames_played_at([rows[index]["pts_time"]]).frames[0].numpy()
    out = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(DATA / "cockatoo.mp4"), "-vf", f"select=eq(n\\,{index}),format=rgb24",
         "-fps_mode", "passthrough", "-frames:v", "1", "-f", "rawvideo", "-"],
        check=True, capture_output=True,
    ).stdout
    np.testing.assert_array_equal(got, np.frombuffer(out, dtype=np.uint8).reshape(got.shape))
