// 8-bit YUV 4:4:4 -> RGB24, bit-identical to swscale and about 10x faster on x86 with AVX2.
//
// For unsubsampled input swscale forces full-chroma interpolation (libswscale/utils.c), and the
// unscaled 1-tap path ends in yuv2rgb_full_1_c (libswscale/output.c), plain C per pixel:
//   Y' = y << 9, U' = (u - 128) << 9, V' = (v - 128) << 9
//   T  = (Y' - y_offset) * y_coeff + (1 << 21)
//   R  = T + V' * v2r,  G = T + V' * v2g + U' * u2g,  B = T + U' * u2b   (32-bit, wrapping)
//   out = clip(x, 0, 2^30 - 1) >> 22
// with the six coefficients of ff_yuv2rgb_c_init_tables (libswscale/yuv2rgb.c) for the matrix,
// range, brightness 0, contrast and saturation 1.0 that the decoder sets. These are computed here
// the same way, then checked against the FFmpeg library actually loaded, once per (pixel format,
// matrix, range) in the process: on exhaustive (Y, U) and (Y, V) planes (which fix B and R
// completely) and (U, V) planes at three Y levels. Any difference, or no AVX2, and the converter
// is not used: the caller keeps swscale. So frames never change, whatever FFmpeg build is loaded.
#pragma once

#include <cstdint>
#include <memory>

namespace eva_fast {

struct Yuv444Coefficients {
  int y_offset = 0, y_coeff = 0, v2r = 0, v2g = 0, u2g = 0, u2b = 0;
  // The luma offset of swscale's x86 unscaled yuv420p -> rgb24 converter (libswscale/x86/yuv_2_rgb.asm,
  // c->yOffset = roundToInt16(oy << 3)); its multipliers are the five above (c->yCoeff, vrCoeff,
  // vgCoeff, ugCoeff, ubCoeff). The CUDA kernel reproduces that converter with them.
  int y_offset_simd = 0;
};

// The matrix the CPU path converts a frame with, as given to sws_getCoefficients: the frame's
// AVColorSpace, with unspecified, reserved and unknown values mapped to SWS_CS_DEFAULT (BT.601).
int swscale_colorspace(int av_colorspace);

// swscale's coefficients for sws_getCoefficients(colorspace) (the frame's matrix; SWS_CS_* values)
// and source range (full = JPEG range), with brightness 0, contrast and saturation 1.0.
Yuv444Coefficients yuv444_coefficients(int sws_colorspace, bool src_full_range);

class Yuv444ToRgb {
 public:
  // A converter for frames of `av_pix_fmt` (AV_PIX_FMT_YUV444P or AV_PIX_FMT_YUVJ444P) with this
  // matrix (an SWS_CS_* value, as given to sws_getCoefficients) and range when it matches the
  // loaded swscale exactly and the CPU has AVX2; else null. Checked once per key (~2 ms).
  static const Yuv444ToRgb* get(int av_pix_fmt, int sws_colorspace, bool src_full_range);

  // planes: Y, U, V (each `h` rows of their linesize); rgb: `h` rows of `rgb_stride` bytes, each
  // written for 3 * w bytes exactly.
  void convert(const uint8_t* const planes[3], const int linesizes[3], int h, int w, uint8_t* rgb,
               int rgb_stride) const;

  explicit Yuv444ToRgb(const Yuv444Coefficients& c) : c_(c) {}

 private:
  Yuv444Coefficients c_;
};

// Test hooks: the scalar reference of the formula above, and whether get() may return converters
// (tests compare the fast path against swscale with it off and on).
void yuv444_to_rgb_scalar(const Yuv444Coefficients& c, const uint8_t* y, const uint8_t* u, const uint8_t* v, int n,
                          uint8_t* rgb);
bool set_yuv444_fast(bool enabled);
// Whether frames of yuv444p with this matrix (SWS_CS_*) and range use the converter here.
bool yuv444_fast_available(int sws_colorspace, bool src_full_range);
// Bytes that differ between the converter and swscale over all 2^24 (Y, U, V) of yuv444p.
int64_t yuv444_mismatches_exhaustive(int sws_colorspace, bool src_full_range);

}  // namespace eva_fast
