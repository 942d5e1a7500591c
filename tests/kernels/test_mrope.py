"""kernels/reference/mrope.py against transformers' ``Qwen2_5_VLModel.get_rope_index`` (spec §4)."""

from __future__ import annotations

import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

from eva_fast.kernels.reference import MRopePositions, get_rope_index


def _hf_get_rope_index(types_, grid, attention_mask=None):
    """transformers' method bound to a stand-in ``self`` (no weights needed: it only reads the config)."""
    config = Qwen2_5_VLConfig()
    fake = types.SimpleNamespace(config=config)
    fake.get_vision_position_ids = types.MethodType(Qwen2_5_VLModel.get_vision_position_ids, fake)
    input_ids = torch.zeros_like(types_, dtype=torch.int64)
    return Qwen2_5_VLModel.get_rope_index(
        fake, input_ids, mm_token_type_ids=types_, image_grid_thw=grid, attention_mask=attention_mask
    )


def _sequence(parts):
    """parts: ints (text run lengths) and (h, w) grids in patches -> (types [S], grid [n, 3])."""
    types_, grids = [], []
    for p in parts:
        if isinstance(p, int):
            types_ += [0] * p
        else:
            h, w = p
            types_ += [0] + [1] * (h * w // 4) + [0]  # vision_start, pads, vision_end
            grids.append([1, h, w])
    grid = torch.tensor(grids, dtype=torch.int64).reshape(-1, 3)
    return torch.tensor(types_, dtype=torch.int32), grid


def test_interleaved_spec_example():
    t, grid = _sequence([7, (34, 46), 5, (22, 14), 3])
    pos, delta = get_rope_index(t[None], grid)
    ref_pos, ref_delta = _hf_get_rope_index(t[None], grid)
    assert torch.equal(pos, ref_pos) and torch.equal(delta, ref_delta)
    assert pos[:, 0, 8].tolist() == [8, 8, 8]  # first image token (spec §4 example)
    assert pos[:, 0, 8 + 390].tolist() == [8, 24, 30]  # last image token
    assert pos[:, 0, 8 + 391].tolist() == [31, 31, 31]  # vision_end


def test_left_padded_batch():
    t1, g1 = _sequence([3, (4, 6), 2])
    t2, g2 = _sequence([5, (2, 2), 4, (8, 4), 1])
    seq = max(len(t1), len(t2))
    types_ = torch.zeros(2, seq, dtype=torch.int32)
    mask = torch.zeros(2, seq, dtype=torch.int64)
    types_[0, seq - len(t1) :] = t1
    mask[0, seq - len(t1) :] = 1
    types_[1, seq - len(t2) :] = t2
    mask[1, seq - len(t2) :] = 1
    grid = torch.cat([g1, g2])
    pos, delta = get_rope_index(types_, grid, mask)
    ref_pos, ref_delta = _hf_get_rope_index(types_, grid, mask)
    assert torch.equal(pos, ref_pos) and torch.equal(delta, ref_delta)
    assert pos.shape == (3, 2, seq) and delta.shape == (2, 1)


_part = st.one_of(st.integers(1, 6), st.tuples(st.integers(1, 12).map(lambda v: 2 * v), st.integers(1, 12).map(lambda v: 2 * v)))


@settings(max_examples=60, deadline=None)
@given(st.lists(_part, min_size=1, max_size=6).filter(lambda ps: any(not isinstance(p, int) for p in ps)))
def test_property_matches_transformers(parts):
    t, grid = _sequence(parts)
    pos, delta = get_rope_index(t[None], grid)
    ref_pos, ref_delta = _hf_get_rope_index(t[None], grid)
    assert torch.equal(pos, ref_pos) and torch.equal(delta, ref_delta)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(_part, min_size=1, max_size=4), min_size=1, max_size=4))
def test_agent_turns_continue(turns):
    """Positions computed turn by turn equal the whole conversation's, and rope_delta matches."""
    all_parts = [p for turn in turns for p in turn]
    if not any(not isinstance(p, int) for p in all_parts):
        all_parts.append((2, 2))
        turns = [*turns, [(2, 2)]]
    t_all, g_all = _sequence(all_parts)
    ref_pos, ref_delta = _hf_get_rope_index(t_all[None], g_all)
    rope = MRopePositions()
    chunks = []
    for turn in turns:
        t, g = _sequence(turn)
        chunks.append(rope.extend(t, g if g.numel() else None))
    assert torch.equal(torch.cat(chunks, dim=1), ref_pos[:, 0])
    assert rope.rope_delta == ref_delta.item()
    assert rope.num_tokens == len(t_all)


def test_errors():
    t, grid = _sequence([2, (4, 4)])
    with pytest.raises(ValueError, match="does not match grid"):
        get_rope_index(t[None], torch.tensor([[1, 4, 8]]))
    with pytest.raises(ValueError, match="0 \\(text\\) or 1 \\(image\\)"):
        get_rope_index(torch.tensor([[0, 2, 2]]), grid)
    with pytest.raises(ValueError, match="more image-token runs"):
        get_rope_index(t[None], None)
    with pytest.raises(ValueError, match="image runs but"):
        MRopePositions().extend(torch.tensor([0, 0]), grid)
