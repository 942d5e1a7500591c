"""Plain-torch reference twin of the CUDA colour-convert + resize kernel (``eva_fast/kernels/cuda/color_resize.cu``).

Converts decoded 4:2:0 planes (NV12 with 8-bit samples, or P016-style 16-bit containers / native
10-bit codes) to RGB24 with the matrices and ranges defined once in ``eva_fast/kernels/cuda/yuv_coeffs.h``
(this module parses that header, so the CUDA side and this reference cannot drift apart), then
resizes with the CPU decoder's resampler (``eva_fast._C.resize_rgb``: cv2.resize INTER_CUBIC's
arithmetic, or the Pillow-style antialias filter in fixed point; csrc/resize.h), which is exactly
what the CUDA kernel's resize reproduces from the same tables and csrc/resize_math.h.

Maths (ITU-T H.273 matrix ids; ``n`` bit depth; chroma of each 2x2 block used as is, no
interpolation, like swscale's unscaled yuv420p -> rgb24 path):

* limited range: ``y = (Y - 16*2^(n-8)) / (219*2^(n-8))``, ``u = (U - 2^(n-1)) / (224*2^(n-8))``
* full range: ``y = Y / (2^n - 1)``, ``u = (U - 2^(n-1)) / (2^n - 1)``
* ``R = y + 2(1-kr) v``, ``G = y - 2kb(1-kb)/kg u - 2kr(1-kr)/kg v``, ``B = y + 2(1-kb) u``
* ``RGB8 = clamp(round_half_even(255 * RGB), 0, 255)``; float32 throughout, same operation order as
  the kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

#: The shared definition (eva_fast/kernels/cuda/yuv_coeffs.h).
COEFFS_HEADER = Path(__file__).resolve().parent.parent / "cuda" / "yuv_coeffs.h"

_ROW = re.compile(r"X\(\s*(\w+)\s*,\s*(\d+)\s*,\s*([0-9.]+)\s*,\s*([0-9.]+)\s*\)")
_DEFAULT = re.compile(r"#define\s+EVA_FAST_YUV_DEFAULT_(KR|KB)\s+([0-9.]+)")


@lru_cache(maxsize=1)
def yuv_matrices() -> dict[int, tuple[str, float, float]]:
    """The matrices of ``yuv_coeffs.h``: ``{h273_matrix_id: (name, kr, kb)}``, plus key ``-1`` for
    the default (BT.601) used for every id not listed.

    Raises:
        RuntimeError: the header is missing or no longer in the expected form.
    """
    text = COEFFS_HEADER.read_text()
    rows = {int(i): (name, float(kr), float(kb)) for name, i, kr, kb in _ROW.findall(text)}
    defaults = dict(_DEFAULT.findall(text))
    if not rows or set(defaults) != {"KR", "KB"}:
        raise RuntimeError(f"{COEFFS_HEADER}: cannot parse the X(name, id, kr, kb) rows / defaults")
    rows[-1] = ("DEFAULT_BT601", float(defaults["KR"]), float(defaults["KB"]))
    return rows


@dataclass(frozen=True)
class YuvParams:
    """Folded per-picture conversion constants (same fields as ``eva_fast::cuda::YuvParams``)."""

    y_off: float
    y_scale: float
    c_off: float
    c_scale: float
    r_v: float
    g_u: float
    g_v: float
    b_u: float


def yuv_params(matrix_id: int, full_range: bool, bit_depth: int) -> YuvParams:
    """Constants for one stream.

    Args:
        matrix_id: ITU-T H.273 MatrixCoefficients (FFmpeg ``AVColorSpace``); unknown ids use BT.601.
        full_range: True for full ("pc"/JPEG) range, False for limited ("tv"/MPEG) range.
        bit_depth: bits per sample, 8..16.

    Raises:
        ValueError: bit_depth outside 8..16.
    """
    if not 8 <= int(bit_depth) <= 16:
        raise ValueError(f"bit_depth must be in 8..16, got {bit_depth!r}")
    m = yuv_matrices()
    _, kr, kb = m.get(int(matrix_id), m[-1])
    kg = 1.0 - kr - kb
    n = int(bit_depth)
    if full_range:
        y_off, y_scale, c_scale = 0.0, 1.0 / ((1 << n) - 1), 1.0 / ((1 << n) - 1)
    else:
        k = float(1 << (n - 8))
        y_off, y_scale, c_scale = 16.0 * k, 1.0 / (219.0 * k), 1.0 / (224.0 * k)
    return YuvParams(
        y_off=y_off,
        y_scale=y_scale,
        c_off=float(1 << (n - 1)),
        c_scale=c_scale,
        r_v=2.0 * (1.0 - kr),
        g_u=-2.0 * kb * (1.0 - kb) / kg,
        g_v=-2.0 * kr * (1.0 - kr) / kg,
        b_u=2.0 * (1.0 - kb),
    )


def yuv420_to_rgb(
    y: torch.Tensor,
    uv: torch.Tensor,
    *,
    matrix_id: int,
    full_range: bool,
    bit_depth: int = 8,
    sample_shift: int = 0,
) -> torch.Tensor:
    """4:2:0 planes to RGB24 at the same size.

    Args:
        y: luma ``[H, W]``, integer dtype (uint8 for 8-bit; int16/int32/uint16 for 16-bit containers).
        uv: interleaved chroma ``[ceil(H/2), ceil(W/2), 2]`` (U then V), same dtype family as ``y``.
        matrix_id, full_range, bit_depth: see :func:`yuv_params`.
        sample_shift: right shift applied to every sample first (``16 - bit_depth`` for P016 data,
            0 when the planes already hold native n-bit codes).

    Returns:
        uint8 ``[H, W, 3]`` RGB in ``[0, 255]`` on the device of ``y``.

    Raises:
        ValueError: shapes that are not a luma plane and its half-size interleaved chroma plane.
    """
    if y.dim() != 2 or uv.dim() != 3 or uv.shape[2] != 2:
        raise ValueError(f"expected y [H, W] and uv [H/2, W/2, 2], got {tuple(y.shape)} and {tuple(uv.shape)}")
    h, w = y.shape
    if tuple(uv.shape[:2]) != ((h + 1) // 2, (w + 1) // 2):
        raise ValueError(f"uv must be [{(h + 1) // 2}, {(w + 1) // 2}, 2] for y [{h}, {w}], got {tuple(uv.shape)}")
    p = yuv_params(matrix_id, full_range, bit_depth)
    f32 = torch.float32
    yy = (y.to(torch.int32) >> sample_shift).to(f32)
    c = (uv.to(torch.int32) >> sample_shift).to(f32)
    # nearest chroma: each 2x2 luma block uses its co-sited chroma sample
    c = c.repeat_interleave(2, dim=0)[:h].repeat_interleave(2, dim=1)[:, :w]
    Y = (yy - p.y_off) * p.y_scale
    U = (c[..., 0] - p.c_off) * p.c_scale
    V = (c[..., 1] - p.c_off) * p.c_scale
    r = 255.0 * (Y + p.r_v * V)
    g = 255.0 * (Y + p.g_u * U + p.g_v * V)
    b = 255.0 * (Y + p.b_u * U)
    rgb = torch.stack([r, g, b], dim=-1)
    return torch.round(rgb).clamp_(0, 255).to(torch.uint8)


def yuv420_to_rgb_resized(
    y: torch.Tensor,
    uv: torch.Tensor,
    size: tuple[int, int] | None,
    *,
    matrix_id: int,
    full_range: bool,
    bit_depth: int = 8,
    sample_shift: int = 0,
    resample: str = "cubic",
    rotation_deg: int = 0,
) -> torch.Tensor:
    """What one launch of the CUDA kernel produces: convert, resize (CPU resampler), rotate.

    Args:
        y, uv, matrix_id, full_range, bit_depth, sample_shift: see :func:`yuv420_to_rgb`.
        size: output ``(height, width)`` as displayed (after rotation); None keeps the size.
        resample: ``"cubic"`` or ``"antialias"`` (``eva_fast._C.resize_rgb``).
        rotation_deg: clockwise rotation 0/90/180/270 applied after the resize.

    Returns:
        uint8 ``[H, W, 3]`` on the CPU.

    Raises:
        ValueError: bad rotation, size or filter.
    """
    from eva_fast import _C

    if rotation_deg not in (0, 90, 180, 270):
        raise ValueError(f"rotation_deg must be 0, 90, 180 or 270, got {rotation_deg!r}")
    rgb = yuv420_to_rgb(y, uv, matrix_id=matrix_id, full_range=full_range, bit_depth=bit_depth,
                        sample_shift=sample_shift).cpu()
    if size is not None:
        oh, ow = int(size[0]), int(size[1])
        if rotation_deg in (90, 270):
            oh, ow = ow, oh
        if (oh, ow) != tuple(rgb.shape[:2]):
            rgb = torch.from_numpy(_C.resize_rgb(rgb.numpy(), oh, ow, resample))
    # clockwise rotation: torch.rot90 with k=-1 per 90 degrees
    return torch.rot90(rgb, k=-(rotation_deg // 90), dims=(0, 1)).contiguous() if rotation_deg else rgb
