// Owners for FFmpeg objects: std::unique_ptr with the matching FFmpeg free function as deleter (as
// torchcodec's FFMPEGCommon.h does), so every exit path, exceptions included, frees them. The
// make_* helpers check the allocation and throw std::bad_alloc when FFmpeg returns NULL.
#pragma once

#include <memory>
#include <new>

struct AVFormatContext;
struct AVCodecContext;
struct AVPacket;
struct AVFrame;
struct AVBSFContext;
struct SwsContext;

namespace eva_fast {

struct FormatContextCloser {
  void operator()(AVFormatContext* p) const;  // avformat_close_input
};
struct CodecContextFreer {
  void operator()(AVCodecContext* p) const;  // avcodec_free_context
};
struct PacketFreer {
  void operator()(AVPacket* p) const;  // av_packet_free
};
struct FrameFreer {
  void operator()(AVFrame* p) const;  // av_frame_free
};
struct BsfFreer {
  void operator()(AVBSFContext* p) const;  // av_bsf_free
};
struct SwsFreer {
  void operator()(SwsContext* p) const;  // sws_freeContext
};

using FormatContextPtr = std::unique_ptr<AVFormatContext, FormatContextCloser>;
using CodecContextPtr = std::unique_ptr<AVCodecContext, CodecContextFreer>;
using PacketPtr = std::unique_ptr<AVPacket, PacketFreer>;
using FramePtr = std::unique_ptr<AVFrame, FrameFreer>;
using BsfPtr = std::unique_ptr<AVBSFContext, BsfFreer>;
using SwsPtr = std::unique_ptr<SwsContext, SwsFreer>;

// av_packet_alloc / av_frame_alloc, checked (std::bad_alloc on NULL).
PacketPtr make_packet();
FramePtr make_frame();

}  // namespace eva_fast
