#include "decoder.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>

#include "ffmpeg_log.h"
#include "yuv444.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libavutil/version.h>
#include <libswscale/swscale.h>
}

namespace eva_fast {
namespace {

using Clock = std::chrono::steady_clock;

// Slack after buffers that swscale writes into (its SIMD paths overrun row ends).
constexpr size_t kRowPadBytes = 256;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string av_err(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof(buf));
  return buf;
}

std::string with_ffmpeg_detail(const std::string& msg) {
  std::string detail = recent_ffmpeg_errors();
  if (detail.empty()) return msg;
  return msg + " (FFmpeg: " + detail + ")";
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

// The x264 build number that FFmpeg's H.264 decoder reads from the stream's first access unit (x264
// writes its version string there, as an unregistered-user-data SEI) to emulate known bugs of old
// x264 versions (e.g. 4:4:4 streams before build 151). A decoder that starts at a later keyframe
// never sees that SEI, misparses such a stream and conceals (cockatoo.mp4: x264 core 142): the
// number is read from the first packet here and handed to every decode as the decoder's
// `x264_build` option, as a decode from the start would have it. -1 when there is none. Leaves the
// demuxer at the stream's start.
int find_x264_build(AVFormatContext* fmt, int stream_index) {
  AVPacket* pkt = av_packet_alloc();
  if (!pkt) return -1;
  int build = -1;
  for (int n = 0; n < 64 && av_read_frame(fmt, pkt) >= 0; ++n) {
    if (pkt->stream_index != stream_index) {
      av_packet_unref(pkt);
      continue;
    }
    static const uint8_t kTag[] = "x264 - core ";
    const uint8_t* begin = pkt->data;
    const uint8_t* end = pkt->data + pkt->size;
    const uint8_t* at = std::search(begin, end, kTag, kTag + sizeof(kTag) - 1);
    if (at != end) {
      // FFmpeg's own parse (h264_sei.c): sscanf("x264 - core %d"), and "core 0000" means 67.
      const char* digits = reinterpret_cast<const char*>(at) + sizeof(kTag) - 1;
      int v = 0, nd = 0;
      while (digits + nd < reinterpret_cast<const char*>(end) && nd < 9 && digits[nd] >= '0' && digits[nd] <= '9') {
        v = v * 10 + (digits[nd] - '0');
        ++nd;
      }
      if (nd > 0 && v > 0) build = (v == 1 && nd == 4 && std::strncmp(digits, "0000", 4) == 0) ? 67 : v;
    }
    av_packet_unref(pkt);
    break;
  }
  av_packet_free(&pkt);
  AVStream* st = fmt->streams[stream_index];
  av_seek_frame(fmt, stream_index, st->start_time != AV_NOPTS_VALUE ? st->start_time : 0, AVSEEK_FLAG_BACKWARD);
  return build;
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

// Copy an RGB24 image rotated clockwise by `deg` (90/180/270). src is sw x sh, rows of
// `stride` bytes; dst is tightly packed.
void rotate_rgb(const uint8_t* src, int sw, int sh, int stride, int deg, uint8_t* dst) {
  if (deg == 180) {
    for (int y = 0; y < sh; ++y) {
      const uint8_t* s = src + static_cast<size_t>(y) * stride;
      uint8_t* d = dst + static_cast<size_t>(sh - 1 - y) * sw * 3;
      for (int x = 0; x < sw; ++x) std::memcpy(d + (sw - 1 - x) * 3, s + x * 3, 3);
    }
    return;
  }
  // Output is sh wide and sw tall.
  const int dw = sh;
  for (int y = 0; y < sh; ++y) {
    const uint8_t* s = src + static_cast<size_t>(y) * stride;
    for (int x = 0; x < sw; ++x) {
      int dx, dy;
      if (deg == 90) {  // clockwise: (x, y) -> (sh - 1 - y, x)
        dx = sh - 1 - y;
        dy = x;
      } else {  // 270: (x, y) -> (y, sw - 1 - x)
        dx = y;
        dy = sw - 1 - x;
      }
      std::memcpy(dst + (static_cast<size_t>(dy) * dw + dx) * 3, s + x * 3, 3);
    }
  }
}

}  // namespace

// A decoded frame kept as a candidate. Owns its AVFrame; not copyable (two owners would free the
// frame twice), moved between candidates with take().
struct VideoDecoder::Held {
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

std::string ffmpeg_version_string() { return av_version_info(); }
int libavcodec_version() { return static_cast<int>(avcodec_version()); }

VideoDecoder::VideoDecoder(const std::string& path, int stream_index, int threads, int cuda_device)
    : path_(path), threads_(threads) {
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
  // NVDEC first: a stream NVDEC decodes never runs libavcodec's decoder, so that one is opened
  // without frame threads (no idle thread pool per GPU reader).
  if (cuda_device >= 0) gpu_ = NvdecBackend::create(fmt_->streams[info_.stream_index], cuda_device, &fallback_reason_);
  open_codec(gpu_ ? 1 : threads_);
  fill_info();
  pkt_ = make_packet();
  prev_ = std::make_unique<Held>();
  cur_ = std::make_unique<Held>();
}

VideoDecoder::~VideoDecoder() {
  prev_.reset();
  cur_.reset();
  gpu_.reset();  // after the held frames, whose device buffers it owns
  // pkt_, sws_, ctx_ and fmt_ are freed by their owners (members, reverse declaration order).
}

void VideoDecoder::open_codec(int threads) {
  AVStream* st = fmt_->streams[info_.stream_index];
  const AVCodec* codec = avcodec_find_decoder(st->codecpar->codec_id);
  const char* name = avcodec_get_name(st->codecpar->codec_id);
  if (!codec) {
    throw DecodeError(DecodeError::Kind::kUnsupportedCodec,
                      "'" + path_ + "': codec '" + std::string(name) +
                          "' is not supported by this FFmpeg build (" + ffmpeg_version_string() + ")");
  }
  ctx_.reset(avcodec_alloc_context3(codec));
  if (!ctx_) throw std::bad_alloc();
  int ret = avcodec_parameters_to_context(ctx_.get(), st->codecpar);
  if (ret < 0) {
    throw DecodeError(DecodeError::Kind::kInvalidFile, "'" + path_ + "': bad codec parameters: " + av_err(ret));
  }
  ctx_->pkt_timebase = st->time_base;
  ctx_->thread_count = threads;
  ctx_->thread_type = threads == 1 ? 0 : FF_THREAD_FRAME | FF_THREAD_SLICE;
  AVDictionary* opts = nullptr;
  if (st->codecpar->codec_id == AV_CODEC_ID_H264) {
    const int x264_build = find_x264_build(fmt_.get(), info_.stream_index);
    if (x264_build > 0) av_dict_set_int(&opts, "x264_build", x264_build, 0);
  }
  ret = avcodec_open2(ctx_.get(), codec, &opts);
  av_dict_free(&opts);
  if (ret < 0) {
    throw DecodeError(DecodeError::Kind::kUnsupportedCodec,
                      with_ffmpeg_detail("'" + path_ + "': cannot open the " + std::string(name) +
                                         " decoder: " + av_err(ret)));
  }
}

void VideoDecoder::fill_info() {
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
  const int frame_threads = (ctx_->active_thread_type & FF_THREAD_FRAME) ? std::max(1, ctx_->thread_count) : 1;
  planner_->set_min_forward_gap(frame_threads > 1 ? static_cast<int64_t>(frame_threads) * frame_dur_ : 0);
}

void VideoDecoder::seek_to(int64_t target) {
  const int64_t key = planner_->keyframe_at_or_before(target);
  // Demuxers take presentation timestamps here (FFmpeg's MOV seek compensates its dts index).
  seek_at(key != INT64_MIN ? key : target);
  if (key != INT64_MIN) start_probe(key);
}

void VideoDecoder::start_probe(int64_t key) {
  probe_ = StartProbe{};
  probe_.active = true;
  probe_.key = key;
  probe_.end = planner_->keyframe_after(key);
}

bool VideoDecoder::can_back_off() const {
  return backed_off_from_.size() < kMaxKeyframeBackoffs &&
         planner_->keyframe_at_or_before(probe_.key - 1) != INT64_MIN;
}

void VideoDecoder::end_probe_at_gop_end() {
  // Past the start GOP (a later frame, or the end of the stream): it is a clean start if one of
  // its frames came out; none at all means the decoder could not decode from its keyframe (e.g. a
  // parameter set sent only before an earlier keyframe).
  if (probe_.active && !probe_.saw_frame && can_back_off()) {
    probe_.failed = true;
  } else {
    probe_.active = false;
  }
}

void VideoDecoder::sync_unclean_keyframes() {
  UncleanKeyframes& t = unclean_keyframes();
  std::lock_guard<std::mutex> lock(t.mu);
  if (t.version == unclean_version_) return;
  unclean_version_ = t.version;
  auto it = t.by_file.find(file_key_);
  if (it == t.by_file.end()) return;
  for (int64_t k : it->second) planner_->mark_unclean(k);
}

void VideoDecoder::mark_unclean_keyframe(int64_t key_pts) {
  planner_->mark_unclean(key_pts);
  UncleanKeyframes& t = unclean_keyframes();
  std::lock_guard<std::mutex> lock(t.mu);
  std::vector<int64_t>& keys = t.by_file[file_key_];
  if (std::find(keys.begin(), keys.end(), key_pts) == keys.end()) {
    keys.push_back(key_pts);
    t.version++;
  }
}

std::vector<double> VideoDecoder::unclean_keyframes_s() {
  std::lock_guard<std::mutex> lock(mu_);
  sync_unclean_keyframes();
  const double tb = av_q2d(fmt_->streams[info_.stream_index]->time_base);
  std::vector<double> out;
  for (int64_t k : planner_->unclean()) out.push_back((k - info_.start_pts) * tb);
  return out;
}

void VideoDecoder::seek_at(int64_t ts) {
  int ret = av_seek_frame(fmt_.get(), info_.stream_index, ts, AVSEEK_FLAG_BACKWARD);
  if (ret < 0) ret = avformat_seek_file(fmt_.get(), info_.stream_index, INT64_MIN, ts, ts, 0);
  // Last resort: the stream's start (decoding forward from there is slow but exact).
  if (ret < 0) ret = av_seek_frame(fmt_.get(), info_.stream_index, info_.start_pts, AVSEEK_FLAG_BACKWARD);
  if (ret < 0) {
    throw DecodeError(DecodeError::Kind::kCorrupt,
                      with_ffmpeg_detail("'" + path_ + "': seek to pts " + std::to_string(ts) + " failed: " + av_err(ret)));
  }
  if (gpu_) {
    gpu_->flush();
  } else {
    avcodec_flush_buffers(ctx_.get());
  }
  skippable_sent_pts_.clear();
  has_position_ = false;
  input_eof_ = false;
  output_eof_ = false;
  gop_tainted_ = false;
  probe_ = StartProbe{};
  stats_.seeks++;
}

int VideoDecoder::send_to_decoder(const AVPacket* pkt) {
  return gpu_ ? gpu_->send_packet(pkt) : avcodec_send_packet(ctx_.get(), pkt);
}

int VideoDecoder::receive_from_decoder(AVFrame* f) {
  return gpu_ ? gpu_->receive_frame(f) : avcodec_receive_frame(ctx_.get(), f);
}

bool VideoDecoder::receive_next(Held* out) {
  if (output_eof_) return false;
  while (true) {
    int ret = receive_from_decoder(out->f);
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
      send_to_decoder(nullptr);
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
    if (skip_active_ && !gpu_) {  // NVDEC decodes every picture: nothing to skip there
      // Let the decoder drop this frame if it is disposable and no target is near it.
      const bool needed = pkt_->pts == AV_NOPTS_VALUE || near_needed(pkt_->pts);
      ctx_->skip_frame = needed ? AVDISCARD_DEFAULT : AVDISCARD_NONREF;
      if (!needed) {
        stats_.skip_nonref_packets++;
        skippable_sent_pts_.push_back(pkt_->pts);
      }
    } else if (ctx_->skip_frame != AVDISCARD_DEFAULT) {
      ctx_->skip_frame = AVDISCARD_DEFAULT;
    }
    ret = send_to_decoder(pkt_.get());
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

bool VideoDecoder::near_needed(int64_t pts) const {
  auto it = std::lower_bound(needed_pts_.begin(), needed_pts_.end(), pts - skip_window_);
  return it != needed_pts_.end() && *it <= pts + skip_window_;
}

void VideoDecoder::convert_into(const AVFrame* f, uint8_t* dst, int out_w, int out_h, ResizeFilter filter) {
  const int fw = f->width, fh = f->height;
  const int rot = info_.rotation_deg;
  const bool swap = rot == 90 || rot == 270;
  // Size before rotation.
  const int rw = swap ? out_h : out_w;
  const int rh = swap ? out_w : out_h;
  const bool need_resize = rw != fw || rh != fh;
  const AVPixelFormat src_fmt = static_cast<AVPixelFormat>(f->format);

  // Colour conversion: the frame's matrix and range, as the ffmpeg CLI's scale filter does.
  const int cs = swscale_colorspace(f->colorspace);
  const int src_full = f->color_range == AVCOL_RANGE_JPEG ? 1 : 0;
  // 8-bit 4:4:4: swscale's C full-chroma path, reproduced bit for bit with AVX2 (yuv444.h).
  const Yuv444ToRgb* fast444 = Yuv444ToRgb::get(src_fmt, cs, src_full != 0);
  if (!fast444) {
    // sws_getCachedContext frees the old context when it makes a new one (also when that fails).
    sws_.reset(sws_getCachedContext(sws_.release(), fw, fh, src_fmt, fw, fh, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr,
                                    nullptr, nullptr));
    if (!sws_) {
      const char* nm = av_get_pix_fmt_name(src_fmt);
      throw DecodeError(DecodeError::Kind::kUnsupportedCodec,
                        "'" + path_ + "': cannot convert pixel format " + std::string(nm ? nm : "?") + " to RGB24");
    }
    sws_setColorspaceDetails(sws_.get(), sws_getCoefficients(cs), src_full, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0,
                             1 << 16, 1 << 16);
  }

  // swscale's SIMD writers may store up to a vector past the end of a row: rows written straight
  // into the output are followed by the next row (overwritten later) or by the buffer's padding.
  uint8_t* rgb = dst;
  int rgb_stride = fw * 3;
  // Its x86 paths also assume padded, aligned rows (FFmpeg's own frames have 64-byte-aligned
  // linesizes): write straight into the output only when the row size is such a multiple. The
  // 4:4:4 converter writes exactly 3 * width bytes per row.
  const bool direct = !need_resize && rot == 0 && (fast444 || (fw * 3) % 64 == 0);
  if (!direct) {
    rgb_stride = (fw * 3 + 63) & ~63;
    rgb_tmp_.resize(static_cast<size_t>(rgb_stride) * fh + kRowPadBytes);
    rgb = rgb_tmp_.data();
  }
  if (fast444) {
    fast444->convert(f->data, f->linesize, fw, fh, rgb, rgb_stride);
  } else {
    uint8_t* dst_planes[4] = {rgb, nullptr, nullptr, nullptr};
    int dst_strides[4] = {rgb_stride, 0, 0, 0};
    sws_scale(sws_.get(), f->data, f->linesize, 0, fh, dst_planes, dst_strides);
  }
  if (direct) return;
  if (!need_resize && rot == 0) {
    for (int y = 0; y < fh; ++y) {
      std::memcpy(dst + static_cast<size_t>(y) * fw * 3, rgb + static_cast<size_t>(y) * rgb_stride, fw * 3);
    }
    return;
  }

  uint8_t* resized = rgb;
  int resized_stride = rgb_stride;
  if (need_resize) {
    uint8_t* target = dst;
    if (rot != 0) {
      rot_tmp_.resize(static_cast<size_t>(rw) * rh * 3);
      target = rot_tmp_.data();
    }
    if (!resizer_ || !resizer_->matches(fw, fh, rw, rh, filter)) {
      resizer_ = std::make_unique<RgbResizer>(fw, fh, rw, rh, filter);
    }
    resizer_->run(rgb, rgb_stride, target, rw * 3);
    resized = target;
    resized_stride = rw * 3;
  }
  if (rot != 0) rotate_rgb(resized, rw, rh, resized_stride, rot, dst);
}

DecodeResult VideoDecoder::decode(const std::vector<double>& times_s, SelectMode mode, int out_h, int out_w,
                                  ResizeFilter filter, void* cuda_stream) {
  std::lock_guard<std::mutex> lock(mu_);
  return decode_locked(times_s, mode, out_h, out_w, filter, cuda_stream);
}

int64_t VideoDecoder::target_pts(double t, SelectMode mode) const {
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

DecodeResult VideoDecoder::decode_locked(const std::vector<double>& times_s, SelectMode mode, int out_h, int out_w,
                                         ResizeFilter filter, void* cuda_stream) {
  static_assert(!std::is_copy_constructible<Held>::value && !std::is_copy_assignable<Held>::value,
                "a copied Held would free its AVFrame twice");
  clear_recent_ffmpeg_errors();
  if (out_w == 0 && out_h == 0) {
    out_w = info_.width;
    out_h = info_.height;
  }
  if (out_w <= 0 || out_h <= 0 || out_w > 16384 || out_h > 16384) {
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      "output size (height, width) must be within 1..16384 per side, got (" +
                          std::to_string(out_h) + ", " + std::to_string(out_w) + ")");
  }
  const double tb = static_cast<double>(info_.tb_num) / info_.tb_den;
  DecodeResult res;
  res.T = static_cast<int64_t>(times_s.size());
  res.H = out_h;
  res.W = out_w;
  const size_t frame_bytes = static_cast<size_t>(out_w) * out_h * 3;
  for (int64_t i = 0; i < res.T; ++i) {
    if (!std::isfinite(times_s[i])) {
      throw DecodeError(DecodeError::Kind::kInvalidArgument,
                        "timestamps must be finite seconds, got " + std::to_string(times_s[i]) + " at position " +
                            std::to_string(i));
    }
  }
  // Output bytes, checked before allocating (the Python layer enforces the documented limit; this
  // keeps a direct caller from overflowing size_t or dying in operator new).
  size_t total_bytes = 0;
  if (__builtin_mul_overflow(frame_bytes, static_cast<size_t>(std::max<int64_t>(res.T, 1)), &total_bytes) ||
      total_bytes > (size_t{1} << 46)) {
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      std::to_string(res.T) + " frames of " + std::to_string(out_h) + "x" + std::to_string(out_w) +
                          " (height x width) are too large to allocate");
  }
  if (!gpu_) {
    res.frames.reset(new (std::nothrow) uint8_t[total_bytes + kRowPadBytes]);
    if (!res.frames) {
      throw DecodeError(DecodeError::Kind::kInvalidArgument,
                        "cannot allocate " + std::to_string(total_bytes) + " bytes for " + std::to_string(res.T) +
                            " frames of " + std::to_string(out_h) + "x" + std::to_string(out_w) + " (height x width)");
    }
  }
  if (gpu_) gpu_->begin_batch(res.T, out_w, out_h, filter, info_.rotation_deg, cuda_stream);
  res.pts.assign(res.T, 0);
  res.pts_s.assign(res.T, 0);
  res.corrupt.assign(res.T, 0);
  res.keyframe.assign(res.T, 0);
  stats_ = DecodeStats{};
  read_error_.clear();
  sync_unclean_keyframes();
  backed_off_from_.clear();
  if (res.T == 0) {
    if (gpu_) res.device_frames = gpu_->end_batch();
    return res;
  }

  // Sort and dedupe targets (in pts units), remembering where each result goes.
  std::vector<std::pair<int64_t, int64_t>> order;  // (target pts, output slot)
  order.reserve(res.T);
  for (int64_t i = 0; i < res.T; ++i) order.emplace_back(target_pts(times_s[i], mode), i);
  std::sort(order.begin(), order.end());

  // Non-reference skipping for this call. Frames near a target are always decoded, so the
  // candidates on both sides of every target are real decoded neighbours. A packet sent in an
  // earlier call with skipping allowed (still in the decoder's frame-threading pipeline, or
  // dropped) may be a target now: then decoding must restart from a keyframe.
  skip_window_ = 2 * frame_dur_ + std::max<int64_t>(1, frame_dur_ / 1000);
  needed_pts_.clear();
  for (const auto& o : order) needed_pts_.push_back(o.first);
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

  Held& prev = *prev_;  // newest frame with pts <= the current target
  Held& cur = *cur_;    // newest frame received (first one past the target, if any)
  auto t0 = Clock::now();
  double convert_ms = 0;
  int64_t last_slot = -1;
  int64_t last_chosen_pts = INT64_MIN;
  const int64_t tolerance = std::max<int64_t>(1, frame_dur_ / 1000);
  const int64_t max_backoff = std::llround(600.0 / tb);
  auto copy_slot = [&](int64_t dst, int64_t src) {
    if (yuv_capture_) (*yuv_capture_)[dst] = (*yuv_capture_)[src];
    if (gpu_) {
      gpu_->copy_slot(dst, src);
    } else {
      std::memcpy(res.frames.get() + dst * frame_bytes, res.frames.get() + src * frame_bytes, frame_bytes);
    }
  };

  for (size_t oi = 0; oi < order.size(); ++oi) {
    const int64_t target = order[oi].first;
    const int64_t slot = order[oi].second;
    if (oi > 0 && target == order[oi - 1].first) {
      copy_slot(slot, last_slot);
      res.pts[slot] = res.pts[last_slot];
      res.corrupt[slot] = res.corrupt[last_slot];
      res.keyframe[slot] = res.keyframe[last_slot];
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
    } else if (yuv_capture_) {
      capture_yuv(chosen->f, &(*yuv_capture_)[slot]);
    } else if (gpu_) {
      gpu_->convert_slot(chosen->f, slot);
    } else {
      convert_into(chosen->f, res.frames.get() + slot * frame_bytes, out_w, out_h, filter);
    }
    convert_ms += ms_since(tc);
    res.pts[slot] = chosen->pts;
    res.corrupt[slot] = chosen->corrupt ? 1 : 0;
    res.keyframe[slot] = chosen->key ? 1 : 0;
    last_slot = slot;
    last_chosen_pts = chosen->pts;
  }
  for (int64_t i = 0; i < res.T; ++i) res.pts_s[i] = (res.pts[i] - info_.start_pts) * tb;
  stats_.convert_ms = convert_ms;
  stats_.decode_ms = ms_since(t0) - convert_ms;
  total_.decoded_frames += stats_.decoded_frames;
  total_.packets_sent += stats_.packets_sent;
  total_.seeks += stats_.seeks;
  total_.decode_errors += stats_.decode_errors;
  total_.skip_nonref_packets += stats_.skip_nonref_packets;
  total_.keyframe_backoffs += stats_.keyframe_backoffs;
  total_.decode_ms += stats_.decode_ms;
  total_.convert_ms += stats_.convert_ms;
  res.stats = stats_;
  if (gpu_) res.device_frames = gpu_->end_batch();
  return res;
}

void VideoDecoder::capture_yuv(const AVFrame* f, std::string* out) {
  if (gpu_) {
    gpu_->download_planar(f, out);
    return;
  }
  const AVPixelFormat fmt = static_cast<AVPixelFormat>(f->format);
  const int n = av_image_get_buffer_size(fmt, f->width, f->height, 1);
  if (n < 0) throw DecodeError(DecodeError::Kind::kUnsupportedCodec, "'" + path_ + "': cannot lay out the decoded picture");
  out->resize(static_cast<size_t>(n));
  av_image_copy_to_buffer(reinterpret_cast<uint8_t*>(&(*out)[0]), n, f->data, f->linesize, fmt, f->width, f->height, 1);
}

std::vector<std::string> VideoDecoder::decode_yuv(const std::vector<double>& times_s, SelectMode mode) {
  std::lock_guard<std::mutex> lock(mu_);  // yuv_capture_ is decoder state, like the rest
  std::vector<std::string> planes(times_s.size());
  yuv_capture_ = &planes;
  std::string free_error;
  try {
    DecodeResult r = decode_locked(times_s, mode, 0, 0, ResizeFilter::kCubic, nullptr);
    free_error = free_device_frames(r.device_frames);
  } catch (...) {
    yuv_capture_ = nullptr;
    throw;
  }
  yuv_capture_ = nullptr;
  if (!free_error.empty()) throw std::runtime_error(free_error);
  return planes;
}

DecodeStats VideoDecoder::total_stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

void VideoDecoder::set_skip_nonref(bool enabled) {
  std::lock_guard<std::mutex> lock(mu_);
  skip_nonref_ = enabled;
}

bool VideoDecoder::skip_nonref() const {
  std::lock_guard<std::mutex> lock(mu_);
  return skip_nonref_;
}

void VideoDecoder::scan_frames(std::vector<double>* pts_s, std::vector<uint8_t>* is_key) {
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
