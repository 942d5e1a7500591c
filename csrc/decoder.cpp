#include "decoder.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <system_error>
#include <thread>

#include "ffmpeg_log.h"
#include "gop_runs.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavutil/avutil.h>
}

namespace eva_fast {

std::string ffmpeg_version_string() { return av_version_info(); }
int libavcodec_version() { return static_cast<int>(avcodec_version()); }

FrameOutput::~FrameOutput() {
  if (device.data) free_device_frames(device);  // a failure is counted (device_free_errors)
}

DeviceFrames FrameOutput::take_device() {
  DeviceFrames d = device;
  device = DeviceFrames{};
  data = nullptr;
  return d;
}

namespace {
std::atomic<int> g_fail_runs{0};

// Consumes one injected failure (fail_next_gop_runs), if any.
bool injected_failure() {
  int n = g_fail_runs.load();
  while (n > 0) {
    if (g_fail_runs.compare_exchange_weak(n, n - 1)) return true;
  }
  return false;
}

// Every requested time is a finite number of seconds (decode and decode_yuv).
void check_finite_times(const std::vector<double>& times_s) {
  for (size_t i = 0; i < times_s.size(); ++i) {
    if (!std::isfinite(times_s[i])) {
      throw DecodeError(DecodeError::Kind::kInvalidArgument,
                        "timestamps must be finite seconds, got " + std::to_string(times_s[i]) + " at position " +
                            std::to_string(i));
    }
  }
}
}  // namespace

void fail_next_gop_runs(int n) { g_fail_runs.store(std::max(0, n)); }

VideoDecoder::VideoDecoder(const std::string& path, int stream_index, int threads, int cuda_device)
    : main_(std::make_unique<StreamDecoder>(path, stream_index, threads, cuda_device)) {
  if (std::string(main_->device().name()) == "nvdec") cuda_device_ = cuda_device;
}

VideoDecoder::~VideoDecoder() = default;

DecodeResult VideoDecoder::decode(const std::vector<double>& times_s, SelectMode mode, int out_h, int out_w,
                                  ResizeFilter filter, void* cuda_stream) {
  std::lock_guard<std::mutex> lock(mu_);
  clear_recent_ffmpeg_errors();
  const VideoInfo& in = main_->info();
  if (out_w == 0 && out_h == 0) {
    out_w = in.width;
    out_h = in.height;
  }
  if (out_w <= 0 || out_h <= 0 || out_w > kMaxSide || out_h > kMaxSide) {
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      "output size (height, width) must be within 1.." + std::to_string(kMaxSide) +
                          " per side, got (" + std::to_string(out_h) + ", " + std::to_string(out_w) + ")");
  }
  const int64_t T = static_cast<int64_t>(times_s.size());
  check_finite_times(times_s);
  // Output bytes, checked before allocating (the Python layer enforces the documented limit; this
  // keeps a direct caller from overflowing size_t or dying in operator new).
  const size_t frame_bytes = static_cast<size_t>(out_w) * out_h * 3;
  size_t total_bytes = 0;
  if (__builtin_mul_overflow(frame_bytes, static_cast<size_t>(std::max<int64_t>(T, 1)), &total_bytes) ||
      total_bytes > (size_t{1} << 46)) {
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      std::to_string(T) + " frames of " + std::to_string(out_h) + "x" + std::to_string(out_w) +
                          " (height x width) are too large to allocate");
  }
  FrameOutput out;
  out.T = T;
  out.height = out_h;
  out.width = out_w;
  out.filter = filter;
  out.rotation_deg = in.rotation_deg;
  out.frame_bytes = frame_bytes;
  main_->device().allocate_output(&out, cuda_stream);

  // Targets in pts, sorted (equal times adjacent), remembering where each result goes.
  std::vector<Target> targets(T);
  for (int64_t i = 0; i < T; ++i) targets[i] = Target{main_->target_pts(times_s[i], mode), i};
  std::sort(targets.begin(), targets.end());

  DecodeResult res;
  res.T = T;
  res.H = out_h;
  res.W = out_w;
  SlotInfo slots;
  slots.resize(T);

  // GOP runs: every request holds a lease on its device's budget (a request on one decoder counts
  // as one), so concurrent requests share the device's decoders fairly.
  std::vector<std::vector<Target>> runs;
  int want = 1;
  GopWork work;
  if (max_workers_ > 1 && T >= 2) {
    work = gop_work(targets, main_->clean_keyframes(), main_->nominal_frame_duration());
    if (work.size() >= 2 && work.total >= static_cast<double>(kMinParallelFrames)) {
      want = std::min<int>(max_workers_, static_cast<int>(work.size()));
    }
  }
  WorkerLease lease(worker_budget(cuda_device_), want);
  if (lease.granted() >= 2) runs = split_gop_runs(targets, work, lease.granted());
  if (runs.empty()) {
    main_->decode_run(targets, mode, out, slots, &res.stats);
  } else {
    decode_parallel(runs, mode, out, slots, &res.stats);
    res.stats.gop_workers = static_cast<int64_t>(runs.size());
  }

  const double tb = static_cast<double>(in.tb_num) / in.tb_den;
  res.pts = std::move(slots.pts);
  res.corrupt = std::move(slots.corrupt);
  res.keyframe = std::move(slots.keyframe);
  res.pts_s.resize(T);
  for (int64_t i = 0; i < T; ++i) res.pts_s[i] = (res.pts[i] - in.start_pts) * tb;
  res.frames = std::move(out.host);
  res.device_frames = out.take_device();
  return res;
}

std::unique_ptr<StreamDecoder> VideoDecoder::open_worker() const {
  const VideoInfo& in = main_->info();
  // One libavcodec thread each (the runs are the parallelism), or an NVDEC decoder on the same GPU
  // (never a CPU fallback: the output is device memory).
  return std::make_unique<StreamDecoder>(in.path, in.stream_index, 1, cuda_device_, false);
}

void VideoDecoder::decode_parallel(const std::vector<std::vector<Target>>& runs, SelectMode mode, FrameOutput& out,
                                   SlotInfo& slots, DecodeStats* stats) {
  const size_t n = runs.size();
  if (workers_.size() < n) workers_.resize(n);
  std::vector<DecodeStats> run_stats(n);
  std::vector<std::exception_ptr> errors(n);
  const bool skip_nonref = main_->skip_nonref();
  auto job = [&](size_t i) {
    try {
      if (!workers_[i]) workers_[i] = open_worker();  // in the run's thread: opens overlap decoding
      StreamDecoder& w = *workers_[i];
      w.set_skip_nonref(skip_nonref);
      if (injected_failure()) {
        const std::vector<Target> half(runs[i].begin(), runs[i].begin() + static_cast<std::ptrdiff_t>(runs[i].size() / 2));
        w.decode_run(half, mode, out, slots, &run_stats[i]);
        throw std::runtime_error("GOP run failure injected by the test hook");
      }
      w.decode_run(runs[i], mode, out, slots, &run_stats[i]);
      if (cuda_device_ >= 0) w.park();  // its NVDEC session serves other decoders until the next request
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(n - 1);
  for (size_t i = 1; i < n; ++i) {
    try {
      threads.emplace_back(job, i);
    } catch (const std::system_error&) {  // no thread to be had: decode that run here, in turn
      job(i);
    }
  }
  job(0);
  for (std::thread& t : threads) t.join();

  // A run whose decoder failed is decoded again by the main decoder, after that decoder's pending
  // writes (it may have written some of the run's slots), so the output and any error are those of a
  // serial decode. The failed decoder is closed; the next request opens a new one.
  for (size_t i = 0; i < n; ++i) {
    if (!errors[i]) {
      *stats += run_stats[i];
      continue;
    }
    if (workers_[i]) {
      try {
        workers_[i]->device().wait_idle();
      } catch (...) {  // a broken stream: its writes are over either way
      }
      workers_[i].reset();
    }
    ++stats->worker_failures;
    ++worker_failures_;
    main_->decode_run(runs[i], mode, out, slots, stats);
  }
}

void VideoDecoder::set_workers(int n) {
  if (n < 1 || n > 64) {
    throw DecodeError(DecodeError::Kind::kInvalidArgument,
                      "workers must be within 1..64, got " + std::to_string(n));
  }
  std::lock_guard<std::mutex> lock(mu_);
  max_workers_ = n;
}

int VideoDecoder::workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_workers_;
}

std::vector<std::string> VideoDecoder::decode_yuv(const std::vector<double>& times_s, SelectMode mode) {
  std::lock_guard<std::mutex> lock(mu_);
  clear_recent_ffmpeg_errors();
  const int64_t T = static_cast<int64_t>(times_s.size());
  check_finite_times(times_s);
  std::vector<std::string> planes(T);
  FrameOutput out;
  out.T = T;
  out.planar = &planes;
  std::vector<Target> targets(T);
  for (int64_t i = 0; i < T; ++i) targets[i] = Target{main_->target_pts(times_s[i], mode), i};
  std::sort(targets.begin(), targets.end());
  SlotInfo slots;
  slots.resize(T);
  DecodeStats stats;
  main_->decode_run(targets, mode, out, slots, &stats);
  return planes;
}

void VideoDecoder::scan_frames(std::vector<double>* pts_s, std::vector<uint8_t>* is_key) {
  main_->scan_frames(pts_s, is_key);
}

DecodeStats VideoDecoder::total_stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  DecodeStats total = main_->total_stats();
  total.gop_workers = 1;
  for (const auto& w : workers_) {
    if (!w) continue;
    total += w->total_stats();
    ++total.gop_workers;
  }
  total.worker_failures = worker_failures_;
  return total;
}

std::vector<double> VideoDecoder::unclean_keyframes_s() {
  std::lock_guard<std::mutex> lock(mu_);
  return main_->unclean_keyframes_s();
}

void VideoDecoder::set_skip_nonref(bool enabled) {
  std::lock_guard<std::mutex> lock(mu_);
  main_->set_skip_nonref(enabled);
}

bool VideoDecoder::skip_nonref() const {
  std::lock_guard<std::mutex> lock(mu_);
  return main_->skip_nonref();
}

}  // namespace eva_fast
