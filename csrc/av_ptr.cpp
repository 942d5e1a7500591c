#include "av_ptr.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavcodec/bsf.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
#include <libswscale/swscale.h>
}

namespace eva_fast {

void FormatContextCloser::operator()(AVFormatContext* p) const { avformat_close_input(&p); }
void CodecContextFreer::operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
void PacketFreer::operator()(AVPacket* p) const { av_packet_free(&p); }
void FrameFreer::operator()(AVFrame* p) const { av_frame_free(&p); }
void BsfFreer::operator()(AVBSFContext* p) const { av_bsf_free(&p); }
void SwsFreer::operator()(SwsContext* p) const { sws_freeContext(p); }

PacketPtr make_packet() {
  PacketPtr p(av_packet_alloc());
  if (!p) throw std::bad_alloc();
  return p;
}

FramePtr make_frame() {
  FramePtr f(av_frame_alloc());
  if (!f) throw std::bad_alloc();
  return f;
}

}  // namespace eva_fast
