#include "resize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu_features.h"
#include "resize_math.h"

namespace eva_fast {
namespace {

constexpr int kCoefBits = 11;
constexpr int kCoefScale = 1 << kCoefBits;  // 2048, OpenCV's INTER_RESIZE_COEF_SCALE

constexpr int kAaCoefBits = 14;
constexpr int kAaHShift = 7;

inline int16_t to_fixed(double w, int bits = kCoefBits) {
  // cvRound + saturate_cast<short>: round half to even on the float value.
  double r = std::nearbyint(w * (1 << bits));
  r = std::min(32767.0, std::max(-32768.0, r));
  return static_cast<int16_t>(r);
}

// Keys cubic kernel, parameter a.
inline double keys_cubic(double x, double a) {
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

}  // namespace

// Hot loops are built twice on x86-64 (AVX2 and baseline) and picked at load time; the integer
// arithmetic is identical, so results do not depend on the CPU.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define EVA_FAST_MULTIVERSION __attribute__((target_clones("avx2", "default")))
// The float (kIppFloat) passes want FMA instructions: without them std::fmaf is a libm call (same
// result, slower).
#define EVA_FAST_MULTIVERSION_FMA __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EVA_FAST_MULTIVERSION
#define EVA_FAST_MULTIVERSION_FMA
#endif

namespace {

std::atomic<bool> g_resize_simd{cpu_has_avx2()};

bool cpu_has_avx2_fma() {
#if EVA_FAST_X86_SIMD
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

#if EVA_FAST_X86_SIMD
// Horizontal pass for output columns [dx0, dx1) whose taps are consecutive source pixels starting
// at first[dx]. Taps go in groups of four: one unaligned 16-byte load covers four RGB pixels (12
// bytes), two byte shuffles widen them to int16 pairs {p0,p1} and {p2,p3} per channel, and two
// pmaddwd add {r,g,b,0} partial sums in int32. Weights per column and group are laid out
// {c0,c1,c0,c1,c0,c1,0,0, c2,c3,c2,c3,c2,c3,0,0} (zeros past the last tap). The 16-byte store also
// writes one int32 past the pixel; the next column (or the row's padding) overwrites it. Same
// integers as the scalar loop: uint8 x int16 products and their sums fit int32 exactly.
__attribute__((target("avx2"))) void hpass_avx2(const uint8_t* src, int32_t* out, const int32_t* first,
                                                const int16_t* coef, int groups, int hshift, int dx0,
                                                int dx1) {
  const __m128i shuf_lo = _mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
  const __m128i shuf_hi = _mm_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);
  const __m128i round = _mm_set1_epi32(hshift > 0 ? 1 << (hshift - 1) : 0);
  const __m128i shift = _mm_cvtsi32_si128(hshift);
  for (int dx = dx0; dx < dx1; ++dx) {
    const uint8_t* p = src + 3 * first[dx];
    const int16_t* c = coef + static_cast<size_t>(dx) * groups * 16;
    __m128i acc = round;
    for (int g = 0; g < groups; ++g, p += 12, c += 16) {
      const __m128i px = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i c_lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c));
      const __m128i c_hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 8));
      acc = _mm_add_epi32(acc, _mm_madd_epi16(_mm_shuffle_epi8(px, shuf_lo), c_lo));
      acc = _mm_add_epi32(acc, _mm_madd_epi16(_mm_shuffle_epi8(px, shuf_hi), c_hi));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 3 * dx), _mm_sra_epi32(acc, shift));
  }
}
#endif

}  // namespace

bool set_resize_simd(bool enabled) {
  return g_resize_simd.exchange(enabled && cpu_has_avx2());
}

bool resize_simd_available() { return cpu_has_avx2(); }

ResizeArith resize_arith(int src_w, int src_h, ResizeFilter filter) {
  if (filter != ResizeFilter::kCubic) return ResizeArith::kFixed;
  // OpenCV hands the resize to IPP only when IPP accepts the size: cubic needs a 4x4 source.
  return src_w >= 4 && src_h >= 4 ? ResizeArith::kIppFloat : ResizeArith::kOpenCvFixed;
}

AxisTable make_axis_table(int in_size, int out_size, ResizeFilter filter, ResizeArith arith) {
  if (in_size <= 0 || out_size <= 0) {
    throw std::invalid_argument("resize: sizes must be positive, got in=" + std::to_string(in_size) +
                                " out=" + std::to_string(out_size));
  }
  if ((filter == ResizeFilter::kCubic) == (arith == ResizeArith::kFixed)) {
    throw std::invalid_argument("resize: kCubic needs kIppFloat or kOpenCvFixed arithmetic, kAntialias kFixed");
  }
  AxisTable t;
  t.out_size = out_size;
  t.arith = arith;
  if (arith == ResizeArith::kIppFloat) {
    // Source position of output i: ((2i + 1) * in - out) / (2 * out), exactly; sx its floor, rem /
    // den the fraction, which only then becomes a float t. Distances to the taps sx-1..sx+2 are
    // float(1 + t), t, 1 - t, 2 - t with the inner two taken from the outer two (d0 - 1, d3 - 1,
    // exact); each weight is a Keys (a = -0.75) polynomial in double rounded to float, the outer
    // ones in the power form ((a x^3 - 5a x^2) + 8a x) - 4a. See resize.h.
    constexpr double a = -0.75;
    t.ksize = 4;
    t.index.resize(static_cast<size_t>(out_size) * 4);
    t.weight.resize(static_cast<size_t>(out_size) * 4);
    const int64_t den = 2 * static_cast<int64_t>(out_size);
    for (int i = 0; i < out_size; ++i) {
      const int64_t num = (2 * static_cast<int64_t>(i) + 1) * in_size - out_size;
      int64_t sx = num / den;
      if (sx * den > num) --sx;  // floor for negative positions (upscaling, first outputs)
      const int64_t rem = num - sx * den;
      const float tf = static_cast<float>(static_cast<double>(rem) / static_cast<double>(den));
      const double d0 = static_cast<double>(1.0f + tf), d3 = static_cast<double>(2.0f - tf);
      const double d1 = d0 - 1.0, d2 = d3 - 1.0;
      auto far = [](double x) { return ((a * x * x * x + (-5 * a) * x * x) + 8 * a * x) + (-4 * a); };
      auto near = [](double x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };
      const double w[4] = {far(d0), near(d1), near(d2), far(d3)};
      for (int k = 0; k < 4; ++k) {
        const int64_t idx = std::min<int64_t>(std::max<int64_t>(sx - 1 + k, 0), in_size - 1);
        t.index[i * 4 + k] = static_cast<int32_t>(idx);
        t.weight[i * 4 + k] = static_cast<float>(w[k]);
      }
    }
    return t;
  }
  if (filter == ResizeFilter::kCubic) {
    // OpenCV INTER_CUBIC (its own code, kOpenCvFixed): scale = 1 / (out / in) as cv::resize
    // computes it, fx = (dx + 0.5) * scale - 0.5 in float, sx = floor(fx), coefficients from
    // interpolateCubic(fx - sx) with A = -0.75, c3 = 1 - c0 - c1 - c2, 11-bit fixed point.
    const double scale = 1.0 / (static_cast<double>(out_size) / in_size);
    t.ksize = 4;
    t.index.resize(static_cast<size_t>(out_size) * 4);
    t.coef.resize(static_cast<size_t>(out_size) * 4);
    for (int dx = 0; dx < out_size; ++dx) {
      float fx = static_cast<float>((dx + 0.5) * scale - 0.5);
      int sx = static_cast<int>(std::floor(fx));
      fx -= static_cast<float>(sx);
      const float A = -0.75f;
      float x = fx;
      float c0 = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
      float c1 = ((A + 2) * x - (A + 3)) * x * x + 1;
      float c2 = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
      float c3 = 1.f - c0 - c1 - c2;
      const float c[4] = {c0, c1, c2, c3};
      for (int k = 0; k < 4; ++k) {
        int idx = std::min(std::max(sx - 1 + k, 0), in_size - 1);
        t.index[dx * 4 + k] = idx;
        t.coef[dx * 4 + k] = to_fixed(c[k]);
      }
    }
    return t;
  }
  // Antialiased (Pillow-style) bicubic, a = -0.5, support scaled by the downscale factor.
  const double scale = static_cast<double>(in_size) / out_size;
  const double a = -0.5;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.ksize = ksize;
  t.coef_bits = kAaCoefBits;
  const int32_t one = 1 << kAaCoefBits;
  t.index.assign(static_cast<size_t>(out_size) * ksize, 0);
  t.coef.assign(static_cast<size_t>(out_size) * ksize, 0);
  std::vector<double> w(ksize);
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    int n = xmax - xmin;
    n = std::min(n, ksize);
    double total = 0.0;
    for (int k = 0; k < n; ++k) {
      w[k] = keys_cubic((k + xmin - center + 0.5) / filterscale, a);
      total += w[k];
    }
    int32_t isum = 0;
    int best = 0;
    for (int k = 0; k < ksize; ++k) {
      int16_t q = 0;
      if (k < n && total != 0.0) q = to_fixed(w[k] / total, kAaCoefBits);
      t.coef[i * ksize + k] = q;
      t.index[i * ksize + k] = std::min(xmin + k, in_size - 1);
      isum += q;
      if (k < n && std::abs(t.coef[i * ksize + k]) > std::abs(t.coef[i * ksize + best])) best = k;
    }
    // Make the fixed-point weights sum to exactly 1.0 so flat regions keep their level.
    t.coef[i * ksize + best] = static_cast<int16_t>(t.coef[i * ksize + best] + (one - isum));
  }
  return t;
}

ResizeTables make_resize_tables(int src_w, int src_h, int dst_w, int dst_h, ResizeFilter filter) {
  ResizeTables r;
  r.arith = resize_arith(src_w, src_h, filter);
  r.h = make_axis_table(src_w, dst_w, filter, r.arith);
  r.v = make_axis_table(src_h, dst_h, filter, r.arith);
  r.hshift = filter == ResizeFilter::kAntialias ? kAaHShift : 0;
  return r;
}

RgbResizer::RgbResizer(int src_w, int src_h, int dst_w, int dst_h, ResizeFilter filter)
    : src_w_(src_w), src_h_(src_h), dst_w_(dst_w), dst_h_(dst_h), filter_(filter) {
  ResizeTables tables = make_resize_tables(src_w, src_h, dst_w, dst_h, filter);
  arith_ = tables.arith;
  h_ = std::move(tables.h);
  v_ = std::move(tables.v);
  hshift_ = tables.hshift;
  nslots_ = std::min(v_.ksize + 2, src_h + 1);
  if (arith_ == ResizeArith::kIppFloat) {
    const int n = dst_w * 3;
    // row pitch n + 1: the SIMD pass's 16-byte store may write one float past the row
    frows_.assign(static_cast<size_t>(nslots_) * (n + 1), 0.f);
    hsimd_ = cpu_has_avx2_fma();
    // output pixels before the first that reads the row's last pixel (tap indices grow with dx)
    hsimd_end_ = 0;
    while (hsimd_ && hsimd_end_ < dst_w && h_.index[hsimd_end_ * 4 + 3] < src_w - 1) ++hsimd_end_;
    hoff_store_.resize(static_cast<size_t>(4) * n);
    hw_store_.resize(static_cast<size_t>(4) * n);
    for (int k = 0; k < 4; ++k) {
      hoff_[k] = &hoff_store_[static_cast<size_t>(k) * n];
      hw_[k] = &hw_store_[static_cast<size_t>(k) * n];
      for (int dx = 0; dx < dst_w; ++dx)
        for (int c = 0; c < 3; ++c) {
          hoff_store_[static_cast<size_t>(k) * n + 3 * dx + c] = 3 * h_.index[dx * 4 + k] + c;
          hw_store_[static_cast<size_t>(k) * n + 3 * dx + c] = h_.weight[dx * 4 + k];
        }
    }
    row_of_slot_.assign(nslots_, -1);
    return;  // no integer tables: the SIMD horizontal pass below is for the fixed-point weights
  }
  // +4 int32 per row: the SIMD pass stores 4 int32 at the last column.
  rows_.assign(static_cast<size_t>(nslots_) * (dst_w * 3 + 4), 0);
  vacc_.assign(static_cast<size_t>(dst_w) * 3, 0);
  // SIMD columns: every tap with a non-zero weight reads source pixel first + k, and the last group's
  // 16-byte load stays inside the row. Indices grow with dx, so these columns form one run.
  const int ks = h_.ksize;
  hgroups_ = (ks + 3) / 4;
  hsimd_coef_.assign(static_cast<size_t>(dst_w) * hgroups_ * 16, 0);
  hfirst_.assign(dst_w, 0);
  simd_lo_ = simd_hi_ = 0;
  bool in_run = false, run_closed = false;
  for (int dx = 0; dx < dst_w; ++dx) {
    const int32_t* idx = &h_.index[static_cast<size_t>(dx) * ks];
    const int16_t* cf = &h_.coef[static_cast<size_t>(dx) * ks];
    int16_t* c = &hsimd_coef_[static_cast<size_t>(dx) * hgroups_ * 16];
    hfirst_[dx] = idx[0];
    bool ok = 3 * (idx[0] + 4 * (hgroups_ - 1)) + 16 <= 3 * src_w;
    for (int k = 0; k < ks; ++k) {
      if (cf[k] != 0 && idx[k] != idx[0] + k) ok = false;
      int16_t* g = c + (k / 4) * 16 + ((k % 4) / 2) * 8;
      for (int j = 0; j < 3; ++j) g[2 * j + (k % 2)] = cf[k];
    }
    if (ok && !run_closed) {
      if (!in_run) simd_lo_ = dx;
      in_run = true;
      simd_hi_ = dx + 1;
    } else if (ok && run_closed) {
      // A second run (not expected): keep the first one only.
    } else if (in_run) {
      run_closed = true;
    }
  }
  if (!in_run) simd_lo_ = simd_hi_ = 0;
  row_of_slot_.assign(nslots_, -1);
}

EVA_FAST_MULTIVERSION void RgbResizer::hpass_row(const uint8_t* src, int32_t* out) const {
  const int ks = h_.ksize;
  const int32_t* idx = h_.index.data();
  const int16_t* cf = h_.coef.data();
  int dx = 0;
  int scalar_end = dst_w_;
#if EVA_FAST_X86_SIMD
  if (simd_hi_ > simd_lo_ && g_resize_simd.load(std::memory_order_relaxed)) {
    hpass_avx2(src, out, hfirst_.data(), hsimd_coef_.data(), hgroups_, hshift_, simd_lo_, simd_hi_);
    // Scalar columns: [0, simd_lo_) and [simd_hi_, dst_w_), the latter after the SIMD run so
    // its overhanging store is overwritten.
    scalar_end = simd_lo_;
  }
#endif
  if (ks == 4) {
    for (; dx < dst_w_; ++dx) {
      if (dx == scalar_end) {
        dx = simd_hi_;
        scalar_end = dst_w_;
        if (dx >= dst_w_) break;
      }
      const int32_t* ix = idx + 4 * dx;
      const int16_t* c = cf + 4 * dx;
      const uint8_t* p0 = src + 3 * ix[0];
      const uint8_t* p1 = src + 3 * ix[1];
      const uint8_t* p2 = src + 3 * ix[2];
      const uint8_t* p3 = src + 3 * ix[3];
      const int32_t a0 = c[0], a1 = c[1], a2 = c[2], a3 = c[3];
      out[3 * dx + 0] = p0[0] * a0 + p1[0] * a1 + p2[0] * a2 + p3[0] * a3;
      out[3 * dx + 1] = p0[1] * a0 + p1[1] * a1 + p2[1] * a2 + p3[1] * a3;
      out[3 * dx + 2] = p0[2] * a0 + p1[2] * a1 + p2[2] * a2 + p3[2] * a3;
    }
    return;
  }
  const int32_t hround = hshift_ > 0 ? (1 << (hshift_ - 1)) : 0;
  for (; dx < dst_w_; ++dx) {
    if (dx == scalar_end) {
      dx = simd_hi_;
      scalar_end = dst_w_;
      if (dx >= dst_w_) break;
    }
    const int32_t* ix = idx + static_cast<size_t>(ks) * dx;
    const int16_t* c = cf + static_cast<size_t>(ks) * dx;
    int32_t r = hround, g = hround, b = hround;
    for (int k = 0; k < ks; ++k) {
      const uint8_t* p = src + 3 * ix[k];
      const int32_t a = c[k];
      r += p[0] * a;
      g += p[1] * a;
      b += p[2] * a;
    }
    out[3 * dx + 0] = r >> hshift_;
    out[3 * dx + 1] = g >> hshift_;
    out[3 * dx + 2] = b >> hshift_;
  }
}

namespace {

// kIppFloat horizontal pass of one source row, float32 out. off[k][j] / w[k][j]: byte offset of tap k
// of output value j (= 3 dx + c) in the row and its weight (the portable loop).
EVA_FAST_MULTIVERSION_FMA void ipp_hpass_row(const uint8_t* src, float* out, const int32_t* const* off,
                                             const float* const* w, int j0, int j1) {
  const int32_t *o0 = off[0], *o1 = off[1], *o2 = off[2], *o3 = off[3];
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  for (int j = j0; j < j1; ++j) {
    out[j] = resize_math::ipp_hpass(src[o0[j]], src[o1[j]], src[o2[j]], src[o3[j]], w0[j], w1[j], w2[j], w3[j]);
  }
}

#if EVA_FAST_X86_SIMD
// The same pass with AVX2 + FMA for output pixels [0, dx1): each tap's RGB is one 4-byte load
// widened to {r, g, b, x} floats, so the four lanes run the same mul / fmadd chain as
// resize_math::ipp_hpass (x is ignored; only the needed source pixels are read, which matters for
// strong downscales). The 16-byte store writes one float past the pixel, which the next pixel (or
// the row's padding) overwrites. dx1 stops before the first pixel whose last tap is the row's last
// pixel (its 4-byte load would read past the row).
__attribute__((target("avx2,fma"))) inline __m128 rgbx_ps(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm_cvtepi32_ps(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(v)));
}

__attribute__((target("avx2,fma"))) void ipp_hpass_row_avx2(const uint8_t* src, float* out, const int32_t* idx,
                                                             const float* w, int dx1) {
  for (int dx = 0; dx < dx1; ++dx) {
    const int32_t* ix = idx + 4 * dx;
    const float* wx = w + 4 * dx;
    __m128 acc = _mm_mul_ps(rgbx_ps(src + 3 * ix[0]), _mm_set1_ps(wx[0]));
    acc = _mm_fmadd_ps(rgbx_ps(src + 3 * ix[1]), _mm_set1_ps(wx[1]), acc);
    acc = _mm_fmadd_ps(rgbx_ps(src + 3 * ix[2]), _mm_set1_ps(wx[2]), acc);
    acc = _mm_fmadd_ps(rgbx_ps(src + 3 * ix[3]), _mm_set1_ps(wx[3]), acc);
    _mm_storeu_ps(out + 3 * dx, acc);
  }
}

// resize_math::ipp_vpass on 16 values at a time, for x in [0, n16): the same mul / fmadd / add in
// float32, cvtps2dq rounds half to even (the default MXCSR mode, as rintf), the two packs saturate.
__attribute__((target("avx2,fma"))) int ipp_vpass_row_avx2(const float* r0, const float* r1, const float* r2,
                                                            const float* r3, const float* b, uint8_t* out, int n) {
  const __m256 b0 = _mm256_set1_ps(b[0]), b1 = _mm256_set1_ps(b[1]), b2 = _mm256_set1_ps(b[2]),
               b3 = _mm256_set1_ps(b[3]);
  auto vals = [&](int x) __attribute__((target("avx2,fma"))) {
    const __m256 lo = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + x), b0, _mm256_mul_ps(_mm256_loadu_ps(r1 + x), b1));
    const __m256 hi = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + x), b2, _mm256_mul_ps(_mm256_loadu_ps(r3 + x), b3));
    return _mm256_cvtps_epi32(_mm256_add_ps(lo, hi));
  };
  int x = 0;
  for (; x + 16 <= n; x += 16) {
    const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(vals(x), vals(x + 8)), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x),
                     _mm_packus_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1)));
  }
  return x;
}
#endif

// kIppFloat vertical pass of one output row, values [x0, n).
EVA_FAST_MULTIVERSION_FMA void ipp_vpass_row(const float* r0, const float* r1, const float* r2, const float* r3,
                                             const float* b, uint8_t* out, int x0, int n) {
  const float b4[4] = {b[0], b[1], b[2], b[3]};
  for (int x = x0; x < n; ++x) out[x] = resize_math::ipp_vpass(r0[x], r1[x], r2[x], r3[x], b4);
}

}  // namespace

void RgbResizer::run_float(const uint8_t* src, int src_stride, uint8_t* dst, int dst_stride) {
  const int n = dst_w_ * 3;
  std::fill(row_of_slot_.begin(), row_of_slot_.end(), -1);
  const float* rp[4];
  for (int dy = 0; dy < dst_h_; ++dy) {
    const int32_t* vidx = &v_.index[static_cast<size_t>(dy) * 4];
    for (int k = 0; k < 4; ++k) {
      const int sy = vidx[k];
      const int slot = sy % nslots_;
      float* row = &frows_[static_cast<size_t>(slot) * (n + 1)];
      if (row_of_slot_[slot] != sy) {
        const uint8_t* s = src + static_cast<size_t>(sy) * src_stride;
        int j0 = 0;
#if EVA_FAST_X86_SIMD
        if (hsimd_end_ > 0 && g_resize_simd.load(std::memory_order_relaxed)) {
          ipp_hpass_row_avx2(s, row, h_.index.data(), h_.weight.data(), hsimd_end_);
          j0 = 3 * hsimd_end_;
        }
#endif
        ipp_hpass_row(s, row, hoff_, hw_, j0, n);
        row_of_slot_[slot] = sy;
      }
      rp[k] = row;
    }
    const float* b = &v_.weight[static_cast<size_t>(dy) * 4];
    uint8_t* out = dst + static_cast<size_t>(dy) * dst_stride;
    int x0 = 0;
#if EVA_FAST_X86_SIMD
    if (hsimd_ && g_resize_simd.load(std::memory_order_relaxed)) x0 = ipp_vpass_row_avx2(rp[0], rp[1], rp[2], rp[3], b, out, n);
#endif
    ipp_vpass_row(rp[0], rp[1], rp[2], rp[3], b, out, x0, n);
  }
}

EVA_FAST_MULTIVERSION void RgbResizer::run(const uint8_t* src, int src_stride, uint8_t* dst, int dst_stride) {
  if (arith_ == ResizeArith::kIppFloat) {
    run_float(src, src_stride, dst, dst_stride);
    return;
  }
  const int ks = v_.ksize;
  const int n = dst_w_ * 3;
  const int row_pitch = n + 4;
  std::fill(row_of_slot_.begin(), row_of_slot_.end(), -1);
  std::vector<const int32_t*> rp(ks);
  const int kShift = h_.coef_bits + v_.coef_bits - hshift_;
  const int32_t kRound = 1 << (kShift - 1);
  for (int dy = 0; dy < dst_h_; ++dy) {
    const int32_t* vidx = &v_.index[static_cast<size_t>(dy) * ks];
    const int16_t* vcf = &v_.coef[static_cast<size_t>(dy) * ks];
    for (int k = 0; k < ks; ++k) {
      const int sy = vidx[k];
      const int slot = sy % nslots_;
      int32_t* row = &rows_[static_cast<size_t>(slot) * row_pitch];
      if (row_of_slot_[slot] != sy) {
        hpass_row(src + static_cast<size_t>(sy) * src_stride, row);
        row_of_slot_[slot] = sy;
      }
      rp[k] = row;
    }
    uint8_t* out = dst + static_cast<size_t>(dy) * dst_stride;
    if (arith_ == ResizeArith::kOpenCvFixed) {
      const int nv = n / resize_math::kOpenCvVecLanes * resize_math::kOpenCvVecLanes;
      for (int x = 0; x < nv; ++x) out[x] = resize_math::opencv_vpass_float(rp[0][x], rp[1][x], rp[2][x], rp[3][x], vcf);
      for (int x = nv; x < n; ++x) out[x] = resize_math::opencv_vpass_int(rp[0][x], rp[1][x], rp[2][x], rp[3][x], vcf);
    } else {
      // Taps outer, columns inner: the inner loops vectorise.
      int32_t* acc = vacc_.data();
      std::fill(acc, acc + n, kRound);
      for (int k = 0; k < ks; ++k) {
        const int32_t* r = rp[k];
        const int32_t b = vcf[k];
        if (b == 0) continue;
        for (int x = 0; x < n; ++x) acc[x] += r[x] * b;
      }
      for (int x = 0; x < n; ++x) {
        const int32_t v = acc[x] >> kShift;
        out[x] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
      }
    }
  }
}

}  // namespace eva_fast
