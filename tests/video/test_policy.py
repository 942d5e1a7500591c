"""EVA frame-tool policy against hand-computed values (issue #2 spec, EVA's reference tool)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eva_fast.video import (
    MAX_NFRAMES,
    FrameRequest,
    apply_token_budget,
    clamp_window,
    estimate_visual_tokens,
    frame_index_for_time,
    output_size,
    sample_timestamps,
)
from eva_fast.vision import smart_resize, tokens_for_size

DATA = __import__("pathlib").Path(__file__).resolve().parents[1] / "data"


def test_sample_timestamps_matches_numpy_linspace():
    for start, end, n in [(0.0, 6630.0, 256), (100.0, 600.0, 50), (0.0, 1.0, 2), (3.5, 3.6, 7)]:
        eps = min(1e-3, (end - start) / (4 * n))
        expected = np.linspace(start, end - eps, n)
        got = sample_timestamps(start, end, n)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        assert got[-1] == end - eps


def test_single_frame_is_midpoint():
    assert sample_timestamps(10.0, 20.0, 1) == [15.0]


def test_eps_uses_the_smaller_of_1ms_and_quarter_spacing():
    # (end - start) / (4 n) = 0.001 / 8 < 1e-3
    ts = sample_timestamps(0.0, 0.001, 2)
    assert ts[-1] == pytest.approx(0.001 - 0.001 / 8)


def test_clamp_window():
    assert clamp_window(-5.0, 10.0, 100.0) == (0.0, 10.0)
    assert clamp_window(20.0, 1e9, 100.0) == (20.0, 100.0)
    # empty after clamping -> whole stream
    assert clamp_window(150.0, 200.0, 100.0) == (0.0, 100.0)
    assert clamp_window(50.0, 40.0, 100.0) == (0.0, 100.0)


def test_frame_index_rounding_and_clamp():
    assert frame_index_for_time(1.0, 29.97, 390) == 30  # round(29.97)
    assert frame_index_for_time(0.5, 25.0, 100) == 12  # round(12.5) -> 12 (ties to even)
    assert frame_index_for_time(1.5 / 25, 25.0, 100) == 2  # round(1.5) -> 2
    assert frame_index_for_time(999.0, 25.0, 100) == 99
    assert frame_index_for_time(0.0, 25.0, 100) == 0


def test_output_size_is_28_aligned_and_smart_resized():
    assert output_size(0.5, height=1080, width=1920) == (532, 952)  # round(540/28)=19 -> 532; round(960/28)=34 -> 952
    assert output_size(1.0, height=720, width=1280) == (728, 1288)
    # 28x56 (round(36/28)=1, round(64/28)=2) is under min_pixels 3136: beta = sqrt(2), ceil -> 56x84
    assert output_size(0.1, height=360, width=640) == (56, 84)
    h, w = output_size(4.0, height=4320, width=7680)  # huge: smart_resize caps the pixels
    assert h * w <= 12_845_056 and h % 28 == 0 and w % 28 == 0


def test_smart_resize_spec_examples():
    # shared/design/qwen25vl-layout.md §2.2
    assert smart_resize(480, 640) == (476, 644)
    assert smart_resize(720, 1280) == (728, 1288)
    assert smart_resize(1080, 1920) == (1092, 1932)
    assert smart_resize(1080, 1920, max_pixels=1_003_520) == (728, 1316)
    assert smart_resize(70, 70) == (56, 56)  # 70/28 = 2.5 rounds to even 2
    assert smart_resize(14, 14) == (56, 56)
    assert tokens_for_size(1092, 1932) == 2691
    assert tokens_for_size(476, 644) == 391
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000)


def test_token_estimate_formula():
    # 256 frames at 0.1x of 1280x720: round(72/28)=3 (2.57), round(128/28)=5 (4.57)
    assert estimate_visual_tokens(256, 0.1, height=720, width=1280) == 256 * 3 * 5


def test_budget_under_limit_is_untouched():
    b = apply_token_budget(16, 0.5, height=720, width=1280, max_visual_tokens=12000, maxp=720)
    assert (b.nframes, b.resize, b.steps) == (16, 0.5, ())


def test_budget_maxp_step_only():
    # 4K video, 4 frames at 1.0: estimate 4*round(2160/28)*round(3840/28) = 4*77*137 = 42196 > 12000
    # r -> min(1, 720/2160) = 1/3: 4*round(25.71)*round(45.71) = 4*26*46 = 4784 <= 12000
    b = apply_token_budget(4, 1.0, height=2160, width=3840, max_visual_tokens=12000, maxp=720)
    assert b.estimated_tokens == 42196
    assert b.steps == ("maxp",)
    assert b.resize == pytest.approx(1 / 3)
    assert b.nframes == 4
    assert b.final_estimated_tokens == 4784


def test_budget_cube_root_step():
    # 1080p, 256 frames at 1.0: r -> 720/1080 = 2/3: 256*round(25.71)*round(45.71) = 256*26*46 = 306176
    # k = (12000/306176)^(1/3); nframes = int(256 k); r = 2/3 k
    b = apply_token_budget(256, 1.0, height=1080, width=1920, max_visual_tokens=12000, maxp=720)
    k = (12000 / 306176) ** (1 / 3)
    assert b.steps == ("maxp", "cube_root")
    assert b.nframes == int(256 * k) == 86
    assert b.resize == pytest.approx(2 / 3 * k)


def test_budget_none_disables():
    b = apply_token_budget(1024, 8.0, height=2160, width=3840, max_visual_tokens=None)
    assert b.steps == () and b.nframes == 1024


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(nframes=0), "nframes"),
        (dict(nframes=2.5), "nframes"),
        (dict(nframes=True), "nframes"),
        (dict(nframes="8"), "nframes"),
        (dict(nframes=float("nan")), "nframes"),
        (dict(start_time=float("nan")), "start_time"),
        (dict(end_time=float("inf")), "end_time"),
        (dict(start_time="10"), "start_time"),
        (dict(resize=0.0), "resize"),
        (dict(resize=-1.0), "resize"),
        (dict(resize=float("inf")), "resize"),
        # ints beyond float range: ValueError, not OverflowError (issue #12 item 2)
        (dict(start_time=10**400), "start_time"),
        (dict(end_time=-(10**400)), "end_time"),
        (dict(resize=10**400), "resize"),
    ],
)
def test_invalid_requests_raise_value_error_naming_the_value(kwargs, match):
    args = dict(start_time=0.0, end_time=10.0, nframes=8, resize=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FrameRequest(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(nframes=10**9), r"nframes must be in \[1, 1024\]"),
        (dict(nframes=MAX_NFRAMES + 1), r"nframes must be in \[1, 1024\]"),
        (dict(resize=100.0), r"resize must be in \(0, 8.0\]"),
    ],
)
def test_select_frames_caps(kwargs, match):
    """The Python API's documented caps (MAX_NFRAMES, MAX_RESIZE) live in plan_frames, where the agent
    path can lift them (the reference has none; the budget and the byte limit bound the work)."""
    from eva_fast.video import VideoReader, plan_frames

    r = VideoReader(DATA / "nasa_13013.mp4")
    args = dict(start_time=0.0, end_time=10.0, nframes=8, resize=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plan_frames(r, **args)
    if args["nframes"] == 10**9:  # budget: 4 132 797 frames of 56x56, 38.9 GB: the byte limit refuses it
        with pytest.raises(ValueError, match="max_output_bytes"):
            plan_frames(r, **args, max_nframes=None, max_resize=None)
        return
    uncapped = plan_frames(r, **args, max_nframes=None, max_resize=None)
    assert uncapped.request.nframes == args["nframes"] and uncapped.output_bytes <= r.max_output_bytes


def test_integral_float_nframes_accepted():
    assert FrameRequest(0, 10, 16.0).nframes == 16
    assert math.isclose(FrameRequest(-3, 1e6, 1, 0.25).resize, 0.25)
