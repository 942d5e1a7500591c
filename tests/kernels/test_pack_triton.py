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


def test_kernel_does_not_specialise_on_sizes():
    """Every size argument is exempt from Triton's per-value specialisation (1, multiple of 16), so a
    rollout whose calls choose new frame sizes never compiles mid-episode (first GPU run: 768 ms of
    ``pack`` for 95 frames). Checked on the JIT function itself; the ``cuda`` test counts variants."""
    from eva_fast.kernels import pack_qwen25vl as mod

    params = {p.name: p for p in mod._pack_qwen25vl_fwd_kernel.params}
    assert set(mod.SIZE_ARGS) <= set(params)
    assert all(params[n].do_not_specialize for n in mod.SIZE_ARGS)
    assert not any(params[n].do_not_specialize for n in ("frames_ptr", "table_ptr", "out_ptr"))


@pytest.mark.cuda
def test_cuda_one_compile_serves_every_size():
    """After the warm-up per dtype, frame sizes of every divisibility class compile nothing new."""
    from eva_fast.kernels.pack_qwen25vl import compiled_variants
    from eva_fast.kernels.reference import pack_qwen25vl_reference
    from eva_fast.vision import pack_qwen25vl, warm_up_pack

    warm_up_pack("cuda", torch.bfloat16)
    before = compiled_variants()
    assert before is not None and before >= 1
    # T*h*w, H, W, h*w and w/2 land on both sides of "multiple of 16" across these
    for t, h, w in [(1, 28, 28), (2, 112, 224), (3, 168, 308), (5, 364, 644), (16, 448, 448), (7, 56, 1120)]:
        frames = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, device="cuda")
        got = pack_qwen25vl(frames, dtype=torch.bfloat16, backend="triton").pixel_values
        assert torch.equal(got, pack_qwen25vl_reference(frames, dtype=torch.bfloat16)[0])
    assert compiled_variants() == before
