#include "ffmpeg_log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <mutex>

extern "C" {
#include <libavutil/log.h>
}

namespace eva_fast {
namespace {

std::mutex g_mu;
std::deque<std::string> g_recent;
std::atomic<int> g_print_level{AV_LOG_QUIET};
constexpr size_t kKeep = 8;

void callback(void* avcl, int level, const char* fmt, va_list vl) {
  if (level > AV_LOG_WARNING && level > g_print_level.load()) return;
  char line[1024];
  int print_prefix = 1;
  va_list copy;
  va_copy(copy, vl);
  av_log_format_line2(avcl, level, fmt, copy, line, sizeof(line), &print_prefix);
  va_end(copy);
  std::string msg(line);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
  if (level <= AV_LOG_ERROR && !msg.empty()) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_recent.push_back(msg);
    if (g_recent.size() > kKeep) g_recent.pop_front();
  }
  if (level <= g_print_level.load()) std::fprintf(stderr, "[ffmpeg] %s\n", msg.c_str());
}

}  // namespace

void install_ffmpeg_log_callback() {
  static std::once_flag once;
  std::call_once(once, [] {
    av_log_set_level(AV_LOG_WARNING);  // errors are kept; printing is filtered in the callback
    av_log_set_callback(callback);
  });
}

void set_ffmpeg_print_level(int level) {
  g_print_level.store(level);
  av_log_set_level(level > AV_LOG_WARNING ? level : AV_LOG_WARNING);
}
int ffmpeg_print_level() { return g_print_level.load(); }

void clear_recent_ffmpeg_errors() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_recent.clear();
}

std::string recent_ffmpeg_errors() {
  std::lock_guard<std::mutex> lock(g_mu);
  std::string out;
  for (const auto& m : g_recent) {
    if (!out.empty()) out += "; ";
    out += m;
  }
  return out;
}

}  // namespace eva_fast
