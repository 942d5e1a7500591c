#include "decoder.h"

#include <algorithm>
#include <cmath>

#include "ffmpeg_log.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavutil/avutil.h>
}

namespace eva_fast {

std::string ffmpeg_version_string() { return av_version_info(); }
int libavcodec_version() { return static_cast<int>(avcodec_version()); }

FrameOutput::~FrameOutput() {
  if (device.data) free_device_frames(device);  // a failure is counted (device_free_errors)
}

DeviceFrames FrameOutput::take_device() {
  DeviceFrames d = device;
  device = DeviceFrames{};
  data = nullptr;
  return d;
}

VideoDecoder::VideoDecoder(const std::string& path, int stream_index, int threads, int cuda_device)
    : main_(std::make_unique<StreamDecoder>(path, stream_index, threads, cuda_device)) {}

VideoDecoder::~VideoDecoder() = default;

DecodeResult VideoDecoder::decode(const std::vector<double>& times_s, SelectMode mode, int out_h, int out_w,
                                  ResizeFilter filter, void* cuda_stream) {
  std::lock_guard<std::mutex> lock(mu_);
  clear_recent_ffmpeg_errors();
  const VideoInfo& in = main_->info();
  if (out_w == 0 && out_h == 0) {
    out_w = in.width;
    out_h = in.height;
  }
  if (out_w <= 0 || out_h <= 0 || out_w > 16384 || out_h > 16384) {
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      "output size (height, width) must be within 1..16384 per side, got (" +
                          std::to_string(out_h) + ", " + std::to_string(out_w) + ")");
  }
  const int64_t T = static_cast<int64_t>(times_s.size());
  for (int64_t i = 0; i < T; ++i) {
    if (!std::isfinite(times_s[i])) {
      throw DecodeError(DecodeError::Kind::kInvalidArgument,
                        "timestamps must be finite seconds, got " + std::to_string(times_s[i]) + " at position " +
                            std::to_string(i));
    }
  }
  // Output bytes, checked before allocating (the Python layer enforces the documented limit; this
  // keeps a direct caller from overflowing size_t or dying in operator new).
  const size_t frame_bytes = static_cast<size_t>(out_w) * out_h * 3;
  size_t total_bytes = 0;
  if (__builtin_mul_overflow(frame_bytes, static_cast<size_t>(std::max<int64_t>(T, 1)), &total_bytes) ||
      total_bytes > (size_t{1} << 46)) {
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      std::to_string(T) + " frames of " + std::to_string(out_h) + "x" + std::to_string(out_w) +
                          " (height x width) are too large to allocate");
  }
  FrameOutput out;
  out.T = T;
  out.height = out_h;
  out.width = out_w;
  out.filter = filter;
  out.rotation_deg = in.rotation_deg;
  out.frame_bytes = frame_bytes;
  main_->device().allocate_output(&out, cuda_stream);

  // Targets in pts, sorted (equal times adjacent), remembering where each result goes.
  std::vector<Target> targets(T);
  for (int64_t i = 0; i < T; ++i) targets[i] = Target{main_->target_pts(times_s[i], mode), i};
  std::sort(targets.begin(), targets.end());

  DecodeResult res;
  res.T = T;
  res.H = out_h;
  res.W = out_w;
  SlotInfo slots;
  slots.resize(T);
  main_->decode_run(targets, mode, out, slots, &res.stats);

  const double tb = static_cast<double>(in.tb_num) / in.tb_den;
  res.pts = std::move(slots.pts);
  res.corrupt = std::move(slots.corrupt);
  res.keyframe = std::move(slots.keyframe);
  res.pts_s.resize(T);
  for (int64_t i = 0; i < T; ++i) res.pts_s[i] = (res.pts[i] - in.start_pts) * tb;
  res.frames = std::move(out.host);
  res.device_frames = out.take_device();
  return res;
}

std::vector<std::string> VideoDecoder::decode_yuv(const std::vector<double>& times_s, SelectMode mode) {
  std::lock_guard<std::mutex> lock(mu_);
  clear_recent_ffmpeg_errors();
  const int64_t T = static_cast<int64_t>(times_s.size());
  for (int64_t i = 0; i < T; ++i) {
    if (!std::isfinite(times_s[i])) {
      throw DecodeError(DecodeError::Kind::kInvalidArgument,
                        "timestamps must be finite seconds, got " + std::to_string(times_s[i]) + " at position " +
                            std::to_string(i));
    }
  }
  std::vector<std::string> planes(T);
  FrameOutput out;
  out.T = T;
  out.planar = &planes;
  std::vector<Target> targets(T);
  for (int64_t i = 0; i < T; ++i) targets[i] = Target{main_->target_pts(times_s[i], mode), i};
  std::sort(targets.begin(), targets.end());
  SlotInfo slots;
  slots.resize(T);
  DecodeStats stats;
  main_->decode_run(targets, mode, out, slots, &stats);
  return planes;
}

void VideoDecoder::scan_frames(std::vector<double>* pts_s, std::vector<uint8_t>* is_key) {
  main_->scan_frames(pts_s, is_key);
}

DecodeStats VideoDecoder::total_stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return main_->total_stats();
}

std::vector<double> VideoDecoder::unclean_keyframes_s() {
  std::lock_guard<std::mutex> lock(mu_);
  return main_->unclean_keyframes_s();
}

void VideoDecoder::set_skip_nonref(bool enabled) {
  std::lock_guard<std::mutex> lock(mu_);
  main_->set_skip_nonref(enabled);
}

bool VideoDecoder::skip_nonref() const {
  std::lock_guard<std::mutex> lock(mu_);
  return main_->skip_nonref();
}

}  // namespace eva_fast
