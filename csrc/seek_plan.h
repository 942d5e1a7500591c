// Keyframe-aware seek planning, shared by every decode path (CPU libavcodec now, NVDEC later).
//
// Targets are visited in increasing pts. Before each target the caller asks whether to keep
// decoding forward from its current position or to seek: it seeks only when the keyframe that
// precedes the target lies after the current position (a later GOP), so frames between the
// current position and that keyframe are never decoded. Without a keyframe index the planner
// falls back to a distance threshold learnt from the GOP lengths observed while decoding.
#pragma once

#include <cstdint>
#include <vector>

namespace eva_fast {

class SeekPlanner {
 public:
  // keyframe_pts: presentation timestamps of keyframes (stream time base), any order; may be
  // empty when the container has no index. default_gop: forward-decode threshold (time base
  // units) used while no keyframe positions are known.
  SeekPlanner(std::vector<int64_t> keyframe_pts, int64_t default_gop);

  bool has_index() const { return !keyframes_.empty(); }
  const std::vector<int64_t>& keyframes() const { return keyframes_; }

  // Last keyframe with pts <= target that is not marked unclean, or INT64_MIN if none is known.
  int64_t keyframe_at_or_before(int64_t target) const;

  // First keyframe of the index with pts > p (unclean ones included), or INT64_MAX.
  int64_t keyframe_after(int64_t p) const;

  // A keyframe from which decoding does not start cleanly (the decoder conceals frames of its GOP
  // that a decode from an earlier keyframe reconstructs): never seek to it again; decode through
  // it from an earlier keyframe instead.
  void mark_unclean(int64_t key_pts);
  const std::vector<int64_t>& unclean() const { return unclean_; }

  // Should the decoder seek before decoding towards `target`, given that the last frame it
  // produced has pts `position` (has_position=false right after open or a flush)?
  bool should_seek(bool has_position, int64_t position, int64_t target) const;

  // Record a keyframe seen while decoding (improves the no-index fallback).
  void observe_keyframe(int64_t pts);

  // Keep decoding forward instead of seeking when the target's keyframe is at most this far
  // (time base units) past the current position. A seek flushes the decoder, discarding the
  // frames already in its frame-threading pipeline (about one per thread), so jumping a gap of a
  // few frames costs more than decoding through it. Default 0 (seek for any later GOP).
  void set_min_forward_gap(int64_t gap) { min_forward_gap_ = gap < 0 ? 0 : gap; }

 private:
  std::vector<int64_t> keyframes_;
  std::vector<int64_t> unclean_;  // sorted subset of keyframes_
  bool indexed_;
  int64_t default_gop_;
  int64_t last_seen_key_ = INT64_MIN;
  int64_t max_gop_seen_ = 0;
  int64_t min_forward_gap_ = 0;
};

}  // namespace eva_fast
