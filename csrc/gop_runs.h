// GOP-parallel decoding, device-independent: the split of one request into contiguous runs of GOPs
// of about equal decode work (each decoded by its own decoder: a single-threaded libavcodec decoder
// on the CPU, a pooled NVDEC session on its own CUDA stream on a GPU), and the per-device budget of
// extra decoders that concurrent requests share.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "stream_decoder.h"

namespace eva_fast {

// Requests with less estimated decode work than this (frames) stay on one decoder.
constexpr int64_t kMinParallelFrames = 24;

// The GOPs a request touches, in pts order: each GOP's targets (a contiguous range of the sorted
// targets) and its decode work, frames from its keyframe to its last target.
struct GopWork {
  std::vector<size_t> first;  // index of the GOP's first target in the sorted targets
  std::vector<size_t> end;    // one past its last target
  std::vector<double> frames; // decode work, frames (>= 1)
  double total = 0;
  size_t size() const { return first.size(); }
};

// Group sorted targets (Target::operator<) by the GOP that holds them: the last of `keyframes`
// (sorted pts, clean starts only: a GOP that starts at an unclean keyframe is decoded with the one
// before it) at or before the target; targets before the first keyframe belong to the first GOP.
// frame_dur: nominal frame duration (time base units, >= 1).
GopWork gop_work(const std::vector<Target>& sorted, const std::vector<int64_t>& keyframes, int64_t frame_dur);

// Split into at most `max_runs` contiguous runs of GOPs of about equal work: a run ends after the GOP
// where the cumulative work first reaches each 1/n share (n = min(max_runs, GOPs)). Returns the
// runs' targets (each sorted), or an empty vector when the request should stay on one decoder
// (max_runs < 2, fewer than two GOPs or targets, or less work than min_frames).
std::vector<std::vector<Target>> split_gop_runs(const std::vector<Target>& sorted, const GopWork& work, int max_runs,
                                                int64_t min_frames = kMinParallelFrames);

// Extra decoders (GOP runs) in use on one device (the CPU, or one GPU), shared fairly by the
// requests of every reader of the process. A request asks for `want` runs; alone it gets them all;
// with other requests in flight it gets at most budget / (requests in flight, itself included) and
// at most what the others leave of the budget, and at least 1 (1 = decode on its own decoder).
// So one request on an idle GPU uses every NVDEC engine, and k requests at once settle on about
// budget / k each instead of each taking all of them.
class WorkerBudget {
 public:
  explicit WorkerBudget(int budget) : budget_(budget < 1 ? 1 : budget) {}
  int acquire(int want);   // the runs granted (>= 1); pair with release(granted)
  void release(int granted);
  int budget() const { return budget_; }
  int in_use() const;
  int requests() const;

 private:
  mutable std::mutex mu_;
  int budget_;
  int in_use_ = 0;    // runs held by requests in flight (1 for a request on its own decoder)
  int requests_ = 0;  // requests in flight
};

// The process-wide budget of a device: cuda_device < 0 for the CPU (budget: hardware threads),
// else that GPU (budget: default_gpu_workers(cuda_device)).
WorkerBudget& worker_budget(int cuda_device);

// Holds a grant of a WorkerBudget for one request (released on destruction).
class WorkerLease {
 public:
  WorkerLease(WorkerBudget& b, int want) : b_(b), granted_(b.acquire(want)) {}
  ~WorkerLease() { b_.release(granted_); }
  WorkerLease(const WorkerLease&) = delete;
  WorkerLease& operator=(const WorkerLease&) = delete;
  int granted() const { return granted_; }

 private:
  WorkerBudget& b_;
  int granted_;
};

}  // namespace eva_fast
