// FFmpeg log capture: FFmpeg's messages are kept (last few errors) so exceptions can say why a
// file failed, and forwarded to stderr only at or above the level set with set_log_level.
#pragma once

#include <string>

namespace eva_fast {

void install_ffmpeg_log_callback();
// AV_LOG_* level at and below which FFmpeg messages are printed to stderr (default AV_LOG_QUIET).
void set_ffmpeg_print_level(int level);
int ffmpeg_print_level();
// Clear / fetch the recent error-level messages (joined with "; ").
void clear_recent_ffmpeg_errors();
std::string recent_ffmpeg_errors();

}  // namespace eva_fast
