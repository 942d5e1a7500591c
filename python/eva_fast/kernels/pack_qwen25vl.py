"""Triton kernel: uint8 frames -> Qwen2.5-VL ``pixel_values`` in one pass.

Reference twin: :mod:`eva_fast.kernels.reference.pack_qwen25vl` (same signature, same result).
Spec: ``shared/design/qwen25vl-layout.md`` §2.4-§2.5.

One program writes ``BLOCK_R`` whole output rows (patches). For each of the 3 channels it gathers the
196 uint8 pixels of every patch straight from the ``[T, H, W, 3]`` frames (each input byte is read
once), maps them through the ``[3, 256]`` normalisation table (3 KiB, cache resident) and stores the
value into both temporal slots. The table is computed on the host with the reference formula in the
output dtype, so the kernel is bit-identical to the reference for float32, bfloat16 and float16.

This module imports Triton; import it lazily. Under ``TRITON_INTERPRET=1`` (set before this module is
imported) the kernel runs on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from eva_fast.kernels.reference.pack_qwen25vl import (
    CHANNELS,
    CLIP_MEAN,
    CLIP_STD,
    PATCH_DIM,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    check_frames,
    grid_thw_for,
    normalize_table,
)

#: Patch rows per program. 8 rows = 2 merge blocks = 9408 output values; a measured choice is TODO on GPU.
BLOCK_R = 8
NUM_WARPS = 4
#: Integer arguments Triton must not specialise on. By default it compiles a variant per argument
#: that is 1 or a multiple of 16, so frame sizes that differ that way (EVA's calls choose a new size
#: per call) compiled anew mid-rollout: the first GPU run's rollout spent 768 ms in ``pack`` for 95
#: frames, against well under 1 ms per warm call. The sizes only index and mask here (gathers and
#: masked 196-wide stores gain nothing from a divisibility hint), so one variant per dtype serves all.
SIZE_ARGS = ("n_rows", "height", "width", "rows_per_frame", "blocks_w")


@triton.jit(do_not_specialize=SIZE_ARGS)
def _pack_qwen25vl_fwd_kernel(
    frames_ptr,  # uint8 [T, H, W, 3], contiguous
    table_ptr,  # out dtype [3, 256]
    out_ptr,  # out dtype [n_rows, 1176], contiguous
    n_rows,  # T * h * w
    height,  # H, pixels
    width,  # W, pixels
    rows_per_frame,  # h * w
    blocks_w,  # w / 2, merge blocks per block row
    BLOCK_R: tl.constexpr,
    PATCH: tl.constexpr,  # 14
    PATCH_PIX_POW2: tl.constexpr,  # 256 >= 14 * 14
):
    pid = tl.program_id(0)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R] output rows
    k = tl.arange(0, PATCH_PIX_POW2)  # [P] pixel inside the patch (row-major 14x14)
    row_ok = r < n_rows
    k_ok = k < PATCH * PATCH
    mask = row_ok[:, None] & k_ok[None, :]

    # row -> (frame, patch row, patch column): 2x2 merge blocks in raster order, raster inside
    frame = (r // rows_per_frame).to(tl.int64)
    rr = r % rows_per_frame
    mw = rr % 2
    mh = (rr // 2) % 2
    blk = rr // 4
    py_patch = 2 * (blk // blocks_w) + mh
    px_patch = 2 * (blk % blocks_w) + mw
    py = k // PATCH
    px = k % PATCH
    y = py_patch[:, None] * PATCH + py[None, :]
    x = px_patch[:, None] * PATCH + px[None, :]
    pix = ((frame[:, None] * height + y) * width + x) * 3  # int64 byte offset of channel 0
    out_row = r.to(tl.int64)[:, None] * (3 * 2 * PATCH * PATCH) + k[None, :]

    for c in tl.static_range(3):
        v = tl.load(frames_ptr + pix + c, mask=mask, other=0)
        val = tl.load(table_ptr + c * 256 + v.to(tl.int32), mask=mask)
        dst = out_row + c * (2 * PATCH * PATCH)
        tl.store(out_ptr + dst, val, mask=mask)  # temporal slot 0
        tl.store(out_ptr + dst + PATCH * PATCH, val, mask=mask)  # temporal slot 1 (still frame)


def pack_qwen25vl_triton(
    frames: torch.Tensor | Sequence[torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of :func:`eva_fast.kernels.reference.pack_qwen25vl_reference`.

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB (H, W multiples of 28) on a CUDA device, or a sequence of
            them (sizes may differ). CPU tensors work only under ``TRITON_INTERPRET=1``.
        dtype: float32, bfloat16 or float16 (all bit-identical to the reference).
        mean: per-channel mean (RGB).
        std: per-channel std (RGB).
        out: optional preallocated contiguous ``[L, 1176]`` tensor of ``dtype`` on the frames' device.

    Returns:
        ``(pixel_values [L, 1176] dtype, image_grid_thw [T_total, 3] int64)`` on the frames' device.

    Raises:
        TypeError, ValueError: bad frames (dtype, shape, alignment), dtype, or ``out``.
    """
    frames_list = [frames] if isinstance(frames, torch.Tensor) else list(frames)
    if not frames_list:
        raise ValueError("pack_qwen25vl_triton: got no frames")
    device = frames_list[0].device
    grid = grid_thw_for(frames_list)
    total_rows = int((grid[:, 1] * grid[:, 2]).sum())
    table = normalize_table(mean, std, dtype=dtype, device=device).contiguous()
    if out is None:
        out = torch.empty(total_rows, PATCH_DIM, dtype=dtype, device=device)
    elif out.shape != (total_rows, PATCH_DIM) or out.dtype != dtype or out.device != device or not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous [{total_rows}, {PATCH_DIM}] {dtype} tensor on {device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    row = 0
    for i, fr in enumerate(frames_list):
        t, h, w = check_frames(fr, name=f"frames[{i}]")
        if fr.device != device:
            raise ValueError(f"all frame tensors must be on one device: frames[0] on {device}, frames[{i}] on {fr.device}")
        n = t * h * w
        if n == 0:
            continue
        fr = fr.contiguous()
        launch = (triton.cdiv(n, BLOCK_R),)
        _pack_qwen25vl_fwd_kernel[launch](
            fr,
            table,
            out[row : row + n],
            n,
            fr.shape[1],
            fr.shape[2],
            h * w,
            w // 2,
            BLOCK_R=BLOCK_R,
            PATCH=PATCH_SIZE,
            PATCH_PIX_POW2=256,
            num_warps=NUM_WARPS,
        )
        row += n
    assert TEMPORAL_PATCH_SIZE == 2 and CHANNELS == 3  # the kernel hard-codes both
    return out, grid.to(device)


def compiled_variants() -> int | None:
    """How many compiled variants of the pack kernel this process holds (all devices and dtypes), or
    None where this Triton keeps its cache differently. Diagnostics for the GPU check: after a
    warm-up per dtype, packing frames of any size adds none."""
    caches = getattr(_pack_qwen25vl_fwd_kernel, "device_caches", None)
    if caches is None:
        return None
    n = 0
    for entry in caches.values():
        kernels = entry[0] if isinstance(entry, tuple) else entry
        if not isinstance(kernels, dict):
            return None
        n += len(kernels)
    return n
