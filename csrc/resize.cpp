#include "resize.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

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
#else
#define EVA_FAST_MULTIVERSION
#endif

AxisTable make_axis_table(int in_size, int out_size, ResizeFilter filter) {
  if (in_size <= 0 || out_size <= 0) {
    throw std::invalid_argument("resize: sizes must be positive, got in=" + std::to_string(in_size) +
                                " out=" + std::to_string(out_size));
  }
  AxisTable t;
  t.out_size = out_size;
  const double scale = static_cast<double>(in_size) / out_size;
  if (filter == ResizeFilter::kCubic) {
    // OpenCV INTER_CUBIC: fx = (dx + 0.5) * scale - 0.5 computed in float, sx = floor(fx),
    // coefficients from interpolateCubic(fx - sx) with A = -0.75, c3 = 1 - c0 - c1 - c2.
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

RgbResizer::RgbResizer(int src_w, int src_h, int dst_w, int dst_h, ResizeFilter filter)
    : src_w_(src_w), src_h_(src_h), dst_w_(dst_w), dst_h_(dst_h), filter_(filter) {
  h_ = make_axis_table(src_w, dst_w, filter);
  v_ = make_axis_table(src_h, dst_h, filter);
  hshift_ = filter == ResizeFilter::kAntialias ? kAaHShift : 0;
  nslots_ = std::min(v_.ksize + 2, src_h + 1);
  rows_.assign(static_cast<size_t>(nslots_) * dst_w * 3, 0);
  row_of_slot_.assign(nslots_, -1);
}

EVA_FAST_MULTIVERSION void RgbResizer::hpass_row(const uint8_t* src, int32_t* out) const {
  const int ks = h_.ksize;
  const int32_t* idx = h_.index.data();
  const int16_t* cf = h_.coef.data();
  if (ks == 4) {
    for (int dx = 0; dx < dst_w_; ++dx, idx += 4, cf += 4) {
      const uint8_t* p0 = src + 3 * idx[0];
      const uint8_t* p1 = src + 3 * idx[1];
      const uint8_t* p2 = src + 3 * idx[2];
      const uint8_t* p3 = src + 3 * idx[3];
      const int32_t a0 = cf[0], a1 = cf[1], a2 = cf[2], a3 = cf[3];
      out[3 * dx + 0] = p0[0] * a0 + p1[0] * a1 + p2[0] * a2 + p3[0] * a3;
      out[3 * dx + 1] = p0[1] * a0 + p1[1] * a1 + p2[1] * a2 + p3[1] * a3;
      out[3 * dx + 2] = p0[2] * a0 + p1[2] * a1 + p2[2] * a2 + p3[2] * a3;
    }
    return;
  }
  const int32_t hround = hshift_ > 0 ? (1 << (hshift_ - 1)) : 0;
  for (int dx = 0; dx < dst_w_; ++dx, idx += ks, cf += ks) {
    int32_t r = hround, g = hround, b = hround;
    for (int k = 0; k < ks; ++k) {
      const uint8_t* p = src + 3 * idx[k];
      const int32_t a = cf[k];
      r += p[0] * a;
      g += p[1] * a;
      b += p[2] * a;
    }
    out[3 * dx + 0] = r >> hshift_;
    out[3 * dx + 1] = g >> hshift_;
    out[3 * dx + 2] = b >> hshift_;
  }
}

EVA_FAST_MULTIVERSION void RgbResizer::run(const uint8_t* src, int src_stride, uint8_t* dst, int dst_stride) {
  const int ks = v_.ksize;
  const int n = dst_w_ * 3;
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
      int32_t* row = &rows_[static_cast<size_t>(slot) * n];
      if (row_of_slot_[slot] != sy) {
        hpass_row(src + static_cast<size_t>(sy) * src_stride, row);
        row_of_slot_[slot] = sy;
      }
      rp[k] = row;
    }
    uint8_t* out = dst + static_cast<size_t>(dy) * dst_stride;
    if (ks == 4) {
      const int32_t* r0 = rp[0];
      const int32_t* r1 = rp[1];
      const int32_t* r2 = rp[2];
      const int32_t* r3 = rp[3];
      const int32_t b0 = vcf[0], b1 = vcf[1], b2 = vcf[2], b3 = vcf[3];
      for (int x = 0; x < n; ++x) {
        int32_t acc = r0[x] * b0 + r1[x] * b1 + r2[x] * b2 + r3[x] * b3;
        acc = (acc + kRound) >> kShift;
        out[x] = static_cast<uint8_t>(acc < 0 ? 0 : (acc > 255 ? 255 : acc));
      }
    } else {
      for (int x = 0; x < n; ++x) {
        int32_t acc = 0;
        for (int k = 0; k < ks; ++k) acc += rp[k][x] * vcf[k];
        acc = (acc + kRound) >> kShift;
        out[x] = static_cast<uint8_t>(acc < 0 ? 0 : (acc > 255 ? 255 : acc));
      }
    }
  }
}

}  // namespace eva_fast
