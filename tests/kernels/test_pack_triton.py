"""kernels/pack_qwen25vl.py (Triton) against the torch reference.

* ``interpret``: tiny shapes on CPU under ``TRITON_INTERPRET=1``, in a subprocess (the variable must be set
  before the kernel module is imported, and must not leak into the CUDA tests).
* ``cuda``: full shapes on a GPU.

Tolerance: the kernel gathers through the reference's own normalisation table (built in the output
dtype), so it is **bit-exact** for float32, bfloat16 and float16; no tolerance is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]

_INTERPRET_SCRIPT = textwrap.dedent(
    """
    import torch
    from eva_fast.kernels.pack_qwen25vl import pack_qwen25vl_triton
    from eva_fast.kernels.reference import pack_qwen25vl_reference
    from eva_fast.vision import pack_qwen25vl

    torch.manual_seed(0)
    cases = {
        "56x84-T2": [torch.randint(0, 256, (2, 56, 84, 3), dtype=torch.uint8)],
        "mixed": [torch.randint(0, 256, (1, 84, 56, 3), dtype=torch.uint8),
                  torch.randint(0, 256, (2, 28, 28, 3), dtype=torch.uint8)],
        "odd-rows": [torch.randint(0, 256, (1, 28, 84, 3), dtype=torch.uint8)],  # 6 rows < BLOCK_R
    }
    for name, frames in cases.items():
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            out, grid = pack_qwen25vl_triton(frames, dtype=dtype)
            ref, ref_grid = pack_qwen25vl_reference(frames, dtype=dtype)
            assert out.dtype == dtype and out.shape == ref.shape, (name, dtype, out.shape)
            assert torch.equal(grid, ref_grid), name
            assert torch.equal(out, ref), (name, dtype, (out.float() - ref.float()).abs().max())
    # strided input and the public API's explicit backend
    frames = torch.randint(0, 256, (1, 56, 112, 3), dtype=torch.uint8)[:, :, :56]
    packed = pack_qwen25vl(frames, backend="triton")
    assert packed.backend == "triton"
    assert torch.equal(packed.pixel_values, pack_qwen25vl_reference(frames)[0])
    print("INTERPRET-OK")
    """
)


@pytest.mark.interpret
def test_triton_interpreter_matches_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _INTERPRET_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "INTERPRET-OK" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.cuda
@pytest.mark.triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(32, 364, 644), (8, 728, 1288), (3, 28, 28), (5, 476, 644)], ids=str)
def test_cuda_matches_reference(shape, dtype):
    from eva_fast.kernels.pack_qwen25vl import pack_qwen25vl_triton
    from eva_fast.kernels.reference import pack_qwen25vl_reference

    t, h, w = shape
    frames = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, device="cuda")
    out, grid = pack_qwen25vl_triton(frames, dtype=dtype)
    ref, ref_grid = pack_qwen25vl_reference(frames, dtype=dtype)
    assert torch.equal(grid, ref_grid)
    assert torch.equal(out, ref), (out.float() - ref.float()).abs().max()


@pytest.mark.cuda
@pytest.mark.triton
def test_cuda_mixed_sizes_and_real_frames():
    from eva_fast.kernels.reference import pack_qwen25vl_reference
    from eva_fast.vision import pack_qwen25vl

    from .conftest import decode_frames

    frames = [
        decode_frames("bigbuckbunny.mp4", 728, 1288, (0.5, 1.0)).cuda(),
        decode_frames("nasa_13013.mp4", 252, 476).cuda(),
    ]
    packed = pack_qwen25vl(frames)
    assert packed.backend == "triton" and packed.pixel_values.is_cuda
    ref, _ = pack_qwen25vl_reference([f.cpu() for f in frames])
    assert torch.equal(packed.pixel_values.cpu(), ref)
