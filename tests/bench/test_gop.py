"""minimal_gop_work on hand-built frame tables."""

import numpy as np
import pytest

from eva_fast.video._gop import gop_starts, minimal_gop_work

# 12 frames, keyframes at 0, 4, 8.
PTS = np.arange(12) / 10.0
KEY = np.zeros(12, dtype=bool)
KEY[[0, 4, 8]] = True


def test_gop_starts():
    assert gop_starts(KEY).tolist() == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8]


@pytest.mark.parametrize(
    "targets, work",
    [
        ([], 0),
        ([0], 1),  # the keyframe itself
        ([3], 4),  # 0..3
        ([1, 3], 4),  # shared GOP: one pass to the furthest target
        ([3, 1, 3], 4),  # order and duplicates do not matter
        ([4, 8], 2),  # two keyframes
        ([2, 6, 11], 3 + 3 + 4),
        (list(range(12)), 12),  # every frame
    ],
)
def test_minimal_gop_work(targets, work):
    assert minimal_gop_work(PTS, KEY, targets) == work


def test_leading_frames_without_keyframe_count_from_zero():
    key = np.array([False, False, True, False])
    assert minimal_gop_work(np.arange(4), key, [1]) == 2
    assert minimal_gop_work(np.arange(4), key, [3]) == 2


def test_bad_input():
    with pytest.raises(ValueError, match="in length"):
        minimal_gop_work(PTS, KEY[:5], [0])
    with pytest.raises(ValueError, match="target frame indices"):
        minimal_gop_work(PTS, KEY, [12])
