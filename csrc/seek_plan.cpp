#include "seek_plan.h"

#include <algorithm>
#include <climits>

namespace eva_fast {

SeekPlanner::SeekPlanner(std::vector<int64_t> keyframe_pts, int64_t default_gop)
    : keyframes_(std::move(keyframe_pts)), default_gop_(std::max<int64_t>(default_gop, 1)) {
  std::sort(keyframes_.begin(), keyframes_.end());
  keyframes_.erase(std::unique(keyframes_.begin(), keyframes_.end()), keyframes_.end());
  indexed_ = !keyframes_.empty();
}

int64_t SeekPlanner::keyframe_at_or_before(int64_t target) const {
  auto it = std::upper_bound(keyframes_.begin(), keyframes_.end(), target);
  while (it != keyframes_.begin()) {
    --it;
    if (!std::binary_search(unclean_.begin(), unclean_.end(), *it)) return *it;
  }
  return INT64_MIN;
}

int64_t SeekPlanner::keyframe_after(int64_t p) const {
  auto it = std::upper_bound(keyframes_.begin(), keyframes_.end(), p);
  return it == keyframes_.end() ? INT64_MAX : *it;
}

void SeekPlanner::mark_unclean(int64_t key_pts) {
  if (!std::binary_search(keyframes_.begin(), keyframes_.end(), key_pts)) return;
  auto it = std::lower_bound(unclean_.begin(), unclean_.end(), key_pts);
  if (it == unclean_.end() || *it != key_pts) unclean_.insert(it, key_pts);
}

bool SeekPlanner::should_seek(bool has_position, int64_t position, int64_t target) const {
  if (!has_position) return true;
  if (target < position) return true;  // behind us: only a seek goes back
  if (indexed_) {
    const int64_t key = keyframe_at_or_before(target);
    // The target's GOP starts after our position: jump there instead of decoding the gap.
    return key != INT64_MIN && key > position + min_forward_gap_;
  }
  const int64_t threshold = std::max(default_gop_, max_gop_seen_);
  return target - position > threshold;
}

void SeekPlanner::observe_keyframe(int64_t pts) {
  if (indexed_) return;
  if (last_seen_key_ != INT64_MIN && pts > last_seen_key_) {
    max_gop_seen_ = std::max(max_gop_seen_, pts - last_seen_key_);
  }
  last_seen_key_ = pts;
}

}  // namespace eva_fast
