// One open video stream decoded by one device: FFmpeg demuxing, the keyframe-aware seek plan, and
// the choice of which decoded frame answers which target (nearest / played-at), keyframe back-off,
// end-of-stream diagnosis and statistics. Device-independent: decoding and output go through a
// DeviceInterface (cpu_device.h: libavcodec + swscale/resize into host memory; nvdec.h: NVDEC +
// CUDA convert/resize into device memory). VideoDecoder (decoder.h) runs one or several of these
// per call (GOP runs) and owns the call's output. Not thread-safe: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "av_ptr.h"
#include "device.h"
#include "errors.h"
#include "seek_plan.h"

struct AVFrame;

namespace eva_fast {

struct VideoInfo {
  std::string path;
  std::string container;
  std::string codec;
  std::string codec_long_name;
  std::string profile;
  std::string pixel_format;
  std::string color_space;
  std::string color_range;
  int stream_index = -1;
  std::vector<int> video_stream_indices;
  int width = 0;          // as displayed (after rotation)
  int height = 0;
  int coded_width = 0;    // as stored
  int coded_height = 0;
  int rotation_deg = 0;   // clockwise rotation applied to make frames upright: 0, 90, 180, 270
  int bit_depth = 8;
  double duration_s = 0;  // stream duration from the container
  double average_fps = 0;
  double r_fps = 0;       // FFmpeg's r_frame_rate guess (base rate)
  int64_t num_frames = 0;
  bool num_frames_estimated = false;
  bool is_vfr = false;
  double start_pts_s = 0;  // pts of the first frame, seconds
  int64_t start_pts = 0;   // same, stream time base
  int tb_num = 1, tb_den = 1;
  std::vector<double> keyframe_pts_s;  // relative to the first frame; empty if no index
  bool keyframes_from_index = false;
};

enum class SelectMode { kNearest = 0, kPlayedAt = 1 };

struct DecodeStats {
  int64_t decoded_frames = 0;   // frames produced by the decoder
  int64_t packets_sent = 0;
  int64_t seeks = 0;
  int64_t decode_errors = 0;    // packets or frames the decoder reported as damaged
  int64_t skip_nonref_packets = 0;  // CPU: packets sent with non-reference skipping allowed (upper
                                    // bound on the frames the decoder dropped unseen); NVDEC:
                                    // packets of non-reference pictures left out
  int64_t keyframe_backoffs = 0;    // restarts from an earlier keyframe because decoding from the
                                    // planned one concealed frames of its GOP
  double decode_ms = 0;         // demux + decode wall time
  double convert_ms = 0;        // colour conversion + resize + rotation wall time
  // Set per call by VideoDecoder (not summed by +=): decoders that shared the call (1: one decoder;
  // in total_stats: decoders open), and GOP runs whose decoder failed and the main decoder redid.
  int64_t gop_workers = 1;
  int64_t worker_failures = 0;

  // Sums the counters and times (not gop_workers / worker_failures).
  DecodeStats& operator+=(const DecodeStats& o);
};

// One requested frame: its target pts (stream time base) and the output slot it goes to.
struct Target {
  int64_t pts = 0;
  int64_t slot = 0;
  bool operator<(const Target& o) const { return pts != o.pts ? pts < o.pts : slot < o.slot; }
};

// Per-slot results of a call, filled by the runs that decode its slots (disjoint between runs).
struct SlotInfo {
  std::vector<int64_t> pts;       // chosen frame pts, stream time base
  std::vector<uint8_t> corrupt;   // 1 when the frame may hold concealed/damaged data
  std::vector<uint8_t> keyframe;  // 1 when the chosen frame is a keyframe
  void resize(int64_t T) {
    pts.assign(T, 0);
    corrupt.assign(T, 0);
    keyframe.assign(T, 0);
  }
};

class StreamDecoder {
 public:
  // StreamDecoders alive in the process (each holds an open file and a device); a diagnostic.
  static int64_t live();

  // stream_index < 0 picks FFmpeg's best video stream. threads: libavcodec threads (0 = FFmpeg's
  // choice: all cores). cuda_device >= 0 asks for NVDEC on that GPU; when NVDEC cannot decode the
  // stream the CPU device decodes and fallback_reason() says why.
  // cpu_fallback=false: throw std::runtime_error instead (a GOP-run decoder of an NVDEC decoder must
  // write into device memory).
  StreamDecoder(const std::string& path, int stream_index, int threads, int cuda_device, bool cpu_fallback = true);
  ~StreamDecoder();
  StreamDecoder(const StreamDecoder&) = delete;
  StreamDecoder& operator=(const StreamDecoder&) = delete;

  const VideoInfo& info() const { return info_; }
  DeviceInterface& device() { return *device_; }
  const std::string& fallback_reason() const { return fallback_reason_; }

  // Seconds from the first frame -> the target pts of a time (stream time base), clamped so it
  // never overflows (nearest: rounded to the nearest tick; played_at: rounded down).
  int64_t target_pts(double t, SelectMode mode) const;

  // Decode one run of targets, sorted by pts (Target::operator<; equal pts adjacent), into their
  // slots of `out` (converted, or captured as planes when out.planar is set) and of `slots`. Keeps
  // the decoder's position and its last frames for the next run. Adds this run's work to *stats.
  // Throws DecodeError (kCorrupt when data ends before a target or no frame can be decoded).
  void decode_run(const std::vector<Target>& targets, SelectMode mode, FrameOutput& out, SlotInfo& slots,
                  DecodeStats* stats);

  // Forget the position (the next run seeks) and release the device's session for other decoders
  // (DeviceInterface::release_session): a GOP-run decoder between requests.
  void park();

  // Keyframes of the index not marked unclean (stream time base, sorted), after taking what other
  // decoders of this file learnt: where GOP runs may start.
  std::vector<int64_t> clean_keyframes();
  // Unclean keyframes, seconds from the first frame (see VideoDecoder::unclean_keyframes_s).
  std::vector<double> unclean_keyframes_s();
  // Nominal frame duration, stream time base units (>= 1).
  int64_t nominal_frame_duration() const { return frame_dur_; }

  // Demux-only scan of every packet: sorted pts (seconds from the first frame), keyframe flags.
  void scan_frames(std::vector<double>* pts_s, std::vector<uint8_t>* is_key);

  const DecodeStats& total_stats() const { return total_; }
  void set_skip_nonref(bool enabled) { skip_nonref_ = enabled; }
  bool skip_nonref() const { return skip_nonref_; }

 private:
  struct Held;  // a decoded frame kept as a candidate
  void fill_info();
  void seek_to(int64_t target);  // to the keyframe the planner knows for target
  void seek_at(int64_t ts);       // seek (pts, backward) and reset the decoder state
  void sync_unclean_keyframes();  // take what other decoders of this file learnt
  void mark_unclean_keyframe(int64_t key_pts);
  bool receive_next(Held* out);  // false at end of stream

  std::string path_;
  FormatContextPtr fmt_;  // owners: device_ and pkt_ are freed before fmt_ (reverse declaration order)
  PacketPtr pkt_;
  std::unique_ptr<DeviceInterface> device_;
  std::string fallback_reason_;
  VideoInfo info_;
  std::unique_ptr<SeekPlanner> planner_;
  int64_t frame_dur_ = 1;     // nominal frame duration, time base units
  int64_t index_delay_ = 0;   // pts - dts offset of index entries (mov: index holds dts)
  // Decoder state.
  bool has_position_ = false;
  int64_t position_ = 0;      // pts of the last frame received
  bool input_eof_ = false;
  bool output_eof_ = false;
  bool gop_tainted_ = false;
  // Keyframe back-off: after a seek to keyframe `key`, its GOP ([key, end)) is watched. A
  // concealed frame in it, or no frame of it at all, means that keyframe may not be a clean start:
  // decoding restarts from the keyframe before it (up to kMaxKeyframeBackoffs times per target).
  // When the target then comes out clean, the abandoned keyframes are marked unclean for good.
  struct StartProbe {
    bool active = false;
    bool failed = false;     // set by receive_next(); the decode loop backs off
    bool saw_frame = false;  // a clean frame of the GOP came out
    int64_t key = 0;
    int64_t end = 0;
  } probe_;
  void start_probe(int64_t key);
  bool can_back_off() const;
  void end_probe_at_gop_end();
  std::vector<int64_t> backed_off_from_;  // keyframes abandoned for the current target
  std::string file_key_;                  // path, size, mtime, stream: the shared unclean-keyframe key
  uint64_t unclean_version_ = 0;          // version of the shared table last taken
  std::string read_error_;
  DecodeStats stats_, total_;
  std::unique_ptr<Held> prev_, cur_;  // candidates kept across runs
  // Non-reference skipping state: targets of the current run (sorted pts) and pts of packets
  // sent since the last seek with skipping allowed (their frames may have been dropped).
  bool skip_nonref_ = true;
  bool skip_active_ = false;
  int64_t skip_window_ = 0;
  std::vector<int64_t> needed_pts_;
  std::vector<int64_t> skippable_sent_pts_;
  bool near_needed(int64_t pts) const;
};

}  // namespace eva_fast
