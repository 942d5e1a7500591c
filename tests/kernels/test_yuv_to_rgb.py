"""The colour-convert + resize reference twin (kernels/reference/yuv_to_rgb.py) against independent
references: FFmpeg's swscale coefficient table, and the CPU decoder's RGB (swscale + CPU resizer) on
real frames whose YUV planes come from the ffmpeg CLI. The CUDA kernel (kernels/cuda/color_resize.cu)
is then checked against the reference on a GPU (marker ``cuda``).

Measured on CPU (reference vs CPU decoder, FFmpeg 5.1.9): 8-bit 4:2:0 max 3 levels at native size and
max 4 after a resize (mean ~0.7-1.1; the difference is swscale's 15-bit table arithmetic, not the
matrix); 10-bit (nasa_13013_hdr, BT.2020) mean 1.04, p99 4, max 20 at sharp chroma edges because
swscale's generic high-bit-depth path interpolates chroma where the kernel and its reference take the
co-sited sample (as swscale's own 8-bit path does).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from eva_fast.kernels.reference.yuv_to_rgb import (
    COEFFS_HEADER,
    yuv420_to_rgb,
    yuv420_to_rgb_resized,
    yuv_matrices,
    yuv_params,
)
from tests.conftest import DATA, read_frames_csv

MATRIX_IDS = {"bt709": 1, "fcc": 4, "bt470bg": 5, "smpte170m": 6, "smpte240m": 7, "bt2020nc": 9}


def ffmpeg_planes(ffmpeg: str, video: str, index: int, stream: int, ten_bit: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [H, W], uv [H/2, W/2, 2]) int32 of frame `index`, as NVDEC lays them out (NV12 / P010 = P016
    holding 10-bit samples), converted losslessly from the decoder's planar output by the ffmpeg CLI."""
    out = subprocess.run(
        [ffmpeg, "-v", "error", "-noautorotate", "-i", str(DATA / video), "-map", f"0:{stream}",
         "-vf", f"select=eq(n\\,{index})", "-fps_mode", "passthrough", "-frames:v", "1",
         "-pix_fmt", "p010le" if ten_bit else "nv12", "-f", "rawvideo", "-"],
        check=True, capture_output=True,
    ).stdout
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", str(stream), "-show_entries", "stream=width,height",
         "-of", "csv=p=0", str(DATA / video)], check=True, capture_output=True, text=True,
    ).stdout.split(",")
    w, h = int(probe[0]), int(probe[1])
    a = np.frombuffer(out, dtype=np.uint16 if ten_bit else np.uint8).astype(np.int32)
    ch, cw = (h + 1) // 2, (w + 1) // 2
    assert a.size == w * h + ch * cw * 2, "unexpected raw frame size from ffmpeg"
    return torch.from_numpy(a[: w * h].reshape(h, w).copy()), torch.from_numpy(a[w * h :].reshape(ch, cw, 2).copy())


def _case(reader, ffmpeg, video, index, stream):
    m = reader.metadata
    ten = m.bit_depth > 8
    y, uv = ffmpeg_planes(ffmpeg, video, index, stream, ten)
    rows = read_frames_csv(video, stream)
    t = rows[index]["pts_time"] - rows[0]["pts_time"]
    kw = dict(matrix_id=MATRIX_IDS.get(m.color_space, 2), full_range=m.color_range == "pc", bit_depth=m.bit_depth,
              sample_shift=16 - m.bit_depth if ten else 0)
    return y, uv, t, kw


def test_coefficients_match_swscale_table():
    """Folded limited-range coefficients equal FFmpeg's ff_yuv2rgb_coeffs (libswscale/yuv2rgb.c, 16.16
    fixed point: crv, cbu, -cgu, -cgv) to within rounding."""
    swscale = {
        1: (117489, 138438, 13975, 34925),  # BT.709
        4: (104448, 132798, 24759, 53109),  # FCC
        5: (104597, 132201, 25675, 53279),  # BT.470BG (= BT.601)
        6: (104597, 132201, 25675, 53279),  # SMPTE 170M (= BT.601)
        7: (117579, 136230, 16907, 35559),  # SMPTE 240M
        9: (110013, 140363, 12277, 42626),  # BT.2020
        2: (104597, 132201, 25675, 53279),  # unspecified -> default BT.601
    }
    for mid, want in swscale.items():
        p = yuv_params(mid, full_range=False, bit_depth=8)
        k = 255.0 / 224.0 * 65536
        got = (p.r_v * k, p.b_u * k, -p.g_u * k, -p.g_v * k)
        assert np.allclose(got, want, atol=1.0), (mid, got, want)


def test_header_rows_parse():
    m = yuv_matrices()
    assert {1, 4, 5, 6, 7, 9, 10, -1} <= set(m)
    assert m[1][1:] == (0.2126, 0.0722) and m[-1][1:] == (0.299, 0.114)
    # the CUDA side folds the same X-macro rows (csrc/nvdec.cpp: make_yuv_params)
    assert "EVA_FAST_YUV_MATRICES(X)" in COEFFS_HEADER.read_text()


def test_full_range_and_10bit_params():
    p = yuv_params(1, full_range=True, bit_depth=10)
    assert p.y_off == 0 and p.y_scale == pytest.approx(1 / 1023) and p.c_off == 512
    q = yuv_params(9, full_range=False, bit_depth=10)
    assert q.y_off == 64 and q.y_scale == pytest.approx(1 / 876) and q.c_scale == pytest.approx(1 / 896)
    with pytest.raises(ValueError, match="bit_depth"):
        yuv_params(1, False, 7)


def test_flat_grey_and_extremes():
    """Limited-range black/white/grey map to 0/255/128 under every matrix."""
    for mid in (1, 5, 9):
        for yv, want in ((16, 0), (235, 255), (126, 128)):
            y = torch.full((4, 6), yv, dtype=torch.int32)
            uv = torch.full((2, 3, 2), 128, dtype=torch.int32)
            rgb = yuv420_to_rgb(y, uv, matrix_id=mid, full_range=False)
            assert rgb.dtype == torch.uint8 and rgb.shape == (4, 6, 3)
            assert int((rgb.int() - want).abs().max()) <= 1


def test_bad_shapes():
    with pytest.raises(ValueError, match="uv must be"):
        yuv420_to_rgb(torch.zeros(4, 6, dtype=torch.int32), torch.zeros(3, 3, 2, dtype=torch.int32), matrix_id=1,
                      full_range=False)
    with pytest.raises(ValueError, match="expected y"):
        yuv420_to_rgb(torch.zeros(4, dtype=torch.int32), torch.zeros(2, 3, 2, dtype=torch.int32), matrix_id=1,
                      full_range=False)
    with pytest.raises(ValueError, match="rotation_deg"):
        yuv420_to_rgb_resized(torch.zeros(4, 6, dtype=torch.int32), torch.zeros(2, 3, 2, dtype=torch.int32), None,
                              matrix_id=1, full_range=False, rotation_deg=45)


@pytest.mark.parametrize(
    "video, index, stream",
    [("nasa_13013.mp4", 10, 0), ("nasa_13013.mp4", 389, 3), ("cockatoo_vp9.webm", 150, 0),
     ("test_non_zero_start.mp4", 7, 0), ("h265_video.mp4", 5, 0), ("bigbuckbunny.mp4", 100, 0),
     ("unordered.mov", 2, 0)],
)
def test_reference_matches_cpu_decoder_8bit(ffmpeg, video, index, stream):
    from eva_fast.video import VideoReader

    reader = VideoReader(DATA / video, stream_index=stream)
    y, uv, t, kw = _case(reader, ffmpeg, video, index, stream)
    m = reader.metadata
    cpu = reader.get_frames_played_at([t]).frames[0]
    ref = yuv420_to_rgb(y, uv, **kw)
    d = (ref.int() - cpu.int()).abs()
    assert d.max() <= 3 and d.float().mean() < 1.2, (video, int(d.max()), float(d.float().mean()))
    size = (max(28, m.height // 2 // 28 * 28), max(28, m.width // 2 // 28 * 28))
    for resample in ("cubic", "antialias"):
        cpu_r = reader.get_frames_played_at([t], size=size, resample=resample).frames[0]
        ref_r = yuv420_to_rgb_resized(y, uv, size, resample=resample, **kw)
        d = (ref_r.int() - cpu_r.int()).abs()
        # one more level than at native size: the resize can amplify a 3-level input difference
        assert d.max() <= 4 and d.float().mean() < 1.2, (video, resample, int(d.max()))


def test_reference_matches_cpu_decoder_10bit(ffmpeg):
    """HEVC Main10 BT.2020: swscale interpolates chroma on this path (see module docstring)."""
    from eva_fast.video import VideoReader

    reader = VideoReader(DATA / "nasa_13013_hdr.mp4")
    for index in (5, 40):
        y, uv, t, kw = _case(reader, ffmpeg, "nasa_13013_hdr.mp4", index, 0)
        cpu = reader.get_frames_played_at([t]).frames[0]
        d = (yuv420_to_rgb(y, uv, **kw).int() - cpu.int()).abs().flatten().float()
        assert d.mean() < 1.2 and d.quantile(0.99) <= 4 and d.max() <= 24, (index, float(d.mean()), float(d.max()))


def test_reference_rotation_matches_cpu_decoder(ffmpeg):
    from eva_fast.video import VideoReader

    reader = VideoReader(DATA / "nasa_13013_rotated.mp4")
    y, uv, t, kw = _case(reader, ffmpeg, "nasa_13013_rotated.mp4", 9, 0)
    rot = reader.metadata.rotation_deg
    for size in (None, (224, 112)):
        cpu = reader.get_frames_played_at([t], size=size).frames[0]
        ref = yuv420_to_rgb_resized(y, uv, size, rotation_deg=rot, **kw)
        assert ref.shape == cpu.shape
        assert (ref.int() - cpu.int()).abs().max() <= 4


# ----------------------------------------------------------- the kernel's own code, run on the CPU
def _needs_cuda_build():
    from eva_fast import build_info

    if not build_info()["cuda"]:
        pytest.skip("eva_fast built without CUDA: the kernel is not compiled in (EVA_FAST_CUDA=OFF)")


@pytest.mark.parametrize("resample", ["cubic", "antialias"])
@pytest.mark.parametrize("rotation_deg", [0, 90, 180, 270])
@pytest.mark.parametrize("size", [None, (224, 392), (37, 53)])
def test_kernel_code_emulated_on_cpu_matches_reference(ffmpeg, resample, rotation_deg, size):
    """color_resize.cu's per-thread bodies (__host__ __device__), run serially on the CPU by
    _C.cuda_kernel_emulate, equal the torch reference: checks the kernel's indexing, chroma siting,
    rotation, fixed-point passes and colour maths without a GPU."""
    from eva_fast import _C
    from eva_fast.video import VideoReader

    _needs_cuda_build()
    reader = VideoReader(DATA / "nasa_13013.mp4", stream_index=3)
    y, uv, _, kw = _case(reader, ffmpeg, "nasa_13013.mp4", 100, 3)
    h, w = y.shape
    oh, ow = size if size is not None else ((w, h) if rotation_deg in (90, 270) else (h, w))
    got = _C.cuda_kernel_emulate(y.numpy().astype(np.uint8), uv.numpy().astype(np.uint8), 8, kw["matrix_id"],
                                 kw["full_range"], oh, ow, resample, rotation_deg)
    ref = yuv420_to_rgb_resized(y, uv, size, resample=resample, rotation_deg=rotation_deg, **kw)
    assert got.shape == tuple(ref.shape)
    assert np.array_equal(got, ref.numpy())


@pytest.mark.parametrize("video, index", [("nasa_13013_hdr.mp4", 5), ("test_non_zero_start.mp4", 7)])
def test_kernel_code_emulated_p016_and_odd_sizes(ffmpeg, video, index):
    from eva_fast import _C
    from eva_fast.video import VideoReader

    _needs_cuda_build()
    reader = VideoReader(DATA / video)
    y, uv, _, kw = _case(reader, ffmpeg, video, index, 0)
    ten = kw["bit_depth"] > 8
    dt = np.uint16 if ten else np.uint8
    for size in (None, (61, 97)):
        oh, ow = size or tuple(y.shape)
        got = _C.cuda_kernel_emulate(y.numpy().astype(dt), uv.numpy().astype(dt), kw["bit_depth"], kw["matrix_id"],
                                     kw["full_range"], oh, ow, "antialias")
        ref = yuv420_to_rgb_resized(y, uv, size, resample="antialias", **kw)
        assert np.array_equal(got, ref.numpy()), (video, size)


# --------------------------------------------------------------------------------------------- GPU
def _kernel(y, uv, size, *, bit_depth, bps, matrix_id, full_range, resample="cubic", rotation_deg=0):
    """Run eva_fast._C.cuda_yuv420_to_rgb on device copies of the planes (int32 -> uint8/int16 layout)."""
    from eva_fast import _C

    dt = torch.uint8 if bps == 1 else torch.int16
    yd = (y if bps == 1 else y << (16 - bit_depth)).to(dt).cuda().contiguous()
    uvd = (uv if bps == 1 else uv << (16 - bit_depth)).to(dt).cuda().contiguous()
    h, w = y.shape
    oh, ow = size if size is not None else ((w, h) if rotation_deg in (90, 270) else (h, w))
    out = torch.full((oh, ow, 3), 7, dtype=torch.uint8, device="cuda")
    _C.cuda_yuv420_to_rgb(yd.data_ptr(), uvd.data_ptr(), w * bps, uv.shape[1] * 2 * bps, h, w, bit_depth, bps,
                          matrix_id, full_range, out.data_ptr(), oh, ow, resample, rotation_deg,
                          torch.cuda.current_stream().cuda_stream)
    torch.cuda.current_stream().synchronize()
    return out.cpu()


@pytest.mark.cuda
@pytest.mark.parametrize("resample", ["cubic", "antialias"])
@pytest.mark.parametrize("rotation_deg", [0, 90, 270])
@pytest.mark.parametrize("size", [None, (224, 392), (37, 53)])
def test_cuda_kernel_matches_reference(ffmpeg, resample, rotation_deg, size):
    from eva_fast.video import VideoReader

    reader = VideoReader(DATA / "nasa_13013.mp4", stream_index=3)
    y, uv, _, kw = _case(reader, ffmpeg, "nasa_13013.mp4", 100, 3)
    got = _kernel(y, uv, size, bit_depth=8, bps=1, matrix_id=kw["matrix_id"], full_range=kw["full_range"],
                  resample=resample, rotation_deg=rotation_deg)
    ref = yuv420_to_rgb_resized(y, uv, size, resample=resample, rotation_deg=rotation_deg, **kw)
    assert got.shape == ref.shape
    # float32 colour maths with --fmad=false in the same order: expected identical; 1 level allows a
    # rounding tie resolved differently by the device's division/rounding
    assert (got.int() - ref.int()).abs().max() <= 1


@pytest.mark.cuda
def test_cuda_kernel_p016_matches_reference(ffmpeg):
    from eva_fast.video import VideoReader

    reader = VideoReader(DATA / "nasa_13013_hdr.mp4")
    y, uv, _, kw = _case(reader, ffmpeg, "nasa_13013_hdr.mp4", 5, 0)
    for size in (None, (112, 196)):
        got = _kernel(y >> 6, uv >> 6, size, bit_depth=10, bps=2, matrix_id=kw["matrix_id"], full_range=False)
        ref = yuv420_to_rgb_resized(y, uv, size, **kw)
        assert (got.int() - ref.int()).abs().max() <= 1
