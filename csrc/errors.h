// Decoder errors: one exception type with a kind, which the binding layer maps to the Python
// exception (FileNotFoundError, ValueError, UnsupportedCodecError, CorruptVideoError, ...), and the
// message helpers every decode path uses. Included by the device-independent decoder and by every
// device (CPU, NVDEC), so no device header depends on the decoder's.
#pragma once

#include <stdexcept>
#include <string>

namespace eva_fast {

struct DecodeError : std::runtime_error {
  enum class Kind { kNotFound, kInvalidFile, kNoVideoStream, kUnsupportedCodec, kCorrupt, kInvalidArgument };
  Kind kind;
  DecodeError(Kind k, const std::string& msg) : std::runtime_error(msg), kind(k) {}
};

// FFmpeg's text for an AVERROR code.
std::string av_err(int code);

// msg, followed by the FFmpeg error messages logged since clear_recent_ffmpeg_errors() (if any).
std::string with_ffmpeg_detail(const std::string& msg);

}  // namespace eva_fast
