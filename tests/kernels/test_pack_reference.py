"""kernels/reference/pack_qwen25vl.py against transformers' Qwen2-VL image processors (spec §2.4-§2.5)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from eva_fast.kernels.reference import CLIP_MEAN, CLIP_STD, normalize_table, pack_qwen25vl_reference, patchify_uint8

from .conftest import decode_frames

# (video, H, W): 28-aligned sizes, real frames decoded (and resized) by eva_fast's own decoder
REAL_CASES = [
    ("nasa_13013.mp4", 56, 84),
    ("nasa_13013.mp4", 252, 476),
    ("bigbuckbunny.mp4", 364, 644),
    ("bigbuckbunny.mp4", 728, 1288),
]


def _ids(case):
    return f"{case[0].split('.')[0]}-{case[1]}x{case[2]}"


@pytest.mark.parametrize("case", REAL_CASES, ids=_ids)
def test_equals_transformers_pil_processor_on_real_frames(case, hf_pil_processor):
    frames = decode_frames(case[0], case[1], case[2], (0.5, 1.0))
    pv, grid = pack_qwen25vl_reference(frames)
    hf = hf_pil_processor([f.numpy() for f in frames], return_tensors="pt")
    assert pv.dtype == torch.float32 and pv.shape == hf["pixel_values"].shape
    assert torch.equal(pv, hf["pixel_values"]), (pv - hf["pixel_values"]).abs().max()
    assert torch.equal(grid, hf["image_grid_thw"])


def test_mixed_sizes_batch_equals_transformers(hf_pil_processor):
    a = decode_frames("nasa_13013.mp4", 56, 84, (0.5, 1.0))
    b = decode_frames("bigbuckbunny.mp4", 364, 644)
    c = decode_frames("nasa_13013.mp4", 252, 476)
    pv, grid = pack_qwen25vl_reference([a, b, c])
    hf = hf_pil_processor([f.numpy() for f in (*a, *b, *c)], return_tensors="pt")
    assert torch.equal(pv, hf["pixel_values"])
    assert torch.equal(grid, hf["image_grid_thw"])
    assert grid.tolist() == [[1, 4, 6], [1, 4, 6], [1, 26, 46], [1, 18, 34]]


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="torchvision is not installed: its PyPI wheels are CUDA builds whose C ops do not load with "
    "torch 2.13 CPU, so transformers' torchvision Qwen2VLImageProcessor cannot run here "
    "(the fused formula is checked in test_torchvision_formula_matches_fused_normalize)",
)
def test_equals_transformers_torchvision_processor_on_real_frames():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12_845_056)
    for name, h, w in REAL_CASES:
        frames = decode_frames(name, h, w, (0.5, 1.0))
        hf = proc([f.permute(2, 0, 1) for f in frames], return_tensors="pt")
        pv, grid = pack_qwen25vl_reference(frames, formula="torchvision")
        assert torch.equal(pv, hf["pixel_values"])
        assert torch.equal(grid, hf["image_grid_thw"])


def test_torchvision_formula_matches_fused_normalize():
    """The torchvision processor's recipe (rescale fused into mean/std, then sub_/div_ in float32)."""
    frames = decode_frames("bigbuckbunny.mp4", 364, 644)
    mean = torch.tensor(CLIP_MEAN) * (1.0 / (1 / 255))  # float32 tensor x Python float, as transformers
    std = torch.tensor(CLIP_STD) * (1.0 / (1 / 255))
    img = frames[0].permute(2, 0, 1).to(torch.float32)
    expected = img.sub_(mean[:, None, None]).div_(std[:, None, None])
    pv, _ = pack_qwen25vl_reference(frames, formula="torchvision")
    # patch (0, 0) = rows of merge block 0, row 0; column block (c, t=0)
    got = pv[0].view(3, 2, 14, 14)[:, 0]
    assert torch.equal(got, expected[:, :14, :14])
    pil, _ = pack_qwen25vl_reference(frames)
    assert (pv - pil).abs().max() <= 2.5e-7  # spec §2.4: the two recipes differ by at most 1 ulp


def test_index_map_closed_form():
    """2000 random (row, column) samples against the spec §2.5 closed-form map."""
    frames = torch.randint(0, 256, (2, 84, 112, 3), dtype=torch.uint8)
    pv, _ = pack_qwen25vl_reference(frames)
    table = normalize_table()
    h, w = 84 // 14, 112 // 14
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(0, pv.shape[0], (2000,), generator=gen).tolist()
    cols = torch.randint(0, 1176, (2000,), generator=gen).tolist()
    for r_all, k in zip(rows, cols):
        f, r = divmod(r_all, h * w)
        mw, mh, blk = r % 2, (r // 2) % 2, r // 4
        bw, bh = blk % (w // 2), blk // (w // 2)
        y, x = 2 * bh + mh, 2 * bw + mw
        c, py, px = k // 392, (k % 196) // 14, k % 14
        assert pv[r_all, k] == table[c, frames[f, 14 * y + py, 14 * x + px, c].long()]


def test_temporal_slots_duplicated_and_patchify():
    frames = torch.randint(0, 256, (1, 56, 56, 3), dtype=torch.uint8)
    pv, _ = pack_qwen25vl_reference(frames)
    v = pv.view(-1, 3, 2, 196)
    assert torch.equal(v[:, :, 0], v[:, :, 1])
    u8 = patchify_uint8(frames)
    assert u8.shape == (16, 3, 14, 14)
    assert torch.equal(u8[1, :, :, :], frames[0, 0:14, 14:28].permute(2, 0, 1))  # row 1 = patch (0, 1)
    assert torch.equal(u8[2, :, :, :], frames[0, 14:28, 0:14].permute(2, 0, 1))  # row 2 = patch (1, 0)
    assert torch.equal(u8[4, :, :, :], frames[0, 0:14, 28:42].permute(2, 0, 1))  # row 4 = next merge block


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_is_rounded_float32(dtype):
    frames = decode_frames("nasa_13013.mp4", 252, 476)
    pv32, _ = pack_qwen25vl_reference(frames)
    pv, grid = pack_qwen25vl_reference(frames, dtype=dtype)
    assert pv.dtype == dtype and grid.dtype == torch.int64
    assert torch.equal(pv, pv32.to(dtype))


def test_normalize_table_is_transformers_formula():
    from transformers.image_transforms import normalize, rescale

    levels = np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2)  # HWC
    x = rescale(levels, 1 / 255, input_data_format="channels_last")
    x = normalize(x, CLIP_MEAN, CLIP_STD, input_data_format="channels_last")
    assert torch.equal(normalize_table(), torch.from_numpy(x[0].T.copy()))


@pytest.mark.parametrize(
    ("frames", "err", "match"),
    [
        (torch.zeros(1, 56, 84, 3, dtype=torch.float32), TypeError, "uint8"),
        (torch.zeros(56, 84, 3, dtype=torch.uint8), ValueError, r"\[T, H, W, 3\]"),
        (torch.zeros(1, 50, 84, 3, dtype=torch.uint8), ValueError, "multiples of 28"),
        (torch.zeros(1, 56, 84, 4, dtype=torch.uint8), ValueError, r"\[T, H, W, 3\]"),
        ([], ValueError, "no frames"),
    ],
    ids=["float", "3d", "unaligned", "rgba", "empty"],
)
def test_bad_frames_raise(frames, err, match):
    with pytest.raises(err, match=match):
        pack_qwen25vl_reference(frames)


def test_bad_options_raise():
    frames = torch.zeros(1, 56, 56, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="unsupported pixel_values dtype"):
        pack_qwen25vl_reference(frames, dtype=torch.float64)
    with pytest.raises(ValueError, match="3 values"):
        pack_qwen25vl_reference(frames, mean=(0.5,))
    with pytest.raises(ValueError, match="allowed: 'pil', 'torchvision'"):
        pack_qwen25vl_reference(frames, formula="numpy")


def test_cpu_numpy_and_torch_paths_agree():
    frames = [torch.randint(0, 256, (2, 84, 112, 3), dtype=torch.uint8), torch.randint(0, 256, (1, 56, 28 * 5, 3), dtype=torch.uint8)]
    a, _ = pack_qwen25vl_reference(frames, _impl="numpy")
    b, _ = pack_qwen25vl_reference(frames, _impl="torch")
    assert torch.equal(a, b)
    strided = torch.randint(0, 256, (1, 56, 112, 3), dtype=torch.uint8)[:, :, :56]
    assert torch.equal(pack_qwen25vl_reference(strided, _impl="numpy")[0], pack_qwen25vl_reference(strided, _impl="torch")[0])
