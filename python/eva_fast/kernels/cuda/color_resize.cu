// CUDA colour conversion (NV12/P016 -> RGB24) fused with the CPU path's separable resize.
// See color_resize.h for the contract and yuv_coeffs.h for the colour maths; the plain-torch
// twin is kernels/reference/yuv_to_rgb.py.
#include <cuda_runtime.h>

#include <cstdint>

#include "color_resize.h"
#include "resize_math.h"

namespace eva_fast {
namespace cuda {
namespace {

// Per-thread bodies are __host__ __device__: the kernels call them on the GPU, and
// emulate_yuv420_to_rgb_resize_host() runs the very same code on the CPU (tests without a GPU).
__host__ __device__ inline float load_sample(const uint8_t* row, int x, int bps, int shift) {
  if (bps == 1) return static_cast<float>(row[x]);
  return static_cast<float>(reinterpret_cast<const uint16_t*>(row)[x] >> shift);
}

__host__ __device__ inline int to_u8(float v) {
  // round half away from zero is irrelevant after clamping to [0, 255]: v >= 0 here when kept
  v = rintf(v);  // round half to even, as the torch reference (torch.round)
  return v < 0.f ? 0 : (v > 255.f ? 255 : static_cast<int>(v));
}

// x86 SIMD 16-bit lane operations of swscale's yuv_2_rgb.asm.
__host__ __device__ inline int sat16(int v) { return v < -32768 ? -32768 : (v > 32767 ? 32767 : v); }
__host__ __device__ inline int wrap16(int v) { return static_cast<int16_t>(static_cast<uint16_t>(v & 0xFFFF)); }
__host__ __device__ inline int pmulhw(int a, int b) { return (a * b) >> 16; }  // arithmetic shift: floor
__host__ __device__ inline int clamp_u8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

// RGB8 of source pixel (x, y).
__host__ __device__ inline void yuv_pixel(const Nv12Planes& s, const YuvParams& p, int x, int y, int* rgb) {
  const uint8_t* yrow = static_cast<const uint8_t*>(s.y) + static_cast<size_t>(y) * s.y_pitch;
  const uint8_t* uv = static_cast<const uint8_t*>(s.uv);
  const int cx = (x >> 1) * 2;
  if (p.swscale_int) {  // 8-bit: yuv420_rgb24_ssse3's arithmetic, bit for bit
    const uint8_t* crow = uv + static_cast<size_t>(y >> 1) * s.uv_pitch;
    const int yy = wrap16((static_cast<int>(yrow[x]) << 3) - p.i_y_offset);
    const int u = sat16((static_cast<int>(crow[cx]) << 3) - 1024);
    const int v = sat16((static_cast<int>(crow[cx + 1]) << 3) - 1024);
    const int Y = pmulhw(yy, p.i_y_coeff);
    const int g = sat16(pmulhw(u, p.i_u2g) + pmulhw(v, p.i_v2g));
    rgb[0] = clamp_u8(sat16(Y + pmulhw(v, p.i_v2r)));
    rgb[1] = clamp_u8(sat16(Y + g));
    rgb[2] = clamp_u8(sat16(Y + pmulhw(u, p.i_u2b)));
    return;
  }
  float Uc, Vc;
  if (p.chroma_vtaps == 4) {  // swscale's scaled route: vertical cubic interpolation of chroma
    const int ch = (s.height + 1) >> 1;
    const float* w = (y & 1) ? p.cw_odd : p.cw_even;
    const int k0 = (y & 1) ? ((y - 1) >> 1) - 1 : (y >> 1) - 2;
    Uc = 0.f;
    Vc = 0.f;
    for (int t = 0; t < 4; ++t) {
      int r = k0 + t;
      r = r < 0 ? 0 : (r >= ch ? ch - 1 : r);
      const uint8_t* crow = uv + static_cast<size_t>(r) * s.uv_pitch;
      Uc = Uc + w[t] * load_sample(crow, cx, p.bytes_per_sample, p.sample_shift);
      Vc = Vc + w[t] * load_sample(crow, cx + 1, p.bytes_per_sample, p.sample_shift);
    }
  } else {
    const uint8_t* crow = uv + static_cast<size_t>(y >> 1) * s.uv_pitch;
    Uc = load_sample(crow, cx, p.bytes_per_sample, p.sample_shift);
    Vc = load_sample(crow, cx + 1, p.bytes_per_sample, p.sample_shift);
  }
  const float Y = (load_sample(yrow, x, p.bytes_per_sample, p.sample_shift) - p.y_off) * p.y_scale;
  const float U = (Uc - p.c_off) * p.c_scale;
  const float V = (Vc - p.c_off) * p.c_scale;
  rgb[0] = to_u8(255.f * (Y + p.r_v * V));
  rgb[1] = to_u8(255.f * (Y + p.g_u * U + p.g_v * V));
  rgb[2] = to_u8(255.f * (Y + p.b_u * U));
}

constexpr int kArithIppFloat = 1;    // eva_fast::ResizeArith::kIppFloat
constexpr int kArithOpenCvFixed = 2;  // eva_fast::ResizeArith::kOpenCvFixed

// Pass 1, one output: (output column dx, source row sy): horizontal filter of converted pixels.
__host__ __device__ inline void hpass_at(const Nv12Planes& s, const YuvParams& p, const DeviceAxisTable& h, int hshift,
                                         int32_t* scratch, int dx, int sy) {
  const int32_t* idx = h.index + static_cast<size_t>(dx) * h.ksize;
  if (h.arith == kArithIppFloat) {  // 4 taps, float32 (resize_math::ipp_hpass), stored as float bits
    int px[4][3];
    for (int k = 0; k < 4; ++k) yuv_pixel(s, p, idx[k], sy, px[k]);
    float* o = reinterpret_cast<float*>(scratch) + (static_cast<size_t>(sy) * h.out_size + dx) * 3;
    const float* w = h.weight + static_cast<size_t>(dx) * 4;
    for (int c = 0; c < 3; ++c)
      o[c] = resize_math::ipp_hpass(static_cast<float>(px[0][c]), static_cast<float>(px[1][c]),
                                    static_cast<float>(px[2][c]), static_cast<float>(px[3][c]), w[0], w[1], w[2],
                                    w[3]);
    return;
  }
  const int16_t* cf = h.coef + static_cast<size_t>(dx) * h.ksize;
  const int32_t round = hshift > 0 ? (1 << (hshift - 1)) : 0;
  int32_t r = round, g = round, b = round;
  for (int k = 0; k < h.ksize; ++k) {
    int rgb[3];
    yuv_pixel(s, p, idx[k], sy, rgb);
    const int32_t a = cf[k];
    r += rgb[0] * a;
    g += rgb[1] * a;
    b += rgb[2] * a;
  }
  int32_t* o = scratch + (static_cast<size_t>(sy) * h.out_size + dx) * 3;
  o[0] = r >> hshift;
  o[1] = g >> hshift;
  o[2] = b >> hshift;
}

__global__ void hpass_kernel(Nv12Planes s, YuvParams p, DeviceAxisTable h, int hshift, int32_t* scratch) {
  const int dx = blockIdx.x * blockDim.x + threadIdx.x;
  if (dx >= h.out_size) return;
  hpass_at(s, p, h, hshift, scratch, dx, blockIdx.y);
}

// Pass 2, one output pixel (x, y) of the unrotated image, 3 channels: vertical filter, round,
// clamp, rotate, store.
__host__ __device__ inline void vpass_at(const int32_t* scratch, const DeviceAxisTable& h, const DeviceAxisTable& v,
                                         int hshift, int rotation, uint8_t* out, int x, int y) {
  const int rw = h.out_size, rh = v.out_size;
  const int32_t* vidx = v.index + static_cast<size_t>(y) * v.ksize;
  uint8_t px[3];
  if (v.arith == kArithIppFloat) {
    const float* f = reinterpret_cast<const float*>(scratch);
    const float* r[4];
    for (int k = 0; k < 4; ++k) r[k] = f + (static_cast<size_t>(vidx[k]) * rw + x) * 3;
    const float* b = v.weight + static_cast<size_t>(y) * 4;
    for (int c = 0; c < 3; ++c) px[c] = resize_math::ipp_vpass(r[0][c], r[1][c], r[2][c], r[3][c], b);
  } else if (v.arith == kArithOpenCvFixed) {
    const int32_t* r[4];
    for (int k = 0; k < 4; ++k) r[k] = scratch + (static_cast<size_t>(vidx[k]) * rw + x) * 3;
    const int16_t* b = v.coef + static_cast<size_t>(y) * 4;
    // OpenCV's SIMD loop covers the row's first 8 * floor(3 rw / 8) values (resize_math.h).
    const int nv = 3 * rw / resize_math::kOpenCvVecLanes * resize_math::kOpenCvVecLanes;
    for (int c = 0; c < 3; ++c)
      px[c] = 3 * x + c < nv ? resize_math::opencv_vpass_float(r[0][c], r[1][c], r[2][c], r[3][c], b)
                             : resize_math::opencv_vpass_int(r[0][c], r[1][c], r[2][c], r[3][c], b);
  } else {
    const int shift = h.coef_bits + v.coef_bits - hshift;
    const int32_t round = 1 << (shift - 1);
    const int16_t* vcf = v.coef + static_cast<size_t>(y) * v.ksize;
    int32_t acc[3] = {0, 0, 0};
    for (int k = 0; k < v.ksize; ++k) {
      const int32_t* row = scratch + (static_cast<size_t>(vidx[k]) * rw + x) * 3;
      const int32_t b = vcf[k];
      acc[0] += row[0] * b;
      acc[1] += row[1] * b;
      acc[2] += row[2] * b;
    }
    for (int c = 0; c < 3; ++c) {
      const int32_t a = (acc[c] + round) >> shift;
      px[c] = static_cast<uint8_t>(a < 0 ? 0 : (a > 255 ? 255 : a));
    }
  }
  int ox = x, oy = y, ow = rw;
  if (rotation == 90) {  // clockwise: (x, y) -> (rh - 1 - y, x), output rh wide
    ox = rh - 1 - y;
    oy = x;
    ow = rh;
  } else if (rotation == 180) {
    ox = rw - 1 - x;
    oy = rh - 1 - y;
  } else if (rotation == 270) {  // (x, y) -> (y, rw - 1 - x)
    ox = y;
    oy = rw - 1 - x;
    ow = rh;
  }
  uint8_t* o = out + (static_cast<size_t>(oy) * ow + ox) * 3;
  for (int c = 0; c < 3; ++c) o[c] = px[c];
}

__global__ void vpass_kernel(const int32_t* scratch, DeviceAxisTable h, DeviceAxisTable v, int hshift, int rotation,
                             uint8_t* out) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  if (x >= h.out_size) return;
  vpass_at(scratch, h, v, hshift, rotation, out, x, blockIdx.y);
}

}  // namespace

int launch_yuv420_to_rgb_resize(const Nv12Planes& src, const YuvParams& p, const DeviceAxisTable& h,
                                const DeviceAxisTable& v, int hshift, int32_t* scratch, uint8_t* out,
                                int rotation_deg, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  constexpr int kThreads = 128;
  dim3 g1((h.out_size + kThreads - 1) / kThreads, src.height);
  hpass_kernel<<<g1, kThreads, 0, st>>>(src, p, h, hshift, scratch);
  dim3 g2((h.out_size + kThreads - 1) / kThreads, v.out_size);
  vpass_kernel<<<g2, kThreads, 0, st>>>(scratch, h, v, hshift, rotation_deg, out);
  return static_cast<int>(cudaGetLastError());
}

void emulate_yuv420_to_rgb_resize_host(const Nv12Planes& src, const YuvParams& p, const DeviceAxisTable& h,
                                       const DeviceAxisTable& v, int hshift, int32_t* scratch, uint8_t* out,
                                       int rotation_deg) {
  for (int sy = 0; sy < src.height; ++sy)
    for (int dx = 0; dx < h.out_size; ++dx) hpass_at(src, p, h, hshift, scratch, dx, sy);
  for (int y = 0; y < v.out_size; ++y)
    for (int x = 0; x < h.out_size; ++x) vpass_at(scratch, h, v, hshift, rotation_deg, out, x, y);
}

void yuv420_to_rgb_host(const Nv12Planes& src, const YuvParams& p, uint8_t* rgb) {
  for (int y = 0; y < src.height; ++y) {
    for (int x = 0; x < src.width; ++x) {
      int c[3];
      yuv_pixel(src, p, x, y, c);
      uint8_t* o = rgb + (static_cast<size_t>(y) * src.width + x) * 3;
      o[0] = static_cast<uint8_t>(c[0]);
      o[1] = static_cast<uint8_t>(c[1]);
      o[2] = static_cast<uint8_t>(c[2]);
    }
  }
}

int alloc_async(void** ptr, size_t bytes, void* stream) {
  return static_cast<int>(cudaMallocAsync(ptr, bytes, static_cast<cudaStream_t>(stream)));
}
int free_async(void* ptr, void* stream) {
  return static_cast<int>(cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream)));
}
int copy_async(void* dst, const void* src, size_t bytes, void* stream) {
  return static_cast<int>(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream)));
}
int set_device(int device) { return static_cast<int>(cudaSetDevice(device)); }
int stream_synchronize(void* stream) {
  return static_cast<int>(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}
int stream_create_nonblocking(void** stream) {
  cudaStream_t st = nullptr;
  const int rc = static_cast<int>(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  *stream = st;
  return rc;
}
int stream_destroy(void* stream) { return static_cast<int>(cudaStreamDestroy(static_cast<cudaStream_t>(stream))); }
int event_create(void** event) {
  cudaEvent_t ev = nullptr;
  const int rc = static_cast<int>(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  *event = ev;
  return rc;
}
int event_destroy(void* event) { return static_cast<int>(cudaEventDestroy(static_cast<cudaEvent_t>(event))); }
int event_record(void* event, void* stream) {
  return static_cast<int>(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
}
int event_synchronize(void* event) { return static_cast<int>(cudaEventSynchronize(static_cast<cudaEvent_t>(event))); }
int stream_wait_event(void* stream, void* event) {
  return static_cast<int>(
      cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0));
}
int pool_create(void** pool, int device, unsigned long long keep_bytes) {
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t p = nullptr;
  cudaError_t rc = cudaMemPoolCreate(&p, &props);
  if (rc == cudaSuccess) {
    int no = 0;
    rc = cudaMemPoolSetAttribute(p, cudaMemPoolReuseAllowInternalDependencies, &no);
  }
  if (rc == cudaSuccess) {
    unsigned long long keep = keep_bytes;  // cuuint64_t
    rc = cudaMemPoolSetAttribute(p, cudaMemPoolAttrReleaseThreshold, &keep);
  }
  *pool = p;
  return static_cast<int>(rc);
}
int alloc_from_pool_async(void** ptr, size_t bytes, void* pool, void* stream) {
  return static_cast<int>(
      cudaMallocFromPoolAsync(ptr, bytes, static_cast<cudaMemPool_t>(pool), static_cast<cudaStream_t>(stream)));
}
std::string error_string(int code) {
  return std::string(cudaGetErrorName(static_cast<cudaError_t>(code))) + ": " +
         cudaGetErrorString(static_cast<cudaError_t>(code));
}
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

}  // namespace cuda
}  // namespace eva_fast
