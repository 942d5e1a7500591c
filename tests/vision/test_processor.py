"""EvaQwen2VLImageProcessor as a drop-in for transformers' Qwen2VLImageProcessor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_processing_base import ImageProcessingMixin

from eva_fast.vision import EvaQwen2VLImageProcessor

from .conftest import decode_frames


@pytest.fixture(scope="module")
def eva():
    return EvaQwen2VLImageProcessor()


def test_attributes_processors_read(eva):
    assert isinstance(eva, ImageProcessingMixin)
    assert (eva.patch_size, eva.temporal_patch_size, eva.merge_size) == (14, 2, 2)
    assert (eva.min_pixels, eva.max_pixels) == (3136, 12_845_056)
    assert eva.size == {"shortest_edge": 3136, "longest_edge": 12_845_056}
    assert eva.image_mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert eva.image_std == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert eva.model_input_names == ["pixel_values", "image_grid_thw"]


@pytest.mark.parametrize("kind", ["torch", "numpy", "pil", "torch-batch"])
def test_equals_transformers_on_aligned_real_frames(kind, eva, hf_pil_processor):
    frames = torch.cat(
        [decode_frames("bigbuckbunny.mp4", 364, 644, (0.5, 1.0)), decode_frames("bigbuckbunny.mp4", 364, 644, (2.0,))]
    )
    small = decode_frames("nasa_13013.mp4", 56, 84)
    images = [*frames, *small]
    if kind == "numpy":
        images = [f.numpy() for f in images]
    elif kind == "pil":
        images = [Image.fromarray(f.numpy()) for f in images]
    elif kind == "torch-batch":
        images = [frames, small]
    out = eva(images, return_tensors="pt")
    hf = hf_pil_processor([f.numpy() for f in (*frames, *small)], return_tensors="pt")
    assert torch.equal(out["pixel_values"], hf["pixel_values"])
    assert torch.equal(out["image_grid_thw"], hf["image_grid_thw"])


def test_unaligned_images_resized_like_transformers(eva, hf_pil_processor):
    real = decode_frames("nasa_13013.mp4", 270, 480)[0].numpy()  # native size, not 28-aligned
    rng = np.random.default_rng(0)
    images = [real, rng.integers(0, 256, (100, 37, 3), dtype=np.uint8), rng.integers(0, 256, (33, 999, 3), dtype=np.uint8)]
    out = eva(images)
    hf = hf_pil_processor(images, return_tensors="pt")
    assert torch.equal(out["image_grid_thw"], hf["image_grid_thw"])
    assert torch.equal(out["pixel_values"], hf["pixel_values"])


def test_aligned_input_is_never_resampled(eva, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("resampled a 28-aligned image")

    monkeypatch.setattr(Image.Image, "resize", boom)
    eva([torch.zeros(56, 84, 3, dtype=torch.uint8), np.zeros((728, 1288, 3), np.uint8)])
    with pytest.raises(AssertionError, match="resampled"):
        eva([np.zeros((50, 84, 3), np.uint8)])


def test_call_options(eva):
    img = torch.randint(0, 256, (56, 56, 3), dtype=torch.uint8)
    out = eva(images=img, return_tensors="np")
    assert isinstance(out["pixel_values"], np.ndarray) and out["pixel_values"].shape == (16, 1176)
    half = eva(img, dtype=torch.float16)
    assert half["pixel_values"].dtype == torch.float16
    chw = eva(img.permute(2, 0, 1))
    assert torch.equal(chw["pixel_values"], eva(img)["pixel_values"])
    with pytest.raises(ValueError, match="merge_size=4 is not supported"):
        eva(img, merge_size=4)
    with pytest.raises(ValueError, match="do_resize=False"):
        eva(np.zeros((50, 84, 3), np.uint8), do_resize=False)
    with pytest.raises(TypeError, match="uint8"):
        eva(np.zeros((56, 56, 3), np.float32))
    with pytest.raises(ValueError, match="return_tensors"):
        eva(img, return_tensors="tf")


def test_number_of_patches_matches_transformers(eva, hf_pil_processor):
    for h, w in [(480, 640), (720, 1280), (1080, 1920), (56, 56), (14, 14)]:
        assert eva.get_number_of_image_patches(h, w) == hf_pil_processor.get_number_of_image_patches(h, w, {})


def test_from_image_processor_and_qwen_processor_accepts_it(hf_pil_processor):
    eva = EvaQwen2VLImageProcessor.from_image_processor(hf_pil_processor)
    assert eva.max_pixels == 12_845_056
    from transformers import Qwen2_5_VLProcessor

    proc = Qwen2_5_VLProcessor.__new__(Qwen2_5_VLProcessor)
    assert proc.check_argument_for_proper_class("image_processor", eva)
