"""FramePlan: computed once (plan_frames), decoded by decode_plan, JSON round trip, validation of
plans rebuilt from stored records, and the 28-px (smart_resize) parity case."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from eva_fast.cli import frames_summary
from eva_fast.video import (
    FrameBatch,
    FramePlan,
    VideoReader,
    decode_plan,
    plan_frames,
    resample_like_processor,
    select_frames,
)
from tests.conftest import DATA


def _roundtrip(plan: FramePlan) -> FramePlan:
    return FramePlan.from_dict(json.loads(json.dumps(plan.to_dict())))


@pytest.mark.parametrize(
    "video, args, kwargs",
    [
        ("nasa_13013.mp4", (0, 1e9, 8, 0.5), {}),
        ("nasa_13013_vfr.mp4", (1.0, 9.0, 6, 0.4), {}),  # variable frame rate: table pts
        ("bigbuckbunny.mp4", (0, 5, 4, 0.05), {}),  # 28x56 -> smart_resize 56x84, processor resample
        ("bigbuckbunny.mp4", (0, 5, 4, 0.05), {"smart_resize_by": "decoder"}),
        ("cockatoo.mp4", (0, 14, 64, 1.0), {}),  # budget: maxp + cube root
        ("cockatoo.mp4", (0, 14, 3, 0.3), {"policy": "keyframe_snap", "resample": "antialias"}),
    ],
)
def test_plan_json_round_trip_decodes_to_the_same_frames(video, args, kwargs):
    reader = VideoReader(DATA / video)
    batch = select_frames(reader, *args, **kwargs)
    plan = plan_frames(reader, *args, **kwargs)
    assert plan == batch.plan  # select_frames = plan_frames + decode_plan
    again = _roundtrip(plan)
    assert again == plan and again.to_dict() == plan.to_dict()
    # a fresh reader on the same file (as the training collator would open it)
    with VideoReader(DATA / video) as fresh:
        redone = decode_plan(fresh, again)
    assert torch.equal(redone.frames, batch.frames)
    assert redone.pts_s == batch.pts_s and redone.plan is again
    assert batch.frames.shape == (plan.nframes, *plan.size, 3)
    assert plan.num_visual_tokens == plan.nframes * plan.tokens_per_frame == batch.plan.num_visual_tokens


def test_plan_fields_and_estimates():
    r = VideoReader(DATA / "cockatoo.mp4")  # 1280x720
    p = plan_frames(r, -3, 100, 64, 1.0)
    # estimate as made: 64 * round(720/28) * round(1280/28) = 64 * 26 * 46
    assert p.request.nframes == 64 and p.estimated_visual_tokens == 64 * 26 * 46
    assert p.budget_steps == ("maxp", "cube_root")
    k = (12000 / (64 * 26 * 46)) ** (1 / 3)
    assert p.nframes == int(64 * k) and p.resize == pytest.approx(k)
    units = max(1, round(720 * p.resize / 28)) * max(1, round(1280 * p.resize / 28))
    assert p.final_estimated_visual_tokens == p.nframes * units
    assert (p.start_s, p.end_s) == (0.0, r.metadata.end_s)
    assert p.target_pts_s == tuple(i / r.metadata.average_fps for i in p.frame_indices)
    assert p.video_size == (720, 1280) and p.video_num_frames == r.metadata.num_frames


def test_frame_batch_holds_no_copy_of_the_plan():
    names = {f.name for f in dataclasses.fields(FrameBatch)}
    assert names == {"frames", "pts_s", "corrupt", "plan", "stats", "total_ms", "video"}
    b = select_frames(DATA / "nasa_13013.mp4", 0, 5, 3, 0.5)
    for name in ("frame_indices", "timestamps_s", "size", "nframes", "resize", "budget_steps", "request",
                 "estimated_visual_tokens", "final_estimated_visual_tokens", "tokens_per_frame", "target_pts_s"):
        assert not hasattr(b, name)  # one shape: the plan's fields are read on the plan only (issue #25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.plan = None
    assert frames_summary(b)["plan"] == b.plan.to_dict()


def _dict(video="nasa_13013.mp4", **change):
    d = plan_frames(VideoReader(DATA / video), 0, 10, 4, 0.5).to_dict()
    d.update(change)
    return d


@pytest.mark.parametrize(
    "change, match",
    [
        ({"frame_indices": [0, 1, 2, 5000]}, r"frame_indices \[5000\] out of range: .* has frames 0..389"),
        ({"size": [140, 250]}, r"size must be \(height, width\), positive multiples of 28"),
        ({"size": [0, 252]}, "positive multiples of 28"),
        ({"target_pts_s": [0.0, 1.0, 2.0, 3.0]}, r"target_pts_s\[1\]=1.0 does not match frame"),
        ({"nframes": 3}, "timestamps_s must be a tuple of nframes=3 values"),
        ({"resample": "lanczos"}, "resample must be one of"),
        ({"policy": "random"}, "policy must be one of"),
        ({"tokens_per_frame": 1}, "does not match size"),
        ({"video_num_frames": 391}, "plan was made for a 270x480 video of 391 frames"),
        ({"schema": 7}, "schema 7"),
        ({"extra": 1}, r"unknown keys \['extra'\]"),
    ],
)
def test_decode_plan_rejects_bad_or_foreign_plans(change, match):
    r = VideoReader(DATA / "nasa_13013.mp4")
    with pytest.raises(ValueError, match=match):
        decode_plan(r, FramePlan.from_dict(_dict(**change)))


def test_decode_plan_rejects_a_plan_for_another_video():
    plan = FramePlan.from_dict(_dict("cockatoo.mp4"))
    with pytest.raises(ValueError, match="plan was made for a 720x1280 video"):
        decode_plan(VideoReader(DATA / "nasa_13013.mp4"), plan)
    with pytest.raises(ValueError, match="missing keys"):
        FramePlan.from_dict({k: v for k, v in _dict().items() if k != "size"})
    with pytest.raises(TypeError, match="plan must be a FramePlan"):
        decode_plan(VideoReader(DATA / "nasa_13013.mp4"), _dict())


def test_28px_frames_follow_the_reference_processor_path():
    """Issue #12 item 4: at resize 0.05 on 720p the reference tool writes 28x56 frames (round(W*r/28)*28)
    and Qwen's processor upsamples them to smart_resize's 56x84; eva_fast used to resize straight to
    56x84 (mean 14.6 levels away from what the checkpoint saw). Reference here: OpenCV INTER_CUBIC to
    28x56, then Pillow's bicubic (transformers' PIL processor; vLLM's torch-uint8 path is within 2
    levels of it, shared/design/qwen25vl-layout.md §2.3)."""
    r = VideoReader(DATA / "bigbuckbunny.mp4")
    b = select_frames(r, 0, 5, 4, 0.05)
    assert b.plan.aligned_size == (28, 56) and b.plan.size == (56, 84) and b.plan.tokens_per_frame == 6
    full = r.get_frames_nearest(list(b.plan.target_pts_s)).frames.numpy()
    ref = np.stack([
        np.asarray(Image.fromarray(cv2.resize(f, (56, 28), interpolation=cv2.INTER_CUBIC)).resize((84, 56), Image.BICUBIC))
        for f in full
    ]).astype(int)
    diff = np.abs(b.frames.numpy().astype(int) - ref)
    assert diff.max() <= 3 and diff.mean() < 0.2, (diff.max(), diff.mean())
    direct = select_frames(r, 0, 5, 4, 0.05, smart_resize_by="decoder")
    assert direct.plan.size == b.plan.size and direct.plan.aligned_size == (28, 56)
    assert np.abs(direct.frames.numpy().astype(int) - ref).mean() > 5  # visibly not what the checkpoint saw


def test_resample_like_processor_is_torch_uint8_antialiased_bicubic_close_to_pil():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 28, 56, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img.reshape(56, 56, 3), (5, 5), 2).reshape(2, 28, 56, 3)  # natural-image smoothness
    out = resample_like_processor(torch.from_numpy(img), (56, 84))
    assert out.dtype == torch.uint8 and out.shape == (2, 56, 84, 3) and out.is_contiguous()
    pil = np.stack([np.asarray(Image.fromarray(f).resize((84, 56), Image.BICUBIC)) for f in img]).astype(int)
    assert np.abs(out.numpy().astype(int) - pil).max() <= 2


def test_processor_path_also_covers_max_pixels():
    r = VideoReader(DATA / "nasa_13013.mp4")  # 480x270
    p = plan_frames(r, 0, 5, 1, 2.0, max_pixels=100_000, max_visual_tokens=None)
    assert p.aligned_size == (532, 952) and p.size[0] * p.size[1] <= 100_000 and p.size != p.aligned_size
    b = decode_plan(r, p)
    assert b.frames.shape == (1, *p.size, 3)


def test_output_bytes_checked_before_allocating():
    r = VideoReader(DATA / "nasa_13013.mp4", max_output_bytes=10_000_000)
    with pytest.raises(ValueError, match=r"need \d+ bytes, above this reader's max_output_bytes=10000000"):
        plan_frames(r, 0, 10, 200, 1.0, max_visual_tokens=None)
    with pytest.raises(ValueError, match="max_output_bytes"):
        r.get_frames_nearest([0.0] * 40)
