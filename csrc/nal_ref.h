// Non-reference pictures in H.264 / HEVC access units, found from NAL unit headers alone (no
// decoding): the NVDEC device leaves such a packet out when no target of the call is near it, as
// libavcodec drops it under AVDISCARD_NONREF on the CPU (VideoDecoder's skip_nonref rule), and the
// Annex B bitstream filter both use. Plain byte parsing: built and tested without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "av_ptr.h"

struct AVCodecParameters;
struct AVRational;

namespace eva_fast {

enum class NalCodec { kH264, kHevc };

// Whether an Annex B access unit (NAL units after 00 00 01 start codes) is a picture no other picture
// references, so leaving it out changes no other decoded frame:
//   H.264: every slice has nal_ref_idc 0 (H.264 7.4.1: such a picture is never used for inter
//          prediction); FFmpeg's AVDISCARD_NONREF rule.
//   HEVC:  every slice is a sub-layer non-reference picture (TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N,
//          H.265 7.4.2.2) of nuh_layer_id 0 in the highest sub-layer (TemporalId ==
//          max_sub_layers - 1: no higher sub-layer may reference it); FFmpeg's rule without the
//          sub-layer condition, which single-sub-layer streams (x265's default) always meet.
// Besides slices only access unit delimiters, SEI and filler data may be present (a packet that
// also carries parameter sets or end-of-sequence units is kept). hevc_max_sub_layers: from the
// stream's SPS (hevc_max_sub_layers()); 0 = unknown (nothing is disposable).
bool nal_disposable(NalCodec codec, const uint8_t* data, size_t size, int hevc_max_sub_layers);

// sps_max_sub_layers_minus1 + 1 of the first HEVC SPS in Annex B data, or 0 when there is none.
int hevc_max_sub_layers(const uint8_t* data, size_t size);

// The bitstream filter that turns MP4/MKV-style (length-prefixed, avcC/hvcC) H.264 / HEVC packets
// into Annex B (h264_mp4toannexb / hevc_mp4toannexb), or null when the stream needs none (other
// codecs, or already Annex B). *seq_header: the parameter sets it outputs (Annex B), if any.
// Throws std::runtime_error when FFmpeg lacks the filter.
BsfPtr make_annexb_filter(const AVCodecParameters* par, AVRational time_base, std::vector<uint8_t>* seq_header);

// Test hook: demux `path` (stream `stream_index`, < 0 = best video stream), apply
// make_annexb_filter, and classify every packet with nal_disposable: (pts, disposable) per packet
// in demux order. Throws std::runtime_error for files it cannot read and codecs other than H.264 /
// HEVC.
std::vector<std::pair<int64_t, bool>> classify_packets(const std::string& path, int stream_index);

}  // namespace eva_fast
