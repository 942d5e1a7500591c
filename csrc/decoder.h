// The native video decoder behind eva_fast._C.VideoDecoder: an open video file, and the decode of
// the frames nearest to (or played at) a list of timestamps, colour-converted and resized right
// after decoding into one preallocated RGB24 output — host memory on the CPU, device memory with
// NVDEC. No libtorch, no Python.
//
// Layers: VideoDecoder validates a call, allocates its output once and runs it on StreamDecoders
// (stream_decoder.h: demux, seek plan, frame choice; device-independent), each decoding through a
// DeviceInterface (device.h: the CPU or the NVDEC device). A request whose targets span several
// GOPs is split into contiguous GOP runs of about equal work (gop_runs.h), decoded at the same time
// by GOP-run decoders (single-threaded libavcodec on the CPU; pooled NVDEC sessions, each on its own
// CUDA stream, on a GPU), each writing the slots of its own targets into the one output.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "device.h"
#include "errors.h"
#include "resize.h"
#include "stream_decoder.h"

namespace eva_fast {

// Largest output side, pixels (eva_fast._C.MAX_SIDE; the Python layer's size check uses it).
constexpr int kMaxSide = 16384;

struct DecodeResult {
  std::unique_ptr<uint8_t[]> frames;  // CPU device: [T, H, W, 3] RGB24, contiguous
  int64_t T = 0;
  int H = 0, W = 0;
  std::vector<int64_t> pts;           // chosen frame pts (stream time base), per request
  std::vector<double> pts_s;          // chosen frame pts, seconds from the first frame
  std::vector<uint8_t> corrupt;       // 1 when the frame may hold concealed/damaged data
  std::vector<uint8_t> keyframe;      // 1 when the chosen frame is a keyframe
  DecodeStats stats;                  // .gop_workers: decoders that shared the call
  DeviceFrames device_frames;         // NVDEC device: the frames live here (frames is unused)
};

class VideoDecoder {
 public:
  // stream_index < 0 picks FFmpeg's best video stream. threads: 0 = FFmpeg's choice (all cores).
  // cuda_device >= 0 asks for the NVDEC backend on that GPU; when NVDEC cannot decode the stream
  // the decoder stays on the CPU and fallback_reason() says why.
  VideoDecoder(const std::string& path, int stream_index, int threads, int cuda_device = -1);
  ~VideoDecoder();
  VideoDecoder(const VideoDecoder&) = delete;
  VideoDecoder& operator=(const VideoDecoder&) = delete;

  const VideoInfo& info() const { return main_->info(); }

  // Decode the frame for each time in `times_s` (seconds from the first frame; any order,
  // duplicates allowed). out_h/out_w: output size as displayed (0, 0 = native). The result's
  // frames follow the order of `times_s`.
  // With the NVDEC backend the frames go to result.device_frames, enqueued on cuda_stream.
  DecodeResult decode(const std::vector<double>& times_s, SelectMode mode, int out_h, int out_w,
                      ResizeFilter filter, void* cuda_stream = nullptr);

  // Test hook: each chosen frame's decoded picture in FFmpeg's planar layout (yuv420p, yuv420p10le,
  // yuv444p, ...: the bytes `ffmpeg -f framemd5` hashes), before any conversion. NVDEC frames are
  // copied back from the device and de-interleaved. One byte string per time, in the given order.
  std::vector<std::string> decode_yuv(const std::vector<double>& times_s, SelectMode mode);

  // "nvdec" when the NVDEC backend decodes, else "cpu"; why a requested NVDEC backend is not used.
  const char* backend() const { return main_->device().name(); }
  const std::string& fallback_reason() const { return main_->fallback_reason(); }

  // Demux-only scan (no decoding) of every packet of the stream: sorted presentation pts of all
  // frames (seconds from the first frame) and whether each is a keyframe. Cost: reads the file.
  void scan_frames(std::vector<double>* pts_s, std::vector<uint8_t>* is_key);

  // Cumulative statistics since open, summed over the main and the GOP-run decoders (gop_workers:
  // decoders open; worker_failures: since open). Takes the decoder's lock (waits for a call).
  DecodeStats total_stats() const;

  // GOP-parallel decoding: at most this many decoders share one request (1 = never split; default).
  // Runs beyond the first request's share of the device's WorkerBudget are not used while other
  // requests are in flight. A GOP-run decoder is opened on first use and kept: single-threaded
  // libavcodec on the CPU, an NVDEC decoder on the same GPU (its session returns to the pool after
  // every request). A run whose decoder fails (e.g. no NVDEC session) is decoded again by the main
  // decoder, so frames and errors are those of the serial decode. Both take the decoder's lock.
  void set_workers(int n);
  int workers() const;

  // Keyframes of the index found not to be clean random-access points (seconds from the first
  // frame, sorted): decoding from one concealed frames of its GOP that a decode from an earlier
  // keyframe reconstructed. Learnt while decoding and shared by every decoder of the same file
  // (path, size, mtime) and stream in the process; seeks go to an earlier keyframe instead.
  std::vector<double> unclean_keyframes_s();

  // Non-reference skipping (default on): packets whose pts is more than two frame durations from
  // every target of the current call are sent with AVDISCARD_NONREF, so the decoder drops
  // disposable frames (H.264 nal_ref_idc 0, HEVC sub-layer non-reference, VP9 frames that refresh
  // no reference) instead of reconstructing them; the NVDEC device leaves such H.264 / HEVC
  // packets out (nal_ref.h). Reference frames and every frame near a target are decoded as
  // before, so the returned frames are identical. Off at variable frame rate. Both take the
  // decoder's lock and apply to the GOP-run decoders too.
  void set_skip_nonref(bool enabled);
  bool skip_nonref() const;

 private:
  // Decode `runs` (GOP runs of one request) at the same time on GOP-run decoders; a failed run is
  // redone by the main decoder (counted in stats->worker_failures).
  void decode_parallel(const std::vector<std::vector<Target>>& runs, SelectMode mode, FrameOutput& out,
                       SlotInfo& slots, DecodeStats* stats);
  std::unique_ptr<StreamDecoder> open_worker() const;

  std::unique_ptr<StreamDecoder> main_;
  std::vector<std::unique_ptr<StreamDecoder>> workers_;  // GOP-run decoders (null until first used)
  int max_workers_ = 1;
  int cuda_device_ = -1;    // the GPU of an NVDEC decoder, else -1
  int64_t worker_failures_ = 0;
  mutable std::mutex mu_;  // every public entry that touches decoder state takes it
};

// Test hook: the next `n` GOP runs fail part-way (after half of their targets), as a lost NVDEC
// session would; each is redone by its request's main decoder.
void fail_next_gop_runs(int n);

std::string ffmpeg_version_string();
int libavcodec_version();

}  // namespace eva_fast
