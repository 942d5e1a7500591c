"""Bad input gets a clear exception naming the path/value and the reason; never a crash."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from eva_fast.video import (
    CorruptVideoError,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoError,
    VideoReader,
    select_frames,
)
from tests.conftest import DATA, read_frames_csv


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no_such_video.mp4"):
        VideoReader(DATA / "no_such_video.mp4")
    with pytest.raises(FileNotFoundError):
        select_frames(DATA / "no_such_video.mp4", 0, 1, 1)


def test_directory_and_text_file_are_not_videos(tmp_path):
    with pytest.raises(NotAVideoError, match="directory"):
        VideoReader(tmp_path)
    txt = tmp_path / "notes.mp4"
    txt.write_text("this is not a video\n" * 100)
    with pytest.raises(NotAVideoError, match="notes.mp4"):
        VideoReader(txt)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(NotAVideoError, match="empty.mp4"):
        VideoReader(empty)


def test_no_video_stream(tmp_path, ffmpeg):
    audio = tmp_path / "tone.m4a"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio)], check=True)
    with pytest.raises(NoVideoStreamError, match="tone.m4a.*no video stream"):
        VideoReader(audio)


def test_unsupported_codec(tmp_path):
    # Rename the sample entry's codec (avc1 -> xyz1): the container is valid, the codec unknown.
    data = bytearray((DATA / "test_non_zero_start.mp4").read_bytes())
    pos = data.find(b"avc1", data.find(b"stsd"))
    assert pos > 0
    data[pos : pos + 4] = b"xyz1"
    path = tmp_path / "unknown_codec.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedCodecError, match="unknown_codec.mp4.*not supported"):
        VideoReader(path)


def test_truncated_file_raises_for_times_beyond_the_data(tmp_path):
    src = DATA / "cockatoo_vp9.webm"
    path = tmp_path / "truncated.webm"
    path.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    reader = VideoReader(path)
    assert reader.metadata.duration_s == pytest.approx(14.0, abs=0.1)  # the header still claims 14 s
    ok = reader.get_frames_played_at([0.5])
    assert ok.frames.shape[0] == 1 and not ok.corrupt.any()
    with pytest.raises(CorruptVideoError, match="truncated.webm.*truncated or corrupt"):
        reader.get_frames_played_at([13.0])
    with pytest.raises(CorruptVideoError):
        select_frames(path, 0, 14, 8, 0.25)


def test_truncated_mp4(tmp_path):
    src = DATA / "nasa_13013.mp4"
    path = tmp_path / "cut.mp4"
    path.write_bytes(src.read_bytes()[: int(src.stat().st_size * 0.6)])
    try:
        reader = VideoReader(path)
    except VideoError:
        return  # the header itself is cut: a clean error is the right outcome
    with pytest.raises(CorruptVideoError, match="cut.mp4"):
        reader.get_frames_played_at([12.9])


def test_corrupt_packet_frames_are_flagged_not_silent(caplog):
    """corrupted.mp4 has a damaged NAL unit (FFmpeg: 'Invalid NAL unit size'); 49 of 50 frames decode."""
    rows = read_frames_csv("corrupted.mp4")
    reader = VideoReader(DATA / "corrupted.mp4")
    times = [r["pts_time"] - rows[0]["pts_time"] for r in rows]
    out = reader.get_frames_played_at(times)
    assert out.frames.shape[0] == len(rows)
    assert out.stats.decode_errors > 0
    assert out.corrupt.any(), "frames decoded after a damaged packet must be flagged"
    assert not out.corrupt[0]  # before the damage
    strict = VideoReader(DATA / "corrupted.mp4", on_corrupt="error")
    with pytest.raises(CorruptVideoError, match="damaged"):
        strict.get_frames_played_at(times)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((0, 10, 0, 1.0), {}, "nframes"),
        ((0, 10, 10**9, 1.0), {}, "nframes"),
        ((float("nan"), 10, 4, 1.0), {}, "start_time"),
        ((-1.0, float("-inf"), 4, 1.0), {}, "end_time"),
        ((0, 10, 4, 0.0), {}, "resize"),
        ((0, 10, 4, float("nan")), {}, "resize"),
        ((0, 10, 4, 1.0), {"resample": "lanczos"}, "resample"),
        ((0, 10, 4, 1.0), {"policy": "fastest"}, "policy"),
        ((0, 10, 4, 1.0), {"max_visual_tokens": 0}, "max_visual_tokens"),
        ((0, 10, 4, 1.0), {"maxp": -5}, "maxp"),
    ],
)
def test_invalid_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_frames(DATA / "nasa_13013.mp4", *args, **kwargs)


def test_reader_argument_errors():
    with pytest.raises(ValueError, match="device"):
        VideoReader(DATA / "nasa_13013.mp4", device="tpu")
    with pytest.raises(ValueError, match="on_corrupt"):
        VideoReader(DATA / "nasa_13013.mp4", on_corrupt="ignore")
    r = VideoReader(DATA / "nasa_13013.mp4")
    with pytest.raises(ValueError, match="finite"):
        r.get_frames_played_at([float("nan")])
    with pytest.raises(ValueError, match="size"):
        r.get_frames_played_at([0.0], size=(0, 10))
    with pytest.raises(ValueError, match="16384"):
        r.get_frames_played_at([0.0], size=(20000, 10))
    assert r.get_frames_played_at([]).frames.shape == (0, 270, 480, 3)


HUGE = [1e15, 1e300, 9.3e18, 2.0**63, float(np.float32(1e30)), 10**30, np.float64(1e200)]


@pytest.mark.parametrize("video, stream", [("nasa_13013.mp4", 3), ("nasa_13013_vfr.mp4", 0), ("cockatoo_vp9.webm", 0)])
def test_huge_times_give_the_last_frame_and_huge_negative_the_first(video, stream):
    """Issue #12 item 1: t / time_base overflowed int64 before llround (undefined behaviour) and
    returned a frame from the middle (8.008 s of the 13 s VFR clip) or the first frame."""
    rows = read_frames_csv(video, stream)
    last, first = rows[-1]["pts_time"] - rows[0]["pts_time"], 0.0
    r = VideoReader(DATA / video, stream_index=stream)
    out = r.get_frames_nearest(HUGE + [-t for t in HUGE])
    assert out.pts_s.tolist() == pytest.approx([last] * len(HUGE) + [first] * len(HUGE), abs=1e-6)
    # the native decoder clamps in seconds too, in both modes
    native = r._dec.decode([float(t) for t in HUGE], "played_at")
    assert native.pts_s.tolist() == pytest.approx([last] * len(HUGE), abs=1e-6)
    assert torch.equal(out.frames[0], r.get_frames_nearest([last]).frames[0])


def test_played_at_outside_the_stream_is_an_error_like_torchcodec():
    r = VideoReader(DATA / "nasa_13013.mp4")
    rows = read_frames_csv("nasa_13013.mp4", 3)
    end = r.stream_end_s
    assert end == pytest.approx(390 * 1001 / 30000)
    for t in (-100.0, -1e-9, end, 1e6, 1e300):
        with pytest.raises(ValueError, match=rf"no frame is played at t=.* must be >= 0 and < {end!r} s"):
            r.get_frames_played_at([1.0, t])
    out = r.get_frames_played_at([0.0, end - 1e-9])
    assert out.pts_s.tolist() == pytest.approx([0.0, rows[-1]["pts_time"] - rows[0]["pts_time"]], abs=1e-9)
    # nearest clamps (EVA's policy inside select_frames)
    clamped = r.get_frames_nearest([-100.0, 1e6])
    assert clamped.pts_s.tolist() == pytest.approx([0.0, rows[-1]["pts_time"] - rows[0]["pts_time"]], abs=1e-6)


def test_played_at_a_time_just_before_a_frame_gives_the_previous_frame():
    """A time within one tick before a frame's pts used to round onto that frame (llround): on the
    VFR clip, 12.8128 s is both frame 228's pts and the declared duration."""
    r = VideoReader(DATA / "nasa_13013_vfr.mp4")
    rows = read_frames_csv("nasa_13013_vfr.mp4", 0)
    tick = 1 / 30000
    for k in (1, 100, 228):
        t = rows[k]["pts_time"] - rows[0]["pts_time"]
        got = r.get_frames_played_at([t - 0.5 * tick, t, t + 0.5 * tick]).pts_s.tolist()
        prev = rows[k - 1]["pts_time"] - rows[0]["pts_time"]
        assert got == pytest.approx([prev, t, t], abs=1e-9), k


def test_vfr_last_frame_lies_after_the_declared_duration_and_is_reachable():
    r = VideoReader(DATA / "nasa_13013_vfr.mp4")
    rows = read_frames_csv("nasa_13013_vfr.mp4", 0)
    last = rows[-1]["pts_time"] - rows[0]["pts_time"]
    assert last > r.metadata.duration_s  # 12.9129 > 12.8128
    assert r.stream_end_s == pytest.approx(last + 1 / r.metadata.average_fps)
    b = select_frames(r, 0, 1e9, 4, 0.25)  # window clamped to the real end: the last sample is the last frame
    assert b.plan.end_s == pytest.approx(r.stream_end_s) and b.plan.frame_indices[-1] == len(rows) - 1
    assert r.get_frames_played_at([last + 0.001]).pts_s.item() == pytest.approx(last, abs=1e-9)


def test_ffmpeg_cli_available_for_reference_tests():
    assert shutil.which("ffmpeg") is not None


# ----------------------------------------------------------------------- issue #12 item 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda r: select_frames(r, 10**400, 10, 4, 0.5), "start_time must be a finite number"),
        (lambda r: select_frames(r, 0, 10, 4, 10**400, max_resize=None), "resize must be a finite number"),
        (lambda r: r.get_frames_nearest([1.0, 10**400]), r"times must be finite seconds, got .* at position 1"),
        (lambda r: r.get_frames_played_at([-(10**400)]), "times must be finite seconds"),
        # ~24 GiB: refused before allocating (was MemoryError: std::bad_alloc)
        (lambda r: select_frames(r, 0, 10, 1024, 8.0, max_visual_tokens=None), r"1024 frames of 2156x3836 \(height x width\) need 25406717952 bytes, above this reader's max_output_bytes"),
        (lambda r: r.get_frames_nearest([0.0] * 1024, size=(16384, 16384)), "max_output_bytes"),
        # was ZeroDivisionError in smart_resize
        (lambda r: select_frames(r, 0, 10, 4, 0.5, max_pixels=0), "max_pixels"),
        (lambda r: select_frames(r, 0, 10, 4, 0.5, min_pixels=10_000, max_pixels=100), "min_pixels <= max_pixels"),
    ],
)
def test_hostile_arguments_raise_value_error_not_overflow_memory_or_zero_division(call, match):
    r = VideoReader(DATA / "nasa_13013.mp4")
    with pytest.raises(ValueError, match=match):
        call(r)


@pytest.mark.parametrize("box", ["stco", "stsz", "stsc"])
def test_damaged_mp4_index_is_a_corrupt_video_error_not_index_error(box, tmp_path):
    """An mp4 whose sample table lists no samples (entry count 0) opens as variable frame rate
    with an empty frame table; select_frames raised IndexError on it (65 fuzz mutants)."""
    from tests.fuzz import mutate

    recipe = {"seed": "cockatoo.mp4",
              "ops": [{"op": "mp4", "box": f"moov/trak/mdia/minf/stbl/{box}", "nth": 0, "field": "count", "value": 0}]}
    path = tmp_path / "damaged.mp4"
    path.write_bytes(mutate.apply(recipe))
    r = VideoReader(path)
    with pytest.raises(CorruptVideoError, match="lists no frames"):
        select_frames(r, 0, 10, 4, 0.5)
