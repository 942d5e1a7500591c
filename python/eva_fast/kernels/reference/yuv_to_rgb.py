"""Plain-torch reference twin of the CUDA colour-convert + resize kernel (``eva_fast/kernels/cuda/color_resize.cu``).

Converts decoded 4:2:0 planes (NV12 with 8-bit samples, or P016-style 16-bit containers / native
10-bit codes) to RGB24, then resizes with the CPU decoder's resampler (``eva_fast._C.resize_rgb``:
cv2.resize INTER_CUBIC's arithmetic, or the Pillow-style antialias filter in fixed point;
csrc/resize.h), which is exactly what the CUDA kernel's resize reproduces from the same tables and
csrc/resize_math.h.

The CPU path converts with swscale, and so does the ``ffmpeg`` CLI; swscale takes one of two routes,
and the kernel (and this twin) takes the same one for each picture (``route``):

* ``"swscale_int"`` (8-bit, even height: swscale's unscaled route): the arithmetic of swscale's x86
  converter ``yuv420_rgb24_ssse3`` (libswscale/x86/yuv_2_rgb.asm) in 16-bit lanes, with the int16
  coefficients of ``ff_yuv2rgb_c_init_tables`` (libswscale/yuv2rgb.c) computed from FFmpeg's matrix
  table ``ff_yuv2rgb_coeffs`` (:data:`SWSCALE_INV_TABLE`); each 2x2 block uses its chroma sample:
  ``y' = int16((Y << 3) - y_offset)``, ``u' = sat16((U << 3) - 1024)``, ``Y = pmulhw(y', y_coeff)``,
  ``R = sat16(Y + pmulhw(v', v2r))``, ``G = sat16(Y + sat16(pmulhw(u', u2g) + pmulhw(v', v2g)))``,
  ``B = sat16(Y + pmulhw(u', u2b))``, clamped to [0, 255]. Bit-identical to the CPU decoder.
* ``"float_vinterp"`` (> 8-bit or odd height: swscale's scaled route, which interpolates chroma
  vertically): the matrices of ``eva_fast/kernels/cuda/yuv_coeffs.h`` (parsed here, so the CUDA side
  and this twin cannot drift apart) in float32, chroma interpolated vertically with swscale's
  bicubic (B = 0, C = 0.6) at MPEG-2 siting (luma row y at chroma row y/2 - 1/4; 4 taps, edge rows
  repeated), each chroma sample serving its 2 columns. Against FFmpeg's own 16-bit conversion
  (``ffmpeg -vf scale=flags=bicubic+accurate_rnd,format=rgb48le``) on nasa_13013_hdr (BT.2020,
  10-bit): max 1.5 levels, mean 0.2-0.4; swscale's rgb24 output (the CPU path): max 4.1, mean
  0.9-1.2, since its 8-bit tables are coarser. So the two paths differ by at most 4 levels.
* ``"float_nearest"``: the float maths with each block's chroma sample (the kernel's route for
  8-bit pictures where the loaded swscale does not match ``"swscale_int"``, e.g. another FFmpeg
  build or CPU).

Float maths: limited range ``y = (Y - 16*2^(n-8)) / (219*2^(n-8))``, ``u = (U - 2^(n-1)) / (224*2^(n-8))``;
full range ``y = Y / (2^n - 1)``, ``u = (U - 2^(n-1)) / (2^n - 1)``; ``R = y + 2(1-kr) v``,
``G = y - 2kb(1-kb)/kg u - 2kr(1-kr)/kg v``, ``B = y + 2(1-kb) u``;
``RGB8 = clamp(round_half_even(255 * RGB), 0, 255)``; float32 throughout, same operation order as
the kernel (which is built with ``--fmad=false``).
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


#: FFmpeg's ``ff_yuv2rgb_coeffs`` (libswscale/yuv2rgb.c, FFmpeg 5.1): ``(crv, cbu, cgu, cgv)`` in 16.16
#: fixed point per H.273 matrix id, as ``sws_getCoefficients`` returns them; other ids use BT.601 (5).
SWSCALE_INV_TABLE: dict[int, tuple[int, int, int, int]] = {
    1: (117489, 138438, 13975, 34925),  # BT.709
    4: (104448, 132798, 24759, 53109),  # FCC
    5: (104597, 132201, 25675, 53279),  # BT.470BG
    6: (104597, 132201, 25675, 53279),  # SMPTE 170M
    7: (117579, 136230, 16907, 35559),  # SMPTE 240M
    9: (110013, 140363, 12277, 42626),  # BT.2020 NCL
    10: (110013, 140363, 12277, 42626),  # BT.2020 CL
}
ROUTES = ("swscale_int", "float_vinterp", "float_nearest")


def _round_to_int16(f: int) -> int:
    r = (f + (1 << 15)) >> 16
    return -0x8000 if r < -0x7FFF else (0x7FFF if r > 0x7FFF else r)


def swscale_int_coefficients(matrix_id: int, full_range: bool) -> dict[str, int]:
    """The int16 coefficients of swscale's x86 yuv420p -> rgb24 converter for a matrix and range
    (``ff_yuv2rgb_c_init_tables``: brightness 0, contrast and saturation 1.0, as the decoder sets).

    Returns:
        ``{"y_offset", "y_coeff", "v2r", "v2g", "u2g", "u2b"}``.
    """
    crv, cbu, cgu, cgv = SWSCALE_INV_TABLE.get(int(matrix_id), SWSCALE_INV_TABLE[5])
    cgu, cgv = -cgu, -cgv
    cy, oy = 1 << 16, 0
    if not full_range:
        cy, oy = (cy * 255) // 219, 16 << 16
    else:  # C integer division truncates toward zero
        crv, cbu = crv * 224 // 255, cbu * 224 // 255
        cgu, cgv = -((-cgu * 224) // 255), -((-cgv * 224) // 255)
    return {"y_offset": _round_to_int16(oy << 3), "y_coeff": _round_to_int16(cy << 13), "v2r": _round_to_int16(crv << 13),
            "v2g": _round_to_int16(cgv << 13), "u2g": _round_to_int16(cgu << 13), "u2b": _round_to_int16(cbu << 13)}


def _swscale_cubic(d: float) -> float:
    """Keys cubic with a = -0.6 (swscale's SWS_BICUBIC: B = 0, C = 0.6)."""
    a, d = -0.6, abs(d)
    if d < 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a if d < 2 else 0.0


def chroma_vweights() -> tuple[list[float], list[float]]:
    """Float32 weights of the 4 chroma rows for even luma rows 2k (chroma rows k-2..k+1) and odd rows
    2k+1 (k-1..k+2): the cubic at the distances of MPEG-2 siting, normalised in float64."""
    out = []
    for dist in ((1.75, 0.75, 0.25, 1.25), (1.25, 0.25, 0.75, 1.75)):
        w = [_swscale_cubic(d) for d in dist]
        out.append([float(torch.tensor(x / sum(w), dtype=torch.float32)) for x in w])
    return out[0], out[1]


def default_route(bit_depth: int, height: int) -> str:
    """The route swscale (on x86) and the kernel take: ``"swscale_int"`` for 8-bit pictures of even
    height (swscale's unscaled route), else ``"float_vinterp"``."""
    return "swscale_int" if int(bit_depth) == 8 and int(height) % 2 == 0 else "float_vinterp"


def _swscale_int(yy: torch.Tensor, c: torch.Tensor, matrix_id: int, full_range: bool) -> torch.Tensor:
    k = swscale_int_coefficients(matrix_id, full_range)
    i32 = torch.int32

    def sat16(t):
        return t.clamp(-32768, 32767)

    def pmulhw(a, b):
        return torch.div(a * b, 65536, rounding_mode="floor").to(i32)

    y8 = ((yy.to(i32) << 3) - k["y_offset"] + 32768).remainder(65536) - 32768  # psubw wraps
    u8 = sat16((c[..., 0].to(i32) << 3) - 1024)
    v8 = sat16((c[..., 1].to(i32) << 3) - 1024)
    Y = pmulhw(y8, k["y_coeff"])
    g = sat16(pmulhw(u8, k["u2g"]) + pmulhw(v8, k["v2g"]))
    rgb = torch.stack([sat16(Y + pmulhw(v8, k["v2r"])), sat16(Y + g), sat16(Y + pmulhw(u8, k["u2b"]))], dim=-1)
    return rgb.clamp_(0, 255).to(torch.uint8)


def yuv420_to_rgb(
    y: torch.Tensor,
    uv: torch.Tensor,
    *,
    matrix_id: int,
    full_range: bool,
    bit_depth: int = 8,
    sample_shift: int = 0,
    route: str | None = None,
) -> torch.Tensor:
    """4:2:0 planes to RGB24 at the same size.

    Args:
        y: luma ``[H, W]``, integer dtype (uint8 for 8-bit; int16/int32/uint16 for 16-bit containers).
        uv: interleaved chroma ``[ceil(H/2), ceil(W/2), 2]`` (U then V), same dtype family as ``y``.
        matrix_id, full_range, bit_depth: see :func:`yuv_params`.
        sample_shift: right shift applied to every sample first (``16 - bit_depth`` for P016 data,
            0 when the planes already hold native n-bit codes).
        route: one of :data:`ROUTES` (module docstring); None: :func:`default_route`.

    Returns:
        uint8 ``[H, W, 3]`` RGB in ``[0, 255]`` on the device of ``y``.

    Raises:
        ValueError: shapes that are not a luma plane and its half-size interleaved chroma plane, an
            unknown route, or ``"swscale_int"`` for samples of more than 8 bits.
    """
    if y.dim() != 2 or uv.dim() != 3 or uv.shape[2] != 2:
        raise ValueError(f"expected y [H, W] and uv [H/2, W/2, 2], got {tuple(y.shape)} and {tuple(uv.shape)}")
    h, w = y.shape
    if tuple(uv.shape[:2]) != ((h + 1) // 2, (w + 1) // 2):
        raise ValueError(f"uv must be [{(h + 1) // 2}, {(w + 1) // 2}, 2] for y [{h}, {w}], got {tuple(uv.shape)}")
    route = default_route(bit_depth, h) if route is None else route
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES} or None, got {route!r}")
    if route == "swscale_int" and int(bit_depth) != 8:
        raise ValueError(f"route 'swscale_int' is swscale's 8-bit converter; got bit_depth {bit_depth!r}")
    p = yuv_params(matrix_id, full_range, bit_depth)
    f32 = torch.float32
    yi = y.to(torch.int32) >> sample_shift
    ci = uv.to(torch.int32) >> sample_shift
    if route == "swscale_int":
        c = ci.repeat_interleave(2, dim=0)[:h].repeat_interleave(2, dim=1)[:, :w]
        return _swscale_int(yi, c, matrix_id, full_range)
    yy = yi.to(f32)
    c = ci.to(f32)
    if route == "float_vinterp":
        ch = c.shape[0]
        rows = torch.arange(h)
        k0 = torch.where(rows % 2 == 1, (rows - 1) // 2 - 1, rows // 2 - 2)
        w_even, w_odd = chroma_vweights()
        wt = torch.where((rows % 2 == 1)[:, None], torch.tensor([w_odd], dtype=f32), torch.tensor([w_even], dtype=f32))
        acc = torch.zeros(h, c.shape[1], 2, dtype=f32)
        for t in range(4):  # the kernel's order: acc = acc + w_t * c_t
            acc = acc + wt[:, t, None, None] * c[(k0 + t).clamp(0, ch - 1)]
        c = acc
    else:
        c = c.repeat_interleave(2, dim=0)[:h]
    # each chroma sample serves its 2 columns
    c = c.repeat_interleave(2, dim=1)[:, :w]
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
    route: str | None = None,
) -> torch.Tensor:
    """What one launch of the CUDA kernel produces: convert, resize (CPU resampler), rotate.

    Args:
        y, uv, matrix_id, full_range, bit_depth, sample_shift, route: see :func:`yuv420_to_rgb`.
        size: output ``(height, width)`` as displayed (after rotation); None keeps the size.
        resample: ``"cubic"`` or ``"antialias"`` (``eva_fast._C.resize_rgb``).
        rotation_deg: clockwise rotation 0/90/180/270 applied after the resize.

    Returns:
        uint8 ``[H, W, 3]`` on the CPU.

    Raises:
        ValueError: bad rotation, size or filter.
    """
    from eva_fast import _C  # only this helper needs the native resize; the torch twins import without it

    if rotation_deg not in (0, 90, 180, 270):
        raise ValueError(f"rotation_deg must be 0, 90, 180 or 270, got {rotation_deg!r}")
    rgb = yuv420_to_rgb(y, uv, matrix_id=matrix_id, full_range=full_range, bit_depth=bit_depth,
                        sample_shift=sample_shift, route=route).cpu()
    if size is not None:
        oh, ow = int(size[0]), int(size[1])
        if rotation_deg in (90, 270):
            oh, ow = ow, oh
        if (oh, ow) != tuple(rgb.shape[:2]):
            rgb = torch.from_numpy(_C.resize_rgb(rgb.numpy(), oh, ow, resample))
    # clockwise rotation: torch.rot90 with k=-1 per 90 degrees
    return torch.rot90(rgb, k=-(rotation_deg // 90), dims=(0, 1)).contiguous() if rotation_deg else rgb
