// Per-pixel arithmetic of the cubic resize, shared by the CPU resizer (resize.cpp) and the CUDA
// kernel (python/eva_fast/kernels/cuda/color_resize.cu), so both round exactly alike. See
// resize.h for what each ResizeArith reproduces and where it comes from.
//
// Every float operation is written out: one product, one fused multiply-add or one sum, each
// rounded once to float32 (round to nearest even). Compilers must not contract a product and a
// sum into an FMA on their own: resize.cpp is built with -ffp-contract=off, and the device code
// uses __fmul_rn / __fadd_rn, which nvcc never fuses.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define EVA_FAST_HD __host__ __device__
#else
#define EVA_FAST_HD
#endif

namespace eva_fast {
namespace resize_math {

EVA_FAST_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

EVA_FAST_HD inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// a * b + c rounded once (an FMA instruction on the GPU and on FMA-capable CPUs; libm otherwise).
EVA_FAST_HD inline float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fmaf(a, b, c);
#endif
}

// Round half to even, then saturate to uint8 (cvtps2dq + packs/packus; rint on the GPU).
EVA_FAST_HD inline uint8_t round_sat_u8(float v) {
  v = rintf(v);
  return static_cast<uint8_t>(v < 0.f ? 0.f : (v > 255.f ? 255.f : v));
}

// kIppFloat horizontal pass, one channel of one output pixel: taps p0..p3, weights w0..w3.
EVA_FAST_HD inline float ipp_hpass(float p0, float p1, float p2, float p3, float w0, float w1, float w2, float w3) {
  float r = mul_rn(p0, w0);
  r = fma_rn(p1, w1, r);
  r = fma_rn(p2, w2, r);
  return fma_rn(p3, w3, r);
}

// kIppFloat vertical pass: horizontally filtered rows r0..r3 (float32), weights b[0..3].
EVA_FAST_HD inline uint8_t ipp_vpass(float r0, float r1, float r2, float r3, const float* b) {
  const float lo = fma_rn(r0, b[0], mul_rn(r1, b[1]));
  const float hi = fma_rn(r2, b[2], mul_rn(r3, b[3]));
  return round_sat_u8(add_rn(lo, hi));
}

// kOpenCvFixed vertical pass, values of a row that OpenCV's SSE2 loop handles (the first
// 8 * floor(n / 8) of the row's n = width * 3 values): int32 rows s0..s3, 11-bit weights beta.
constexpr int kOpenCvVecLanes = 8;
EVA_FAST_HD inline uint8_t opencv_vpass_float(int32_t s0, int32_t s1, int32_t s2, int32_t s3, const int16_t* beta) {
  const float scale = 1.f / (2048.f * 2048.f);  // exact power of two
  float t = mul_rn(static_cast<float>(s3), mul_rn(static_cast<float>(beta[3]), scale));
  t = add_rn(mul_rn(static_cast<float>(s2), mul_rn(static_cast<float>(beta[2]), scale)), t);
  t = add_rn(mul_rn(static_cast<float>(s1), mul_rn(static_cast<float>(beta[1]), scale)), t);
  t = add_rn(mul_rn(static_cast<float>(s0), mul_rn(static_cast<float>(beta[0]), scale)), t);
  return round_sat_u8(t);
}

// kOpenCvFixed vertical pass, the rest of the row (OpenCV's scalar tail, FixedPtCast): integers.
EVA_FAST_HD inline uint8_t opencv_vpass_int(int32_t s0, int32_t s1, int32_t s2, int32_t s3, const int16_t* beta) {
  int32_t acc = s0 * beta[0] + s1 * beta[1] + s2 * beta[2] + s3 * beta[3];
  acc = (acc + (1 << 21)) >> 22;
  return static_cast<uint8_t>(acc < 0 ? 0 : (acc > 255 ? 255 : acc));
}

}  // namespace resize_math
}  // namespace eva_fast
