// NVDEC device (see nvdec.h). Everything CUDA-specific is inside #if EVA_FAST_WITH_CUDA; a CPU
// build gets create_nvdec_device() returning nullptr with the rebuild hint.
#include "nvdec.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "av_ptr.h"
#include "errors.h"
#include "nal_ref.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavcodec/bsf.h>
#include <libavformat/avformat.h>
#include <libavutil/buffer.h>
#include <libavutil/frame.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

namespace eva_fast {

bool nvdec_signal_is_h273(int av_codec_id) {
  return av_codec_id == AV_CODEC_ID_H264 || av_codec_id == AV_CODEC_ID_HEVC || av_codec_id == AV_CODEC_ID_MPEG2VIDEO;
}

int nvdec_matrix_id(int av_codec_id, int container_matrix, int signal_matrix) {
  if (container_matrix != AVCOL_SPC_UNSPECIFIED) return container_matrix;
  return nvdec_signal_is_h273(av_codec_id) ? signal_matrix : container_matrix;
}

int gpu_workers_for_name(const std::string& name) {
  static const struct {
    const char* model;
    int engines;
  } kTable[] = {
      {"GB200", 7}, {"GH200", 7}, {"H100", 7}, {"H200", 7}, {"H800", 7}, {"B100", 7}, {"B200", 7},
      {"A100", 5},  {"A800", 5},  {"V100", 1}, {"L40", 3},  {"A30", 4},  {"A10", 2},  {"A16", 2},
      {"A40", 2},   {"H20", 7},   {"L4", 4},   {"T4", 2},
  };
  for (const auto& row : kTable) {
    const std::string model = row.model;
    for (size_t at = name.find(model); at != std::string::npos; at = name.find(model, at + 1)) {
      // A whole model token: not followed by a digit (an "A100" is not an "A10"; "L40S" is an L40).
      const size_t after = at + model.size();
      if (after >= name.size() || !(name[after] >= '0' && name[after] <= '9')) return row.engines;
    }
  }
  return 2;
}

}  // namespace eva_fast

#if EVA_FAST_WITH_CUDA

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "color_resize.h"
#include "yuv444.h"
#include "yuv_coeffs.h"

namespace {
thread_local std::string g_ffnv_log;
void eva_ffnv_log(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  std::string s(buf);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (!g_ffnv_log.empty()) g_ffnv_log += "; ";
  g_ffnv_log += s;
}
}  // namespace
#define FFNV_LOG_FUNC(logctx, msg, ...) eva_ffnv_log((msg), __VA_ARGS__)
#define FFNV_DEBUG_LOG_FUNC(logctx, msg, ...)
#include <ffnvcodec/dynlink_loader.h>

namespace eva_fast {
namespace {

// ---------------------------------------------------------------------------------------------
// Run-time loading of libcuda.so.1 / libnvcuvid.so.1 (once per process).
struct Api {
  CudaFunctions* cu = nullptr;
  CuvidFunctions* cv = nullptr;
  std::string error;  // empty when both loaded and cuInit succeeded
};

const Api& api() {
  static Api a;
  static std::once_flag once;
  std::call_once(once, [] {
    g_ffnv_log.clear();
    if (cuda_load_functions(&a.cu, nullptr) < 0) {
      a.error = "the NVIDIA driver library libcuda.so.1 could not be loaded (" + g_ffnv_log + ")";
      return;
    }
    if (cuvid_load_functions(&a.cv, nullptr) < 0) {
      a.error = "libnvcuvid.so.1 (NVDEC, part of the NVIDIA driver) could not be loaded (" + g_ffnv_log + ")";
      return;
    }
    CUresult r = a.cu->cuInit(0);
    if (r != CUDA_SUCCESS) a.error = "cuInit failed with CUDA driver error " + std::to_string(static_cast<int>(r));
  });
  return a;
}

std::string cu_err(CUresult r) {
  const char* name = nullptr;
  const char* desc = nullptr;
  if (api().cu) {
    api().cu->cuGetErrorName(r, &name);
    api().cu->cuGetErrorString(r, &desc);
  }
  return std::string(name ? name : "CUDA error") + " (" + std::to_string(static_cast<int>(r)) + ")" +
         (desc ? std::string(": ") + desc : "");
}

#define EVA_CU_CHECK(call)                                                                     \
  do {                                                                                         \
    CUresult _r = (call);                                                                      \
    if (_r != CUDA_SUCCESS) throw std::runtime_error(std::string("NVDEC: ") + #call + " failed: " + cu_err(_r)); \
  } while (0)

void cuda_rt_check(int code, const char* what) {
  if (code != 0) throw std::runtime_error(std::string("CUDA: ") + what + " failed: " + cuda::error_string(code));
}

struct CtxGuard {
  explicit CtxGuard(CUcontext c) { EVA_CU_CHECK(api().cu->cuCtxPushCurrent(c)); }
  ~CtxGuard() {
    CUcontext dummy;
    api().cu->cuCtxPopCurrent(&dummy);
  }
};

// Per-device primary context (shared with torch and the CUDA runtime), NVDEC context lock, and the
// memory pool of output frame buffers (allocated on a backend's stream, freed on the caller's).
struct DeviceCtx {
  CUcontext ctx = nullptr;
  CUvideoctxlock lock = nullptr;
  void* out_pool = nullptr;
};
constexpr unsigned long long kOutputPoolKeepBytes = 256ull << 20;

DeviceCtx& device_ctx(int device) {
  static std::mutex mu;
  static std::map<int, DeviceCtx> ctxs;
  std::lock_guard<std::mutex> g(mu);
  auto it = ctxs.find(device);
  if (it != ctxs.end()) return it->second;
  const Api& a = api();
  if (!a.error.empty()) throw std::runtime_error(a.error);
  CUdevice dev;
  EVA_CU_CHECK(a.cu->cuDeviceGet(&dev, device));
  DeviceCtx c;
  EVA_CU_CHECK(a.cu->cuDevicePrimaryCtxRetain(&c.ctx, dev));
  EVA_CU_CHECK(a.cv->cuvidCtxLockCreate(&c.lock, c.ctx));
  {
    CtxGuard g(c.ctx);
    cuda_rt_check(cuda::pool_create(&c.out_pool, device, kOutputPoolKeepBytes), "cudaMemPoolCreate (output frames)");
  }
  return ctxs.emplace(device, c).first->second;
}

// ---------------------------------------------------------------------------------------------
// Decoder session cache: idle CUvideodecoder handles by (device, codec, chroma, bit depth, coded
// size, surfaces). A session is stateless between pictures (the parser holds the DPB state), so a
// handle is reused by any later stream with the same key, in this video or another.
using SessionKey = std::tuple<int, int, int, int, unsigned, unsigned, unsigned>;
std::mutex g_pool_mu;
std::map<SessionKey, std::vector<CUvideodecoder>> g_pool;
std::atomic<int64_t> g_sessions_created{0};
// Idle sessions kept: up to kMaxIdlePerKey per key (enough for every GOP run of a request and the
// readers' own decoders) while a device's idle sessions hold at most kMaxIdleBytesPerDevice of
// decode surfaces; the first kMinIdlePerKey of a key are kept whatever their size.
constexpr size_t kMaxIdlePerKey = 16;
constexpr size_t kMinIdlePerKey = 2;
constexpr unsigned long long kMaxIdleBytesPerDevice = 1ull << 30;

// Decode surfaces of a session (NV12 / P016 at the coded size), bytes.
unsigned long long session_bytes(const SessionKey& k) {
  const unsigned long long w = std::get<4>(k), h = std::get<5>(k), surfaces = std::get<6>(k);
  const unsigned long long bps = std::get<3>(k) > 8 ? 2 : 1;
  return w * h * 3 / 2 * bps * surfaces;
}

CUvideodecoder pool_take(const SessionKey& k) {
  std::lock_guard<std::mutex> g(g_pool_mu);
  auto it = g_pool.find(k);
  if (it == g_pool.end() || it->second.empty()) return nullptr;
  CUvideodecoder d = it->second.back();
  it->second.pop_back();
  return d;
}

void pool_give(const SessionKey& k, CUvideodecoder d, CUcontext ctx) {
  bool keep = false;
  {
    std::lock_guard<std::mutex> g(g_pool_mu);
    unsigned long long device_bytes = 0;
    for (auto& kv : g_pool) {
      if (std::get<0>(kv.first) == std::get<0>(k)) device_bytes += kv.second.size() * session_bytes(kv.first);
    }
    auto& v = g_pool[k];
    keep = v.size() < kMinIdlePerKey ||
           (v.size() < kMaxIdlePerKey && device_bytes + session_bytes(k) <= kMaxIdleBytesPerDevice);
    if (keep) v.push_back(d);
  }
  if (!keep) {
    CtxGuard g(ctx);
    api().cv->cuvidDestroyDecoder(d);
  }
}

cudaVideoCodec to_cuvid_codec(AVCodecID id) {
  switch (id) {
    case AV_CODEC_ID_H264: return cudaVideoCodec_H264;
    case AV_CODEC_ID_HEVC: return cudaVideoCodec_HEVC;
    case AV_CODEC_ID_VP9: return cudaVideoCodec_VP9;
    case AV_CODEC_ID_VP8: return cudaVideoCodec_VP8;
    case AV_CODEC_ID_AV1: return cudaVideoCodec_AV1;
    case AV_CODEC_ID_MPEG2VIDEO: return cudaVideoCodec_MPEG2;
    default: return cudaVideoCodec_NumCodecs;
  }
}

// Keys cubic with a = -C, swscale's SWS_BICUBIC (B = 0, C = 0.6: libswscale/utils.c, initFilter).
double swscale_cubic(double d) {
  const double a = -0.6;
  d = std::fabs(d);
  if (d < 1) return (a + 2) * d * d * d - (a + 3) * d * d + 1;
  if (d < 2) return a * d * d * d - 5 * a * d * d + 8 * a * d - 4 * a;
  return 0;
}

// Whether the loaded swscale converts 8-bit 4:2:0 frames of even height with exactly the kernel's
// integer route (p) for this matrix and range: swscale against the kernel's own per-pixel code, on
// planes that hold every (U, V), every (Y, U) and every (Y, V) pair. Checked once per key (~5 ms).
bool swscale_int_route_matches(int sws_cs, bool full_range, const cuda::YuvParams& p) {
  static std::mutex mu;
  static std::map<std::pair<int, bool>, bool> known;
  std::lock_guard<std::mutex> g(mu);
  const auto key = std::make_pair(sws_cs, full_range);
  auto it = known.find(key);
  if (it != known.end()) return it->second;
  constexpr int W = 512, H = 512, CW = W / 2, CH = H / 2, kPad = 64;
  std::vector<uint8_t> y(W * H), u(CW * CH), v(CW * CH), uv(CW * CH * 2), want((W * 3 + kPad) * H + kPad),
      got(W * 3 * H);
  bool ok = true;
  SwsContext* sws = sws_getContext(W, H, AV_PIX_FMT_YUV420P, W, H, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr, nullptr,
                                   nullptr);
  if (!sws) ok = false;
  if (ok) {
    sws_setColorspaceDetails(sws, sws_getCoefficients(sws_cs), full_range ? 1 : 0, sws_getCoefficients(SWS_CS_DEFAULT),
                             1, 0, 1 << 16, 1 << 16);
  }
  for (int pattern = 0; ok && pattern < 3; ++pattern) {
    for (int r = 0; r < H; ++r)
      for (int c = 0; c < W; ++c) y[r * W + c] = static_cast<uint8_t>(pattern == 0 ? (c + 3 * r) & 255 : c & 255);
    for (int r = 0; r < CH; ++r) {
      for (int c = 0; c < CW; ++c) {
        // 0: U by column, V by row (every (U, V)); 1: U by row (every (Y, U)); 2: V by row (every (Y, V))
        const uint8_t uu = static_cast<uint8_t>(pattern == 1 ? r : c), vv = static_cast<uint8_t>(pattern == 1 ? c : r);
        u[r * CW + c] = uu;
        v[r * CW + c] = vv;
        uv[(r * CW + c) * 2] = uu;
        uv[(r * CW + c) * 2 + 1] = vv;
      }
    }
    const uint8_t* src[4] = {y.data(), u.data(), v.data(), nullptr};
    const int src_stride[4] = {W, CW, CW, 0};
    uint8_t* dst[4] = {want.data(), nullptr, nullptr, nullptr};
    const int dst_stride[4] = {W * 3 + kPad, 0, 0, 0};
    if (sws_scale(sws, src, src_stride, 0, H, dst, dst_stride) != H) {
      ok = false;
      break;
    }
    cuda::Nv12Planes planes{y.data(), uv.data(), W, CW * 2, W, H};
    cuda::yuv420_to_rgb_host(planes, p, got.data());
    for (int r = 0; ok && r < H; ++r) ok = std::memcmp(want.data() + r * (W * 3 + kPad), got.data() + r * W * 3, W * 3) == 0;
  }
  if (sws) sws_freeContext(sws);
  known[key] = ok;
  return ok;
}

// Fold yuv_coeffs.h into per-launch constants (mirrored by kernels/reference/yuv_to_rgb.py); the route
// is the one swscale takes on the CPU for this picture (color_resize.h).
cuda::YuvParams make_yuv_params(int matrix_id, bool full_range, int bit_depth, int bytes_per_sample, int height) {
  double kr = EVA_FAST_YUV_DEFAULT_KR, kb = EVA_FAST_YUV_DEFAULT_KB;
#define EVA_ROW(name, id, r, b) \
  if (matrix_id == (id)) {      \
    kr = (r);                   \
    kb = (b);                   \
  }
  EVA_FAST_YUV_MATRICES(EVA_ROW)
#undef EVA_ROW
  const double kg = 1.0 - kr - kb;
  const int n = bit_depth;
  cuda::YuvParams p{};
  if (full_range) {
    p.y_off = 0.f;
    p.y_scale = static_cast<float>(1.0 / ((1 << n) - 1));
    p.c_scale = p.y_scale;
  } else {
    const double k = static_cast<double>(1 << (n - 8));
    p.y_off = static_cast<float>(16.0 * k);
    p.y_scale = static_cast<float>(1.0 / (219.0 * k));
    p.c_scale = static_cast<float>(1.0 / (224.0 * k));
  }
  p.c_off = static_cast<float>(1 << (n - 1));
  p.r_v = static_cast<float>(2.0 * (1.0 - kr));
  p.g_u = static_cast<float>(-2.0 * kb * (1.0 - kb) / kg);
  p.g_v = static_cast<float>(-2.0 * kr * (1.0 - kr) / kg);
  p.b_u = static_cast<float>(2.0 * (1.0 - kb));
  p.bytes_per_sample = bytes_per_sample;
  p.sample_shift = bytes_per_sample == 2 ? 16 - bit_depth : 0;
  // swscale's unscaled route (8-bit, even height) keeps each block's chroma; its scaled route
  // interpolates chroma vertically (swscale_cubic at MPEG-2 siting: luma row y <-> chroma row y/2 - 1/4)
  const bool unscaled = bit_depth == 8 && bytes_per_sample == 1 && height % 2 == 0;
  p.chroma_vtaps = unscaled ? 1 : 4;
  const double even_d[4] = {1.75, 0.75, 0.25, 1.25}, odd_d[4] = {1.25, 0.25, 0.75, 1.75};
  double se = 0, so = 0;
  for (int t = 0; t < 4; ++t) se += swscale_cubic(even_d[t]), so += swscale_cubic(odd_d[t]);
  for (int t = 0; t < 4; ++t) {
    p.cw_even[t] = static_cast<float>(swscale_cubic(even_d[t]) / se);
    p.cw_odd[t] = static_cast<float>(swscale_cubic(odd_d[t]) / so);
  }
  if (unscaled) {
    const int cs = swscale_colorspace(matrix_id);
    const Yuv444Coefficients c = yuv444_coefficients(cs, full_range);
    cuda::YuvParams q = p;
    q.swscale_int = 1;
    q.i_y_offset = c.y_offset_simd;
    q.i_y_coeff = c.y_coeff;
    q.i_v2r = c.v2r;
    q.i_v2g = c.v2g;
    q.i_u2g = c.u2g;
    q.i_u2b = c.u2b;
    if (swscale_int_route_matches(cs, full_range, q)) return q;
  }
  return p;
}

// A DeviceAxisTable over `a`'s index and weights at the given (device or host) addresses.
cuda::DeviceAxisTable device_axis_table(const AxisTable& a, const void* index, const void* weights) {
  cuda::DeviceAxisTable d;
  d.index = static_cast<const int32_t*>(index);
  d.ksize = a.ksize;
  d.coef_bits = a.coef_bits;
  d.out_size = a.out_size;
  d.arith = static_cast<int>(a.arith);
  if (a.arith == ResizeArith::kIppFloat) {
    d.weight = static_cast<const float*>(weights);
  } else {
    d.coef = static_cast<const int16_t*>(weights);
  }
  return d;
}

// Device copies of a resize plan (tables from make_resize_tables: the CPU resizer's own weights).
struct DeviceResizePlan {
  int src_w = 0, src_h = 0, rw = 0, rh = 0;
  ResizeFilter filter = ResizeFilter::kCubic;
  void* mem = nullptr;  // one allocation: h.index, v.index, h.coef, v.coef
  cuda::DeviceAxisTable h, v;
  int hshift = 0;

  // Sizes (height, width): the decoded picture, then the resize output before rotation.
  bool matches(int sh, int sw, int hh, int w, ResizeFilter f) const {
    return mem && sw == src_w && sh == src_h && w == rw && hh == rh && f == filter;
  }
  void release(void* stream) {
    if (mem) cuda::free_async(mem, stream);
    mem = nullptr;
  }
  void build(int sh, int sw, int hh, int w, ResizeFilter f, void* stream) {
    release(stream);
    ResizeTables t = make_resize_tables(sw, sh, w, hh, f);
    const AxisTable &th = t.h, &tv = t.v;
    // The weights travel as int16 (fixed point) or float32 (ResizeArith::kIppFloat): raw bytes.
    auto weight_bytes = [](const AxisTable& a) {
      return a.arith == ResizeArith::kIppFloat ? a.weight.size() * 4 : a.coef.size() * 2;
    };
    auto weight_data = [](const AxisTable& a) -> const void* {
      return a.arith == ResizeArith::kIppFloat ? static_cast<const void*>(a.weight.data()) : a.coef.data();
    };
    const size_t hi = th.index.size() * 4, vi = tv.index.size() * 4, hc = weight_bytes(th), vc = weight_bytes(tv);
    std::vector<uint8_t> host(hi + vi + hc + vc);
    std::memcpy(host.data(), th.index.data(), hi);
    std::memcpy(host.data() + hi, tv.index.data(), vi);
    std::memcpy(host.data() + hi + vi, weight_data(th), hc);
    std::memcpy(host.data() + hi + vi + hc, weight_data(tv), vc);
    cuda_rt_check(cuda::alloc_async(&mem, host.size(), stream), "cudaMallocAsync (resize tables)");
    // Pageable source: the copy has read `host` when this returns.
    cuda_rt_check(cuda::copy_async(mem, host.data(), host.size(), stream), "cudaMemcpyAsync (resize tables)");
    cuda_rt_check(cuda::stream_synchronize(stream), "cudaStreamSynchronize (resize tables)");
    uint8_t* b = static_cast<uint8_t*>(mem);
    h = device_axis_table(th, b, b + hi + vi);
    v = device_axis_table(tv, b + hi, b + hi + vi + hc);
    hshift = t.hshift;
    src_w = sw;
    src_h = sh;
    rw = w;
    rh = hh;
    filter = f;
  }
};

// ---------------------------------------------------------------------------------------------
class NvdecDevice final : public DeviceInterface {
 public:
  NvdecDevice(const AVStream* st, int device, cudaVideoCodec codec)
      : device_(device), codec_(codec), dc_(device_ctx(device)) {
    const AVCodecParameters* par = st->codecpar;
    bsf_ = make_annexb_filter(par, st->time_base, &seq_header_);
    if (par->codec_id == AV_CODEC_ID_H264 || par->codec_id == AV_CODEC_ID_HEVC) {
      skip_codec_ = par->codec_id == AV_CODEC_ID_H264 ? NalCodec::kH264 : NalCodec::kHevc;
      can_skip_ = true;
      hevc_sub_layers_ = hevc_max_sub_layers(seq_header_.data(), seq_header_.size());
    }
    // With a filter, packets are Annex B from here on and seq_header_ holds its parameter sets.
    if (!bsf_ && par->codec_id == AV_CODEC_ID_AV1 && par->extradata_size > 4) {
      // av1C: 4 header bytes, then the configOBUs (sequence header) in low-overhead format.
      seq_header_.assign(par->extradata + 4, par->extradata + par->extradata_size);
    }
    codec_id_ = par->codec_id;
    matrix_id_ = par->color_space;
    full_range_ = par->color_range == AVCOL_RANGE_JPEG;
    color_from_container_ = par->color_space != AVCOL_SPC_UNSPECIFIED;
    range_from_container_ = par->color_range != AVCOL_RANGE_UNSPECIFIED;
    pkt_ = make_packet();
    {
      CtxGuard g(dc_.ctx);
      work_ = std::make_unique<WorkStream>();
    }
    make_parser();  // bsf_, pkt_ and work_ are owned members: a throw here frees them
  }

  ~NvdecDevice() override {
    try {
      CtxGuard g(dc_.ctx);
      clear_queue();
      if (parser_) api().cv->cuvidDestroyVideoParser(parser_);
      plan_.release(work_->stream);
      if (scratch_) cuda::free_async(scratch_, work_->stream);
      if (pool_) av_buffer_pool_uninit(&pool_);  // device buffers go when the last frame is freed
      work_.reset();  // pending work still completes; the stream and events are released after it
    } catch (...) {
    }
    if (decoder_) pool_give(key_, decoder_, dc_.ctx);
  }

  const char* name() const override { return "nvdec"; }

  int send_packet(const AVPacket* pkt, bool skippable, bool* maybe_dropped) override {
    if (maybe_dropped) *maybe_dropped = false;
    CtxGuard g(dc_.ctx);
    if (!pkt) {
      if (bsf_) {
        av_bsf_send_packet(bsf_.get(), nullptr);
        drain_bsf();
      }
      CUVIDSOURCEDATAPACKET p{};
      p.flags = CUVID_PKT_ENDOFSTREAM;
      parse(&p);
      eos_ = true;
      return 0;
    }
    if (pkt->pts != AV_NOPTS_VALUE) {
      packet_info_[pkt->pts] = {pkt->duration, (pkt->flags & AV_PKT_FLAG_KEY) != 0};
      if (packet_info_.size() > 4096) packet_info_.erase(packet_info_.begin());
    }
    if (!bsf_) {
      if (!leave_out(pkt, skippable, maybe_dropped)) parse_packet(pkt);
      return 0;
    }
    if (av_packet_ref(pkt_.get(), pkt) < 0) throw std::bad_alloc();
    int ret = av_bsf_send_packet(bsf_.get(), pkt_.get());
    if (ret < 0) {
      av_packet_unref(pkt_.get());
      return ret;
    }
    drain_bsf(skippable, maybe_dropped);
    return 0;
  }

  // The CPU path's skip_nonref rule on NVDEC: a packet no target needs whose picture nothing
  // references (nal_ref.h) is not sent to the parser, so NVDEC never decodes it.
  bool leave_out(const AVPacket* p, bool skippable, bool* dropped) {
    if (!can_skip_) return false;
    if (skip_codec_ == NalCodec::kHevc) {
      const int s = hevc_max_sub_layers(p->data, static_cast<size_t>(p->size));
      if (s > 0) hevc_sub_layers_ = s;
    }
    if (!skippable || !nal_disposable(skip_codec_, p->data, static_cast<size_t>(p->size), hevc_sub_layers_)) {
      return false;
    }
    if (dropped) *dropped = true;
    return true;
  }

  int receive_frame(AVFrame* out) override {
    if (!queue_.empty()) {
      AVFrame* f = queue_.front();
      queue_.pop_front();
      av_frame_unref(out);
      av_frame_move_ref(out, f);
      av_frame_free(&f);
      return 0;
    }
    return eos_ ? AVERROR_EOF : AVERROR(EAGAIN);
  }

  void flush() override {
    CtxGuard g(dc_.ctx);
    clear_queue();
    if (bsf_) av_bsf_flush(bsf_.get());
    if (parser_) api().cv->cuvidDestroyVideoParser(parser_);
    parser_ = nullptr;
    eos_ = false;
    make_parser();
  }

  void wait_idle() override {
    CtxGuard g(dc_.ctx);
    cuda_rt_check(cuda::stream_synchronize(work_->stream), "cudaStreamSynchronize (NVDEC work stream)");
  }

  void release_session() override {
    CtxGuard g(dc_.ctx);
    clear_queue();
    if (parser_) api().cv->cuvidDestroyVideoParser(parser_);
    parser_ = nullptr;  // flush() makes a new one (and takes a session) before the next packet
    eos_ = false;
    if (decoder_) pool_give(key_, decoder_, dc_.ctx);
    decoder_ = nullptr;
    // The decoded-frame buffers stay for the next request: freeing device memory (cuMemFree)
    // synchronises the whole device, caller's streams included.
  }

  void allocate_output(FrameOutput* out, void* caller_stream) override {
    CtxGuard g(dc_.ctx);
    // From the device's output pool: freed later on the caller's stream, and its reuse must never
    // make this device's stream wait for the caller's (see pool_create).
    void* data = nullptr;
    cuda_rt_check(cuda::alloc_from_pool_async(&data, std::max<size_t>(1, out->frame_bytes * static_cast<size_t>(out->T)),
                                              dc_.out_pool, work_->stream),
                  "cudaMallocFromPoolAsync (output frames)");
    out->device = DeviceFrames{data, device_, caller_stream, out->T, out->height, out->width};
    out->data = static_cast<uint8_t*>(data);
    // Every writer's stream, and the caller's (which frees the buffer), are ordered after the
    // allocation.
    cuda_rt_check(cuda::event_record(work_->ready, work_->stream), "cudaEventRecord (output allocated)");
    out->ready_event = work_->ready;
    cuda_rt_check(cuda::stream_wait_event(caller_stream, work_->ready), "cudaStreamWaitEvent (allocation)");
  }

  void begin_output(FrameOutput& out) override {
    CtxGuard g(dc_.ctx);
    if (out.ready_event && out.ready_event != work_->ready) {
      cuda_rt_check(cuda::stream_wait_event(work_->stream, out.ready_event), "cudaStreamWaitEvent (allocation)");
    }
  }

  void convert_slot(const AVFrame* f, FrameOutput& out, int64_t slot) override {
    CtxGuard g(dc_.ctx);
    const int rotation = out.rotation_deg;
    const bool swap = rotation == 90 || rotation == 270;
    const int rw = swap ? out.height : out.width, rh = swap ? out.width : out.height;
    void* ws = work_->stream;
    if (!plan_.matches(f->height, f->width, rh, rw, out.filter)) plan_.build(f->height, f->width, rh, rw, out.filter, ws);
    const size_t need = static_cast<size_t>(f->height) * rw * 3 * sizeof(int32_t);
    if (need > scratch_bytes_) {
      if (scratch_) cuda::free_async(scratch_, ws);
      scratch_ = nullptr;
      cuda_rt_check(cuda::alloc_async(&scratch_, need, ws), "cudaMallocAsync (resize scratch)");
      scratch_bytes_ = need;
    }
    cuda::Nv12Planes src;
    src.y = f->data[0];
    src.uv = f->data[1];
    src.y_pitch = f->linesize[0];
    src.uv_pitch = f->linesize[1];
    src.width = f->width;
    src.height = f->height;
    const int bps = f->format == AV_PIX_FMT_P016LE ? 2 : 1;
    const cuda::YuvParams p = make_yuv_params(matrix_id_, full_range_, bit_depth_, bps, f->height);
    int rc = cuda::launch_yuv420_to_rgb_resize(src, p, plan_.h, plan_.v, plan_.hshift, static_cast<int32_t*>(scratch_),
                                               out.data + slot * out.frame_bytes, rotation, ws);
    cuda_rt_check(rc, "colour convert + resize kernel launch");
  }

  void copy_slot(FrameOutput& out, int64_t dst_slot, int64_t src_slot) override {
    CtxGuard g(dc_.ctx);
    cuda_rt_check(cuda::copy_async(out.data + dst_slot * out.frame_bytes, out.data + src_slot * out.frame_bytes,
                                   out.frame_bytes, work_->stream),
                  "cudaMemcpyAsync (duplicate frame)");
  }

  void end_output(FrameOutput& out) override {
    CtxGuard g(dc_.ctx);
    // The caller's stream waits on the device for this device's kernels; the host does not wait.
    cuda_rt_check(cuda::event_record(work_->done, work_->stream), "cudaEventRecord (writes done)");
    cuda_rt_check(cuda::stream_wait_event(out.device.stream, work_->done), "cudaStreamWaitEvent (hand-over)");
  }

  void download_planar(const AVFrame* f, std::string* out) override {
    CtxGuard g(dc_.ctx);
    const int bps = f->format == AV_PIX_FMT_P016LE ? 2 : 1;
    const int w = f->width, h = f->height, cw = (w + 1) / 2, ch = (h + 1) / 2;
    std::vector<uint8_t> yh(static_cast<size_t>(w) * h * bps), uvh(static_cast<size_t>(cw) * ch * 2 * bps);
    CUDA_MEMCPY2D c{};
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.srcDevice = reinterpret_cast<CUdeviceptr>(f->data[0]);
    c.srcPitch = f->linesize[0];
    c.dstHost = yh.data();
    c.dstPitch = static_cast<size_t>(w) * bps;
    c.WidthInBytes = static_cast<size_t>(w) * bps;
    c.Height = h;
    EVA_CU_CHECK(api().cu->cuMemcpy2D(&c));
    c.srcDevice = reinterpret_cast<CUdeviceptr>(f->data[1]);
    c.srcPitch = f->linesize[1];
    c.dstHost = uvh.data();
    c.dstPitch = static_cast<size_t>(cw) * 2 * bps;
    c.WidthInBytes = static_cast<size_t>(cw) * 2 * bps;
    c.Height = ch;
    EVA_CU_CHECK(api().cu->cuMemcpy2D(&c));
    out->resize(yh.size() + uvh.size());
    uint8_t* o = reinterpret_cast<uint8_t*>(&(*out)[0]);
    if (bps == 1) {
      std::memcpy(o, yh.data(), yh.size());
      uint8_t* u = o + yh.size();
      uint8_t* v = u + static_cast<size_t>(cw) * ch;
      for (size_t i = 0; i < static_cast<size_t>(cw) * ch; ++i) {
        u[i] = uvh[2 * i];
        v[i] = uvh[2 * i + 1];
      }
      return;
    }
    const int shift = 16 - bit_depth_;
    auto put = [&](size_t at, uint16_t val) {
      val = static_cast<uint16_t>(val >> shift);
      o[2 * at] = static_cast<uint8_t>(val & 0xff);
      o[2 * at + 1] = static_cast<uint8_t>(val >> 8);
    };
    const uint16_t* ys = reinterpret_cast<const uint16_t*>(yh.data());
    const uint16_t* uvs = reinterpret_cast<const uint16_t*>(uvh.data());
    const size_t ny = static_cast<size_t>(w) * h, nc = static_cast<size_t>(cw) * ch;
    for (size_t i = 0; i < ny; ++i) put(i, ys[i]);
    for (size_t i = 0; i < nc; ++i) {
      put(ny + i, uvs[2 * i]);
      put(ny + nc + i, uvs[2 * i + 1]);
    }
  }

 private:
  static int CUDAAPI on_sequence(void* user, CUVIDEOFORMAT* fmt) {
    auto* self = static_cast<NvdecDevice*>(user);
    try {
      return self->handle_sequence(fmt);
    } catch (const std::exception& e) {
      self->error_ = e.what();
      return 0;
    }
  }
  static int CUDAAPI on_decode(void* user, CUVIDPICPARAMS* pic) {
    auto* self = static_cast<NvdecDevice*>(user);
    if (!self->decoder_) return 0;
    CUresult r = api().cv->cuvidDecodePicture(self->decoder_, pic);
    if (r != CUDA_SUCCESS) {
      self->error_ = "cuvidDecodePicture failed: " + cu_err(r);
      return 0;
    }
    return 1;
  }
  static int CUDAAPI on_display(void* user, CUVIDPARSERDISPINFO* disp) {
    auto* self = static_cast<NvdecDevice*>(user);
    if (!disp) return 1;  // end of stream
    try {
      self->handle_display(disp);
      return 1;
    } catch (const std::exception& e) {
      self->error_ = e.what();
      return 0;
    }
  }

  void make_parser() {
    CUVIDPARSERPARAMS pp{};
    pp.CodecType = codec_;
    pp.ulMaxNumDecodeSurfaces = 1;  // raised by the sequence callback's return value
    pp.ulMaxDisplayDelay = 0;       // hand out each picture as soon as display order allows
    pp.ulErrorThreshold = 100;      // decode damaged pictures too; they are flagged, as on the CPU
    pp.pUserData = this;
    pp.pfnSequenceCallback = &on_sequence;
    pp.pfnDecodePicture = &on_decode;
    pp.pfnDisplayPicture = &on_display;
    EVA_CU_CHECK(api().cv->cuvidCreateVideoParser(&parser_, &pp));
    if (!seq_header_.empty()) {
      CUVIDSOURCEDATAPACKET p{};
      p.payload = seq_header_.data();
      p.payload_size = static_cast<unsigned long>(seq_header_.size());
      parse(&p);
    }
  }

  void parse(CUVIDSOURCEDATAPACKET* p) {
    CUresult r = api().cv->cuvidParseVideoData(parser_, p);
    if (!error_.empty()) {
      std::string e = error_;
      error_.clear();
      throw DecodeError(DecodeError::Kind::kUnsupportedCodec, "NVDEC: " + e);
    }
    if (r != CUDA_SUCCESS) throw std::runtime_error("NVDEC: cuvidParseVideoData failed: " + cu_err(r));
  }

  void parse_packet(const AVPacket* pkt) {
    CUVIDSOURCEDATAPACKET p{};
    p.payload = pkt->data;
    p.payload_size = static_cast<unsigned long>(pkt->size);
    if (pkt->pts != AV_NOPTS_VALUE) {
      p.flags |= CUVID_PKT_TIMESTAMP;
      p.timestamp = pkt->pts;
    }
    parse(&p);
  }

  void drain_bsf(bool skippable = false, bool* dropped = nullptr) {
    while (av_bsf_receive_packet(bsf_.get(), pkt_.get()) == 0) {
      if (!leave_out(pkt_.get(), skippable, dropped)) parse_packet(pkt_.get());
      av_packet_unref(pkt_.get());
    }
  }

  int handle_sequence(CUVIDEOFORMAT* fmt) {
    const int bit_depth = fmt->bit_depth_luma_minus8 + 8;
    const unsigned surfaces = std::max<unsigned>(fmt->min_num_decode_surfaces + 3, 20);
    SessionKey key{device_, static_cast<int>(codec_), static_cast<int>(fmt->chroma_format), bit_depth,
                   fmt->coded_width, fmt->coded_height, surfaces};
    disp_left_ = fmt->display_area.left;
    disp_top_ = fmt->display_area.top;
    disp_w_ = fmt->display_area.right - fmt->display_area.left;
    disp_h_ = fmt->display_area.bottom - fmt->display_area.top;
    surface_h_ = fmt->coded_height;
    progressive_ = fmt->progressive_sequence != 0;
    if (!color_from_container_) {
      matrix_id_ = nvdec_matrix_id(codec_id_, matrix_id_, fmt->video_signal_description.matrix_coefficients);
    }
    if (!range_from_container_ && nvdec_signal_is_h273(codec_id_)) {
      full_range_ = fmt->video_signal_description.video_full_range_flag != 0;
    }
    if (decoder_ && key == key_) return static_cast<int>(surfaces);
    if (fmt->chroma_format != cudaVideoChromaFormat_420) {
      throw std::runtime_error("chroma format " + std::to_string(static_cast<int>(fmt->chroma_format)) +
                               " is not 4:2:0; only 4:2:0 is converted on the GPU");
    }
    if (decoder_) pool_give(key_, decoder_, dc_.ctx);
    decoder_ = nullptr;
    bit_depth_ = bit_depth;
    key_ = key;
    decoder_ = pool_take(key);
    if (decoder_) return static_cast<int>(surfaces);
    CUVIDDECODECAPS caps{};
    caps.eCodecType = codec_;
    caps.eChromaFormat = fmt->chroma_format;
    caps.nBitDepthMinus8 = fmt->bit_depth_luma_minus8;
    EVA_CU_CHECK(api().cv->cuvidGetDecoderCaps(&caps));
    if (!caps.bIsSupported) throw std::runtime_error("this GPU's NVDEC does not support the stream (caps)");
    if (fmt->coded_width > caps.nMaxWidth || fmt->coded_height > caps.nMaxHeight ||
        fmt->coded_width < caps.nMinWidth || fmt->coded_height < caps.nMinHeight) {
      throw std::runtime_error("coded size " + std::to_string(fmt->coded_width) + "x" + std::to_string(fmt->coded_height) +
                               " outside NVDEC's " + std::to_string(caps.nMinWidth) + "x" + std::to_string(caps.nMinHeight) +
                               ".." + std::to_string(caps.nMaxWidth) + "x" + std::to_string(caps.nMaxHeight));
    }
    CUVIDDECODECREATEINFO ci{};
    ci.ulWidth = fmt->coded_width;
    ci.ulHeight = fmt->coded_height;
    ci.ulMaxWidth = fmt->coded_width;
    ci.ulMaxHeight = fmt->coded_height;
    ci.ulNumDecodeSurfaces = surfaces;
    ci.CodecType = codec_;
    ci.ChromaFormat = fmt->chroma_format;
    ci.ulCreationFlags = cudaVideoCreate_PreferCUVID;
    ci.bitDepthMinus8 = fmt->bit_depth_luma_minus8;
    ci.OutputFormat = bit_depth > 8 ? cudaVideoSurfaceFormat_P016 : cudaVideoSurfaceFormat_NV12;
    ci.DeinterlaceMode = progressive_ ? cudaVideoDeinterlaceMode_Weave : cudaVideoDeinterlaceMode_Adaptive;
    ci.ulTargetWidth = fmt->coded_width;
    ci.ulTargetHeight = fmt->coded_height;
    ci.ulNumOutputSurfaces = 2;
    ci.vidLock = dc_.lock;
    EVA_CU_CHECK(api().cv->cuvidCreateDecoder(&decoder_, &ci));
    g_sessions_created++;
    return static_cast<int>(surfaces);
  }

  static AVBufferRef* pool_alloc(void* opaque, size_t size) {
    auto* self = static_cast<NvdecDevice*>(opaque);
    CtxGuard g(self->dc_.ctx);
    CUdeviceptr p = 0;
    if (api().cu->cuMemAlloc(&p, size) != CUDA_SUCCESS) return nullptr;
    CUcontext ctx = self->dc_.ctx;
    return av_buffer_create(reinterpret_cast<uint8_t*>(p), size, &pool_free_buffer, ctx, 0);
  }
  static void pool_free_buffer(void* opaque, uint8_t* data) {
    try {
      CtxGuard g(static_cast<CUcontext>(opaque));
      api().cu->cuMemFree(reinterpret_cast<CUdeviceptr>(data));
    } catch (...) {
    }
  }

  void handle_display(CUVIDPARSERDISPINFO* disp) {
    const int bps = bit_depth_ > 8 ? 2 : 1;
    const int w = disp_w_, h = disp_h_;
    const int pitch = ((w + 1) / 2 * 2 * bps + 255) & ~255;
    const size_t luma = static_cast<size_t>(pitch) * h;
    const size_t bytes = luma + static_cast<size_t>(pitch) * ((h + 1) / 2);
    if (!pool_ || bytes != pool_bytes_) {
      if (pool_) av_buffer_pool_uninit(&pool_);
      pool_ = av_buffer_pool_init2(bytes, this, &pool_alloc, nullptr);
      if (!pool_) throw std::bad_alloc();
      pool_bytes_ = bytes;
    }
    AVBufferRef* buf = av_buffer_pool_get(pool_);
    if (!buf) throw std::runtime_error("cuMemAlloc failed for a decoded-frame buffer (" + std::to_string(bytes) + " bytes)");

    CUVIDPROCPARAMS vp{};
    vp.progressive_frame = disp->progressive_frame;
    vp.second_field = disp->repeat_first_field + 1;
    vp.top_field_first = disp->top_field_first;
    vp.unpaired_field = disp->repeat_first_field < 0;
    vp.output_stream = static_cast<CUstream>(work_->stream);
    unsigned long long src = 0;
    unsigned int src_pitch = 0;
    CUresult r = api().cv->cuvidMapVideoFrame(decoder_, disp->picture_index, &src, &src_pitch, &vp);
    if (r != CUDA_SUCCESS) {
      av_buffer_unref(&buf);
      throw std::runtime_error("cuvidMapVideoFrame failed: " + cu_err(r));
    }
    const CUdeviceptr dst = reinterpret_cast<CUdeviceptr>(buf->data);
    CUDA_MEMCPY2D c{};
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = src + static_cast<size_t>(disp_top_) * src_pitch + static_cast<size_t>(disp_left_) * bps;
    c.srcPitch = src_pitch;
    c.dstDevice = dst;
    c.dstPitch = pitch;
    c.WidthInBytes = static_cast<size_t>(w) * bps;
    c.Height = h;
    CUresult r1 = api().cu->cuMemcpy2DAsync(&c, static_cast<CUstream>(work_->stream));
    c.srcDevice = src + static_cast<size_t>(surface_h_ + disp_top_ / 2) * src_pitch + static_cast<size_t>(disp_left_) * bps;
    c.dstDevice = dst + luma;
    c.WidthInBytes = static_cast<size_t>((w + 1) / 2) * 2 * bps;
    c.Height = (h + 1) / 2;
    CUresult r2 = api().cu->cuMemcpy2DAsync(&c, static_cast<CUstream>(work_->stream));
    // The surface must not be unmapped before the copies have read it: wait for them alone (an
    // event on the backend's stream, which holds only this backend's work), never for the caller's.
    int r3 = cuda::event_record(work_->copied, work_->stream);
    if (r3 == 0) r3 = cuda::event_synchronize(work_->copied);
    api().cv->cuvidUnmapVideoFrame(decoder_, src);
    if (r1 != CUDA_SUCCESS || r2 != CUDA_SUCCESS || r3 != 0) {
      av_buffer_unref(&buf);
      throw std::runtime_error("copying a decoded surface failed: " +
                               (r3 != 0 ? cuda::error_string(r3) : cu_err(r1 != CUDA_SUCCESS ? r1 : r2)));
    }
    AVFrame* f = av_frame_alloc();
    if (!f) {
      av_buffer_unref(&buf);
      throw std::bad_alloc();
    }
    f->buf[0] = buf;
    f->data[0] = buf->data;
    f->data[1] = buf->data + luma;
    f->linesize[0] = pitch;
    f->linesize[1] = pitch;
    f->width = w;
    f->height = h;
    f->format = bps == 2 ? AV_PIX_FMT_P016LE : AV_PIX_FMT_NV12;
    f->pts = disp->timestamp;
    f->best_effort_timestamp = disp->timestamp;
    auto it = packet_info_.find(disp->timestamp);
    if (it != packet_info_.end()) {
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(57, 30, 100)
      f->duration = it->second.first;
#else
      f->pkt_duration = it->second.first;
#endif
      if (it->second.second) {
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(58, 7, 100)
        f->flags |= AV_FRAME_FLAG_KEY;
#else
        f->key_frame = 1;
#endif
      }
    }
    CUVIDGETDECODESTATUS st{};
    if (api().cv->cuvidGetDecodeStatus &&
        api().cv->cuvidGetDecodeStatus(decoder_, disp->picture_index, &st) == CUDA_SUCCESS &&
        (st.decodeStatus == cuvidDecodeStatus_Error || st.decodeStatus == cuvidDecodeStatus_Error_Concealed)) {
      f->flags |= AV_FRAME_FLAG_CORRUPT;
    }
    queue_.push_back(f);
  }

  void clear_queue() {
    for (AVFrame* f : queue_) av_frame_free(&f);
    queue_.clear();
  }

  int device_;
  cudaVideoCodec codec_;
  DeviceCtx& dc_;
  BsfPtr bsf_;
  PacketPtr pkt_;
  bool can_skip_ = false;  // H.264 / HEVC: non-reference pictures can be left out (nal_ref.h)
  NalCodec skip_codec_ = NalCodec::kH264;
  int hevc_sub_layers_ = 0;  // from the latest HEVC SPS seen (0 = none yet: nothing is left out)
  // The backend's own stream and events (created non-blocking under the device's context).
  struct WorkStream {
    void* stream = nullptr;
    void* copied = nullptr;  // recorded after each surface copy; the host waits on it
    void* done = nullptr;    // recorded after a run's writes; the caller's stream waits on it
    void* ready = nullptr;   // recorded after an output allocation; writers and the caller wait on it
    WorkStream() {
      cuda_rt_check(cuda::stream_create_nonblocking(&stream), "cudaStreamCreateWithFlags (NVDEC work stream)");
      int rc = cuda::event_create(&copied);
      if (rc == 0) rc = cuda::event_create(&done);
      if (rc == 0) rc = cuda::event_create(&ready);
      if (rc != 0) {
        release();
        cuda_rt_check(rc, "cudaEventCreateWithFlags (NVDEC events)");
      }
    }
    ~WorkStream() { release(); }
    WorkStream(const WorkStream&) = delete;
    WorkStream& operator=(const WorkStream&) = delete;
    void release() {
      if (ready) cuda::event_destroy(ready);
      if (done) cuda::event_destroy(done);
      if (copied) cuda::event_destroy(copied);
      if (stream) cuda::stream_destroy(stream);
      ready = done = copied = stream = nullptr;
    }
  };
  std::unique_ptr<WorkStream> work_;
  std::vector<uint8_t> seq_header_;
  CUvideoparser parser_ = nullptr;
  CUvideodecoder decoder_ = nullptr;
  SessionKey key_{};
  std::string error_;
  bool eos_ = false;
  std::deque<AVFrame*> queue_;
  std::map<int64_t, std::pair<int64_t, bool>> packet_info_;  // pts -> (duration, keyframe)
  int disp_left_ = 0, disp_top_ = 0, disp_w_ = 0, disp_h_ = 0, surface_h_ = 0;
  bool progressive_ = true;
  int bit_depth_ = 8;
  int codec_id_ = AV_CODEC_ID_NONE;
  int matrix_id_ = AVCOL_SPC_UNSPECIFIED;
  bool full_range_ = false, color_from_container_ = false, range_from_container_ = false;
  AVBufferPool* pool_ = nullptr;
  size_t pool_bytes_ = 0;
  // Output: resize tables and scratch for the current output size.
  DeviceResizePlan plan_;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

}  // namespace

std::unique_ptr<DeviceInterface> create_nvdec_device(const AVStream* st, int device, std::string* reason) {
  const Api& a = api();
  if (!a.error.empty()) {
    *reason = a.error;
    return nullptr;
  }
  const AVCodecParameters* par = st->codecpar;
  const cudaVideoCodec codec = to_cuvid_codec(par->codec_id);
  if (codec == cudaVideoCodec_NumCodecs) {
    *reason = std::string("codec '") + avcodec_get_name(par->codec_id) + "' is not decoded by the NVDEC path";
    return nullptr;
  }
  const AVPixFmtDescriptor* pd = av_pix_fmt_desc_get(static_cast<AVPixelFormat>(par->format));
  if (pd && (pd->log2_chroma_w != 1 || pd->log2_chroma_h != 1 || pd->nb_components < 3)) {
    *reason = std::string("pixel format ") + pd->name + " is not 4:2:0 (NVDEC on this path decodes 4:2:0 only)";
    return nullptr;
  }
  const int bit_depth = pd ? pd->comp[0].depth : 8;
  try {
    DeviceCtx& dc = device_ctx(device);
    {
      CtxGuard g(dc.ctx);
      CUVIDDECODECAPS caps{};
      caps.eCodecType = codec;
      caps.eChromaFormat = cudaVideoChromaFormat_420;
      caps.nBitDepthMinus8 = static_cast<unsigned>(bit_depth - 8);
      EVA_CU_CHECK(a.cv->cuvidGetDecoderCaps(&caps));
      if (!caps.bIsSupported) {
        *reason = std::string("this GPU's NVDEC cannot decode ") + avcodec_get_name(par->codec_id) + " 4:2:0 " +
                  std::to_string(bit_depth) + "-bit";
        return nullptr;
      }
      if (static_cast<unsigned>(par->width) > caps.nMaxWidth || static_cast<unsigned>(par->height) > caps.nMaxHeight ||
          par->width < caps.nMinWidth || par->height < caps.nMinHeight) {
        *reason = "frame size " + std::to_string(par->width) + "x" + std::to_string(par->height) + " is outside NVDEC's " +
                  std::to_string(caps.nMinWidth) + "x" + std::to_string(caps.nMinHeight) + ".." +
                  std::to_string(caps.nMaxWidth) + "x" + std::to_string(caps.nMaxHeight);
        return nullptr;
      }
      // The parser may create the decoder session while parsing the sequence header: keep the
      // context current.
      return std::make_unique<NvdecDevice>(st, device, codec);
    }
  } catch (const std::exception& e) {
    *reason = std::string("NVDEC initialisation failed: ") + e.what();
    return nullptr;
  }
}

namespace {
std::mutex g_free_mu;
int64_t g_free_errors = 0;
std::string g_last_free_error;
std::string note_free_error(const std::string& msg) {
  std::lock_guard<std::mutex> g(g_free_mu);
  ++g_free_errors;
  g_last_free_error = msg;
  return msg;
}
}  // namespace

std::string free_device_frames(const DeviceFrames& f) {
  // May run on any thread (torch frees the tensor): make the buffer's context current first.
  if (!f.data) return "";
  try {
    CtxGuard g(device_ctx(f.device).ctx);
    const int rc = cuda::free_async(f.data, f.stream);
    if (rc != 0) {
      return note_free_error("freeing " + std::to_string(f.T) + " device frames on cuda:" + std::to_string(f.device) +
                             " failed: " + cuda::error_string(rc));
    }
  } catch (const std::exception& e) {
    return note_free_error("freeing " + std::to_string(f.T) + " device frames on cuda:" + std::to_string(f.device) +
                           " failed: " + e.what());
  }
  return "";
}

int64_t device_free_errors(std::string* last) {
  std::lock_guard<std::mutex> g(g_free_mu);
  if (last) *last = g_last_free_error;
  return g_free_errors;
}

int nvdec_default_workers(int device) {
  const Api& a = api();
  if (!a.error.empty()) return 1;
  CUdevice dev;
  char name[256] = {0};
  if (a.cu->cuDeviceGet(&dev, device) != CUDA_SUCCESS || a.cu->cuDeviceGetName(name, sizeof(name) - 1, dev) != CUDA_SUCCESS) {
    return 1;
  }
  return gpu_workers_for_name(name);
}

std::string cuda_device_name(int device) {
  const Api& a = api();
  if (!a.error.empty()) return "";
  CUdevice dev;
  char name[256] = {0};
  if (a.cu->cuDeviceGet(&dev, device) != CUDA_SUCCESS || a.cu->cuDeviceGetName(name, sizeof(name) - 1, dev) != CUDA_SUCCESS) {
    return "";
  }
  return name;
}

int nvdec_cached_sessions() {
  std::lock_guard<std::mutex> g(g_pool_mu);
  int n = 0;
  for (auto& kv : g_pool) n += static_cast<int>(kv.second.size());
  return n;
}
int64_t nvdec_sessions_created() { return g_sessions_created.load(); }

void convert_yuv420_on_device(const void* y, const void* uv, int y_pitch, int uv_pitch, int height, int width,
                              int bit_depth, int bytes_per_sample, int matrix_id, bool full_range, void* out,
                              int out_h, int out_w, ResizeFilter filter, int rotation_deg, void* stream) {
  const bool swap = rotation_deg == 90 || rotation_deg == 270;
  const int rw = swap ? out_h : out_w, rh = swap ? out_w : out_h;
  DeviceResizePlan plan;
  plan.build(height, width, rh, rw, filter, stream);
  void* scratch = nullptr;
  cuda_rt_check(cuda::alloc_async(&scratch, static_cast<size_t>(height) * rw * 3 * 4, stream), "cudaMallocAsync");
  cuda::Nv12Planes src{y, uv, y_pitch, uv_pitch, width, height};
  int rc = cuda::launch_yuv420_to_rgb_resize(src, make_yuv_params(matrix_id, full_range, bit_depth, bytes_per_sample, height),
                                             plan.h, plan.v, plan.hshift, static_cast<int32_t*>(scratch),
                                             static_cast<uint8_t*>(out), rotation_deg, stream);
  cuda::free_async(scratch, stream);
  plan.release(stream);
  cuda_rt_check(rc, "colour convert + resize kernel launch");
}

void emulate_kernel_on_host(const void* y, const void* uv, int y_pitch, int uv_pitch, int height, int width,
                            int bit_depth, int bytes_per_sample, int matrix_id, bool full_range, uint8_t* out,
                            int out_h, int out_w, ResizeFilter filter, int rotation_deg) {
  const bool swap = rotation_deg == 90 || rotation_deg == 270;
  const int rw = swap ? out_h : out_w, rh = swap ? out_w : out_h;
  ResizeTables t = make_resize_tables(width, height, rw, rh, filter);
  auto weights = [](const AxisTable& a) -> const void* {
    return a.arith == ResizeArith::kIppFloat ? static_cast<const void*>(a.weight.data()) : a.coef.data();
  };
  cuda::DeviceAxisTable h = device_axis_table(t.h, t.h.index.data(), weights(t.h));
  cuda::DeviceAxisTable v = device_axis_table(t.v, t.v.index.data(), weights(t.v));
  std::vector<int32_t> scratch(static_cast<size_t>(height) * rw * 3);
  cuda::Nv12Planes src{y, uv, y_pitch, uv_pitch, width, height};
  cuda::emulate_yuv420_to_rgb_resize_host(src, make_yuv_params(matrix_id, full_range, bit_depth, bytes_per_sample, height), h, v,
                                          t.hshift, scratch.data(), out, rotation_deg);
}

std::string cuda_color_route(int matrix_id, bool full_range, int bit_depth, int height) {
  if (bit_depth < 8 || bit_depth > 16) throw std::invalid_argument("bit_depth must be in 8..16, got " + std::to_string(bit_depth));
  if (height <= 0) throw std::invalid_argument("height must be positive, got " + std::to_string(height));
  const cuda::YuvParams p = make_yuv_params(matrix_id, full_range, bit_depth, bit_depth > 8 ? 2 : 1, height);
  return p.swscale_int ? "swscale_int" : (p.chroma_vtaps == 4 ? "float_vinterp" : "float_nearest");
}

bool cuda_compiled() { return true; }

}  // namespace eva_fast

#else  // !EVA_FAST_WITH_CUDA

namespace eva_fast {

std::unique_ptr<DeviceInterface> create_nvdec_device(const AVStream*, int, std::string* reason) {
  *reason = "eva_fast was built without CUDA; rebuild with EVA_FAST_CUDA=ON (needs nvcc)";
  return nullptr;
}
std::string free_device_frames(const DeviceFrames& f) {
  return f.data ? "eva_fast was built without CUDA: device frames cannot exist" : "";
}
int64_t device_free_errors(std::string* last) {
  if (last) last->clear();
  return 0;
}
int nvdec_cached_sessions() { return 0; }
int64_t nvdec_sessions_created() { return 0; }
int nvdec_default_workers(int) { return 1; }
std::string cuda_device_name(int) { return ""; }
void convert_yuv420_on_device(const void*, const void*, int, int, int, int, int, int, int, bool, void*, int, int,
                              ResizeFilter, int, void*) {
  throw std::runtime_error("eva_fast was built without CUDA; rebuild with EVA_FAST_CUDA=ON (needs nvcc)");
}
void emulate_kernel_on_host(const void*, const void*, int, int, int, int, int, int, int, bool, uint8_t*, int, int,
                            ResizeFilter, int) {
  throw std::runtime_error("eva_fast was built without CUDA; rebuild with EVA_FAST_CUDA=ON (needs nvcc)");
}
std::string cuda_color_route(int, bool, int, int) {
  throw std::runtime_error("eva_fast was built without CUDA; rebuild with EVA_FAST_CUDA=ON (needs nvcc)");
}
bool cuda_compiled() { return false; }

}  // namespace eva_fast

#endif
