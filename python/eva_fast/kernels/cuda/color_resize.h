// Host interface of the CUDA colour-convert + resize kernels (color_resize.cu). Plain C++: no CUDA
// headers, so csrc/ can include it next to the dlopen'ed driver API (ffnvcodec) types.
//
// One launch turns one decoded 4:2:0 picture (NV12: 8-bit, or P016: 16-bit containers holding
// 10/12-bit samples in the high bits) into RGB24 at the output size, fused with the separable
// resize of the CPU path (csrc/resize.h): the same AxisTable weights and the same per-pixel
// arithmetic (csrc/resize_math.h: float32 FMA passes for cubic, integers for antialias), so the GPU
// output equals "convert on GPU, then the CPU resizer" bit for bit.
//   pass 1 (per source row, per output column): YUV -> RGB8 of each tap, horizontal filter, int32
//           (float32 bits for the float arithmetic)
//   pass 2 (per output row, column, channel): vertical filter, round, clamp, rotate, store uint8.
// All work is enqueued on `stream` (a cudaStream_t / CUstream passed as void*); nothing blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace eva_fast {
namespace cuda {

// Per-launch colour conversion (see make_yuv_params in csrc/nvdec.cpp and the torch twin
// kernels/reference/yuv_to_rgb.py). The CPU path converts with swscale, which takes one of two
// routes, and the kernel reproduces the one the CPU takes for the picture:
//
// * swscale_int (8-bit 4:2:0, even height): swscale's unscaled x86 converter
//   (libswscale/x86/yuv_2_rgb.asm, yuv420_rgb24_ssse3), integer arithmetic reproduced exactly with
//   its int16 coefficients (ff_yuv2rgb_c_init_tables): each 2x2 block uses its chroma sample,
//     y' = int16((Y << 3) - i_y_offset),  u' = sat16((U << 3) - 1024),  v' likewise,
//     Y = pmulhw(y', i_y_coeff),  R = sat16(Y + pmulhw(v', i_v2r)),
//     G = sat16(Y + sat16(pmulhw(u', i_u2g) + pmulhw(v', i_v2g))),  B = sat16(Y + pmulhw(u', i_u2b)),
//   clamped to [0, 255] (pmulhw(a, b) = (a * b) >> 16). Used only where make_yuv_params found the
//   loaded swscale to give exactly these values (it checks once per matrix and range).
// * float (otherwise): the matrices of yuv_coeffs.h in float32, with Y, U, V the native n-bit codes,
//     y = (Y - y_off) * y_scale, u = (U - c_off) * c_scale, v likewise,
//     R = 255 (y + r_v v), G = 255 (y + g_u u + g_v v), B = 255 (y + b_u u),  round half even.
//   Chroma: chroma_vtaps = 1 takes each 2x2 block's sample (swscale's unscaled route); 4 (> 8-bit or
//   odd height, where swscale takes its scaled route) interpolates it vertically as swscale does:
//   4-tap cubic (B = 0, C = 0.6) at MPEG-2 siting, luma row y at chroma row y/2 - 1/4, weights
//   cw_even (rows 2k: chroma rows k-2..k+1) and cw_odd (rows 2k+1: k-1..k+2), edge rows repeated;
//   horizontally each chroma sample serves its 2 columns (swscale without full chroma interpolation).
struct YuvParams {
  float y_off, y_scale, c_off, c_scale;
  float r_v, g_u, g_v, b_u;
  int sample_shift;      // 16-bit samples are shifted right by this (16 - bit depth); 0 for NV12
  int bytes_per_sample;  // 1 (NV12) or 2 (P016)
  int swscale_int;       // 1: the integer route above (8-bit only)
  int i_y_offset, i_y_coeff, i_v2r, i_v2g, i_u2g, i_u2b;
  int chroma_vtaps;      // 1 or 4 (float route)
  float cw_even[4], cw_odd[4];
};

// A decoded picture in device memory: luma plane then interleaved UV plane (half width and height).
struct Nv12Planes {
  const void* y = nullptr;
  const void* uv = nullptr;
  int y_pitch = 0;   // bytes
  int uv_pitch = 0;  // bytes
  int width = 0;     // visible size in pixels (before rotation)
  int height = 0;
};

// Device copies of the resize tables (index int32 [out * ksize], coef int16 [out * ksize] or, for
// arith 1, weight float32 [out * ksize]). arith: eva_fast::ResizeArith as an int (0 fixed point,
// 1 IPP float, 2 OpenCV fixed point with its float vertical pass); both tables of a launch agree.
struct DeviceAxisTable {
  const int32_t* index = nullptr;
  const int16_t* coef = nullptr;
  int ksize = 0;
  int coef_bits = 0;
  int out_size = 0;
  const float* weight = nullptr;
  int arith = 0;
};

// Launch pass 1 + pass 2. scratch: device buffer of at least src_h * h.out_size * 3 int32 (or float)
// elements. out: device uint8, the displayed frame [out_h, out_w, 3] (out_w/out_h after
// rotation). rotation_deg: 0/90/180/270 clockwise. hshift: bits dropped after the horizontal
// pass (0 for cubic, 7 for antialias; as RgbResizer). Returns 0 or a CUDA error code.
int launch_yuv420_to_rgb_resize(const Nv12Planes& src, const YuvParams& p, const DeviceAxisTable& h,
                                const DeviceAxisTable& v, int hshift, int32_t* scratch, uint8_t* out,
                                int rotation_deg, void* stream);

// The same per-thread code run serially on the CPU, on host pointers (src planes, tables, scratch,
// out): lets CPU-only CI check the kernel's indexing and arithmetic against the torch reference.
void emulate_yuv420_to_rgb_resize_host(const Nv12Planes& src, const YuvParams& p, const DeviceAxisTable& h,
                                       const DeviceAxisTable& v, int hshift, int32_t* scratch, uint8_t* out,
                                       int rotation_deg);

// The kernel's colour conversion alone (no resize), run serially on the CPU: rgb is height rows of
// 3 * width bytes. make_yuv_params uses it to check the swscale_int route against the loaded swscale.
void yuv420_to_rgb_host(const Nv12Planes& src, const YuvParams& p, uint8_t* rgb);

// Thin runtime-API helpers (static cudart), so csrc/ needs no CUDA headers. Return 0 or a CUDA
// error code; error_string() describes one.
int alloc_async(void** ptr, size_t bytes, void* stream);  // stream-ordered (cudaMallocAsync)
int free_async(void* ptr, void* stream);                   // stream-ordered (cudaFreeAsync)
int copy_async(void* dst, const void* src, size_t bytes, void* stream);  // any direction
int set_device(int device);
int stream_synchronize(void* stream);
int stream_create_nonblocking(void** stream);  // cudaStreamCreateWithFlags(cudaStreamNonBlocking)
int stream_destroy(void* stream);
int event_create(void** event);                // cudaEventCreateWithFlags(cudaEventDisableTiming)
int event_destroy(void* event);
int event_record(void* event, void* stream);
int event_synchronize(void* event);            // host waits for the work before the record only
int stream_wait_event(void* stream, void* event);  // device-side: stream waits, host does not
// A device memory pool for buffers allocated on one stream and freed on another: it never makes an
// allocation wait for a free on another stream (cudaMemPoolReuseAllowInternalDependencies = 0);
// memory is reused once such a free has completed, else the pool grows. Keeps up to
// `keep_bytes` cached between allocations.
int pool_create(void** pool, int device, unsigned long long keep_bytes);
int alloc_from_pool_async(void** ptr, size_t bytes, void* pool, void* stream);
std::string error_string(int code);
// Device count as the CUDA runtime sees it (0 without a driver or GPU; never throws).
int device_count();

}  // namespace cuda
}  // namespace eva_fast
