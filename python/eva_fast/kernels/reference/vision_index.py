"""Plain-torch reference: Qwen2.5-VL vision-tower index tensors from ``image_grid_thw``.

Spec: ``shared/design/qwen25vl-layout.md`` §3. All four tensors depend only on the grid, so they are
host math (CPU, small), moved to the target device once. transformers' vision tower accepts them as
precomputed kwargs (``position_ids``, ``cu_seqlens``, ``window_index``, ``cu_window_seqlens``).

Notation: one grid row ``(t, h, w)`` in 14-px patches; ``N = sum t*h*w`` patch rows; ``M = N / 4``
merged tokens; ``k = window_size / merge / patch = 4`` merged tokens per window edge.
"""

from __future__ import annotations

import torch

PATCH_SIZE = 14
MERGE_SIZE = 2
#: Qwen2.5-VL vision ``window_size`` in pixels (8x8 patches = 4x4 merged tokens).
WINDOW_SIZE = 112


def _grid_rows(grid_thw: torch.Tensor) -> list[tuple[int, int, int]]:
    if not isinstance(grid_thw, torch.Tensor) or grid_thw.ndim != 2 or grid_thw.shape[1] != 3:
        shape = tuple(grid_thw.shape) if isinstance(grid_thw, torch.Tensor) else type(grid_thw).__name__
        raise ValueError(f"grid_thw must be a [n, 3] tensor of (t, h, w), got {shape}")
    rows = [tuple(int(v) for v in r) for r in grid_thw.tolist()]
    for t, h, w in rows:
        if t <= 0 or h <= 0 or w <= 0 or h % MERGE_SIZE or w % MERGE_SIZE:
            raise ValueError(f"grid (t, h, w) must be positive with h, w multiples of {MERGE_SIZE}, got {(t, h, w)}")
    return rows


def vision_position_ids(grid_thw: torch.Tensor, merge_size: int = MERGE_SIZE) -> torch.Tensor:
    """Rotary position ids of every patch row (spec §3.1).

    Args:
        grid_thw: ``[n, 3]`` int64 ``(t, h, w)`` per image, in patches.
        merge_size: spatial merge (2).

    Returns:
        int64 ``[N, 2]`` on ``grid_thw``'s device: ``(patch row, patch column)`` of each ``pixel_values``
        row, in the 2x2-merge-block raster order, repeated for each of the ``t`` frames.
    """
    out = []
    cache: dict[tuple[int, int], torch.Tensor] = {}
    for t, h, w in _grid_rows(grid_thw):
        if (h, w) not in cache:
            hh = torch.arange(h).view(h // merge_size, merge_size, 1, 1).expand(-1, -1, w // merge_size, merge_size)
            ww = torch.arange(w).view(1, 1, w // merge_size, merge_size).expand(h // merge_size, merge_size, -1, -1)
            # (bh, mh, bw, mw) -> (bh, bw, mh, mw): merge blocks in raster order, raster inside
            pos = torch.stack([hh.permute(0, 2, 1, 3).reshape(-1), ww.permute(0, 2, 1, 3).reshape(-1)], dim=-1)
            cache[(h, w)] = pos
        out.append(cache[(h, w)].repeat(t, 1))
    return torch.cat(out).to(grid_thw.device)


def vision_cu_seqlens(grid_thw: torch.Tensor) -> torch.Tensor:
    """Full-attention segment boundaries, one segment per frame (spec §3.2).

    Returns:
        int32 ``[sum t + 1]``: ``[0, h0*w0, ...]`` cumulative patch counts, on ``grid_thw``'s device.
    """
    lens = [h * w for t, h, w in _grid_rows(grid_thw) for _ in range(t)]
    return torch.tensor([0, *lens], dtype=torch.int64).cumsum(0).to(torch.int32).to(grid_thw.device)


def _one_frame_windows(h: int, w: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window order of one frame's merged tokens and the merged-token count of each window."""
    mh, mw = h // MERGE_SIZE, w // MERGE_SIZE
    bh = torch.arange(mh).view(-1, 1).expand(mh, mw)
    bw = torch.arange(mw).view(1, -1).expand(mh, mw)
    n_win_w = -(-mw // k)
    # sort key: (window row, window column, row in window, column in window)
    key = (((bh // k) * n_win_w + bw // k) * k + bh % k) * k + bw % k
    order = torch.argsort(key.reshape(-1))
    win_h = torch.clamp(mh - torch.arange(-(-mh // k)) * k, max=k)  # rows per window row (edge: partial)
    win_w = torch.clamp(mw - torch.arange(n_win_w) * k, max=k)
    counts = (win_h[:, None] * win_w[None, :]).reshape(-1)  # never zero: ceil-divided window grid
    return order, counts


def vision_window_index(
    grid_thw: torch.Tensor,
    window_size: int = WINDOW_SIZE,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Window-attention permutation and segment boundaries (spec §3.3).

    Windows are ``window_size`` px squares anchored at each frame's top-left corner; edge windows are
    partial; empty windows are never emitted.

    Args:
        grid_thw: ``[n, 3]`` int64 ``(t, h, w)`` per image, in patches.
        window_size: pixels (112).
        patch_size: pixels (14).
        merge_size: spatial merge (2).

    Returns:
        ``(window_index, cu_window_seqlens)`` on ``grid_thw``'s device: ``window_index`` int64 ``[M]``,
        merged-token ids (global over the batch) in window order; ``cu_window_seqlens`` int32
        ``[n_windows + 1]``, cumulative **patch** counts (4 per merged token), starting at 0.
    """
    k = window_size // merge_size // patch_size
    unit = merge_size * merge_size
    index_parts, count_parts = [], []
    cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    offset = 0
    for t, h, w in _grid_rows(grid_thw):
        if (h, w) not in cache:
            cache[(h, w)] = _one_frame_windows(h, w, k)
        order, counts = cache[(h, w)]
        per_frame = order.numel()
        frame_offsets = offset + torch.arange(t) * per_frame
        index_parts.append((frame_offsets[:, None] + order[None, :]).reshape(-1))
        count_parts.append(counts.repeat(t))
        offset += t * per_frame
    window_index = torch.cat(index_parts)
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cat(count_parts).cumsum(0) * unit])
    return window_index.to(grid_thw.device), cu.to(torch.int32).to(grid_thw.device)
