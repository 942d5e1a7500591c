"""The openai backend against a real OpenAI-compatible HTTP server process on localhost
(``_openai_server.py``): exact request content, lossless frames, retries, timeouts, 400s, file://
URLs, bounded concurrency."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
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
