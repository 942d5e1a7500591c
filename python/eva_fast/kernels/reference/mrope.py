"""Plain-torch reference: the LLM side's M-RoPE position ids for interleaved text/image sequences.

Spec: ``shared/design/qwen25vl-layout.md`` §4 (what transformers' ``model.model.get_rope_index`` computes
for images). Walk the runs of ``mm_token_type_ids`` (0 = text, 1 = image pad):

* text run of length L: positions ``cur .. cur+L-1`` on all three rows; ``cur += L``;
* image with grid ``(1, h, w)``, merged grid ``(H, W) = (h/2, w/2)``: token ``(a, b)`` in raster order gets
  ``(cur, cur + a, cur + b)``; ``cur += max(H, W)``.

In a multi-turn agent the counter ``cur`` carries over between turns: :class:`MRopePositions` keeps it, so
positions of turn n+1 computed alone equal those of the whole conversation computed at once.
"""

from __future__ import annotations

import torch

MERGE_SIZE = 2
TEXT, IMAGE = 0, 1


def _runs(types: list[int]) -> list[tuple[int, int, int]]:
    """``(type, start, end)`` of each maximal run of equal values."""
    runs = []
    start = 0
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[start]:
            runs.append((types[start], start, i))
            start = i
    return runs


def _positions_1d(
    types: list[int], grids: list[tuple[int, int, int]], start: int, merge_size: int
) -> tuple[torch.Tensor, int, int]:
    """Positions ``[3, S]`` of one unpadded sequence, the next free position, and images consumed."""
    parts = []
    cur = start
    used = 0
    for kind, a, b in _runs(types):
        if kind == TEXT:
            parts.append((torch.arange(b - a) + cur).view(1, -1).expand(3, -1))
            cur += b - a
        elif kind == IMAGE:
            if used >= len(grids):
                raise ValueError(f"more image-token runs than image_grid_thw rows ({len(grids)})")
            t, h, w = grids[used]
            used += 1
            mh, mw = h // merge_size, w // merge_size
            if t != 1:
                raise ValueError(f"only still images (t = 1) are supported, got grid {(t, h, w)}")
            if b - a != mh * mw:
                raise ValueError(
                    f"image run of {b - a} tokens does not match grid {(t, h, w)} ({mh * mw} merged tokens)"
                )
            rows = torch.arange(mh).view(-1, 1).expand(mh, mw).reshape(-1)
            cols = torch.arange(mw).view(1, -1).expand(mh, mw).reshape(-1)
            parts.append(torch.stack([torch.zeros_like(rows), rows, cols]) + cur)
            cur += max(mh, mw)
        else:
            raise ValueError(f"mm_token_type_ids values must be 0 (text) or 1 (image), got {kind}")
    pos = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.int64)
    return pos, cur, used


def get_rope_index(
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    spatial_merge_size: int = MERGE_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE position ids of a batch, equal to transformers' ``get_rope_index`` for images.

    Args:
        mm_token_type_ids: int ``[B, S]``: 0 text (including vision_start/end), 1 ``<|image_pad|>``.
        image_grid_thw: int64 ``[n_images, 3]`` rows ``(1, h, w)`` in patches, consumed in order over
            the batch (row-major), one per image-token run. ``None`` if there are no images.
        attention_mask: ``[B, S]`` (1 keep, 0 pad), or ``None``. Padded slots get position 0.
        spatial_merge_size: 2 for Qwen2.5-VL.

    Returns:
        ``(position_ids, rope_deltas)``: int64 ``[3, B, S]`` (rows t, h, w) and int64 ``[B, 1]`` with
        ``rope_delta = max(position) + 1 - n_unpadded_tokens``, both on ``mm_token_type_ids``' device.

    Raises:
        ValueError: a token type other than 0/1, a run length that does not match its grid, or too few grids.
    """
    if mm_token_type_ids.ndim != 2:
        raise ValueError(f"mm_token_type_ids must be [B, S], got {tuple(mm_token_type_ids.shape)}")
    bsz, seq = mm_token_type_ids.shape
    grids = [] if image_grid_thw is None else [tuple(int(v) for v in r) for r in image_grid_thw.tolist()]
    position_ids = torch.zeros(3, bsz, seq, dtype=torch.int64)
    deltas = []
    used = 0
    types_all = mm_token_type_ids.cpu()
    mask_all = None if attention_mask is None else attention_mask.cpu().bool()
    for b in range(bsz):
        keep = torch.ones(seq, dtype=torch.bool) if mask_all is None else mask_all[b]
        types = types_all[b][keep].tolist()
        pos, nxt, n_used = _positions_1d(types, grids[used:], 0, spatial_merge_size)
        used += n_used
        position_ids[:, b, keep] = pos
        deltas.append(nxt - len(types))  # == max(pos) + 1 - len(types)
    device = mm_token_type_ids.device
    return position_ids.to(device), torch.tensor(deltas, dtype=torch.int64).view(bsz, 1).to(device)


class MRopePositions:
    """Running M-RoPE counter for one conversation that grows turn by turn (agent loop).

    Example::

        rope = MRopePositions()
        pos1 = rope.extend(types_turn1, grid_turn1)   # [3, S1]
        pos2 = rope.extend(types_turn2, grid_turn2)   # [3, S2], continues after turn 1
        rope.rope_delta                               # what get_rope_index gives for turn1 + turn2

    Attributes:
        next_position: position of the next text token (not the token index once images appeared).
        num_tokens: tokens seen so far.
    """

    def __init__(self, spatial_merge_size: int = MERGE_SIZE) -> None:
        self.spatial_merge_size = spatial_merge_size
        self.next_position = 0
        self.num_tokens = 0

    @property
    def rope_delta(self) -> int:
        """``next_position - num_tokens``: add to a token index to get its decode-time position."""
        return self.next_position - self.num_tokens

    def extend(self, mm_token_type_ids: torch.Tensor, image_grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        """Positions of the next chunk of tokens.

        Args:
            mm_token_type_ids: int ``[S]`` (0 text, 1 image pad) for the new tokens only, unpadded.
            image_grid_thw: int64 ``[n, 3]`` for exactly the images whose tokens are in this chunk.
                An image's tokens must not be split across chunks.

        Returns:
            int64 ``[3, S]`` on ``mm_token_type_ids``' device.

        Raises:
            ValueError: bad token types, or grids that do not match the image runs.
        """
        if mm_token_type_ids.ndim != 1:
            raise ValueError(f"mm_token_type_ids must be [S] for one chunk, got {tuple(mm_token_type_ids.shape)}")
        grids = [] if image_grid_thw is None else [tuple(int(v) for v in r) for r in image_grid_thw.tolist()]
        types = mm_token_type_ids.tolist()
        pos, nxt, used = _positions_1d(types, grids, self.next_position, self.spatial_merge_size)
        if used != len(grids):
            raise ValueError(f"chunk has {used} image runs but {len(grids)} image_grid_thw rows")
        self.next_position = nxt
        self.num_tokens += len(types)
        return pos.to(mm_token_type_ids.device)
