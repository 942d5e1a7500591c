// The NVDEC device (device.h; GPU path). The device-independent StreamDecoder keeps demuxing, the
// seek plan and frame choice; this device stands in for libavcodec's send/receive/flush and, on
// output, for the CPU colour conversion + resize: decoded surfaces are copied out of NVDEC into
// pooled device buffers (wrapped in AVFrames so the decode loop's candidate logic is unchanged), and
// the chosen ones are converted + resized by the CUDA kernel straight into one device [T, H, W, 3]
// buffer.
//
// The NVIDIA driver API and NVDEC (libcuda.so.1, libnvcuvid.so.1) are loaded at run time through
// the MIT-licensed ffnvcodec loader headers, so the module imports and the CPU path works on
// machines without a GPU or driver. Built only with EVA_FAST_WITH_CUDA=1; otherwise
// create_nvdec_device() reports that the build has no CUDA.
//
// Streams: each device's work (surface copies, kernels, output allocation) runs on a stream of its
// own, so decoding never waits for work the caller queued on its stream (model forward passes); the
// host waits only for its own surface copies (an event after each copy, before the surface is
// unmapped). The output is allocated on the main device's stream and the caller's stream (Python
// passes torch's current stream) waits for the allocation; every device that writes slots waits for
// it too (begin_output), and end_output() makes the caller's stream wait for that device's writes on
// the device (cuStreamWaitEvent), so the output is ready in the caller's stream order; the buffer is
// freed stream-ordered on that same stream when its owner (the DLPack capsule / torch tensor)
// releases it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "device.h"
#include "resize.h"

struct AVStream;

namespace eva_fast {

// The NVDEC device for stream `st` on GPU `device`, or nullptr with *reason set when NVDEC cannot
// decode this stream there (build without CUDA, no driver, no libnvcuvid, codec/profile/chroma/bit
// depth/size unsupported).
std::unique_ptr<DeviceInterface> create_nvdec_device(const AVStream* st, int device, std::string* reason);

// NVDEC decoders one request uses by default on a GPU (gpu_workers): its number of NVDEC engines
// (NVIDIA's datasheets / Video Codec SDK support matrix), by the driver's device name:
//   H100, H200, H800, H20, GH200, B100, B200, GB200: 7;  A100, A800: 5;  A30, L4: 4;
//   L40, L40S: 3;  A10, A10G, A40, A16, T4: 2;  V100: 1;  any other GPU: 2.
// A model matches as a token not followed by a digit (an L40S is an L40, not an L4; an A100 is not
// an A10).
int gpu_workers_for_name(const std::string& name);
// gpu_workers_for_name() of GPU `device`'s name; 1 without NVDEC (no driver, CPU build).
int nvdec_default_workers(int device);
// The driver's name of GPU `device` ("" without a driver).
std::string cuda_device_name(int device);

// Idle NVDEC decoder sessions kept for reuse (per codec, coded size, bit depth, chroma format).
int nvdec_cached_sessions();
// Decoder sessions created since the process started (reuse keeps this flat).
int64_t nvdec_sessions_created();

// Test/diagnostic entry: run the colour-convert + resize kernel on 4:2:0 planes already in device
// memory (e.g. CPU-decoded YUV uploaded by torch). Enqueued on `stream`; throws without CUDA.
// Sizes (height, width): the planes' picture, then the output as displayed (after rotation).
void convert_yuv420_on_device(const void* y, const void* uv, int y_pitch, int uv_pitch, int height, int width,
                              int bit_depth, int bytes_per_sample, int matrix_id, bool full_range, void* out,
                              int out_h, int out_w, ResizeFilter filter, int rotation_deg, void* stream);
// The kernel's own per-thread code run serially on host memory (CUDA builds; throws otherwise).
void emulate_kernel_on_host(const void* y, const void* uv, int y_pitch, int uv_pitch, int height, int width,
                            int bit_depth, int bytes_per_sample, int matrix_id, bool full_range, uint8_t* out,
                            int out_h, int out_w, ResizeFilter filter, int rotation_deg);
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
