"""Native decoder against independent references: FFmpeg CLI RGB frames (refs/torchcodec, the
ffmpeg command line at test time) and ffprobe's frame lists (refs/frames)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from eva_fast.video import VideoReader
from tests.conftest import DATA, REFS, read_frames_csv


def _ref_frame(name: str) -> torch.Tensor:
    return torch.load(REFS / "torchcodec" / name, weights_only=True)


@pytest.mark.parametrize(
    "video, stream, index",
    [
        ("nasa_13013.mp4", 3, 0),
        ("nasa_13013.mp4", 3, 10),
        ("nasa_13013.mp4", 3, 389),  # last frame, B-frames
        ("nasa_13013.mp4", 0, 5),  # the non-default video stream
        ("nasa_13013_hdr.mp4", 0, 5),  # HEVC Main10 -> 8-bit RGB
        ("av1_video.mkv", 0, 10),
        ("h265_video.mp4", 0, 5),
    ],
)
def test_rgb_equals_ffmpeg_cli(video, stream, index):
    """Same conversion as FFmpeg's: bit-exact against `ffmpeg -vf select=eq(n,N),format=rgb24`."""
    rows = read_frames_csv(video, stream)
    t = rows[index]["pts_time"] - rows[0]["pts_time"]
    reader = VideoReader(DATA / video, stream_index=stream)
    for mode in ("played_at", "nearest"):
        frames = getattr(reader, f"get_frames_{mode}")([t])
        ref = _ref_frame(f"{video}.stream{stream}.frame{index:06d}.pt")
        assert frames.frames.shape == (1, *ref.shape)
        assert torch.equal(frames.frames[0], ref), f"{video} frame {index} ({mode})"
        assert frames.pts_s[0].item() == pytest.approx(t, abs=1e-6)


def _ffmpeg_rgb(ffmpeg: str, path, index: int, stream: int = 0, extra_vf: str = "") -> np.ndarray:
    vf = f"select=eq(n\\,{index}){extra_vf},format=rgb24"
    out = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-vf", vf, "-fps_mode", "passthrough",
         "-frames:v", "1", "-f", "image2pipe", "-vcodec", "ppm", "-"],
        check=True, capture_output=True,
    ).stdout
    # binary PPM: "P6\n<w> <h>\n255\n" + data
    parts = out.split(b"\n", 3)
    w, h = map(int, parts[1].split())
    return np.frombuffer(parts[3], dtype=np.uint8)[: w * h * 3].reshape(h, w, 3)


@pytest.mark.parametrize("video, index", [("cockatoo_vp9.webm", 150), ("test_non_zero_start.mp4", 7),
                                          ("nasa_13013_vfr.mp4", 170), ("unordered.mov", 2),
                                          ("bigbuckbunny.mp4", 100), ("cockatoo.mp4", 33)])
def test_rgb_equals_ffmpeg_cli_at_test_time(ffmpeg, video, index):
    rows = read_frames_csv(video)
    t = rows[index]["pts_time"] - rows[0]["pts_time"]
    got = VideoReader(DATA / video).get_frames_played_at([t]).frames[0].numpy()
    np.testing.assert_array_equal(got, _ffmpeg_rgb(ffmpeg, DATA / video, index))


def test_rotation_frames_come_out_upright(ffmpeg):
    reader = VideoReader(DATA / "nasa_13013_rotated.mp4")
    m = reader.metadata
    assert (m.coded_width, m.coded_height) == (480, 270)
    assert (m.width, m.height) == (270, 480)
    assert m.rotation_deg in (90, 270)
    rows = read_frames_csv("nasa_13013_rotated.mp4")
    for index in (0, 9):
        got = reader.get_frames_played_at([rows[index]["pts_time"] - rows[0]["pts_time"]]).frames[0].numpy()
        # the ffmpeg CLI autorotates by default
        np.testing.assert_array_equal(got, _ffmpeg_rgb(ffmpeg, DATA / "nasa_13013_rotated.mp4", index))


@pytest.mark.parametrize(
    "video, stream, codec, pix_fmt, size, fps",
    [
        ("nasa_13013.mp4", 3, "h264", "yuv420p", (480, 270), 30000 / 1001),
        ("nasa_13013.mp4", 0, "h264", "yuv420p", (320, 180), 25.0),
        ("nasa_13013_hdr.mp4", 0, "hevc", "yuv420p10le", (320, 180), 25.0),
        ("av1_video.mkv", 0, "av1", "yuv420p", (640, 360), 25.0),
        ("cockatoo_vp9.webm", 0, "vp9", "yuv420p", (1280, 720), 20.0),
        ("cockatoo.mp4", 0, "h264", "yuv444p", (1280, 720), 20.0),
        ("test_non_zero_start.mp4", 0, "h264", "yuv420p", (200, 112), 30.0),
    ],
)
def test_metadata_matches_ffprobe(video, stream, codec, pix_fmt, size, fps):
    m = VideoReader(DATA / video, stream_index=stream).metadata
    rows = read_frames_csv(video, stream)
    assert m.codec == codec and m.pixel_format == pix_fmt
    assert (m.width, m.height) == size
    assert m.average_fps == pytest.approx(fps, rel=1e-4)
    assert m.start_pts_s == pytest.approx(rows[0]["pts_time"], abs=1e-3)
    if m.num_frames_estimated:
        assert abs(m.num_frames - len(rows)) <= 2
    else:
        assert m.num_frames == len(rows)
    ref_keys = {round(r["pts_time"] - rows[0]["pts_time"], 3) for r in rows if r["key_frame"]}
    # keyframes from the container index are real keyframes
    assert {round(k, 3) for k in m.keyframe_pts_s} <= ref_keys
    if video.endswith(".mp4"):
        assert {round(k, 3) for k in m.keyframe_pts_s} == ref_keys
    assert not m.is_vfr


def test_default_stream_is_best_and_listed():
    m = VideoReader(DATA / "nasa_13013.mp4").metadata
    assert m.video_stream_indices == (0, 3)
    assert m.stream_index == 3  # FFmpeg's best: the larger rendition
    with pytest.raises(ValueError, match="stream_index 1 is not a video stream"):
        VideoReader(DATA / "nasa_13013.mp4", stream_index=1)


def test_vfr_detected():
    assert VideoReader(DATA / "nasa_13013_vfr.mp4").metadata.is_vfr


def test_frame_table_matches_ffprobe():
    for video in ("nasa_13013_vfr.mp4", "test_non_zero_start.mp4", "unordered.mov", "cockatoo_vp9.webm"):
        rows = read_frames_csv(video)
        pts, key = VideoReader(DATA / video).frame_table()
        np.testing.assert_allclose(pts, [r["pts_time"] - rows[0]["pts_time"] for r in rows], atol=1e-6)
        assert key.tolist() == [r["key_frame"] for r in rows]


def test_played_at_vs_nearest_semantics():
    rows = read_frames_csv("nasa_13013.mp4", 3)
    reader = VideoReader(DATA / "nasa_13013.mp4")
    dur = rows[1]["pts_time"]
    t = rows[100]["pts_time"] + 0.7 * dur  # 70 % into frame 100
    played = reader.get_frames_played_at([t])
    nearest = reader.get_frames_nearest([t])
    assert played.pts_s.item() == pytest.approx(rows[100]["pts_time"], abs=1e-6)
    assert nearest.pts_s.item() == pytest.approx(rows[101]["pts_time"], abs=1e-6)


def test_any_order_and_duplicates_return_in_request_order():
    rows = read_frames_csv("nasa_13013.mp4", 3)
    reader = VideoReader(DATA / "nasa_13013.mp4")
    idx = [300, 5, 300, 250, 0, 389, 5]
    out = reader.get_frames_played_at([rows[i]["pts_time"] for i in idx])
    np.testing.assert_allclose(out.pts_s.numpy(), [rows[i]["pts_time"] for i in idx], atol=1e-6)
    assert torch.equal(out.frames[0], out.frames[2]) and torch.equal(out.frames[1], out.frames[6])
    assert torch.equal(out.frames[1], _ref_frame("nasa_13013.mp4.stream3.frame000000.pt")) is False
    assert torch.equal(out.frames[4], _ref_frame("nasa_13013.mp4.stream3.frame000000.pt"))
    assert torch.equal(out.frames[5], _ref_frame("nasa_13013.mp4.stream3.frame000389.pt"))


def test_seek_plan_decodes_only_the_gop_work():
    """Targets in the second GOP must not decode the first one (keyframes at frames 0 and 240)."""
    rows = read_frames_csv("nasa_13013.mp4", 3)
    keys = [r["index"] for r in rows if r["key_frame"]]
    assert keys == [0, 240]
    # skip_nonref=False: every frame from the keyframe to the target is reconstructed
    reader = VideoReader(DATA / "nasa_13013.mp4", skip_nonref=False, gop_workers=1)
    out = reader.get_frames_played_at([rows[300]["pts_time"]])
    assert out.stats.decoded_frames == 300 - 240 + 1
    # several targets in one GOP share one forward pass, and a jump to a later GOP seeks
    reader = VideoReader(DATA / "nasa_13013.mp4", skip_nonref=False, gop_workers=1)
    out = reader.get_frames_played_at([rows[i]["pts_time"] for i in (10, 20, 200, 260, 270)])
    assert out.stats.decoded_frames == (200 + 1) + (270 - 240 + 1)
    assert out.stats.seeks == 2


def test_continues_forward_across_calls_without_reseeking():
    rows = read_frames_csv("nasa_13013.mp4", 3)
    reader = VideoReader(DATA / "nasa_13013.mp4", skip_nonref=False, gop_workers=1)
    reader.get_frames_played_at([rows[10]["pts_time"]])
    out = reader.get_frames_played_at([rows[20]["pts_time"]])
    assert out.stats.seeks == 0 and out.stats.decoded_frames == 10
    back = reader.get_frames_played_at([rows[5]["pts_time"]])
    assert back.stats.seeks == 1
    assert back.pts_s.item() == pytest.approx(rows[5]["pts_time"], abs=1e-6)


def test_non_zero_start_times_are_relative_to_first_frame():
    rows = read_frames_csv("test_non_zero_start.mp4")
    assert rows[0]["pts_time"] > 8.0
    reader = VideoReader(DATA / "test_non_zero_start.mp4")
    assert reader.metadata.start_pts_s == pytest.approx(rows[0]["pts_time"], abs=1e-3)
    out = reader.get_frames_played_at([0.0, rows[5]["pts_time"] - rows[0]["pts_time"]])
    np.testing.assert_allclose(out.pts_s.numpy(), [0.0, rows[5]["pts_time"] - rows[0]["pts_time"]], atol=1e-6)


def test_long_video_open_is_cheap(tmp_path, ffmpeg):
    """A 2-hour file: opening reads the header/index only, and a late seek decodes one GOP."""
    path = tmp_path / "two_hours.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=2", "-t", "7200",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-bf", "2", str(path)],
        check=True,
    )
    reader = VideoReader(path)
    m = reader.metadata
    assert m.duration_s == pytest.approx(7200, abs=1)
    assert m.num_frames == 14400 and not m.num_frames_estimated
    assert len(m.keyframe_pts_s) == 14400 // 50
    assert reader.total_stats.decoded_frames == 0
    out = reader.get_frames_played_at([7000.0])
    assert out.pts_s.item() == pytest.approx(7000.0)
    assert out.stats.decoded_frames <= 50


def test_threads_in_parallel_do_not_interfere():
    from concurrent.futures import ThreadPoolExecutor

    rows = read_frames_csv("nasa_13013.mp4", 3)
    ref = _ref_frame("nasa_13013.mp4.stream3.frame000010.pt")

    def work(_):
        r = VideoReader(DATA / "nasa_13013.mp4", threads=1)
        return r.get_frames_played_at([rows[10]["pts_time"]] * 3).frames

    with ThreadPoolExecutor(4) as ex:
        for data in ex.map(work, range(8)):
            assert all(torch.equal(d, ref) for d in data)


@pytest.mark.parametrize("name, has_disposable", [("nasa_13013.mp4", True), ("cockatoo.mp4", True),
                                                  ("nasa_13013_hdr.mp4", True), ("cockatoo_vp9.webm", False)])
def test_skip_nonref_returns_identical_frames_with_less_work(name, has_disposable):
    """Dropping disposable frames far from the targets must not change any returned frame, within a
    call or across calls on one reader (frames already in the decoder's pipeline from an earlier call
    with skipping allowed force a re-seek when they become targets)."""
    fast = VideoReader(DATA / name, gop_workers=1)
    slow = VideoReader(DATA / name, skip_nonref=False, gop_workers=1)
    fps, n = fast.metadata.average_fps, fast.metadata.num_frames
    rng = np.random.default_rng(7)
    calls = [[0.5 * i / fps for i in range(0, min(n, 90), 9)]]  # dense then sparse, forward
    calls += [[i / fps for i in sorted(rng.choice(n, size=4, replace=False))] for _ in range(6)]
    calls += [[10 / fps], [13 / fps], [16 / fps], [(n - 3) / fps]]  # near-consecutive calls
    work_fast = work_slow = 0
    for i, times in enumerate(calls):
        mode = "get_frames_nearest" if i % 2 else "get_frames_played_at"
        a = getattr(fast, mode)(times)
        b = getattr(slow, mode)(times)
        np.testing.assert_array_equal(a.pts_s.numpy(), b.pts_s.numpy())
        assert torch.equal(a.frames, b.frames), f"{name}: frames differ at times {times}"
        work_fast += a.stats.decoded_frames
        work_slow += b.stats.decoded_frames
    assert fast.total_stats.skip_nonref_packets > 0
    if has_disposable:  # H.264/HEVC with B-frames; this VP9 stream refreshes a reference every frame
        assert work_fast < work_slow, (work_fast, work_slow)
    else:
        assert work_fast == work_slow


def test_decodes_through_a_keyframe_a_few_frames_ahead_instead_of_seeking():
    """nasa_13013 has keyframes at frames 0 and 240. From frame 238, frame 241 is reached by
    decoding 3 frames when frame threading is on (a seek would discard about one in-flight frame per
    thread); with one thread the planner seeks to the later GOP as before."""
    rows = read_frames_csv("nasa_13013.mp4", 3)
    times = [rows[238]["pts_time"], rows[241]["pts_time"]]
    threaded = VideoReader(DATA / "nasa_13013.mp4", threads=2, skip_nonref=False, gop_workers=1)
    single = VideoReader(DATA / "nasa_13013.mp4", threads=1, skip_nonref=False, gop_workers=1)
    a, b = threaded.get_frames_nearest(times), single.get_frames_nearest(times)
    assert torch.equal(a.frames, b.frames)
    np.testing.assert_allclose(a.pts_s.numpy(), [t - rows[0]["pts_time"] for t in times], atol=1e-6)
    assert a.stats.seeks == 1 and a.stats.decoded_frames == 242
    assert b.stats.seeks == 2 and b.stats.decoded_frames == 239 + 2


@pytest.mark.parametrize("name", ["nasa_13013.mp4", "cockatoo.mp4", "nasa_13013_hdr.mp4", "cockatoo_vp9.webm",
                                  "nasa_13013_vfr.mp4", "test_non_zero_start.mp4"])
def test_gop_parallel_decoding_returns_the_serial_frames(name):
    """Requests spanning several GOPs are split across extra decoders; every frame, pts and flag must
    equal the single-decoder result, within a call and across calls on one reader."""
    par = VideoReader(DATA / name, gop_workers=2)
    ser = VideoReader(DATA / name, gop_workers=1)
    m = par.metadata
    rng = np.random.default_rng(3)
    calls = [list(np.linspace(0, m.end_s - 1e-3, 24)), list(rng.uniform(0, m.end_s, 7)),
             list(np.linspace(0.3 * m.end_s, 0.6 * m.end_s, 16)), [m.end_s * 0.9, 0.0, m.end_s * 0.5]]
    used = 0
    for i, times in enumerate(calls):
        mode = "get_frames_nearest" if i % 2 else "get_frames_played_at"
        a, b = getattr(par, mode)(times, size=(56, 84)), getattr(ser, mode)(times, size=(56, 84))
        assert torch.equal(a.pts_s, b.pts_s) and torch.equal(a.keyframe, b.keyframe)
        assert not (a.corrupt | b.corrupt).any()
        assert torch.equal(a.frames, b.frames), f"{name}: call {i}"
        assert b.stats.gop_workers == 1
        used = max(used, a.stats.gop_workers)
    if len(m.keyframe_pts_s) >= 2:
        assert used == 2  # the first call spans every GOP
    assert par.total_stats.decoded_frames >= 1


def test_gop_workers_is_validated():
    for bad in (0, -1, 65, 1.5, True, "2"):
        with pytest.raises(ValueError, match="gop_workers"):
            VideoReader(DATA / "nasa_13013.mp4", gop_workers=bad)
