#include "cpu_device.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "errors.h"
#include "yuv444.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

namespace eva_fast {
namespace {

// Slack after buffers that swscale writes into (its SIMD paths may store past a row's end).
constexpr size_t kRowPadBytes = 256;

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

CpuDevice::CpuDevice(AVFormatContext* fmt, int stream_index, int threads, const std::string& path) : path_(path) {
  AVStream* st = fmt->streams[stream_index];
  const AVCodec* codec = avcodec_find_decoder(st->codecpar->codec_id);
  const char* name = avcodec_get_name(st->codecpar->codec_id);
  if (!codec) {
    throw DecodeError(DecodeError::Kind::kUnsupportedCodec,
                      "'" + path_ + "': codec '" + std::string(name) +
                          "' is not supported by this FFmpeg build (" + av_version_info() + ")");
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
    const int x264_build = find_x264_build(fmt, stream_index);
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

int CpuDevice::frame_threads() const {
  return (ctx_->active_thread_type & FF_THREAD_FRAME) ? std::max(1, ctx_->thread_count) : 1;
}

int CpuDevice::send_packet(const AVPacket* pkt, bool skippable, bool* maybe_dropped) {
  if (pkt) {
    // AVDISCARD_NONREF: the decoder drops disposable frames (H.264 nal_ref_idc 0, HEVC sub-layer
    // non-reference, VP9 frames that refresh no reference) instead of reconstructing them.
    const AVDiscard want = skippable ? AVDISCARD_NONREF : AVDISCARD_DEFAULT;
    if (ctx_->skip_frame != want) ctx_->skip_frame = want;
  }
  if (maybe_dropped) *maybe_dropped = pkt && skippable;
  return avcodec_send_packet(ctx_.get(), pkt);
}

int CpuDevice::receive_frame(AVFrame* out) { return avcodec_receive_frame(ctx_.get(), out); }

void CpuDevice::flush() { avcodec_flush_buffers(ctx_.get()); }

void CpuDevice::allocate_output(FrameOutput* out, void*) {
  const size_t total = out->frame_bytes * static_cast<size_t>(std::max<int64_t>(out->T, 1));
  out->host.reset(new (std::nothrow) uint8_t[total + kRowPadBytes]);
  if (!out->host) {
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      "cannot allocate " + std::to_string(total) + " bytes for " + std::to_string(out->T) +
                          " frames of " + std::to_string(out->height) + "x" + std::to_string(out->width) +
                          " (height x width)");
  }
  out->data = out->host.get();
}

void CpuDevice::convert_slot(const AVFrame* f, FrameOutput& out, int64_t slot) {
  convert_into(f, out.data + slot * out.frame_bytes, out.height, out.width, out.filter, out.rotation_deg);
}

void CpuDevice::copy_slot(FrameOutput& out, int64_t dst, int64_t src) {
  std::memcpy(out.data + dst * out.frame_bytes, out.data + src * out.frame_bytes, out.frame_bytes);
}

void CpuDevice::download_planar(const AVFrame* f, std::string* out) {
  const AVPixelFormat fmt = static_cast<AVPixelFormat>(f->format);
  const int n = av_image_get_buffer_size(fmt, f->width, f->height, 1);
  if (n < 0) throw DecodeError(DecodeError::Kind::kUnsupportedCodec, "'" + path_ + "': cannot lay out the decoded picture");
  out->resize(static_cast<size_t>(n));
  av_image_copy_to_buffer(reinterpret_cast<uint8_t*>(&(*out)[0]), n, f->data, f->linesize, fmt, f->width, f->height, 1);
}

void CpuDevice::convert_into(const AVFrame* f, uint8_t* dst, int out_h, int out_w, ResizeFilter filter, int rot) {
  const int fw = f->width, fh = f->height;
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

  // swscale's x86 paths assume padded, aligned rows (FFmpeg's own frames have 64-byte-aligned
  // linesizes): convert straight into the output slot only when the row size is such a multiple
  // (then every row, the last one included, is written to its exact end: nothing spills into the
  // next slot, which another GOP worker may be writing). The 4:4:4 converter writes exactly
  // 3 * width bytes per row.
  uint8_t* rgb = dst;
  int rgb_stride = fw * 3;
  const bool direct = !need_resize && rot == 0 && (fast444 || (fw * 3) % 64 == 0);
  if (!direct) {
    rgb_stride = (fw * 3 + 63) & ~63;
    rgb_tmp_.resize(static_cast<size_t>(rgb_stride) * fh + kRowPadBytes);
    rgb = rgb_tmp_.data();
  }
  if (fast444) {
    fast444->convert(f->data, f->linesize, fh, fw, rgb, rgb_stride);
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

}  // namespace eva_fast
