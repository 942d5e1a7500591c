#include "gop_runs.h"

#include <algorithm>
#include <map>
#include <memory>
#include <thread>

#include "nvdec.h"

namespace eva_fast {

GopWork gop_work(const std::vector<Target>& sorted, const std::vector<int64_t>& keyframes, int64_t frame_dur) {
  GopWork w;
  if (keyframes.empty() || sorted.empty()) return w;
  const double fd = static_cast<double>(std::max<int64_t>(frame_dur, 1));
  size_t i = 0;
  while (i < sorted.size()) {
    // The GOP of sorted[i]: the last keyframe at or before it (the first one for earlier targets).
    auto it = std::upper_bound(keyframes.begin(), keyframes.end(), sorted[i].pts);
    const size_t g = it == keyframes.begin() ? 0 : static_cast<size_t>(it - keyframes.begin()) - 1;
    const int64_t next_key = g + 1 < keyframes.size() ? keyframes[g + 1] : INT64_MAX;
    size_t j = i;
    while (j < sorted.size() && sorted[j].pts < next_key) ++j;
    const double frames = std::max(1.0, static_cast<double>(sorted[j - 1].pts - keyframes[g]) / fd + 1.0);
    w.first.push_back(i);
    w.end.push_back(j);
    w.frames.push_back(frames);
    w.total += frames;
    i = j;
  }
  return w;
}

std::vector<std::vector<Target>> split_gop_runs(const std::vector<Target>& sorted, const GopWork& work, int max_runs,
                                                int64_t min_frames) {
  std::vector<std::vector<Target>> runs;
  const size_t gops = work.size();
  if (max_runs < 2 || gops < 2 || sorted.size() < 2 || work.total < static_cast<double>(min_frames)) return runs;
  const size_t n = std::min(static_cast<size_t>(max_runs), gops);
  // Cut after the GOP where the cumulative work first reaches each k/n share (k = 1 .. n-1); a cut
  // never leaves a run empty (cuts are kept within 1 .. gops-1 and deduplicated).
  std::vector<size_t> cuts;
  double cum = 0;
  size_t g = 0;
  for (size_t k = 1; k < n; ++k) {
    const double share = work.total * static_cast<double>(k) / static_cast<double>(n);
    while (g < gops && cum + work.frames[g] < share) cum += work.frames[g++];
    // GOP g is where the cumulative work first reaches the share: cut after it.
    size_t cut = std::min(std::max<size_t>(g + 1, 1), gops - 1);
    if (cuts.empty() || cut > cuts.back()) cuts.push_back(cut);
  }
  size_t begin = 0;
  cuts.push_back(gops);
  for (size_t cut : cuts) {
    if (cut <= begin) continue;
    runs.emplace_back(sorted.begin() + static_cast<std::ptrdiff_t>(work.first[begin]),
                      sorted.begin() + static_cast<std::ptrdiff_t>(work.end[cut - 1]));
    begin = cut;
  }
  if (runs.size() < 2) runs.clear();
  return runs;
}

int WorkerBudget::acquire(int want) {
  std::lock_guard<std::mutex> g(mu_);
  want = std::max(1, want);
  ++requests_;
  int grant = want;
  if (requests_ > 1) {  // share with the requests in flight
    grant = std::min({want, std::max(1, budget_ / requests_), std::max(1, budget_ - in_use_)});
  }
  in_use_ += grant;
  return grant;
}

void WorkerBudget::release(int granted) {
  std::lock_guard<std::mutex> g(mu_);
  --requests_;
  in_use_ -= granted;
}

int WorkerBudget::in_use() const {
  std::lock_guard<std::mutex> g(mu_);
  return in_use_;
}

int WorkerBudget::requests() const {
  std::lock_guard<std::mutex> g(mu_);
  return requests_;
}

WorkerBudget& worker_budget(int cuda_device) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<WorkerBudget>> budgets;
  const int key = cuda_device < 0 ? -1 : cuda_device;
  std::lock_guard<std::mutex> g(mu);
  auto& b = budgets[key];
  if (!b) {
    const int n = key < 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))
                          : nvdec_default_workers(key);
    b = std::make_unique<WorkerBudget>(n);
  }
  return *b;
}

}  // namespace eva_fast
