// CPU video decoder on FFmpeg's libraries: open + metadata, keyframe-aware seeking, decode of
// the frames nearest to (or played at) a list of timestamps, colour conversion and resize right
// after each decode into one preallocated RGB24 buffer. No libtorch, no Python.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "av_ptr.h"
#include "nvdec.h"
#include "resize.h"
#include "seek_plan.h"

struct AVFrame;

namespace eva_fast {

// Errors carry a kind so the binding layer maps them to the right Python exception.
struct DecodeError : std::runtime_error {
  enum class Kind { kNotFound, kInvalidFile, kNoVideoStream, kUnsupportedCodec, kCorrupt, kInvalidArgument };
  Kind kind;
  DecodeError(Kind k, const std::string& msg) : std::runtime_error(msg), kind(k) {}
};

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
  int64_t skip_nonref_packets = 0;  // packets sent with non-reference skipping allowed (upper
                                    // bound on the frames the decoder dropped unseen)
  int64_t keyframe_backoffs = 0;    // restarts from an earlier keyframe because decoding from the
                                    // planned one concealed frames of its GOP
  double decode_ms = 0;         // demux + decode wall time
  double convert_ms = 0;        // colour conversion + resize + rotation wall time
};

struct DecodeResult {
  std::unique_ptr<uint8_t[]> frames;  // [T, H, W, 3] RGB24, contiguous
  int64_t T = 0;
  int H = 0, W = 0;
  std::vector<int64_t> pts;           // chosen frame pts (stream time base), per request
  std::vector<double> pts_s;          // chosen frame pts, seconds from the first frame
  std::vector<uint8_t> corrupt;       // 1 when the frame may hold concealed/damaged data
  std::vector<uint8_t> keyframe;      // 1 when the chosen frame is a keyframe
  DecodeStats stats;
  DeviceFrames device_frames;         // NVDEC backend: the frames live here (frames is unused)
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

  const VideoInfo& info() const { return info_; }

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
  const char* backend() const { return gpu_ ? "nvdec" : "cpu"; }
  const std::string& fallback_reason() const { return fallback_reason_; }

  // Demux-only scan (no decoding) of every packet of the stream: sorted presentation pts of all
  // frames (seconds from the first frame) and whether each is a keyframe. Cost: reads the file.
  void scan_frames(std::vector<double>* pts_s, std::vector<uint8_t>* is_key);

  // Cumulative statistics since open. Takes the decoder's lock (waits for a call in progress).
  DecodeStats total_stats() const;

  // Keyframes of the index found not to be clean random-access points (seconds from the first
  // frame, sorted): decoding from one concealed frames of its GOP that a decode from an earlier
  // keyframe reconstructed. Learnt while decoding and shared by every decoder of the same file
  // (path, size, mtime) and stream in the process; seeks go to an earlier keyframe instead.
  std::vector<double> unclean_keyframes_s();

  // Non-reference skipping (default on): packets whose pts is more than two frame durations from
  // every target of the current call are sent with AVDISCARD_NONREF, so the decoder drops
  // disposable frames (H.264 nal_ref_idc 0, HEVC sub-layer non-reference, VP9 frames that refresh
  // no reference) instead of reconstructing them. Reference frames and every frame near a target
  // are decoded as before, so the returned frames are identical. Off at variable frame rate.
  // Both take the decoder's lock.
  void set_skip_nonref(bool enabled);
  bool skip_nonref() const;

 private:
  struct Held;  // a decoded frame kept as a candidate
  DecodeResult decode_locked(const std::vector<double>& times_s, SelectMode mode, int out_h, int out_w,
                             ResizeFilter filter, void* cuda_stream);  // mu_ held
  int64_t target_pts(double t, SelectMode mode) const;  // seconds -> stream pts, clamped (no overflow)
  void open_codec(int threads);
  void fill_info();
  void seek_to(int64_t target);  // to the keyframe the planner knows for target
  void seek_at(int64_t ts);       // seek (pts, backward) and reset the decoder state
  void sync_unclean_keyframes();  // take what other decoders of this file learnt
  void mark_unclean_keyframe(int64_t key_pts);
  bool receive_next(Held* out);  // false at end of stream
  void convert_into(const AVFrame* f, uint8_t* dst, int out_w, int out_h, ResizeFilter filter);

  std::string path_;
  int threads_;
  FormatContextPtr fmt_;  // owners: freed in reverse order (sws_, pkt_, ctx_, fmt_) on any exit
  CodecContextPtr ctx_;
  PacketPtr pkt_;
  SwsPtr sws_;
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
  std::unique_ptr<Held> prev_, cur_;  // candidates kept across calls
  // Non-reference skipping state: targets of the current call (sorted pts) and pts of packets
  // sent since the last seek with skipping allowed (their frames may have been dropped).
  bool skip_nonref_ = true;
  bool skip_active_ = false;
  int64_t skip_window_ = 0;
  std::vector<int64_t> needed_pts_;
  std::vector<int64_t> skippable_sent_pts_;
  bool near_needed(int64_t pts) const;
  std::vector<uint8_t> rgb_tmp_, rot_tmp_;
  std::unique_ptr<RgbResizer> resizer_;
  std::unique_ptr<NvdecBackend> gpu_;  // NVDEC decode backend, or null for libavcodec
  std::string fallback_reason_;
  std::vector<std::string>* yuv_capture_ = nullptr;  // set only inside decode_yuv()
  void capture_yuv(const AVFrame* f, std::string* out);
  int send_to_decoder(const AVPacket* pkt);
  int receive_from_decoder(AVFrame* f);
  mutable std::mutex mu_;  // every public entry that touches decoder state takes it
};

std::string ffmpeg_version_string();
int libavcodec_version();

}  // namespace eva_fast
