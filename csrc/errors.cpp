#include "errors.h"

#include "ffmpeg_log.h"

extern "C" {
#include <libavutil/error.h>
}

namespace eva_fast {

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

}  // namespace eva_fast
