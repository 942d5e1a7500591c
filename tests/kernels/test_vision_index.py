"""kernels/reference/vision_index.py against transformers' own helpers (spec §3)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import vision_utils as hf

from eva_fast.kernels.reference import vision_cu_seqlens, vision_position_ids, vision_window_index


def _hf_all(grid: torch.Tensor):
    wi, cu = hf.get_vision_window_index(grid, spatial_merge_size=2, window_size=112, patch_size=14)
    return hf.get_vision_position_ids(grid, 2), hf.get_vision_cu_seqlens(grid), wi, cu


def _check(grid: torch.Tensor) -> None:
    pos_hf, cu_hf, wi_hf, cuw_hf = _hf_all(grid)
    pos = vision_position_ids(grid)
    cu = vision_cu_seqlens(grid)
    wi, cuw = vision_window_index(grid)
    assert pos.dtype == torch.int64 and pos.shape == (int(grid.prod(-1).sum()), 2)
    assert torch.equal(pos, pos_hf)
    assert cu.dtype == torch.int32 and torch.equal(cu, cu_hf)
    assert wi.dtype == torch.int64 and torch.equal(wi, wi_hf)
    assert cuw.dtype == torch.int32 and torch.equal(cuw, cuw_hf)
    assert bool((cuw[1:] > cuw[:-1]).all()), "empty window emitted"
    assert torch.equal(torch.sort(wi).values, torch.arange(wi.numel()))


GRIDS = {
    "1x1-merged-token": [[1, 2, 2]],
    "476x644": [[1, 34, 46]],
    "window-multiple": [[1, 16, 24]],  # 8x12 merged: exact multiples of the 4-token window
    "not-window-multiple": [[1, 10, 14], [1, 6, 2]],
    "mixed-sizes": [[1, 26, 46], [1, 4, 6], [1, 52, 92], [1, 2, 2]],
    "t2-video-like": [[2, 10, 18], [1, 8, 8]],
}


@pytest.mark.parametrize("name", list(GRIDS))
def test_named_grids(name):
    _check(torch.tensor(GRIDS[name], dtype=torch.int64))


@pytest.mark.parametrize("t", [1, 2, 3, 8, 17, 32, 64])
def test_many_frames(t):
    # EVA: T still frames of one size (grid rows (1, h, w) repeated) and one t>1 grid
    _check(torch.tensor([[1, 26, 46]] * t, dtype=torch.int64))
    _check(torch.tensor([[t, 10, 14]], dtype=torch.int64))


def test_476x644_example_from_spec():
    wi, cuw = vision_window_index(torch.tensor([[1, 34, 46]]))
    assert cuw.numel() - 1 == 30
    assert wi[:9].tolist() == [0, 1, 2, 3, 23, 24, 25, 26, 46]
    assert cuw[1].item() == 64 and (cuw[6] - cuw[5]).item() == 48


_even = st.integers(1, 40).map(lambda v: 2 * v)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 4), _even, _even), min_size=1, max_size=4))
def test_property_sweep(grids):
    _check(torch.tensor(grids, dtype=torch.int64))


def test_bad_grid_raises():
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        vision_position_ids(torch.tensor([1, 2, 2]))
    with pytest.raises(ValueError, match="multiples of 2"):
        vision_window_index(torch.tensor([[1, 3, 2]]))
