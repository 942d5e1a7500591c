"""eva_fast.vision.pack_qwen25vl / PackedVisual: backend choice, fallback logging, index tensors."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

import eva_fast.vision._pack as pack_mod
from eva_fast.kernels.reference import pack_qwen25vl_reference, vision_position_ids, vision_window_index
from eva_fast.vision import PackedVisual, pack_qwen25vl

from .conftest import decode_frames


def test_cpu_default_is_torch_and_exact():
    frames = decode_frames("nasa_13013.mp4", 252, 476, (0.5, 1.0))
    packed = pack_qwen25vl(frames)
    assert packed.backend == "torch" and packed.fallback is None
    ref, grid = pack_qwen25vl_reference(frames)
    assert torch.equal(packed.pixel_values, ref) and torch.equal(packed.image_grid_thw, grid)
    assert packed.tokens_per_image == (9 * 17, 9 * 17) and packed.num_tokens == 306
    assert packed.num_frames == 2


def test_index_tensors_and_kwargs():
    a = torch.randint(0, 256, (2, 56, 84, 3), dtype=torch.uint8)
    b = torch.randint(0, 256, (1, 252, 140, 3), dtype=torch.uint8)
    packed = pack_qwen25vl([a, b])
    grid = torch.tensor([[1, 4, 6], [1, 4, 6], [1, 18, 10]])
    assert torch.equal(packed.image_grid_thw, grid)
    assert packed.tokens_per_image == (6, 6, 45)
    assert torch.equal(packed.vision_position_ids, vision_position_ids(grid))
    wi, cu = vision_window_index(grid)
    assert torch.equal(packed.window_index, wi) and torch.equal(packed.cu_window_seqlens, cu)
    assert packed.cu_seqlens.tolist() == [0, 24, 48, 228]
    assert set(packed.vision_kwargs()) == {"position_ids", "cu_seqlens", "window_index", "cu_window_seqlens"}
    assert set(packed.model_inputs()) == {"pixel_values", "image_grid_thw"}


def test_frozen_and_repr_prints_shapes():
    packed = pack_qwen25vl(torch.zeros(1, 56, 56, 3, dtype=torch.uint8), dtype=torch.bfloat16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        packed.backend = "triton"  # type: ignore[misc]
    r = repr(packed)
    assert "[16, 1176]" in r and "torch.bfloat16" in r and "num_tokens=4" in r
    assert len(r) < 300


def test_accepts_framebatch_like_objects():
    frames = torch.randint(0, 256, (2, 56, 56, 3), dtype=torch.uint8)

    class Holder:
        def __init__(self, t):
            self.frames = t

    assert torch.equal(pack_qwen25vl(Holder(frames)).pixel_values, pack_qwen25vl(frames).pixel_values)


def test_bad_backend_and_inputs():
    frames = torch.zeros(1, 56, 56, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; allowed: \('torch', 'triton'\)"):
        pack_qwen25vl(frames, backend="cuda")
    with pytest.raises(TypeError, match="must be a uint8"):
        pack_qwen25vl("frames.mp4")
    with pytest.raises(ValueError, match="multiples of 28"):
        pack_qwen25vl(torch.zeros(1, 60, 56, 3, dtype=torch.uint8))


def test_explicit_triton_on_cpu_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(pack_mod, "triton_available", lambda: True)
    with pytest.raises(ValueError, match="needs CUDA frames"):
        pack_qwen25vl(torch.zeros(1, 56, 56, 3, dtype=torch.uint8), backend="triton")
    monkeypatch.setattr(pack_mod, "triton_available", lambda: False)
    with pytest.raises(ImportError, match="pip install triton"):
        pack_qwen25vl(torch.zeros(1, 56, 56, 3, dtype=torch.uint8), backend="triton")


def test_cuda_without_triton_falls_back_with_a_log(monkeypatch, caplog):
    monkeypatch.setattr(pack_mod, "triton_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="eva_fast.vision"):
        backend, reason = pack_mod._resolve_backend(None, torch.device("cuda"))
    assert backend == "torch" and "Triton is not importable" in reason
    assert any("falling back" in r.message for r in caplog.records)
    monkeypatch.setattr(pack_mod, "triton_available", lambda: True)
    assert pack_mod._resolve_backend(None, torch.device("cuda")) == ("triton", None)
    assert pack_mod._resolve_backend(None, torch.device("cpu")) == ("torch", None)


def test_packed_visual_validates():
    with pytest.raises(ValueError, match="pixel_values must be"):
        PackedVisual(torch.zeros(4, 588), torch.tensor([[1, 2, 2]]), (1,), "torch")
    with pytest.raises(ValueError, match="do not match"):
        PackedVisual(torch.zeros(8, 1176), torch.tensor([[1, 2, 2]]), (1,), "torch")
