"""Fixtures for the training tests: real-video EVA trajectories made by the agent loop (scripted
model turns), their training records, a way to make the tiny model say given replies, the scripted
OpenAI-compatible server process (``scripted_server`` of ``tests/agent/conftest.py``), TRL's CUDA layout of its
fused LM head on CPU, and ``launch_two_processes`` (a CLI command in two CPU processes under torchrun,
the multi-GPU code path on gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.agent.conftest import scripted_server  # noqa: F401  (the agent tests' server fixture)
from tests.conftest import DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

pytest.importorskip("trl", reason="training tests need trl==1.16.0 (scripts/requirements-dev.txt)")


def call(start, end, n, resize):
    args = {"start_time": start, "end_time": end, "nframes": n, "resize": resize}
    return "<tool_call>" + json.dumps({"tool": "frame_select", "arguments": args}) + "</tool_call>"


#: (video, question, ground truth, replies): short EVA-style episodes (summary, plan, action,
#: reflection) with two tool turns each, on four real videos (CFR H.264 at two sizes, HEVC, VFR).
EPISODES = [
    ("nasa_13013.mp4", "What is shown? A. Earth B. Mars", "A", [
        "Summary: nothing seen yet. Plan: survey the video. " + call(0, 12, 3, 0.2),
        "Reflection: a planet is visible. Plan: zoom in. " + call(4, 8, 2, 0.3),
        "The frames show Earth. <answer>A</answer>",
    ]),
    ("bigbuckbunny.mp4", "Which animal appears? A. cat B. rabbit", "B", [
        "Summary: no frames yet. Plan: look at the start. " + call(0, 5, 2, 0.1),
        "Reflection: an animal is there. Plan: look closer. " + call(1, 3, 2, 0.15),
        "It is a rabbit. <answer>B</answer>",
    ]),
    ("h265_video.mp4", "What color dominates? A. gray B. red", "A", [
        "Summary: nothing yet. Plan: sample the clip. " + call(0, 1, 2, 1.0),
        "Reflection: mostly flat. Plan: check the end. " + call(0.5, 1, 1, 1.0),
        "Gray dominates. <answer>A</answer>",
    ]),
    ("nasa_13013_vfr.mp4", "Is the camera moving? A. yes B. no", "B", [
        "Summary: nothing yet. Plan: survey. " + call(0, 12, 3, 0.2),
        "Reflection: the view is steady. Plan: confirm. " + call(6, 9, 2, 0.2),
        "It is not moving. <answer>B</answer>",
    ]),
]


def run_episode(video: str, question: str, replies: list[str], backend=None):
    from eva_fast.agent import AgentConfig, AgentLoop, get_backend

    backend = backend or get_backend("scripted", replies=replies)
    return AgentLoop(backend, AgentConfig()).run_sync(str(DATA / video), question)


@pytest.fixture(scope="session")
def eva_trajectories():
    """The four scripted episodes as agent trajectories (each answers right after two tool turns)."""
    out = []
    for video, question, gt, replies in EPISODES:
        traj = run_episode(video, question, replies)
        assert traj.stop_reason == "answer_found" and traj.answer == gt, traj
        out.append((traj, gt))
    return out


@pytest.fixture(scope="session")
def eva_records(eva_trajectories):
    from eva_fast.train import record_from_trajectory

    return [record_from_trajectory(t, gt=gt, label=True, source="test") for t, gt in eva_trajectories]


@pytest.fixture(scope="session")
def eva_records_file(eva_records, tmp_path_factory):
    from eva_fast.train import write_records

    path = tmp_path_factory.mktemp("records") / "sft.jsonl"
    write_records(path, eva_records)
    return path


@pytest.fixture(scope="session")
def renderer(tiny_qwen_dir):
    from eva_fast.agent import ChatRenderer

    return ChatRenderer.from_pretrained(tiny_qwen_dir)


class ForcedReplies:
    """Makes a transformers backend's model *generate* given replies: a logits processor appended
    after the backend's own masks every token but the next one of the reply (greedy then picks it),
    so the backend's real generate/extend/record path runs on known text. Each row of a call takes
    the next reply of the queue (a batched tick of k episodes takes k, in row order). Captures
    every row's prompt (its ids without the left padding)."""

    def __init__(self, backend, replies: list[str]) -> None:
        self.backend = backend
        tok = backend.tokenizer
        self.queue = [tok(r, add_special_tokens=False)["input_ids"] + [backend.renderer.end_of_turn_id] for r in replies]
        self.prompts: list[list[int]] = []
        self.generated: list[list[int]] = []
        original = backend.model.generate

        def generate(**kw):
            from eva_fast.agent._forcing import ForceTokens

            ids, mask = kw["input_ids"], kw["attention_mask"]
            forced = [self.queue.pop(0) for _ in range(ids.shape[0])]
            self.prompts.extend(row[m.bool()].tolist() for row, m in zip(ids, mask))
            self.generated.extend(forced)
            kw["logits_processor"] = list(kw.get("logits_processor") or []) + [ForceTokens(forced, ids.shape[1])]
            kw["max_new_tokens"] = max(len(f) for f in forced)
            return original(**kw)

        backend.model.generate = generate
        self._original = original

    def restore(self) -> None:
        self.backend.model.generate = self._original


@pytest.fixture(scope="module")
def tiny_backend(tiny_qwen_dir):
    from eva_fast.agent import get_backend

    return get_backend("transformers", model_path=tiny_qwen_dir, device="cpu")


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


def launch_two_processes(*cli_args: str, timeout: int = 900, module: str = "eva_fast.cli",
                         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m <module> *cli_args`` (default the ``eva-fast`` CLI): two
    training processes on gloo (the config's ``use_cpu: true`` makes accelerate's state MULTI_CPU),
    the same collectives as a multi-GPU run; one thread each (2-core CI). ``accelerate launch --cpu
    --num_processes 2`` would start a single process. Past ``timeout`` seconds torchrun and its
    workers (hung in a collective or not) are killed and ``subprocess.TimeoutExpired`` raised."""
    import signal

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", module, *cli_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts each worker in a session of its own: kill the whole tree, found before
        # torchrun dies (its orphans would be reparented and hang on in their collective)
        for pid in [*_descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), deepest first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []

    def walk(p: int) -> None:
        for c in children.get(p, []):
            walk(c)
            out.append(c)

    walk(pid)
    return out


def launch_failure(proc: subprocess.CompletedProcess) -> str:
    """The lines that say why a ``launch_two_processes`` run failed (each rank's error first)."""
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln or "Error:" in ln]
    return "\n".join(errors[:20]) + "\n...\n" + proc.stderr[-3000:]

