"""select_frames (EVA's frame tool) on real videos: frame choice per the policy against ffprobe's
frame lists, and `cubic` frames against FFmpeg decode + OpenCV INTER_CUBIC."""

from __future__ import annotations

import bisect

import cv2
import numpy as np
import pytest
import torch

from eva_fast.video import VideoReader, select_frames
from tests.conftest import DATA, REFS, read_frames_csv

CFR = [("nasa_13013.mp4", 3), ("bigbuckbunny.mp4", 0), ("cockatoo_vp9.webm", 0), ("av1_video.mkv", 0),
       ("test_non_zero_start.mp4", 0), ("unordered.mov", 0), ("nasa_13013_hdr.mp4", 0)]
REQUESTS = [(0, 1e9, 8, 0.5), (2.0, 4.0, 5, 1.0), (-10, 3.3, 1, 0.25), (1.0, 1.0, 4, 0.5), (0.3, 9.7, 32, 0.1)]


def _expected_indices(rows, fps, request):
    """Independent re-statement of the policy (issue #2 spec, decord frame choice)."""
    start, end, n, _ = request
    n_frames = len(rows)
    stream_end = n_frames / fps  # last pts + 1/fps for constant frame rate
    s, e = max(start, 0.0), min(end, stream_end)
    if e <= s:
        s, e = 0.0, stream_end
    if n == 1:
        ts = [(s + e) / 2]
    else:
        ts = list(np.linspace(s, e - min(1e-3, (e - s) / (4 * n)), n))
    return ts, [min(max(int(np.round(t * fps)), 0), n_frames - 1) for t in ts]


@pytest.mark.parametrize("video, stream", CFR)
@pytest.mark.parametrize("request_", REQUESTS)
def test_frame_choice_matches_policy(video, stream, request_):
    rows = read_frames_csv(video, stream)
    reader = VideoReader(DATA / video, stream_index=stream)
    fps = reader.metadata.average_fps
    ts, idx = _expected_indices(rows, fps, request_)
    b = select_frames(reader, *request_)
    assert list(b.plan.frame_indices) == idx
    np.testing.assert_allclose(b.plan.timestamps_s, ts, atol=1e-9)
    # the decoded frames really are those frames (pts from ffprobe, relative to the first frame)
    np.testing.assert_allclose(b.pts_s, [rows[i]["pts_time"] - rows[0]["pts_time"] for i in idx], atol=1e-6)
    assert b.frames.shape == (b.plan.nframes, *b.plan.size, 3) and b.frames.dtype == torch.uint8
    assert b.plan.size[0] % 28 == 0 and b.plan.size[1] % 28 == 0
    assert b.plan.tokens_per_frame == (b.plan.size[0] // 28) * (b.plan.size[1] // 28)


def test_vfr_uses_nearest_pts():
    rows = read_frames_csv("nasa_13013_vfr.mp4")
    pts = [r["pts_time"] - rows[0]["pts_time"] for r in rows]
    b = select_frames(DATA / "nasa_13013_vfr.mp4", 0, 1e9, 16, 0.5)
    for t, i, p in zip(b.plan.timestamps_s, b.plan.frame_indices, b.pts_s):
        j = bisect.bisect_left(pts, t)
        cands = [k for k in (j - 1, j) if 0 <= k < len(pts)]
        best = min(cands, key=lambda k: (abs(pts[k] - t), k))
        assert i == best and p == pytest.approx(pts[best], abs=1e-6)
    # the stream end used for clamping is the last frame's pts + 1/fps (the reference's), not the
    # container duration, which this file's last pts (12.9129 s) lies after (12.8128 s)
    r = VideoReader(DATA / "nasa_13013_vfr.mp4")
    assert b.plan.end_s == pytest.approx(pts[-1] + 1 / r.metadata.average_fps) == pytest.approx(r.stream_end_s)


@pytest.mark.parametrize("index, size", [(0, (140, 252)), (10, (392, 672)), (389, (84, 168)), (10, (280, 476))])
def test_cubic_equals_opencv(index, size):
    """FFmpeg's decoded frame (refs/torchcodec, made by the ffmpeg CLI) resized by cv2.INTER_CUBIC."""
    from tests.video.test_resize import assert_equals_opencv

    ref = torch.load(REFS / "torchcodec" / f"nasa_13013.mp4.stream3.frame{index:06d}.pt", weights_only=True).numpy()
    expected = cv2.resize(ref, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    rows = read_frames_csv("nasa_13013.mp4", 3)
    got = VideoReader(DATA / "nasa_13013.mp4").get_frames_played_at([rows[index]["pts_time"]], size=size).frames[0]
    assert expected.shape == got.shape
    assert_equals_opencv(got.numpy(), ref, f"frame {index} -> {size}")


def test_select_frames_cubic_matches_opencv_on_the_policy_size():
    b = select_frames(DATA / "nasa_13013.mp4", 0.0, 0.4, 2, 0.5)
    # linspace(0, 0.399, 2) at 29.97 fps: round(0) = 0, round(0.399 * 29.97 = 11.96) = 12
    assert b.plan.frame_indices == (0, 12)
    ref = torch.load(REFS / "torchcodec" / "nasa_13013.mp4.stream3.frame000000.pt", weights_only=True).numpy()
    from tests.video.test_resize import assert_equals_opencv

    assert_equals_opencv(b.frames[0].numpy(), ref, f"select_frames -> {b.plan.size}")


def test_token_budget_fallback_applies():
    # 1280x720, 256 frames at 1.0 is far over 12 000 tokens
    b = select_frames(DATA / "bigbuckbunny.mp4", 0, 5, 256, 1.0)
    assert b.plan.budget_steps == ("maxp", "cube_root")
    assert b.plan.nframes < 256 and b.frames.shape[0] == b.plan.nframes
    assert b.plan.estimated_visual_tokens == 256 * round(720 / 28) * round(1280 / 28)
    b2 = select_frames(DATA / "bigbuckbunny.mp4", 0, 5, 256, 1.0, max_visual_tokens=None)
    assert b2.plan.nframes == 256 and b2.plan.budget_steps == ()


def test_antialias_filter_selectable_and_close_to_pil():
    from PIL import Image

    ref = torch.load(REFS / "torchcodec" / "nasa_13013.mp4.stream3.frame000010.pt", weights_only=True).numpy()
    rows = read_frames_csv("nasa_13013.mp4", 3)
    reader = VideoReader(DATA / "nasa_13013.mp4")
    got = reader.get_frames_played_at([rows[10]["pts_time"]], size=(56, 84), resample="antialias").frames[0].numpy()
    pil = np.asarray(Image.fromarray(ref).resize((84, 56), Image.Resampling.BICUBIC))
    assert np.abs(got.astype(int) - pil.astype(int)).max() <= 3  # see test_resize.py


def test_same_reader_reused_across_a_trajectory():
    reader = VideoReader(DATA / "nasa_13013.mp4")
    survey = select_frames(reader, 0, 1e9, 16, 0.25)
    zoom = select_frames(reader, 8.0, 10.0, 8, 1.0)
    detail = select_frames(reader, 9.0, 9.5, 1, 1.0)
    assert survey.video is reader.metadata and zoom.plan.nframes == 8 and detail.plan.nframes == 1
    assert reader.total_stats.decoded_frames == (
        survey.stats.decoded_frames + zoom.stats.decoded_frames + detail.stats.decoded_frames
    )
