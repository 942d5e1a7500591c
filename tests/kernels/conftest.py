"""Fixtures and helpers for the packing tests (real decoded frames, transformers' processor).

CUDA gating is the root conftest's ``cuda`` marker policy.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / "data"


@functools.cache
def decode_frames(name: str, height: int, width: int, seconds: tuple[float, ...] = (0.5,)) -> torch.Tensor:
    """uint8 [T, H, W, 3] frames of tests/data/<name>, decoded and resized by eva_fast's own decoder."""
    from eva_fast.video import VideoReader

    path = DATA / name
    if not path.exists():
        pytest.fail(f"test video {path} is missing (tests/data must ship it)")
    return VideoReader(str(path)).get_frames_played_at(list(seconds), size=(height, width)).frames.contiguous()


@pytest.fixture(scope="session")
def hf_pil_processor():
    """transformers' PIL Qwen2-VL processor with the checkpoint's max_pixels."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12_845_056)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
