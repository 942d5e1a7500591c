"""A tiny random-weight Qwen2.5-VL gives the same logits with eva_fast-packed inputs as with transformers'."""

from __future__ import annotations

import pytest
import torch

from eva_fast.vision import EvaQwen2VLImageProcessor, get_rope_index, pack_qwen25vl

from .conftest import decode_frames

IMAGE, VSTART, VEND = 1000, 998, 999  # small vocab: no real tokenizer needed


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=4, hidden_size=160, num_heads=2, intermediate_size=256, out_hidden_size=256, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1, 3],
        ),
        text_config=dict(
            hidden_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=512, vocab_size=1024, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        ),
        image_token_id=IMAGE, vision_start_token_id=VSTART, vision_end_token_id=VEND, video_token_id=1001,
    )
    config._attn_implementation = "eager"
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _prompt(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [5, 6, 7]
    for _, h, w in grid.tolist():
        ids += [VSTART] + [IMAGE] * (h * w // 4) + [VEND, 9]
    ids = torch.tensor([ids])
    return ids, (ids == IMAGE).to(torch.int32)


def test_same_logits_as_transformers_processor(tiny_model, hf_pil_processor):
    frames = decode_frames("bigbuckbunny.mp4", 112, 196, (0.5, 1.0))
    other = decode_frames("nasa_13013.mp4", 56, 84)
    hf = hf_pil_processor([f.numpy() for f in (*frames, *other)], return_tensors="pt")
    packed = pack_qwen25vl([frames, other])
    eva = EvaQwen2VLImageProcessor()([frames, other])
    ids, mm = _prompt(packed.image_grid_thw)
    with torch.no_grad():
        ref = tiny_model(input_ids=ids, mm_token_type_ids=mm, **hf).logits
        out = tiny_model(input_ids=ids, mm_token_type_ids=mm, **packed.model_inputs()).logits
        out_proc = tiny_model(input_ids=ids, mm_token_type_ids=mm, **eva).logits
        # explicit M-RoPE positions from the eva_fast reference
        pos, _ = get_rope_index(mm, packed.image_grid_thw)
        out_pos = tiny_model(input_ids=ids, position_ids=pos, **packed.model_inputs()).logits
    assert torch.equal(out, ref) and torch.equal(out_proc, ref)
    assert torch.allclose(out_pos, ref, atol=1e-5, rtol=0), (out_pos - ref).abs().max()


def test_precomputed_vision_kwargs_give_same_features(tiny_model):
    frames = [torch.randint(0, 256, (2, 140, 252, 3), dtype=torch.uint8), torch.randint(0, 256, (1, 56, 56, 3), dtype=torch.uint8)]
    packed = pack_qwen25vl(frames)
    visual = tiny_model.model.visual
    with torch.no_grad():
        ref = visual(packed.pixel_values, grid_thw=packed.image_grid_thw).pooler_output
        out = visual(packed.pixel_values, grid_thw=packed.image_grid_thw, **packed.vision_kwargs()).pooler_output
    assert torch.equal(out, ref)
