"""Shared test fixtures and the CUDA marker policy (style.md §9).

Tests marked ``cuda`` are skipped without a GPU unless ``EVA_FAST_FAIL_WITHOUT_CUDA=1`` (set on
GPU jobs so a broken runner fails instead of silently skipping).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REFS = DATA / "refs"


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch import problems surface elsewhere
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    if os.environ.get("EVA_FAST_FAIL_WITHOUT_CUDA") == "1":
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (set EVA_FAST_FAIL_WITHOUT_CUDA=1 to fail instead)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def read_frames_csv(video: str, stream: int = 0) -> list[dict]:
    """Rows of ``refs/frames/<video>.stream<stream>.frames.csv`` (ffprobe's frame list):
    index, pts, pts_time (absolute seconds), duration_time, key_frame, pict_type.

    ``pts_time`` is computed exactly as ``pts * time_base`` (the header's time base) rather than
    read from ffprobe's 6-decimal text, which can lie up to half a microsecond before the frame's
    real pts (and ``get_frames_played_at`` of a time before a pts correctly gives the previous frame).
    """
    path = REFS / "frames" / f"{video}.stream{stream}.frames.csv"
    with open(path) as f:
        lines = f.readlines()
    header = " ".join(line for line in lines if line.startswith("#"))
    rows = [line for line in lines if not line.startswith("#")]
    tb = None
    for part in header.replace(";", " ").split():
        if part.startswith("time_base="):
            num, den = part.split("=", 1)[1].split("/")
            tb = (int(num), int(den))
    out = []
    for r in csv.DictReader(rows):
        exact = tb is not None and r["pts"] not in ("", "N/A")
        out.append(
            {
                "index": int(r["index"]),
                "pts_time": int(r["pts"]) * tb[0] / tb[1] if exact else float(r["pts_time"]),
                "duration_time": float(r["duration_time"]) if r["duration_time"] not in ("", "N/A") else None,
                "key_frame": r["key_frame"] == "1",
            }
        )
    return out


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def _cli_tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"the {name} command line is required for the reference tests (scripts/setup.sh installs it)")
    return exe


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return _cli_tool("ffmpeg")


@pytest.fixture(scope="session")
def ffprobe() -> str:
    return _cli_tool("ffprobe")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Qwen2.5-VL checkpoint folder (real class, real Qwen tokenizer and chat
    template), built once per session; see ``tests/_tiny_qwen.py``."""
    from tests._tiny_qwen import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny_qwen25vl"))
