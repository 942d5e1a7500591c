#include "yuv444.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

extern "C" {
#include <libavutil/pixfmt.h>
#include <libswscale/swscale.h>
}

#include "cpu_features.h"

namespace eva_fast {
namespace {

// libswscale/yuv2rgb.c roundToInt16: round a 16.16 value to int16, saturating.
int round_to_int16(int64_t f) {
  const int r = static_cast<int>((f + (1 << 15)) >> 16);
  if (r < -0x7FFF) return -0x8000;
  if (r > 0x7FFF) return 0x7FFF;
  return r;
}

inline uint8_t clip30_shift(int32_t x) {
  if (x < 0) x = 0;
  if (x > (1 << 30) - 1) x = (1 << 30) - 1;
  return static_cast<uint8_t>(x >> 22);
}

std::atomic<bool> g_fast{true};

#if EVA_FAST_X86_SIMD
// pshufb masks that interleave 16 R, 16 G and 16 B bytes into 48 RGB bytes: out[k] =
// shuf(R, m[k][0]) | shuf(G, m[k][1]) | shuf(B, m[k][2]).
struct InterleaveMasks {
  alignas(16) int8_t m[3][3][16];
  InterleaveMasks() {
    for (int k = 0; k < 3; ++k) {
      for (int c = 0; c < 3; ++c) {
        for (int i = 0; i < 16; ++i) {
          const int j = 16 * k + i;
          m[k][c][i] = (j % 3 == c) ? static_cast<int8_t>(j / 3) : static_cast<int8_t>(-128);
        }
      }
    }
  }
};
const InterleaveMasks kMasks;

// 2 x 8 int32 in [0, 255] -> 16 uint8 in pixel order (packs works per 128-bit lane).
__attribute__((target("avx2"))) inline __m128i pack_channel(__m256i lo, __m256i hi) {
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
  return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

__attribute__((target("avx2"))) void row_avx2(const Yuv444Coefficients& c, const uint8_t* y, const uint8_t* u,
                                              const uint8_t* v, int n, uint8_t* rgb) {
  const __m256i yoff = _mm256_set1_epi32(c.y_offset), ycoef = _mm256_set1_epi32(c.y_coeff);
  const __m256i v2r = _mm256_set1_epi32(c.v2r), v2g = _mm256_set1_epi32(c.v2g);
  const __m256i u2g = _mm256_set1_epi32(c.u2g), u2b = _mm256_set1_epi32(c.u2b);
  const __m256i round = _mm256_set1_epi32(1 << 21), c128 = _mm256_set1_epi32(128);
  const __m256i zero = _mm256_setzero_si256(), top = _mm256_set1_epi32((1 << 30) - 1);
  __m128i mask[3][3];
  for (int k = 0; k < 3; ++k) {
    for (int ch = 0; ch < 3; ++ch) mask[k][ch] = _mm_load_si128(reinterpret_cast<const __m128i*>(kMasks.m[k][ch]));
  }
  int x = 0;
  for (; x + 16 <= n; x += 16) {
    const __m128i yb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(y + x));
    const __m128i ub = _mm_loadu_si128(reinterpret_cast<const __m128i*>(u + x));
    const __m128i vb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + x));
    __m256i r[2], g[2], b[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i Y = _mm256_cvtepu8_epi32(h ? _mm_srli_si128(yb, 8) : yb);
      const __m256i U = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_cvtepu8_epi32(h ? _mm_srli_si128(ub, 8) : ub), c128), 9);
      const __m256i V = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_cvtepu8_epi32(h ? _mm_srli_si128(vb, 8) : vb), c128), 9);
      const __m256i T =
          _mm256_add_epi32(_mm256_mullo_epi32(_mm256_sub_epi32(_mm256_slli_epi32(Y, 9), yoff), ycoef), round);
      __m256i R = _mm256_add_epi32(T, _mm256_mullo_epi32(V, v2r));
      __m256i G = _mm256_add_epi32(_mm256_add_epi32(T, _mm256_mullo_epi32(V, v2g)), _mm256_mullo_epi32(U, u2g));
      __m256i B = _mm256_add_epi32(T, _mm256_mullo_epi32(U, u2b));
      r[h] = _mm256_srli_epi32(_mm256_min_epi32(_mm256_max_epi32(R, zero), top), 22);
      g[h] = _mm256_srli_epi32(_mm256_min_epi32(_mm256_max_epi32(G, zero), top), 22);
      b[h] = _mm256_srli_epi32(_mm256_min_epi32(_mm256_max_epi32(B, zero), top), 22);
    }
    const __m128i r8 = pack_channel(r[0], r[1]), g8 = pack_channel(g[0], g[1]), b8 = pack_channel(b[0], b[1]);
    for (int k = 0; k < 3; ++k) {
      const __m128i o = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(r8, mask[k][0]), _mm_shuffle_epi8(g8, mask[k][1])),
                                     _mm_shuffle_epi8(b8, mask[k][2]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(rgb + 3 * x + 16 * k), o);
    }
  }
  if (x < n) yuv444_to_rgb_scalar(c, y + x, u + x, v + x, n - x, rgb + 3 * x);
}
#endif

// The swscale conversion the decoder runs (cpu_device.cpp convert_into), for one h x w image.
bool swscale_convert(int av_pix_fmt, const int inv_table[4], bool full, const uint8_t* const planes[3], int h, int w,
                     std::vector<uint8_t>* rgb) {
  SwsContext* sws = sws_getContext(w, h, static_cast<AVPixelFormat>(av_pix_fmt), w, h, AV_PIX_FMT_RGB24, SWS_BICUBIC,
                                   nullptr, nullptr, nullptr);
  if (!sws) return false;
  sws_setColorspaceDetails(sws, inv_table, full ? 1 : 0, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
  rgb->assign(static_cast<size_t>(w) * h * 3 + 256, 0);
  uint8_t* dst[4] = {rgb->data(), nullptr, nullptr, nullptr};
  int dst_stride[4] = {w * 3, 0, 0, 0};
  const int src_stride[4] = {w, w, w, 0};
  const uint8_t* src[4] = {planes[0], planes[1], planes[2], nullptr};
  const int rows = sws_scale(sws, src, src_stride, 0, h, dst, dst_stride);
  sws_freeContext(sws);
  return rows == h;
}

// Does the converter reproduce the loaded swscale? Planes of 256 x 256 covering every (Y, U) with
// V = 128, every (Y, V) with U = 128, and every (U, V) at Y = 16, 128 and 235.
bool matches_swscale(const Yuv444ToRgb& conv, int av_pix_fmt, const int inv_table[4], bool full) {
  constexpr int kW = 256, kBlocks = 5, kH = 256 * kBlocks;
  std::vector<uint8_t> y(kW * kH), u(kW * kH), v(kW * kH);
  for (int blk = 0; blk < kBlocks; ++blk) {
    for (int r = 0; r < 256; ++r) {
      for (int col = 0; col < kW; ++col) {
        const size_t i = static_cast<size_t>(blk * 256 + r) * kW + col;
        switch (blk) {
          case 0: y[i] = r; u[i] = col; v[i] = 128; break;
          case 1: y[i] = r; u[i] = 128; v[i] = col; break;
          default: y[i] = blk == 2 ? 16 : (blk == 3 ? 128 : 235); u[i] = r; v[i] = col; break;
        }
      }
    }
  }
  const uint8_t* planes[3] = {y.data(), u.data(), v.data()};
  std::vector<uint8_t> want;
  if (!swscale_convert(av_pix_fmt, inv_table, full, planes, kH, kW, &want)) return false;
  std::vector<uint8_t> got(static_cast<size_t>(kW) * kH * 3 + 64);
  const int lines[3] = {kW, kW, kW};
  conv.convert(planes, lines, kH, kW, got.data(), kW * 3);
  return std::memcmp(got.data(), want.data(), static_cast<size_t>(kW) * kH * 3) == 0;
}

}  // namespace

int swscale_colorspace(int av_colorspace) {
  if (av_colorspace == AVCOL_SPC_UNSPECIFIED || av_colorspace == AVCOL_SPC_RESERVED || av_colorspace > AVCOL_SPC_ICTCP ||
      av_colorspace < 0) {
    return SWS_CS_DEFAULT;
  }
  return av_colorspace;
}

Yuv444Coefficients yuv444_coefficients(int sws_colorspace, bool src_full_range) {
  const int* inv = sws_getCoefficients(sws_colorspace);
  int64_t crv = inv[0], cbu = inv[1], cgu = -inv[2], cgv = -inv[3];
  int64_t cy = 1 << 16, oy = 0;
  const int64_t contrast = 1 << 16, saturation = 1 << 16, brightness = 0;
  if (!src_full_range) {
    cy = (cy * 255) / 219;
    oy = 16 << 16;
  } else {
    crv = (crv * 224) / 255;
    cbu = (cbu * 224) / 255;
    cgu = (cgu * 224) / 255;
    cgv = (cgv * 224) / 255;
  }
  cy = (cy * contrast) >> 16;
  crv = (crv * contrast * saturation) >> 32;
  cbu = (cbu * contrast * saturation) >> 32;
  cgu = (cgu * contrast * saturation) >> 32;
  cgv = (cgv * contrast * saturation) >> 32;
  oy -= 256 * brightness;
  Yuv444Coefficients c;
  c.y_offset = static_cast<int16_t>(round_to_int16(oy * (1 << 9)));
  c.y_offset_simd = static_cast<int16_t>(round_to_int16(oy * (1 << 3)));
  c.y_coeff = static_cast<int16_t>(round_to_int16(cy * (1 << 13)));
  c.v2r = static_cast<int16_t>(round_to_int16(crv * (1 << 13)));
  c.v2g = static_cast<int16_t>(round_to_int16(cgv * (1 << 13)));
  c.u2g = static_cast<int16_t>(round_to_int16(cgu * (1 << 13)));
  c.u2b = static_cast<int16_t>(round_to_int16(cbu * (1 << 13)));
  return c;
}

void yuv444_to_rgb_scalar(const Yuv444Coefficients& c, const uint8_t* y, const uint8_t* u, const uint8_t* v, int n,
                          uint8_t* rgb) {
  for (int i = 0; i < n; ++i) {
    const int32_t Y = (static_cast<int32_t>(y[i]) << 9) - c.y_offset;
    const int32_t U = (static_cast<int32_t>(u[i]) - 128) * 512;
    const int32_t V = (static_cast<int32_t>(v[i]) - 128) * 512;
    const uint32_t T = static_cast<uint32_t>(Y * c.y_coeff + (1 << 21));
    // swscale adds in unsigned 32-bit arithmetic and reads the sums back as int.
    const int32_t R = static_cast<int32_t>(T + static_cast<uint32_t>(V) * static_cast<uint32_t>(c.v2r));
    const int32_t G = static_cast<int32_t>(T + static_cast<uint32_t>(V) * static_cast<uint32_t>(c.v2g) +
                                           static_cast<uint32_t>(U) * static_cast<uint32_t>(c.u2g));
    const int32_t B = static_cast<int32_t>(T + static_cast<uint32_t>(U) * static_cast<uint32_t>(c.u2b));
    rgb[3 * i + 0] = clip30_shift(R);
    rgb[3 * i + 1] = clip30_shift(G);
    rgb[3 * i + 2] = clip30_shift(B);
  }
}

void Yuv444ToRgb::convert(const uint8_t* const planes[3], const int linesizes[3], int h, int w, uint8_t* rgb,
                          int rgb_stride) const {
  for (int r = 0; r < h; ++r) {
    const uint8_t* y = planes[0] + static_cast<ptrdiff_t>(r) * linesizes[0];
    const uint8_t* u = planes[1] + static_cast<ptrdiff_t>(r) * linesizes[1];
    const uint8_t* v = planes[2] + static_cast<ptrdiff_t>(r) * linesizes[2];
    uint8_t* out = rgb + static_cast<ptrdiff_t>(r) * rgb_stride;
#if EVA_FAST_X86_SIMD
    row_avx2(c_, y, u, v, w, out);
#else
    yuv444_to_rgb_scalar(c_, y, u, v, w, out);
#endif
  }
}

const Yuv444ToRgb* Yuv444ToRgb::get(int av_pix_fmt, int sws_colorspace, bool src_full_range) {
  if (!g_fast.load(std::memory_order_relaxed) || !cpu_has_avx2()) return nullptr;
  if (av_pix_fmt != AV_PIX_FMT_YUV444P && av_pix_fmt != AV_PIX_FMT_YUVJ444P) return nullptr;
  static std::mutex mu;
  static std::map<std::array<int, 3>, std::unique_ptr<Yuv444ToRgb>> checked;  // null: does not match
  const std::array<int, 3> key{av_pix_fmt, sws_colorspace, src_full_range ? 1 : 0};
  std::lock_guard<std::mutex> lock(mu);
  auto it = checked.find(key);
  if (it == checked.end()) {
    auto conv = std::make_unique<Yuv444ToRgb>(yuv444_coefficients(sws_colorspace, src_full_range));
    if (!matches_swscale(*conv, av_pix_fmt, sws_getCoefficients(sws_colorspace), src_full_range)) conv.reset();
    it = checked.emplace(key, std::move(conv)).first;
  }
  return it->second.get();
}

bool set_yuv444_fast(bool enabled) { return g_fast.exchange(enabled); }

bool yuv444_fast_available(int sws_colorspace, bool src_full_range) {
  return Yuv444ToRgb::get(AV_PIX_FMT_YUV444P, sws_colorspace, src_full_range) != nullptr;
}

int64_t yuv444_mismatches_exhaustive(int sws_colorspace, bool src_full_range) {
  // Every (Y, U, V): a 4096 x 4096 image, pixel i = (i >> 16, (i >> 8) & 255, i & 255).
  constexpr int kW = 4096, kH = 4096;
  std::vector<uint8_t> y(static_cast<size_t>(kW) * kH), u(y.size()), v(y.size());
  for (size_t i = 0; i < y.size(); ++i) {
    y[i] = static_cast<uint8_t>(i >> 16);
    u[i] = static_cast<uint8_t>(i >> 8);
    v[i] = static_cast<uint8_t>(i);
  }
  const uint8_t* planes[3] = {y.data(), u.data(), v.data()};
  std::vector<uint8_t> want;
  if (!swscale_convert(AV_PIX_FMT_YUV444P, sws_getCoefficients(sws_colorspace), src_full_range, planes, kH, kW,
                       &want)) {
    return -1;
  }
  Yuv444ToRgb conv(yuv444_coefficients(sws_colorspace, src_full_range));
  std::vector<uint8_t> got(static_cast<size_t>(kW) * kH * 3 + 64);
  const int lines[3] = {kW, kW, kW};
  conv.convert(planes, lines, kH, kW, got.data(), kW * 3);
  int64_t bad = 0;
  for (size_t i = 0; i < static_cast<size_t>(kW) * kH * 3; ++i) bad += got[i] != want[i];
  return bad;
}

}  // namespace eva_fast
