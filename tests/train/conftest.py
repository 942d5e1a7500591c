"""Fixtures for the KTO and data-construction tests: the scripted OpenAI-compatible server process
(``scripted_server`` of ``tests/agent/conftest.py``), real-video trajectory records made by the agent loop with
scripted replies, and TRL's CUDA layout of its fused LM head on CPU."""

from __future__ import annotations

import json
import os

import pytest

from tests.agent.conftest import scripted_server  # noqa: F401  (the agent tests' server fixture)
from tests.conftest import DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

VIDEO = str(DATA / "nasa_13013.mp4")
Q = "Is it Earth? A. yes B. no"


def tool_call(start, end, n, resize) -> str:
    """A ``frame_select`` call block as EVA's model writes it."""
    args = {"start_time": start, "end_time": end, "nframes": n, "resize": resize}
    return "<tool_call>" + json.dumps({"tool": "frame_select", "arguments": args}) + "</tool_call>"


def run_scripted(replies, video: str = VIDEO, question: str = Q, **config):
    """``(trajectory, frames)``: the agent loop on a real video with scripted replies, and the
    frames the agent actually fed its backend (uint8 ``[H, W, 3]`` tensors, in order)."""
    from eva_fast.agent import AgentConfig, AgentLoop
    from eva_fast.agent._scripted import ScriptedBackend

    backend = ScriptedBackend(list(replies))
    traj = AgentLoop(backend, AgentConfig(**config)).run_sync(video, question)
    last = backend.requests[-1] if backend.requests else []
    frames = [p.batch.frames[p.index] for m in last for p in m.images()]
    return traj, frames


@pytest.fixture
def cuda_layout_lm_head(monkeypatch):
    """TRL's fused LM head scores only the labelled positions on CUDA but every position elsewhere
    (``trl.trainer.utils``: ``compact = _use_triton(device)``, a Neuron-compilation concern); the
    values are the same either way (masked positions are 0). The KTO tests take the CUDA layout on
    CPU: it is the path GPU training runs, and ~4x faster with the tiny model's 152k-token vocabulary.
    (The tile folding itself stays TRL's torch implementation on CPU.)"""
    import trl.trainer.utils as tu

    monkeypatch.setattr(tu, "_use_triton", lambda device: True, raising=True)
