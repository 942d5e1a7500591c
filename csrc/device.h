// The device interface: what differs between decoding on the CPU (libavcodec, then swscale +
// resize into host memory) and on a GPU (NVDEC, then the CUDA convert + resize kernel into device
// memory), behind one interface, as torchcodec's DeviceInterface separates its CPU and CUDA paths.
// Everything else — demuxing, the seek plan, which decoded frame answers which target, keyframe
// back-off, end-of-stream diagnosis, statistics, GOP-parallel runs — is device-independent
// (stream_decoder.h, decoder.h) and talks to a device only through this interface.
//
// A device has two halves:
//   decoding: libavcodec's send/receive/flush contract (packets in, decoded AVFrames out);
//   output:   one call's output is a FrameOutput, uint8 [T, H, W, 3] RGB allocated once by the
//             call's main device; each decoder of the call writes the slots of its own targets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "resize.h"

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

// The output of one decode call: uint8 [T, height, width, 3] RGB24 (sizes as displayed), contiguous,
// in host memory (CPU device) or device memory (NVDEC). Allocated once per call by the call's main
// device (DeviceInterface::allocate_output); every decoder of the call (one per GOP run) writes the
// slots of its own targets, which are disjoint, so no two writers touch the same bytes.
struct FrameOutput {
  int64_t T = 0;
  int height = 0, width = 0;
  ResizeFilter filter = ResizeFilter::kCubic;
  int rotation_deg = 0;     // clockwise, applied after the resize (the stream's display rotation)
  size_t frame_bytes = 0;   // height * width * 3
  uint8_t* data = nullptr;  // slot i at data + i * frame_bytes (host or device address)
  std::unique_ptr<uint8_t[]> host;  // owner of host data (CPU)
  DeviceFrames device;              // owner of device data (NVDEC); freed with the output unless taken
  void* ready_event = nullptr;      // NVDEC: recorded after the allocation; writers' streams wait on it
  // Test hook (VideoDecoder::decode_yuv): each chosen frame's decoded planes are captured here
  // instead of being converted; nothing is allocated.
  std::vector<std::string>* planar = nullptr;

  FrameOutput() = default;
  FrameOutput(const FrameOutput&) = delete;
  FrameOutput& operator=(const FrameOutput&) = delete;
  ~FrameOutput();
  // Hand the device buffer over (to a DLPack capsule); the output no longer frees it.
  DeviceFrames take_device();
};

class DeviceInterface {
 public:
  virtual ~DeviceInterface() = default;
  // "cpu" or "nvdec".
  virtual const char* name() const = 0;
  // Frames held in flight by frame threading (a seek discards about that many): 1 without it.
  virtual int frame_threads() const { return 1; }

  // ---- decoding (libavcodec's contract) ----------------------------------------------------
  // send_packet(nullptr, ...) signals end of stream. `skippable`: no target of the call is near
  // this packet, so the device may drop its frame if no other frame references it (FFmpeg's
  // AVDISCARD_NONREF rule); *maybe_dropped is set when the frame may not come out because of that
  // (the caller then re-seeks if a later call needs it). Returns 0 or a negative AVERROR.
  virtual int send_packet(const AVPacket* pkt, bool skippable, bool* maybe_dropped) = 0;
  // 0 with a frame, AVERROR(EAGAIN) when more input is needed, AVERROR_EOF after the last frame.
  virtual int receive_frame(AVFrame* out) = 0;
  // Drop every frame and packet in flight (before a seek).
  virtual void flush() = 0;

  // ---- output ---------------------------------------------------------------------------------
  // Allocate out->data for out's T, height, width (set by the caller). caller_stream: the CUDA
  // stream the output is handed over to (NVDEC; ignored on the CPU).
  virtual void allocate_output(FrameOutput* out, void* caller_stream) = 0;
  // Before this device writes slots of `out` (NVDEC: its stream waits for the allocation).
  virtual void begin_output(FrameOutput& out) {}
  // Convert + resize + rotate a decoded frame into slot `slot`.
  virtual void convert_slot(const AVFrame* f, FrameOutput& out, int64_t slot) = 0;
  // Copy slot `src` (written by this device) into slot `dst`.
  virtual void copy_slot(FrameOutput& out, int64_t dst, int64_t src) = 0;
  // After this device's last write to `out` (NVDEC: the caller's stream waits for its writes).
  // Also called when a run fails part-way, so the output is never freed under pending writes.
  virtual void end_output(FrameOutput& out) {}
  // Test hook: a decoded frame's planes in FFmpeg's planar layout (the bytes framemd5 hashes).
  virtual void download_planar(const AVFrame* f, std::string* out) = 0;

  // ---- between calls ------------------------------------------------------------------------
  // The host waits until every write this device queued has completed (NVDEC: its stream; nothing
  // to wait for on the CPU). Before another device rewrites slots this one may have written.
  virtual void wait_idle() {}
  // The decoder will seek before its next packet (flush() comes first): release what other
  // decoders of the process can use meanwhile (NVDEC: the decoder session goes back to the pool).
  // No-op on the CPU.
  virtual void release_session() {}
};

}  // namespace eva_fast
