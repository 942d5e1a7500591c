// NVDEC decode backend of VideoDecoder (GPU path). VideoDecoder keeps demuxing, the seek plan and
// frame choice; this backend stands in for libavcodec's send/receive/flush and, on output, for
// the CPU colour conversion + resize: decoded surfaces are copied out of NVDEC into pooled device
// buffers (wrapped in AVFrames so the decode loop's candidate logic is unchanged), and the chosen
// ones are converted + resized by the CUDA kernel straight into one device [T, H, W, 3] buffer.
//
// The NVIDIA driver API and NVDEC (libcuda.so.1, libnvcuvid.so.1) are loaded at run time through
// the MIT-licensed ffnvcodec loader headers, so the module imports and the CPU path works on
// machines without a GPU or driver. Built only with EVA_FAST_WITH_CUDA=1; otherwise create()
// reports that the build has no CUDA.
//
// Streams: the backend's device work (surface copies, kernels, output allocation) runs on a stream
// of its own, so decoding never waits for work the caller queued on its stream (model forward
// passes); the host waits only for its own surface copies (an event after each copy, before the
// surface is unmapped). end_batch() makes the caller's stream (given to begin_batch(); Python
// passes torch's current stream) wait for the output on the device (cuStreamWaitEvent), so the
// output is ready in that stream's order; the buffer is freed stream-ordered on that same stream
// when its owner (the DLPack capsule / torch tensor) releases it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "resize.h"

struct AVStream;
struct AVPacket;
struct AVFrame;

namespace eva_fast {

// A device buffer holding uint8 [T, H, W, 3] RGB, freed stream-ordered on `stream` by the deleter.
struct DeviceFrames {
  void* data = nullptr;
  int device = 0;
  void* stream = nullptr;
  int64_t T = 0;
  int H = 0, W = 0;
};
// Stream-ordered free (no-op on null data). Returns "" or what failed; failures are also counted
// (device_free_errors()) because the usual caller, a DLPack deleter, cannot raise.
std::string free_device_frames(const DeviceFrames& f);
// Failed free_device_frames calls since the process started, and the last failure's message.
int64_t device_free_errors(std::string* last);

class NvdecBackend {
 public:
  // Returns nullptr and sets *reason when NVDEC cannot decode this stream on `device` (build
  // without CUDA, no driver, no libnvcuvid, codec/profile/chroma/bit depth/size unsupported).
  static std::unique_ptr<NvdecBackend> create(const AVStream* st, int device, std::string* reason);
  virtual ~NvdecBackend() = default;

  // libavcodec-like decode interface. send_packet(nullptr) signals end of stream. Return 0, or a
  // negative AVERROR (AVERROR(EAGAIN) / AVERROR_EOF from receive_frame as libavcodec).
  virtual int send_packet(const AVPacket* pkt) = 0;
  virtual int receive_frame(AVFrame* out) = 0;
  virtual void flush() = 0;

  // Output of one decode call: begin (allocates [T, out_h, out_w, 3] on `stream`), then per slot
  // either convert a received frame into it or copy an earlier slot, then end (hands it over).
  virtual void begin_batch(int64_t T, int out_w, int out_h, ResizeFilter filter, int rotation_deg,
                           void* stream) = 0;
  virtual void convert_slot(const AVFrame* f, int64_t slot) = 0;
  virtual void copy_slot(int64_t dst_slot, int64_t src_slot) = 0;
  virtual DeviceFrames end_batch() = 0;

  // Copy a received frame back to the host as planar yuv420p / yuv420p10le-style bytes (16-bit
  // samples shifted down to their bit depth), for bit-exact checks against FFmpeg's framemd5.
  virtual void download_planar(const AVFrame* f, std::string* out) = 0;

  virtual int device() const = 0;
};

// Idle NVDEC decoder sessions kept for reuse (per codec, coded size, bit depth, chroma format).
int nvdec_cached_sessions();
// Decoder sessions created since the process started (reuse keeps this flat).
int64_t nvdec_sessions_created();

}  // namespace eva_fast

namespace eva_fast {
// Test/diagnostic entry: run the colour-convert + resize kernel on 4:2:0 planes already in device
// memory (e.g. CPU-decoded YUV uploaded by torch). Enqueued on `stream`; throws without CUDA.
void convert_yuv420_on_device(const void* y, const void* uv, int y_pitch, int uv_pitch, int width, int height,
                              int bit_depth, int bytes_per_sample, int matrix_id, bool full_range, void* out,
                              int out_w, int out_h, ResizeFilter filter, int rotation_deg, void* stream);
// The kernel's own per-thread code run serially on host memory (CUDA builds; throws otherwise).
void emulate_kernel_on_host(const void* y, const void* uv, int y_pitch, int uv_pitch, int width, int height,
                            int bit_depth, int bytes_per_sample, int matrix_id, bool full_range, uint8_t* out,
                            int out_w, int out_h, ResizeFilter filter, int rotation_deg);
// Which colour route the kernel takes for pictures of this matrix (AVColorSpace / H.273 id), range,
// bit depth and height (color_resize.h): "swscale_int" (8-bit, even height, the loaded swscale
// checked to match: NVDEC frames equal the CPU path's), "float_nearest" (8-bit where that check
// failed) or "float_vinterp" (> 8-bit or odd height). CUDA builds; throws otherwise.
std::string cuda_color_route(int matrix_id, bool full_range, int bit_depth, int height);
bool cuda_compiled();
// The colour matrix (AVColorSpace / H.273 id) the NVDEC path converts with, so that it is the one the
// CPU path's swscale uses for the same frames. libavcodec's reading of the stream (codecpar after
// avformat_find_stream_info: container colour, else the decoder's own header parse) wins; only when
// that says unspecified is NVDEC's CUVIDEOFORMAT::video_signal_description consulted, and only for
// codecs whose headers carry H.273 code points there (H.264 / HEVC VUI, MPEG-2 sequence display
// extension). For VP9 that field is not an H.273 id: the first H200 run read VP9's "unknown" as
// BT.709 and cockatoo_vp9.webm came out up to 15 levels off the CPU path (swscale: unspecified = BT.601).
bool nvdec_signal_is_h273(int av_codec_id);
int nvdec_matrix_id(int av_codec_id, int container_matrix, int signal_matrix);
}  // namespace eva_fast
