// Separable RGB24 resampling used right after colour conversion.
//
// Two filters:
//  * kCubic: Keys cubic convolution with a = -0.75, 4 taps, no antialiasing, pixel-centre
//    alignment and replicated borders, computed bit for bit as cv2.resize(..., INTER_CUBIC) of the
//    x86-64 opencv-python wheels computes it (the EVA reference frame tool's resize). Those wheels
//    hand 8-bit cubic resizes to Intel IPP (ippicv, ippiResizeCubic_8u with B = 0, C = 0.75, border
//    replicate) whenever the source is at least 4x4, and to OpenCV's own code otherwise
//    (modules/imgproc/src/resize.cpp), so there are two arithmetics (ResizeArith):
//      kIppFloat    source >= 4x4. Float32 weights per output coordinate: t = float(rem / den)
//                   from the exact rational source position, distances d0 = float(1 + t),
//                   d3 = float(2 - t), d1 = d0 - 1, d2 = d3 - 1, each weight the Keys polynomial
//                   evaluated in double and rounded to float. Horizontal pass in float32:
//                   p0*w0, then fmaf with taps 1, 2, 3; vertical pass fmaf(r0, b0, r1*b1) +
//                   fmaf(r2, b2, r3*b3); round half to even, saturate to [0, 255]. Measured, not
//                   read: IPP is closed source; this is what its AVX-512 (k0) code path returns on
//                   every size and image the tests try (tests/video/test_resize.py). Its AVX2 and
//                   SSE paths round about 1e-5 of values the other way, so cv2 itself differs by
//                   CPU; eva_fast follows the AVX-512 path.
//      kOpenCvFixed source narrower or shorter than 4 px. OpenCV's interpolateCubic coefficients
//                   in 11-bit fixed point, int32 horizontal pass; vertical pass as its SSE2 code
//                   (VResizeCubicVec_32s8u): the first 8k values of a row in float32
//                   (((r3*b3 + r2*b2) + r1*b1) + r0*b0, b = coef / 2^22, no FMA, round half to
//                   even), the rest (acc + 2^21) >> 22, saturated.
//  * kAntialias: Keys cubic with a = -0.5 whose support is widened by the downscale factor and
//    whose weights are normalised per output pixel (Pillow's Image.resize(BICUBIC) definition,
//    libImaging/Resample.c). Many taps, so 14-bit weights corrected to sum to exactly 1.0, and
//    the horizontal pass keeps 7 fractional bits (int32 throughout, no intermediate clipping).
#pragma once

#include <cstdint>
#include <vector>

namespace eva_fast {

enum class ResizeFilter { kCubic = 0, kAntialias = 1 };

// How a resize computes (see above). kFixed: int16 weights, int32 passes (kAntialias).
enum class ResizeArith { kFixed = 0, kIppFloat = 1, kOpenCvFixed = 2 };

// The arithmetic cv2 would use for this source size and filter (kCubic: kIppFloat from 4x4 up).
ResizeArith resize_arith(int src_w, int src_h, ResizeFilter filter);

// Per-axis filter table: for output coordinate i, taps k in [0, ksize) read source index
// index[i * ksize + k] with weight coef[i * ksize + k] (fixed point, 2^coef_bits = 1.0), or with
// weight[i * ksize + k] (float32) when arith == kIppFloat (coef is then empty).
struct AxisTable {
  int ksize = 0;
  int coef_bits = 11;
  int out_size = 0;
  ResizeArith arith = ResizeArith::kFixed;
  std::vector<int32_t> index;
  std::vector<int16_t> coef;
  std::vector<float> weight;
};

AxisTable make_axis_table(int in_size, int out_size, ResizeFilter filter, ResizeArith arith);

// Both tables of one resize, with the arithmetic resize_arith() picks (the CUDA kernel's plan).
struct ResizeTables {
  AxisTable h, v;
  ResizeArith arith = ResizeArith::kFixed;
  int hshift = 0;  // bits dropped after the horizontal pass (kAntialias: 7)
};
ResizeTables make_resize_tables(int src_w, int src_h, int dst_w, int dst_h, ResizeFilter filter);

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
  void run_float(const uint8_t* src, int src_stride, uint8_t* dst, int dst_stride);

  // SIMD horizontal pass: output columns [simd_lo_, simd_hi_) read consecutive source pixels from
  // hfirst_[dx], in hgroups_ groups of 4 taps (one 16-byte load each). Per column and group, 16
  // int16 weights laid out for pmaddwd: {c0,c1,c0,c1,c0,c1,0,0, c2,c3,c2,c3,c2,c3,0,0}.
  std::vector<int16_t> hsimd_coef_;
  std::vector<int32_t> hfirst_;
  int hgroups_ = 1;
  int simd_lo_ = 0, simd_hi_ = 0;

  int src_w_, src_h_, dst_w_, dst_h_;
  ResizeFilter filter_;
  ResizeArith arith_;
  int hshift_ = 0;  // bits dropped after the horizontal pass
  AxisTable h_, v_;
  // Ring of horizontally filtered rows, keyed by source row.
  std::vector<int32_t> rows_;
  std::vector<int> row_of_slot_;
  std::vector<int32_t> vacc_;  // vertical-pass accumulators for ksize != 4
  std::vector<float> frows_;   // kIppFloat: ring of horizontally filtered rows (float32)
  // kIppFloat horizontal pass per output value j = 3 dx + c: tap k's byte offset and weight.
  std::vector<int32_t> hoff_store_;
  std::vector<float> hw_store_;
  const int32_t* hoff_[4] = {};
  const float* hw_[4] = {};
  bool hsimd_ = false;  // kIppFloat: the AVX2 + FMA passes exist on this CPU
  int hsimd_end_ = 0;   // output pixels [0, hsimd_end_) take the AVX2 horizontal pass
  int nslots_ = 0;
};

}  // namespace eva_fast
