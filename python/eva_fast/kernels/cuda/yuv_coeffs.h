// YUV -> RGB colour matrices: the one definition shared by the CUDA kernel (color_resize.cu, via
// csrc/nvdec.cpp which turns these into per-launch float coefficients) and the plain-torch
// reference twin (kernels/reference/yuv_to_rgb.py parses the X(...) rows of this file at import).
// Keep one row per line in exactly this form; the reference's parser and tests check it.
//
// Each row: X(name, id, kr, kb). id is the ITU-T H.273 MatrixCoefficients value (= FFmpeg's
// AVColorSpace) the row serves; kr/kb are the luma weights of red and blue, kg = 1 - kr - kb.
// With y in [0, 1] and u, v in [-0.5, 0.5] (after range normalisation, below):
//   R = y + 2 (1 - kr) v
//   G = y - 2 kb (1 - kb) / kg u - 2 kr (1 - kr) / kg v
//   B = y + 2 (1 - kb) u
// and RGB8 = clamp(round(255 * RGB), 0, 255).
// Range (n = bit depth; P016 samples are first shifted right by 16 - n):
//   limited ("tv"): y = (Y - 16 * 2^(n-8)) / (219 * 2^(n-8)),  u = (U - 2^(n-1)) / (224 * 2^(n-8))
//   full    ("pc"): y = Y / (2^n - 1),                         u = (U - 2^(n-1)) / (2^n - 1)
// Matrix choice follows swscale (what the CPU path uses): unspecified/unknown ids use BT.601.
// Chroma of 4:2:0 is taken from the co-sited 2x2 block without interpolation (swscale's unscaled
// yuv420p -> rgb24 path does the same).
// Sources: ITU-R BT.601-7, BT.709-6, BT.2020-2, SMPTE 240M, FCC 73.682 (FFmpeg's
// libswscale/yuv2rgb.c ff_yuv2rgb_coeffs encodes the same values in 16.16 fixed point).
#pragma once

#define EVA_FAST_YUV_MATRICES(X)   \
  X(BT709, 1, 0.2126, 0.0722)      \
  X(FCC, 4, 0.30, 0.11)            \
  X(BT470BG, 5, 0.299, 0.114)      \
  X(SMPTE170M, 6, 0.299, 0.114)    \
  X(SMPTE240M, 7, 0.212, 0.087)    \
  X(BT2020_NCL, 9, 0.2627, 0.0593) \
  X(BT2020_CL, 10, 0.2627, 0.0593)

// Matrix used for ids not listed above (unspecified, reserved, RGB, YCgCo, ...): BT.601.
#define EVA_FAST_YUV_DEFAULT_KR 0.299
#define EVA_FAST_YUV_DEFAULT_KB 0.114
