// The CPU device: libavcodec decodes; swscale (or the AVX2 4:4:4 converter) turns each chosen frame
// into RGB24, RgbResizer resizes it and the display rotation is applied, into host memory.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "av_ptr.h"
#include "device.h"
#include "resize.h"

struct AVFormatContext;

namespace eva_fast {

class CpuDevice final : public DeviceInterface {
 public:
  // Opens libavcodec's decoder for stream `stream_index` of `fmt` with `threads` threads (0 =
  // FFmpeg's choice; >1 = frame + slice threading). For H.264 reads the stream's first packet (the
  // x264 build number) and leaves the demuxer at the stream's start. `path` names the file in errors.
  // Throws DecodeError (kUnsupportedCodec, kInvalidFile).
  CpuDevice(AVFormatContext* fmt, int stream_index, int threads, const std::string& path);

  const char* name() const override { return "cpu"; }
  int frame_threads() const override;

  int send_packet(const AVPacket* pkt, bool skippable, bool* maybe_dropped) override;
  int receive_frame(AVFrame* out) override;
  void flush() override;

  void allocate_output(FrameOutput* out, void* caller_stream) override;
  void convert_slot(const AVFrame* f, FrameOutput& out, int64_t slot) override;
  void copy_slot(FrameOutput& out, int64_t dst, int64_t src) override;
  void download_planar(const AVFrame* f, std::string* out) override;

 private:
  // Colour conversion + resize (out_h, out_w as displayed) + rotation of one frame into dst.
  void convert_into(const AVFrame* f, uint8_t* dst, int out_h, int out_w, ResizeFilter filter, int rotation_deg);

  std::string path_;
  CodecContextPtr ctx_;
  SwsPtr sws_;
  std::vector<uint8_t> rgb_tmp_, rot_tmp_;
  std::unique_ptr<RgbResizer> resizer_;
};

}  // namespace eva_fast
