#include "nal_ref.h"

#include <cstring>
#include <stdexcept>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavcodec/bsf.h>
#include <libavformat/avformat.h>
}

namespace eva_fast {
namespace {

// Calls f(nal, size) for every NAL unit of Annex B data (start codes 00 00 01 or 00 00 00 01).
// Start codes are found with memchr for their 01 byte (vectorised by libc): NVDEC runs this on
// every packet of a request, thousands per second per session.
template <typename F>
void for_each_nal(const uint8_t* d, size_t n, F&& f) {
  size_t i = 0;
  auto next_start = [&](size_t from) -> size_t {
    size_t k = from + 2;
    while (k < n) {
      const void* one = std::memchr(d + k, 1, n - k);
      if (!one) return n;
      k = static_cast<size_t>(static_cast<const uint8_t*>(one) - d);
      if (d[k - 1] == 0 && d[k - 2] == 0) return k - 2;
      ++k;
    }
    return n;
  };
  i = next_start(0);
  while (i < n) {
    const size_t begin = i + 3;
    size_t end = next_start(begin);
    const size_t next = end;
    while (end > begin && d[end - 1] == 0) --end;  // trailing zero bytes (4-byte start codes)
    if (end > begin) f(d + begin, end - begin);
    i = next;
  }
}

}  // namespace

bool nal_disposable(NalCodec codec, const uint8_t* data, size_t size, int hevc_max_sub_layers) {
  bool any_slice = false, keep = false;
  for_each_nal(data, size, [&](const uint8_t* nal, size_t len) {
    if (keep) return;
    if (codec == NalCodec::kH264) {
      const int ref_idc = (nal[0] >> 5) & 3, type = nal[0] & 31;
      if (type >= 1 && type <= 5) {  // slices (5: IDR, always a reference)
        any_slice = true;
        if (ref_idc != 0 || type == 5) keep = true;
      } else if (type != 6 && type != 9 && type != 12) {  // SEI, AUD, filler: anything else is kept
        keep = true;
      }
      return;
    }
    if (len < 2) {
      keep = true;
      return;
    }
    const int type = (nal[0] >> 1) & 63;
    const int layer = ((nal[0] & 1) << 5) | (nal[1] >> 3);
    const int tid = (nal[1] & 7) - 1;
    if (type <= 31) {  // VCL
      any_slice = true;
      const bool sub_layer_nonref = type <= 14 && type % 2 == 0;
      if (!sub_layer_nonref || layer != 0 || hevc_max_sub_layers < 1 || tid != hevc_max_sub_layers - 1) keep = true;
    } else if (type != 35 && type != 38 && type != 39 && type != 40) {  // AUD, FD, prefix/suffix SEI
      keep = true;
    }
  });
  return any_slice && !keep;
}

int hevc_max_sub_layers(const uint8_t* data, size_t size) {
  int out = 0;
  for_each_nal(data, size, [&](const uint8_t* nal, size_t len) {
    if (out == 0 && len >= 3 && ((nal[0] >> 1) & 63) == 33) out = ((nal[2] >> 1) & 7) + 1;
  });
  return out;
}

BsfPtr make_annexb_filter(const AVCodecParameters* par, AVRational time_base, std::vector<uint8_t>* seq_header) {
  const char* name = nullptr;
  const bool avcc = par->extradata_size > 0 && par->extradata && par->extradata[0] == 1;
  if (par->codec_id == AV_CODEC_ID_H264 && avcc) name = "h264_mp4toannexb";
  if (par->codec_id == AV_CODEC_ID_HEVC && avcc) name = "hevc_mp4toannexb";
  if (!name) return nullptr;
  const AVBitStreamFilter* f = av_bsf_get_by_name(name);
  if (!f) throw std::runtime_error(std::string("FFmpeg lacks the ") + name + " bitstream filter");
  AVBSFContext* raw = nullptr;
  const int ret = av_bsf_alloc(f, &raw);
  BsfPtr bsf(raw);  // owned from here: freed if anything below throws
  if (ret < 0 || !bsf || avcodec_parameters_copy(bsf->par_in, par) < 0) throw std::bad_alloc();
  bsf->time_base_in = time_base;
  if (av_bsf_init(bsf.get()) < 0) throw std::runtime_error(std::string("cannot initialise ") + name);
  if (seq_header && bsf->par_out->extradata_size > 0) {
    seq_header->assign(bsf->par_out->extradata, bsf->par_out->extradata + bsf->par_out->extradata_size);
  }
  return bsf;
}

std::vector<std::pair<int64_t, bool>> classify_packets(const std::string& path, int stream_index) {
  AVFormatContext* raw = nullptr;
  if (avformat_open_input(&raw, path.c_str(), nullptr, nullptr) < 0) throw std::runtime_error("cannot open '" + path + "'");
  FormatContextPtr fmt(raw);
  if (avformat_find_stream_info(fmt.get(), nullptr) < 0) throw std::runtime_error("no stream info in '" + path + "'");
  if (stream_index < 0) stream_index = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (stream_index < 0 || stream_index >= static_cast<int>(fmt->nb_streams)) {
    throw std::runtime_error("'" + path + "': no such video stream");
  }
  const AVStream* st = fmt->streams[stream_index];
  const AVCodecID id = st->codecpar->codec_id;
  if (id != AV_CODEC_ID_H264 && id != AV_CODEC_ID_HEVC) throw std::runtime_error("'" + path + "': not H.264 or HEVC");
  const NalCodec codec = id == AV_CODEC_ID_H264 ? NalCodec::kH264 : NalCodec::kHevc;
  std::vector<uint8_t> header;
  BsfPtr bsf = make_annexb_filter(st->codecpar, st->time_base, &header);
  int sub_layers = hevc_max_sub_layers(header.data(), header.size());
  PacketPtr pkt = make_packet(), out = make_packet();
  std::vector<std::pair<int64_t, bool>> result;
  auto classify = [&](AVPacket* p) {
    if (codec == NalCodec::kHevc) {
      const int s = hevc_max_sub_layers(p->data, p->size);
      if (s > 0) sub_layers = s;
    }
    result.emplace_back(p->pts, nal_disposable(codec, p->data, p->size, sub_layers));
  };
  while (av_read_frame(fmt.get(), pkt.get()) >= 0) {
    if (pkt->stream_index != stream_index) {
      av_packet_unref(pkt.get());
      continue;
    }
    if (!bsf) {
      classify(pkt.get());
      av_packet_unref(pkt.get());
      continue;
    }
    if (av_bsf_send_packet(bsf.get(), pkt.get()) < 0) av_packet_unref(pkt.get());
    while (av_bsf_receive_packet(bsf.get(), out.get()) == 0) {
      classify(out.get());
      av_packet_unref(out.get());
    }
  }
  return result;
}

}  // namespace eva_fast
