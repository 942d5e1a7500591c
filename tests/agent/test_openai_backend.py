"""The openai backend against a real OpenAI-compatible HTTP server process on localhost
(``_openai_server.py``): exact request content, lossless frames, retries, timeouts, 400s, file://
URLs, bounded concurrency."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from eva_fast.agent import AgentConfig, AgentLoop, get_backend
from eva_fast.agent._protocol import SYSTEM_PROMPT
from eva_fast.video import select_frames
from tests.conftest import DATA

VIDEO = str(DATA / "nasa_13013.mp4")
Q = "What is shown? A. Earth B. Mars"


def call(start, end, n, resize):
    return json.dumps({"tool": "frame_select", "arguments": {"start_time": start, "end_time": end, "nframes": n, "resize": resize}})


TWO_CALLS = f"<tool_call>{call(0, 13, 3, 0.5)}\n{call(4, 6, 2, 0.25)}</tool_call>"


def _decode(url: str) -> np.ndarray:
    head, data = url.split(",", 1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def test_requests_carry_the_exact_turns_and_lossless_frames(scripted_server):
    srv = scripted_server({"replies": [TWO_CALLS, "<answer>A</answer>"]})
    backend = get_backend("openai", base_url=srv.base_url, max_retries=0)
    traj = AgentLoop(backend).run_sync(VIDEO, Q)
    assert (traj.answer, traj.stop_reason, traj.model) == ("A", "answer_found", "scripted-model")
    reqs = [r["body"] for r in srv.requests()]
    assert len(reqs) == 2 and reqs[0]["model"] == "scripted-model"
    assert reqs[0]["temperature"] == 0.0 and reqs[0]["max_tokens"] == 2048
    assert reqs[0]["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Video Length: 12 seconds. Original video resolution: 270p. " + Q},
    ]
    assert reqs[1]["messages"][2] == {"role": "assistant", "content": TWO_CALLS}
    tool = reqs[1]["messages"][3]
    assert tool["role"] == "tool"
    texts = [p["text"] if p["type"] == "text" else "<img>" for p in tool["content"]]
    assert texts == [
        "<tool_response>", "Frame 0 at [00:00]: ", "<img>", "\nFrame 1 at [00:06]: ", "<img>",
        "\nFrame 2 at [00:13]: ", "<img>", "\nFrame 3 at [00:04]: ", "<img>", "\nFrame 4 at [00:06]: ", "<img>",
        "\nIf more information is needed, call the frame selection tool again.\n\nQuestion: " + Q + "</tool_response>",
    ]
    urls = [p["image_url"]["url"] for p in tool["content"] if p["type"] == "image_url"]
    assert len(urls) == 5 and all(u.startswith("data:image/png;base64,") for u in urls)
    ref = [*select_frames(VIDEO, 0, 13, 3, 0.5).frames, *select_frames(VIDEO, 4, 6, 2, 0.25).frames]
    for u, r in zip(urls, ref):
        assert np.array_equal(_decode(u), r.numpy())  # PNG is lossless: the tool's exact pixels
    # usage: the server's numbers for the last round
    assert traj.total_tokens == traj.turns[-1].prompt_tokens + traj.turns[-1].completion_tokens > 0


def test_retries_then_succeeds(scripted_server):
    srv = scripted_server({"replies": ["<answer>B</answer>"], "fail_first": 2})
    traj = AgentLoop(get_backend("openai", base_url=srv.base_url, model="m", max_retries=3)).run_sync(VIDEO, Q)
    assert traj.answer == "B" and len(srv.requests()) == 3


def test_timeout_and_bad_request_become_stop_reasons(scripted_server):
    slow = scripted_server({"replies": [{"text": "<answer>B</answer>", "delay_s": 3}]})
    traj = AgentLoop(get_backend("openai", base_url=slow.base_url, model="m", timeout_s=0.5, max_retries=0)).run_sync(VIDEO, Q)
    assert traj.stop_reason == "exception" and traj.error.startswith("APITimeoutError"), (traj.stop_reason, traj.error)
    bad = scripted_server({"replies": [{"text": "", "status": 400}]})
    traj = AgentLoop(get_backend("openai", base_url=bad.base_url, model="m", max_retries=0)).run_sync(VIDEO, Q)
    assert traj.stop_reason == "openai_bad_request" and "400" in traj.error


def test_file_urls_and_jpeg(scripted_server, tmp_path):
    srv = scripted_server({"replies": [f"<tool_call>{call(0, 13, 2, 0.5)}</tool_call>", "<answer>A</answer>"]})
    backend = get_backend("openai", base_url=srv.base_url, model="m", image_format="file", media_root=tmp_path)
    traj = AgentLoop(backend).run_sync(VIDEO, Q)
    assert traj.answer == "A"
    files = srv.requests()[1]["files"]
    assert len(files) == 2 and all(exists and size > 0 and path.startswith(str(tmp_path)) for path, exists, size in files)
    assert not any(p.name.startswith("eva_fast_frames_") for p in tmp_path.iterdir())  # cleaned up after the run

    srv2 = scripted_server({"replies": [f"<tool_call>{call(0, 13, 1, 0.5)}</tool_call>", "<answer>A</answer>"]})
    AgentLoop(get_backend("openai", base_url=srv2.base_url, model="m", image_format="jpeg")).run_sync(VIDEO, Q)
    tool = srv2.requests()[1]["body"]["messages"][3]
    url = next(p["image_url"]["url"] for p in tool["content"] if p["type"] == "image_url")
    ref = select_frames(VIDEO, 0, 13, 1, 0.5).frames[0].numpy().astype(float)
    assert url.startswith("data:image/jpeg;base64,") and np.abs(_decode(url) - ref).mean() < 4


def test_concurrency_is_bounded(scripted_server):
    srv = scripted_server({"replies": ["<answer>C</answer>"], "delay_s": 0.3})
    backend = get_backend("openai", base_url=srv.base_url, model="m", max_concurrency=2)
    loop = AgentLoop(backend, AgentConfig())

    async def many():
        return await asyncio.gather(*(loop.run(VIDEO, Q) for _ in range(6)))

    trajs = asyncio.run(many())
    assert all(t.answer == "C" for t in trajs)
    in_flight = [r["in_flight"] for r in srv.requests()]
    assert len(in_flight) == 6 and max(in_flight) == 2


# --------------------------------------------------------------------------- issue #17: encode once, encode fast


def _received_images(request: dict) -> list[str]:
    return [p["image_url"]["url"] for m in request["messages"] if isinstance(m.get("content"), list)
            for p in m["content"] if p["type"] == "image_url"]


def _decode_any(url: str) -> np.ndarray:
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return np.asarray(Image.open(unquote(urlparse(url).path)).convert("RGB"))
    return _decode(url)


def _old_png(frame: np.ndarray) -> np.ndarray:
    """What the server decoded before #17: Pillow's default PNG of the frame."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


# turn 0 fetches 4 frames; turn 1 repeats that call (same frames, same size) and adds 2 new ones
REPEAT = [f"<tool_call>{call(0, 13, 4, 0.5)}</tool_call>",
          f"<tool_call>{call(0, 13, 4, 0.5)}\n{call(4, 6, 2, 0.25)}</tool_call>",
          "<answer>A</answer>"]
REPEAT_REF = [(0, 13, 4, 0.5), (0, 13, 4, 0.5), (4, 6, 2, 0.25)]


@pytest.mark.parametrize("fmt, mime", [("png", "image/png"), ("ppm", "image/x-portable-pixmap")])
def test_server_receives_todays_pixels(scripted_server, fmt, mime):
    """Every image the server decodes is the frame tool's exact pixels, identical to what it decoded
    from the old default PNG."""
    srv = scripted_server({"replies": REPEAT})
    traj = AgentLoop(get_backend("openai", base_url=srv.base_url, model="m", image_format=fmt)).run_sync(VIDEO, Q)
    assert traj.answer == "A"
    urls = _received_images(srv.requests()[-1]["body"])
    ref = [f.numpy() for a in REPEAT_REF for f in select_frames(VIDEO, *a).frames]
    assert len(urls) == len(ref) == 10
    assert all(u.startswith(f"data:{mime};base64,") for u in urls)
    for u, r in zip(urls, ref):
        got = _decode(u)
        assert got.shape == r.shape and np.array_equal(got, r) and np.array_equal(got, _old_png(r))


def test_each_frame_is_encoded_once_per_trajectory(scripted_server, monkeypatch):
    import eva_fast.agent._openai as oa

    encoded = []
    real = oa.encode_frame
    monkeypatch.setattr(oa, "encode_frame", lambda part, *a, **k: encoded.append(part) or real(part, *a, **k))
    srv = scripted_server({"replies": REPEAT})
    traj = AgentLoop(get_backend("openai", base_url=srv.base_url, model="m")).run_sync(VIDEO, Q)
    assert traj.answer == "A" and traj.num_rounds == 3
    # 10 frames in the conversation, 6 distinct (turn 1 repeats turn 0's call): 6 encodes
    assert len(encoded) == 6
    assert len({(p.batch.plan.frame_indices[p.index], p.size) for p in encoded}) == 6
    reqs = [_received_images(r["body"]) for r in srv.requests()]
    assert [len(u) for u in reqs] == [0, 4, 10]
    assert reqs[2][:4] == reqs[1] and reqs[2][4:8] == reqs[1]  # earlier and repeated frames: the same URLs
    # encode CPU is attributed to the turn whose calls fetched the frames; nothing re-encoded later
    assert traj.turns[0].timings_ms["encode"] > 0 and traj.turns[1].timings_ms["encode"] > 0
    assert "encode" not in traj.turns[2].timings_ms


def test_encoding_runs_on_a_bounded_pool_off_the_event_loop(scripted_server, monkeypatch):
    import threading
    import time

    import eva_fast.agent._openai as oa

    state = {"now": 0, "max": 0, "threads": set()}
    lock = threading.Lock()
    real = oa.encode_frame

    def slow_encode(part, *a, **k):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            state["threads"].add(threading.current_thread().name)
        time.sleep(0.05)
        try:
            return real(part, *a, **k)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(oa, "encode_frame", slow_encode)
    srv = scripted_server({"replies": [f"<tool_call>{call(0, 13, 8, 0.5)}</tool_call>", "<answer>A</answer>"]})
    backend = get_backend("openai", base_url=srv.base_url, model="m", encode_workers=2)
    ticks_while_encoding = []

    async def ticker(stop: asyncio.Event):
        while not stop.is_set():
            await asyncio.sleep(0.005)
            if state["now"] > 0:
                ticks_while_encoding.append(time.perf_counter())

    async def main():
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        traj = await AgentLoop(backend).run(VIDEO, Q)
        stop.set()
        await tick
        await backend.aclose()
        return traj

    traj = asyncio.run(main())
    assert traj.answer == "A"
    assert state["max"] == 2  # 8 frames of 50 ms on 2 threads: in parallel, never more than 2
    assert state["threads"] and all(n.startswith("eva_fast_encode") for n in state["threads"])
    # the event loop kept running while 400 ms of encoding happened (it would not tick once if the
    # encoding ran on it)
    assert len(ticks_while_encoding) >= 3


def test_file_urls_in_ppm(scripted_server, tmp_path):
    srv = scripted_server({"replies": REPEAT})
    media = tmp_path / "media"
    media.mkdir()
    backend = get_backend("openai", base_url=srv.base_url, model="m", image_format="file", file_format="ppm",
                          media_root=media, keep_files=True)
    traj = AgentLoop(backend).run_sync(VIDEO, Q)
    assert traj.answer == "A"
    last = srv.requests()[-1]
    urls = _received_images(last["body"])
    assert all(u.startswith("file://") and u.endswith(".ppm") for u in urls)
    assert len(set(urls)) == 6 and len(list(next(media.iterdir()).iterdir())) == 6  # one file per distinct frame
    ref = [f.numpy() for a in REPEAT_REF for f in select_frames(VIDEO, *a).frames]
    for u, r in zip(urls, ref):
        assert np.array_equal(_decode_any(u), r)


@pytest.mark.parametrize("fmt, level", [("png", 0), ("png", 1), ("png", 9), ("ppm", 1)])
def test_encode_frame_is_lossless(fmt, level):
    from eva_fast.agent._openai import encode_frame

    frame = select_frames(VIDEO, 3, 3, 1, 1.0).frames[0].numpy()
    data = encode_frame(frame, fmt, png_compress_level=level)
    h, w, _ = frame.shape
    if fmt == "ppm":
        header = b"P6\n%d %d\n255\n" % (w, h)
        assert data.startswith(header) and len(data) == len(header) + h * w * 3
    else:
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), frame)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (28, 56), (57, 31)])
def test_png_writer_against_independent_decoders(shape, tmp_path):
    """``encode_png`` (own container around zlib) decodes to the exact pixels in Pillow and in
    FFmpeg's PNG decoder (the ffmpeg CLI), both of which check the chunks' CRCs; noise, flat and
    wrap-around rows."""
    import shutil
    import subprocess

    from eva_fast.agent._openai import encode_png

    ffmpeg = shutil.which("ffmpeg")
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8), np.full((h, w, 3), 255, np.uint8)]
    wrap = np.zeros((h, w, 3), np.uint8)
    wrap[1::2] = 255  # Up-filter differences of -255 and +255 wrap modulo 256
    frames.append(wrap)
    for i, frame in enumerate(frames):
        data = encode_png(frame)
        img = Image.open(io.BytesIO(data))
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (w, h))
        assert np.array_equal(np.asarray(img), frame)
        if ffmpeg:
            path = tmp_path / f"{i}.png"
            path.write_bytes(data)
            raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                                 capture_output=True, check=True).stdout
            assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(h, w, 3), frame)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), np.uint8))


def test_bad_encoding_settings_are_refused(tmp_path):
    from eva_fast.agent._openai import encode_frame

    with pytest.raises(ValueError, match="png_compress_level"):
        get_backend("openai", png_compress_level=10)
    with pytest.raises(ValueError, match="encode_workers"):
        get_backend("openai", encode_workers=0)
    with pytest.raises(ValueError, match="file_format"):
        get_backend("openai", image_format="file", media_root=tmp_path, file_format="bmp")
    with pytest.raises(ValueError, match="image_format.*'webp'"):
        get_backend("openai", image_format="webp")
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\].*float32"):
        encode_frame(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="image_format"):
        encode_frame(np.zeros((4, 4, 3), np.uint8), "gif")
