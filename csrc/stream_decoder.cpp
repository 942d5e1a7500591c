#include "stream_decoder.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>

#include "cpu_device.h"
#include "ffmpeg_log.h"
#include "nvdec.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/pixdesc.h>
#include <libavutil/version.h>
}

namespace eva_fast {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double q2d_safe(AVRational r) { return (r.num > 0 && r.den > 0) ? av_q2d(r) : 0.0; }

const uint8_t* display_matrix(AVStream* st) {
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(60, 29, 100)
  const AVPacketSideData* sd = av_packet_side_data_get(st->codecpar->coded_side_data,
                                                       st->codecpar->nb_coded_side_data,
                                                       AV_PKT_DATA_DISPLAYMATRIX);
  return sd ? sd->data : nullptr;
#else
  return av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, nullptr);
#endif
}

int64_t frame_pts(const AVFrame* f) {
  if (f->best_effort_timestamp != AV_NOPTS_VALUE) return f->best_effort_timestamp;
  return f->pts;
}

int64_t frame_duration(const AVFrame* f) {
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(57, 30, 100)
  return f->duration;
#else
  return f->pkt_duration;
#endif
}

bool frame_is_key(const AVFrame* f) {
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(58, 7, 100)
  return (f->flags & AV_FRAME_FLAG_KEY) != 0;
#else
  return f->key_frame != 0;
#endif
}

bool frame_flagged_corrupt(const AVFrame* f) {
  return f->decode_error_flags != 0 || (f->flags & AV_FRAME_FLAG_CORRUPT) != 0;
}

// Restarts from an earlier keyframe allowed per target when decoding from the planned one conceals
// frames (each costs at most one more GOP of decoding).
constexpr size_t kMaxKeyframeBackoffs = 8;

// Keyframes found not to be clean random-access points, per file (path, size, mtime) and stream,
// shared by every decoder of the process: GOP workers and later readers of the same file seek past
// them without paying for the discovery again.
struct UncleanKeyframes {
  std::mutex mu;
  std::map<std::string, std::vector<int64_t>> by_file;
  uint64_t version = 0;
};

UncleanKeyframes& unclean_keyframes() {
  static UncleanKeyframes table;
  return table;
}

}  // namespace

DecodeStats& DecodeStats::operator+=(const DecodeStats& o) {
  decoded_frames += o.decoded_frames;
  packets_sent += o.packets_sent;
  seeks += o.seeks;
  decode_errors += o.decode_errors;
  skip_nonref_packets += o.skip_nonref_packets;
  keyframe_backoffs += o.keyframe_backoffs;
  decode_ms += o.decode_ms;
  convert_ms += o.convert_ms;
  return *this;
}

// A decoded frame kept as a candidate. Owns its AVFrame; not copyable (two owners would free the
// frame twice), moved between candidates with take().
struct StreamDecoder::Held {
  FramePtr owner = make_frame();
  AVFrame* f = owner.get();
  int64_t pts = 0;
  bool corrupt = false;
  bool key = false;
  Held() = default;
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;
  bool valid() const { return f->buf[0] != nullptr; }
  void clear() { av_frame_unref(f); }
  void take(Held& o) {
    av_frame_unref(f);
    av_frame_move_ref(f, o.f);
    pts = o.pts;
    corrupt = o.corrupt;
    key = o.key;
  }
};

namespace {
std::atomic<int64_t> g_live_decoders{0};
}  // namespace

int64_t StreamDecoder::live() { return g_live_decoders.load(); }

StreamDecoder::StreamDecoder(const std::string& path, int stream_index, int threads, int cuda_device,
                             bool cpu_fallback)
    : path_(path) {
  install_ffmpeg_log_callback();
  clear_recent_ffmpeg_errors();
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0) {
    throw DecodeError(DecodeError::Kind::kNotFound, "No such file: '" + path + "'");
  }
  if (S_ISDIR(sb.st_mode)) {
    throw DecodeError(DecodeError::Kind::kInvalidFile, "'" + path + "' is a directory, not a video file");
  }
  // Every FFmpeg object below is owned by a unique_ptr member: a throw anywhere in this
  // constructor frees what was opened so far.
  AVFormatContext* raw_fmt = nullptr;
  int ret = avformat_open_input(&raw_fmt, path.c_str(), nullptr, nullptr);  // frees it on failure
  fmt_.reset(raw_fmt);
  if (ret < 0) {
    throw DecodeError(DecodeError::Kind::kInvalidFile,
                      with_ffmpeg_detail("'" + path + "' is not a readable video file: " + av_err(ret)));
  }
  ret = avformat_find_stream_info(fmt_.get(), nullptr);
  if (ret < 0) {
    throw DecodeError(DecodeError::Kind::kInvalidFile,
                      with_ffmpeg_detail("'" + path + "': cannot read stream info: " + av_err(ret)));
  }
  for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
    AVStream* st = fmt_->streams[i];
    if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO && !(st->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
      info_.video_stream_indices.push_back(static_cast<int>(i));
    }
  }
  if (info_.video_stream_indices.empty()) {
    throw DecodeError(DecodeError::Kind::kNoVideoStream, "'" + path + "' has no video stream");
  }
  if (stream_index < 0) {
    ret = av_find_best_stream(fmt_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
    stream_index = ret >= 0 ? ret : info_.video_stream_indices.front();
  } else if (std::find(info_.video_stream_indices.begin(), info_.video_stream_indices.end(), stream_index) ==
             info_.video_stream_indices.end()) {
    std::string allowed;
    for (int s : info_.video_stream_indices) allowed += (allowed.empty() ? "" : ", ") + std::to_string(s);
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      "'" + path + "': stream_index " + std::to_string(stream_index) +
                          " is not a video stream; video streams: [" + allowed + "]");
  }
  info_.stream_index = stream_index;
  file_key_ = path + '\n' + std::to_string(sb.st_size) + '\n' + std::to_string(sb.st_mtim.tv_sec) + '.' +
              std::to_string(sb.st_mtim.tv_nsec) + '\n' + std::to_string(stream_index);
  for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
    if (static_cast<int>(i) != stream_index) fmt_->streams[i]->discard = AVDISCARD_ALL;
  }
  // The device: NVDEC when asked for and able to decode the stream, else libavcodec (a stream NVDEC
  // decodes never opens libavcodec's decoder).
  if (cuda_device >= 0) device_ = create_nvdec_device(fmt_->streams[info_.stream_index], cuda_device, &fallback_reason_);
  if (!device_ && cuda_device >= 0 && !cpu_fallback) {
    throw std::runtime_error("'" + path + "': NVDEC decoder for a GOP run: " + fallback_reason_);
  }
  if (!device_) device_ = std::make_unique<CpuDevice>(fmt_.get(), info_.stream_index, threads, path_);
  fill_info();
  pkt_ = make_packet();
  prev_ = std::make_unique<Held>();
  cur_ = std::make_unique<Held>();
  g_live_decoders++;
}

void StreamDecoder::park() {
  prev_->clear();
  cur_->clear();
  has_position_ = false;
  skippable_sent_pts_.clear();
  device_->release_session();
}

StreamDecoder::~StreamDecoder() {
  g_live_decoders--;
  prev_.reset();
  cur_.reset();
  device_.reset();  // after the held frames, whose device buffers it owns
  // pkt_ and fmt_ are freed by their owners (members, reverse declaration order).
}

void StreamDecoder::fill_info() {
  AVStream* st = fmt_->streams[info_.stream_index];
  AVCodecParameters* par = st->codecpar;
  VideoInfo& in = info_;
  in.path = path_;
  in.container = fmt_->iformat->name;
  in.codec = avcodec_get_name(par->codec_id);
  const AVCodecDescriptor* cd = avcodec_descriptor_get(par->codec_id);
  in.codec_long_name = cd && cd->long_name ? cd->long_name : in.codec;
  const char* prof = avcodec_profile_name(par->codec_id, par->profile);
  in.profile = prof ? prof : "";
  const AVPixFmtDescriptor* pd = av_pix_fmt_desc_get(static_cast<AVPixelFormat>(par->format));
  in.pixel_format = pd ? pd->name : "unknown";
  in.bit_depth = pd ? pd->comp[0].depth : 8;
  in.color_space = av_color_space_name(par->color_space) ? av_color_space_name(par->color_space) : "unknown";
  in.color_range = av_color_range_name(par->color_range) ? av_color_range_name(par->color_range) : "unknown";
  in.coded_width = par->width;
  in.coded_height = par->height;
  if (in.coded_width <= 0 || in.coded_height <= 0) {
    throw DecodeError(DecodeError::Kind::kInvalidFile,
                      "'" + path_ + "': video stream has no frame size (" + std::to_string(par->width) + "x" +
                          std::to_string(par->height) + "); the file is probably truncated or corrupt");
  }
  in.tb_num = st->time_base.num;
  in.tb_den = st->time_base.den;
  const double tb = av_q2d(st->time_base);

  // Rotation: the display matrix gives the counter-clockwise angle; frames are turned clockwise
  // by its negation (what the ffmpeg CLI's autorotate does).
  if (const uint8_t* m = display_matrix(st)) {
    double ccw = av_display_rotation_get(reinterpret_cast<const int32_t*>(m));
    if (!std::isnan(ccw)) {
      int cw = static_cast<int>(std::lround(-ccw));
      cw = ((cw % 360) + 360) % 360;
      cw = static_cast<int>(std::lround(cw / 90.0)) * 90 % 360;
      in.rotation_deg = cw;
    }
  }
  const bool swap = in.rotation_deg == 90 || in.rotation_deg == 270;
  in.width = swap ? in.coded_height : in.coded_width;
  in.height = swap ? in.coded_width : in.coded_height;

  in.average_fps = q2d_safe(st->avg_frame_rate);
  in.r_fps = q2d_safe(st->r_frame_rate);
  if (in.average_fps <= 0) in.average_fps = in.r_fps;
  if (in.average_fps <= 0) in.average_fps = q2d_safe(av_guess_frame_rate(fmt_.get(), st, nullptr));
  if (in.average_fps <= 0) {
    throw DecodeError(DecodeError::Kind::kInvalidFile, "'" + path_ + "': cannot determine the frame rate");
  }
  in.start_pts = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
  in.start_pts_s = in.start_pts * tb;
  if (st->duration != AV_NOPTS_VALUE && st->duration > 0) {
    in.duration_s = st->duration * tb;
  } else if (fmt_->duration != AV_NOPTS_VALUE && fmt_->duration > 0) {
    double start_container = fmt_->start_time != AV_NOPTS_VALUE ? fmt_->start_time / double(AV_TIME_BASE) : 0.0;
    in.duration_s = fmt_->duration / double(AV_TIME_BASE) - std::max(0.0, in.start_pts_s - start_container);
  }
  if (st->nb_frames > 0) {
    in.num_frames = st->nb_frames;
  } else {
    in.num_frames = std::max<int64_t>(1, std::llround(in.duration_s * in.average_fps));
    in.num_frames_estimated = true;
  }
  if (in.duration_s <= 0) in.duration_s = in.num_frames / in.average_fps;
  frame_dur_ = std::max<int64_t>(1, std::llround(1.0 / (in.average_fps * tb)));

  // Keyframes from the container index (cheap: already in memory for MP4/MOV, cues for MKV).
  const bool is_mov = std::strstr(fmt_->iformat->name, "mov") != nullptr;
  int n = avformat_index_get_entries_count(st);
  std::vector<int64_t> key_ts;
  std::vector<int64_t> all_ts;
  for (int i = 0; i < n; ++i) {
    const AVIndexEntry* e = avformat_index_get_entry(st, i);
    if (!e || (e->flags & AVINDEX_DISCARD_FRAME)) continue;
    all_ts.push_back(e->timestamp);
    if (e->flags & AVINDEX_KEYFRAME) key_ts.push_back(e->timestamp);
  }
  if (is_mov && !all_ts.empty()) {
    // The MOV demuxer's index holds decode timestamps: shift keyframes to presentation time.
    index_delay_ = std::max<int64_t>(0, in.start_pts - *std::min_element(all_ts.begin(), all_ts.end()));
  }
  std::vector<int64_t> key_pts;
  for (int64_t ts : key_ts) key_pts.push_back(ts + index_delay_);
  std::sort(key_pts.begin(), key_pts.end());
  for (int64_t p : key_pts) in.keyframe_pts_s.push_back((p - in.start_pts) * tb);
  in.keyframes_from_index = !key_pts.empty();

  // Variable frame rate: with a full MOV sample index the decode-time deltas are exact;
  // otherwise compare FFmpeg's base-rate guess with the average rate.
  if (is_mov && static_cast<int64_t>(all_ts.size()) >= 3 && static_cast<int64_t>(all_ts.size()) == in.num_frames) {
    std::vector<int64_t> sorted(all_ts);
    std::sort(sorted.begin(), sorted.end());
    int64_t dmin = INT64_MAX, dmax = 0;
    for (size_t i = 1; i < sorted.size(); ++i) {
      dmin = std::min(dmin, sorted[i] - sorted[i - 1]);
      dmax = std::max(dmax, sorted[i] - sorted[i - 1]);
    }
    in.is_vfr = dmax - dmin > 1;
  } else if (in.r_fps > 0) {
    in.is_vfr = std::fabs(in.r_fps - in.average_fps) > 0.01 * in.average_fps;
  }
  planner_ = std::make_unique<SeekPlanner>(key_pts, std::llround(2.0 / tb));
  // A seek discards about one in-flight frame per decoder thread (frame threading), so a later GOP
  // whose keyframe is within that many frames is reached by decoding through instead.
  const int frame_threads = device_->frame_threads();
  planner_->set_min_forward_gap(frame_threads > 1 ? static_cast<int64_t>(frame_threads) * frame_dur_ : 0);
}

void StreamDecoder::seek_to(int64_t target) {
  const int64_t key = planner_->keyframe_at_or_before(target);
  // Demuxers take presentation timestamps here (FFmpeg's MOV seek compensates its dts index).
  seek_at(key != INT64_MIN ? key : target);
  if (key != INT64_MIN) start_probe(key);
}

void StreamDecoder::start_probe(int64_t key) {
  probe_ = StartProbe{};
  probe_.active = true;
  probe_.key = key;
  probe_.end = planner_->keyframe_after(key);
}

bool StreamDecoder::can_back_off() const {
  return backed_off_from_.size() < kMaxKeyframeBackoffs &&
         planner_->keyframe_at_or_before(probe_.key - 1) != INT64_MIN;
}

void StreamDecoder::end_probe_at_gop_end() {
  // Past the start GOP (a later frame, or the end of the stream): it is a clean start if one of
  // its frames came out; none at all means the decoder could not decode from its keyframe (e.g. a
  // parameter set sent only before an earlier keyframe).
  if (probe_.active && !probe_.saw_frame && can_back_off()) {
    probe_.failed = true;
  } else {
    probe_.active = false;
  }
}

void StreamDecoder::sync_unclean_keyframes() {
  UncleanKeyframes& t = unclean_keyframes();
  std::lock_guard<std::mutex> lock(t.mu);
  if (t.version == unclean_version_) return;
  unclean_version_ = t.version;
  auto it = t.by_file.find(file_key_);
  if (it == t.by_file.end()) return;
  for (int64_t k : it->second) planner_->mark_unclean(k);
}

void StreamDecoder::mark_unclean_keyframe(int64_t key_pts) {
  planner_->mark_unclean(key_pts);
  UncleanKeyframes& t = unclean_keyframes();
  std::lock_guard<std::mutex> lock(t.mu);
  std::vector<int64_t>& keys = t.by_file[file_key_];
  if (std::find(keys.begin(), keys.end(), key_pts) == keys.end()) {
    keys.push_back(key_pts);
    t.version++;
  }
}

std::vector<int64_t> StreamDecoder::clean_keyframes() {
  sync_unclean_keyframes();
  std::vector<int64_t> out;
  const std::vector<int64_t>& unclean = planner_->unclean();
  for (int64_t k : planner_->keyframes()) {
    if (!std::binary_search(unclean.begin(), unclean.end(), k)) out.push_back(k);
  }
  return out;
}

std::vector<double> StreamDecoder::unclean_keyframes_s() {
  sync_unclean_keyframes();
  const double tb = av_q2d(fmt_->streams[info_.stream_index]->time_base);
  std::vector<double> out;
  for (int64_t k : planner_->unclean()) out.push_back((k - info_.start_pts) * tb);
  return out;
}

void StreamDecoder::seek_at(int64_t ts) {
  int ret = av_seek_frame(fmt_.get(), info_.stream_index, ts, AVSEEK_FLAG_BACKWARD);
  if (ret < 0) ret = avformat_seek_file(fmt_.get(), info_.stream_index, INT64_MIN, ts, ts, 0);
  // Last resort: the stream's start (decoding forward from there is slow but exact).
  if (ret < 0) ret = av_seek_frame(fmt_.get(), info_.stream_index, info_.start_pts, AVSEEK_FLAG_BACKWARD);
  if (ret < 0) {
    throw DecodeError(DecodeError::Kind::kCorrupt,
                      with_ffmpeg_detail("'" + path_ + "': seek to pts " + std::to_string(ts) + " failed: " + av_err(ret)));
  }
  device_->flush();
  skippable_sent_pts_.clear();
  has_position_ = false;
  input_eof_ = false;
  output_eof_ = false;
  gop_tainted_ = false;
  probe_ = StartProbe{};
  stats_.seeks++;
}

bool StreamDecoder::receive_next(Held* out) {
  if (output_eof_) return false;
  while (true) {
    int ret = device_->receive_frame(out->f);
    if (ret == 0) {
      stats_.decoded_frames++;
      int64_t pts = frame_pts(out->f);
      if (pts == AV_NOPTS_VALUE) pts = has_position_ ? position_ + frame_dur_ : info_.start_pts;
      out->pts = pts;
      out->key = frame_is_key(out->f);
      if (out->key && !frame_flagged_corrupt(out->f)) gop_tainted_ = false;
      if (out->key) planner_->observe_keyframe(pts);
      out->corrupt = frame_flagged_corrupt(out->f) || gop_tainted_;
      if (frame_flagged_corrupt(out->f)) {
        stats_.decode_errors++;
        gop_tainted_ = true;
      }
      has_position_ = true;
      position_ = pts;
      if (probe_.active && pts >= probe_.end) {
        end_probe_at_gop_end();
      } else if (probe_.active && pts >= probe_.key) {
        if (!out->corrupt) {
          probe_.saw_frame = true;
        } else if (can_back_off()) {
          probe_.failed = true;  // concealed frame of the start GOP
        } else {
          probe_.active = false;  // no earlier start to try: keep what this one gives
        }
      }
      return true;
    }
    if (ret == AVERROR_EOF) {
      output_eof_ = true;
      end_probe_at_gop_end();
      return false;
    }
    if (ret != AVERROR(EAGAIN)) {
      // A decoding error on output: the stream is damaged here; keep going, mark the GOP.
      stats_.decode_errors++;
      gop_tainted_ = true;
      if (input_eof_) {
        output_eof_ = true;
        end_probe_at_gop_end();
        return false;
      }
    }
    if (input_eof_) {
      // Drain mode already requested and the decoder wants more: nothing left.
      output_eof_ = true;
      end_probe_at_gop_end();
      return false;
    }
    ret = av_read_frame(fmt_.get(), pkt_.get());
    if (ret < 0) {
      if (ret != AVERROR_EOF) read_error_ = av_err(ret);
      input_eof_ = true;
      device_->send_packet(nullptr, false, nullptr);
      continue;
    }
    if (pkt_->stream_index != info_.stream_index) {
      av_packet_unref(pkt_.get());
      continue;
    }
    if (pkt_->flags & AV_PKT_FLAG_CORRUPT) {
      stats_.decode_errors++;
      gop_tainted_ = true;
    }
    // The device may drop this frame if it is disposable and no target is near it.
    const bool skippable = skip_active_ && pkt_->pts != AV_NOPTS_VALUE && !near_needed(pkt_->pts);
    bool maybe_dropped = false;
    const int64_t sent_pts = pkt_->pts;
    ret = device_->send_packet(pkt_.get(), skippable, &maybe_dropped);
    if (maybe_dropped) {
      stats_.skip_nonref_packets++;
      skippable_sent_pts_.push_back(sent_pts);
    }
    av_packet_unref(pkt_.get());
    stats_.packets_sent++;
    if (ret < 0 && ret != AVERROR(EAGAIN)) {
      // Damaged packet: the decoder drops or conceals it. Frames until the next clean
      // keyframe may reference it, so they are flagged.
      stats_.decode_errors++;
      gop_tainted_ = true;
    }
  }
}

bool StreamDecoder::near_needed(int64_t pts) const {
  auto it = std::lower_bound(needed_pts_.begin(), needed_pts_.end(), pts - skip_window_);
  return it != needed_pts_.end() && *it <= pts + skip_window_;
}

int64_t StreamDecoder::target_pts(double t, SelectMode mode) const {
  // Clamp in seconds before converting: t / time_base overflows int64 from about 1e15 s (1e300,
  // 2**63, float32 1e30), and llround is then undefined. Times before the first frame all select
  // it, so the lower clamp is -1 s; the upper one (2^61 ticks, >= 73 years at 1/1e9 s ticks) lies
  // beyond any decodable data, so every later time selects the last frame.
  const double tb = static_cast<double>(info_.tb_num) / info_.tb_den;
  const double hi_s = std::ldexp(1.0, 61) * tb;
  const double tc = std::min(std::max(t, -1.0), hi_s);
  // played_at wants the last frame with pts <= t: round down, tolerating float error of times
  // computed from pts (a millionth of a tick); nearest rounds to the nearest tick.
  const double ticks = tc / tb;
  const int64_t rel = mode == SelectMode::kPlayedAt ? static_cast<int64_t>(std::floor(ticks + 1e-6)) : std::llround(ticks);
  int64_t out;
  if (__builtin_add_overflow(info_.start_pts, rel, &out)) out = rel > 0 ? INT64_MAX / 4 : INT64_MIN / 4;
  return out;
}

namespace {
// Calls DeviceInterface::end_output when a run leaves, also by an exception: a device's pending
// writes are always handed over before the output can be freed.
class OutputGuard {
 public:
  OutputGuard(DeviceInterface& d, FrameOutput& out) : d_(d), out_(out) {
    if (!out_.planar) d_.begin_output(out_);
  }
  void end() {
    if (done_) return;
    done_ = true;
    if (!out_.planar) d_.end_output(out_);
  }
  ~OutputGuard() {
    try {
      end();
    } catch (...) {  // the run's own exception is the one to report
    }
  }

 private:
  DeviceInterface& d_;
  FrameOutput& out_;
  bool done_ = false;
};
}  // namespace

void StreamDecoder::decode_run(const std::vector<Target>& order, SelectMode mode, FrameOutput& out, SlotInfo& slots,
                               DecodeStats* stats) {
  static_assert(!std::is_copy_constructible<Held>::value && !std::is_copy_assignable<Held>::value,
                "a copied Held would free its AVFrame twice");
  const double tb = static_cast<double>(info_.tb_num) / info_.tb_den;
  stats_ = DecodeStats{};
  read_error_.clear();
  sync_unclean_keyframes();
  backed_off_from_.clear();
  if (order.empty()) return;

  // Non-reference skipping for this run. Frames near a target are always decoded, so the
  // candidates on both sides of every target are real decoded neighbours. A packet sent in an
  // earlier run with skipping allowed (still in the decoder's frame-threading pipeline, or
  // dropped) may be a target now: then decoding must restart from a keyframe.
  skip_window_ = 2 * frame_dur_ + std::max<int64_t>(1, frame_dur_ / 1000);
  needed_pts_.clear();
  for (const Target& o : order) needed_pts_.push_back(o.pts);
  skip_active_ = skip_nonref_ && !info_.is_vfr && frame_dur_ > 0;
  if (has_position_ && !skippable_sent_pts_.empty()) {
    bool stale = false;
    for (int64_t p : skippable_sent_pts_) {
      if (near_needed(p)) {
        stale = true;
        break;
      }
    }
    if (stale) {
      prev_->clear();
      cur_->clear();
      has_position_ = false;  // the planner then seeks to the first target's keyframe
    }
  }

  OutputGuard guard(*device_, out);
  Held& prev = *prev_;  // newest frame with pts <= the current target
  Held& cur = *cur_;    // newest frame received (first one past the target, if any)
  auto t0 = Clock::now();
  double convert_ms = 0;
  int64_t last_slot = -1;
  int64_t last_chosen_pts = INT64_MIN;
  const int64_t tolerance = std::max<int64_t>(1, frame_dur_ / 1000);
  const int64_t max_backoff = std::llround(600.0 / tb);
  auto copy_slot = [&](int64_t dst, int64_t src) {
    if (out.planar) {
      (*out.planar)[dst] = (*out.planar)[src];
    } else {
      device_->copy_slot(out, dst, src);
    }
  };

  for (size_t oi = 0; oi < order.size(); ++oi) {
    const int64_t target = order[oi].pts;
    const int64_t slot = order[oi].slot;
    if (oi > 0 && target == order[oi - 1].pts) {
      copy_slot(slot, last_slot);
      slots.pts[slot] = slots.pts[last_slot];
      slots.corrupt[slot] = slots.corrupt[last_slot];
      slots.keyframe[slot] = slots.keyframe[last_slot];
      continue;
    }
    bool need_seek;
    if (has_position_ && target < position_) {
      // Behind the newest frame: fine if the answer is prev or cur (consecutive frames).
      need_seek = !(prev.valid() && prev.pts <= target);
    } else {
      need_seek = planner_->should_seek(has_position_, position_, target);
    }
    int64_t backoff = std::llround(1.0 / tb);
    if (need_seek) {
      prev.clear();
      cur.clear();
      seek_to(target);
    }
    const Held* chosen = nullptr;
    while (true) {
      if (cur.valid() && cur.pts <= target) prev.take(cur);
      if (cur.valid() && cur.pts > target) {
        // First frame past the target: decide between it and prev.
        if (!prev.valid()) {
          // Landed after the target: the seek went too far unless this is the stream's start.
          if (cur.pts > info_.start_pts + tolerance && backoff <= max_backoff) {
            cur.clear();
            seek_at(target - backoff);
            backoff *= 2;
            continue;
          }
          chosen = &cur;
        } else if (mode == SelectMode::kPlayedAt) {
          chosen = &prev;
        } else {
          chosen = (target - prev.pts <= cur.pts - target) ? &prev : &cur;
        }
        break;
      }
      if (prev.valid()) {
        // prev.pts <= target: done early if it is exact, or its duration covers the target.
        int64_t dur = frame_duration(prev.f);
        if (dur <= 0) dur = frame_dur_;
        if (prev.pts == target ||
            (mode == SelectMode::kPlayedAt ? target < prev.pts + dur : 2 * (target - prev.pts) < dur)) {
          if (!info_.is_vfr || prev.pts == target) {
            chosen = &prev;
            break;
          }
        }
      }
      Held next;
      const bool received = receive_next(&next);
      if (probe_.failed) {
        // Decoding from this keyframe conceals frames of its GOP: it may not be a clean start.
        // Restart from the keyframe before it.
        const int64_t earlier = planner_->keyframe_at_or_before(probe_.key - 1);
        backed_off_from_.push_back(probe_.key);
        prev.clear();
        cur.clear();
        seek_at(earlier);
        start_probe(earlier);
        stats_.keyframe_backoffs++;
        continue;
      }
      if (!received) {
        // End of stream: the last frame is the answer unless data ended before the target.
        if (!prev.valid()) {
          throw DecodeError(DecodeError::Kind::kCorrupt,
                            with_ffmpeg_detail("'" + path_ + "': no frame could be decoded for t=" +
                                               std::to_string((target - info_.start_pts) * tb) + " s" +
                                               (read_error_.empty() ? "" : " (read error: " + read_error_ + ")")));
        }
        const double gap_s = (target - prev.pts) * tb;
        const double declared_end_s = info_.start_pts_s + info_.duration_s;
        const double last_s = prev.pts * tb;
        if (gap_s > std::max(3.0 / info_.average_fps, 0.5) && last_s + 1.0 < declared_end_s) {
          throw DecodeError(DecodeError::Kind::kCorrupt,
                            with_ffmpeg_detail("'" + path_ + "' is truncated or corrupt: decodable data ends at " +
                                               std::to_string(last_s - info_.start_pts_s) +
                                               " s but the container declares " + std::to_string(info_.duration_s) +
                                               " s; requested t=" + std::to_string((target - info_.start_pts) * tb) +
                                               " s" + (read_error_.empty() ? "" : " (read error: " + read_error_ + ")")));
        }
        chosen = &prev;
        break;
      }
      cur.take(next);
    }
    if (!backed_off_from_.empty()) {
      // An earlier start gave a clean target: the abandoned keyframes are not clean starts.
      if (!chosen->corrupt) {
        for (int64_t k : backed_off_from_) mark_unclean_keyframe(k);
      }
      backed_off_from_.clear();
    }
    auto tc = Clock::now();
    if (chosen->pts == last_chosen_pts && last_slot >= 0) {
      copy_slot(slot, last_slot);
    } else if (out.planar) {
      device_->download_planar(chosen->f, &(*out.planar)[slot]);
    } else {
      device_->convert_slot(chosen->f, out, slot);
    }
    convert_ms += ms_since(tc);
    slots.pts[slot] = chosen->pts;
    slots.corrupt[slot] = chosen->corrupt ? 1 : 0;
    slots.keyframe[slot] = chosen->key ? 1 : 0;
    last_slot = slot;
    last_chosen_pts = chosen->pts;
  }
  guard.end();
  stats_.convert_ms = convert_ms;
  stats_.decode_ms = ms_since(t0) - convert_ms;
  total_ += stats_;
  *stats += stats_;
}

void StreamDecoder::scan_frames(std::vector<double>* pts_s, std::vector<uint8_t>* is_key) {
  AVFormatContext* raw = nullptr;
  int ret = avformat_open_input(&raw, path_.c_str(), nullptr, nullptr);
  FormatContextPtr f(raw);
  if (ret < 0) throw DecodeError(DecodeError::Kind::kInvalidFile, "'" + path_ + "': reopen failed: " + av_err(ret));
  if (info_.stream_index >= static_cast<int>(f->nb_streams)) avformat_find_stream_info(f.get(), nullptr);
  if (info_.stream_index >= static_cast<int>(f->nb_streams)) {
    throw DecodeError(DecodeError::Kind::kCorrupt, "'" + path_ + "' changed since it was opened (stream " +
                                                       std::to_string(info_.stream_index) + " is gone)");
  }
  for (unsigned i = 0; i < f->nb_streams; ++i) {
    if (static_cast<int>(i) != info_.stream_index) f->streams[i]->discard = AVDISCARD_ALL;
  }
  PacketPtr p = make_packet();
  std::vector<std::pair<int64_t, uint8_t>> items;
  while (av_read_frame(f.get(), p.get()) >= 0) {
    if (p->stream_index == info_.stream_index) {
      int64_t ts = p->pts != AV_NOPTS_VALUE ? p->pts : p->dts;
      if (ts != AV_NOPTS_VALUE) items.emplace_back(ts, (p->flags & AV_PKT_FLAG_KEY) ? 1 : 0);
    }
    av_packet_unref(p.get());
  }
  std::sort(items.begin(), items.end());
  const double tb = static_cast<double>(info_.tb_num) / info_.tb_den;
  pts_s->clear();
  is_key->clear();
  for (auto& it : items) {
    pts_s->push_back((it.first - info_.start_pts) * tb);
    is_key->push_back(it.second);
  }
}

}  // namespace eva_fast
