// Separable RGB24 resampling used right after colour conversion.
//
// Two filters:
//  * kCubic: Keys cubic convolution with a = -0.75, 4 taps, no antialiasing, pixel-centre
//    alignment and replicated borders. This is what OpenCV's cv::resize(INTER_CUBIC) computes
//    (modules/imgproc/src/resize.cpp: interpolateCubic, 11-bit fixed-point coefficients,
//    int32 horizontal pass, (acc + 2^21) >> 22 with saturation on the vertical pass), and what
//    the EVA reference frame tool uses.
//  * kAntialias: Keys cubic with a = -0.5 whose support is widened by the downscale factor and
//    whose weights are normalised per output pixel (Pillow's Image.resize(BICUBIC) definition,
//    libImaging/Resample.c). Many taps, so 14-bit weights corrected to sum to exactly 1.0, and
//    the horizontal pass keeps 7 fractional bits (int32 throughout, no intermediate clipping).
#pragma once

#include <cstdint>
#include <vector>

namespace eva_fast {

enum class ResizeFilter { kCubic = 0, kAntialias = 1 };

// Per-axis filter table: for output coordinate i, taps k in [0, ksize) read source index
// index[i * ksize + k] with weight coef[i * ksize + k] (fixed point, 2048 = 1.0).
struct AxisTable {
  int ksize = 0;
  int coef_bits = 11;
  int out_size = 0;
  std::vector<int32_t> index;
  std::vector<int16_t> coef;
};

AxisTable make_axis_table(int in_size, int out_size, ResizeFilter filter);

// Whether the x86 SIMD horizontal pass may be used (default: yes when the CPU has AVX2). The SIMD
// and scalar paths compute the same integers; the switch exists so tests can compare them.
// Returns the previous value.
bool set_resize_simd(bool enabled);
bool resize_simd_available();

// A reusable resize plan for one (src size, dst size, filter).
class RgbResizer {
 public:
  RgbResizer(int src_w, int src_h, int dst_w, int dst_h, ResizeFilter filter);
  // src: RGB24, src_h rows of src_stride bytes. dst: RGB24, dst_h rows of dst_stride bytes.
  void run(const uint8_t* src, int src_stride, uint8_t* dst, int dst_stride);
  bool matches(int src_w, int src_h, int dst_w, int dst_h, ResizeFilter filter) const {
    return src_w == src_w_ && src_h == src_h_ && dst_w == dst_w_ && dst_h == dst_h_ &&
           filter == filter_;
  }

 private:
  void hpass_row(const uint8_t* src_row, int32_t* out_row) const;

  // SIMD horizontal pass: output columns [simd_lo_, simd_hi_) read consecutive source pixels from
  // hfirst_[dx], in hgroups_ groups of 4 taps (one 16-byte load each). Per column and group, 16
  // int16 weights laid out for pmaddwd: {c0,c1,c0,c1,c0,c1,0,0, c2,c3,c2,c3,c2,c3,0,0}.
  std::vector<int16_t> hsimd_coef_;
  std::vector<int32_t> hfirst_;
  int hgroups_ = 1;
  int simd_lo_ = 0, simd_hi_ = 0;

  int src_w_, src_h_, dst_w_, dst_h_;
  ResizeFilter filter_;
  int hshift_ = 0;  // bits dropped after the horizontal pass
  AxisTable h_, v_;
  // Ring of horizontally filtered rows, keyed by source row.
  std::vector<int32_t> rows_;
  std::vector<int> row_of_slot_;
  std::vector<int32_t> vacc_;  // vertical-pass accumulators for ksize != 4
  int nslots_ = 0;
};

}  // namespace eva_fast
