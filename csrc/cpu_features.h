// x86 SIMD availability, shared by the hot loops (resize.cpp, yuv444.cpp): the AVX2 code is compiled
// with target attributes on x86-64 GCC/Clang and chosen at run time.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EVA_FAST_X86_SIMD 1
#include <immintrin.h>
#else
#define EVA_FAST_X86_SIMD 0
#endif

namespace eva_fast {

inline bool cpu_has_avx2() {
#if EVA_FAST_X86_SIMD
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

}  // namespace eva_fast
