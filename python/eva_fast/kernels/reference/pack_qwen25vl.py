"""Plain-torch reference: uint8 frames -> Qwen2.5-VL ``pixel_values`` / ``image_grid_thw``.

Spec: ``shared/design/qwen25vl-layout.md`` §2.4 (normalisation, bit for bit) and §2.5 (patch index map).

Every frame is a still image (``t = 1``), so each 14x14 patch is written twice, once per temporal
slot. Rows are 2x2 merge blocks in raster order (raster inside each block); columns are
``(channel, temporal slot, row in patch, column in patch)``.

Normalisation reproduces transformers' PIL ("slow") processor exactly: ``x = float32(float64(u8) * (1/255))``
then ``(x - mean32) / std32`` in float32. Because the input is uint8 there are only 256 possible values per
channel, so the formula is evaluated once per (channel, value) into a ``[3, 256]`` table and the frames are
gathered through it. The table *is* the formula, so the result is bit-identical to evaluating it per pixel.
bf16/fp16 outputs are the float32 result rounded to nearest even (what the model does itself when it
casts ``pixel_values`` to the vision dtype).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: OpenAI-CLIP mean / std, Qwen2.5-VL-7B ``preprocessor_config.json`` (spec §1), RGB order.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
#: transformers' ``rescale_factor`` (a Python float, used in float64).
RESCALE_FACTOR: float = 1 / 255

PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
CHANNELS = 3
#: Values per ``pixel_values`` row: 3 channels x 2 temporal slots x 14 x 14.
PATCH_DIM = CHANNELS * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE  # 1176
#: Frame sizes must be multiples of this (patch 14 x merge 2).
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def normalize_table(
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    formula: str = "pil",
) -> torch.Tensor:
    """Normalised value of every uint8 level, per channel.

    Args:
        mean: per-channel mean, 3 floats (RGB), in [0, 1] units.
        std: per-channel std, 3 positive floats.
        dtype: float32, bfloat16 or float16. Low-precision tables are the float32 table rounded to nearest.
        device: where the table lives.
        formula: ``"pil"`` (default): transformers' PIL processor, ``float32(float64(v) * (1/255))`` then
            ``(x - mean32) / std32``. ``"torchvision"``: its torchvision processor's fused form
            ``(float32(v) - mean32 * 255) / (std32 * 255)`` (float32 throughout). The two differ by <= 1 ulp.

    Returns:
        ``[3, 256]`` tensor of ``dtype``: ``table[c, v]`` is the normalised value of level ``v`` in channel ``c``.

    Raises:
        ValueError: wrong number of channels, a non-positive std or an unsupported dtype.
    """
    _check_dtype(dtype)
    if len(mean) != CHANNELS or len(std) != CHANNELS:
        raise ValueError(f"mean and std need {CHANNELS} values (RGB), got mean={tuple(mean)} std={tuple(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {tuple(std)}")
    levels = torch.arange(256, dtype=torch.float64)
    mean32 = torch.tensor(mean, dtype=torch.float64).to(torch.float32)
    std32 = torch.tensor(std, dtype=torch.float64).to(torch.float32)
    if formula == "pil":
        x = (levels * RESCALE_FACTOR).to(torch.float32)  # rescale in float64, downcast (transformers' rescale)
        table = (x[None, :] - mean32[:, None]) / std32[:, None]  # float32, as transformers' normalize
    elif formula == "torchvision":
        scale = 1.0 / RESCALE_FACTOR  # a Python float (255.0), multiplied into float32 tensors
        x = levels.to(torch.float32)
        table = (x[None, :] - (mean32 * scale)[:, None]) / (std32 * scale)[:, None]
    else:
        raise ValueError(f"unknown formula {formula!r}; allowed: 'pil', 'torchvision'")
    return table.to(dtype=dtype, device=device)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported pixel_values dtype {dtype}; use one of {SUPPORTED_DTYPES}")


def check_frames(frames: torch.Tensor, name: str = "frames") -> tuple[int, int, int]:
    """Validate one uint8 ``[T, H, W, 3]`` frame tensor and return ``(T, h, w)`` in 14-px patches.

    Raises:
        TypeError: not a torch tensor, or not uint8.
        ValueError: wrong rank/channels, or H, W not positive multiples of 28.
    """
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != CHANNELS:
        raise ValueError(f"{name} must have shape [T, H, W, 3], got {tuple(frames.shape)}")
    t, height, width, _ = frames.shape
    if height <= 0 or width <= 0 or height % FACTOR or width % FACTOR:
        raise ValueError(
            f"{name}: H and W must be positive multiples of {FACTOR} (use smart_resize), got {height}x{width}"
        )
    return t, height // PATCH_SIZE, width // PATCH_SIZE


def grid_thw_for(frames_list: Sequence[torch.Tensor]) -> torch.Tensor:
    """``image_grid_thw`` ``[sum T_i, 3]`` int64 (CPU): ``(1, H/14, W/14)`` per frame, in call order."""
    rows = []
    for i, frames in enumerate(frames_list):
        t, h, w = check_frames(frames, name=f"frames[{i}]")
        rows.extend([(1, h, w)] * t)
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)


def patchify_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Reorder uint8 frames into patch rows without normalising (spec §2.5 index map).

    Args:
        frames: uint8 ``[T, H, W, 3]``, H and W multiples of 28.

    Returns:
        uint8 ``[T*h*w, 3, 14, 14]`` with ``h = H/14``, ``w = W/14``: row ``r`` of frame ``f`` is the
        patch at ``(2*bh + mh, 2*bw + mw)`` for ``r = ((bh*(w/2) + bw)*2 + mh)*2 + mw``.
    """
    t, h, w = check_frames(frames)
    p = PATCH_SIZE
    x = frames.reshape(t, h // 2, 2, p, w // 2, 2, p, CHANNELS)
    #      dims:        0  1     2  3  4     5  6  7
    # -> (t, bh, bw, mh, mw, c, py, px)
    x = x.permute(0, 1, 4, 2, 5, 7, 3, 6)
    return x.reshape(t * h * w, CHANNELS, p, p)


def _pack_torch(frames: torch.Tensor, table: torch.Tensor, out: torch.Tensor) -> None:
    """Any device: uint8 patch rows, then per channel a gather through the table into both temporal slots."""
    u8 = patchify_uint8(frames).reshape(-1, CHANNELS, PATCH_SIZE * PATCH_SIZE)  # [n, 3, 196]
    n = u8.shape[0]
    for c in range(CHANNELS):
        # normalised value = table[c, level]; index_select is the gather through the table
        vals = table[c].index_select(0, u8[:, c].reshape(-1).to(torch.int32)).view(n, -1)
        out[:, c, 0] = vals
        out[:, c, 1] = vals  # still frame: both temporal slots hold the same patch


def _pack_numpy(frames: torch.Tensor, table: torch.Tensor, out: torch.Tensor) -> None:
    """CPU float32: the same gather done by numpy fancy indexing (about 2x faster than torch's on CPU)."""
    t, h, w = check_frames(frames)
    p = PATCH_SIZE
    # (t, bh, mh, py, bw, mw, px, c) -> (t, bh, bw, mh, mw, c, py, px): a view, nothing copied yet
    u8 = frames.numpy().reshape(t, h // 2, 2, p, w // 2, 2, p, CHANNELS).transpose(0, 1, 4, 2, 5, 7, 3, 6)
    dst = out.numpy().reshape(t, h // 2, w // 2, 2, 2, CHANNELS, TEMPORAL_PATCH_SIZE, p, p)
    tab = table.numpy()
    for c in range(CHANNELS):
        vals = tab[c][u8[..., c, :, :]]  # gather: [t, bh, bw, mh, mw, 14, 14]
        dst[..., c, 0, :, :] = vals
        dst[..., c, 1, :, :] = vals  # still frame: both temporal slots hold the same patch


def pack_qwen25vl_reference(
    frames: torch.Tensor | Sequence[torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    formula: str = "pil",
    _impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack uint8 frames into Qwen2.5-VL's ``pixel_values`` and ``image_grid_thw`` (plain torch).

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB, H and W multiples of 28, on any device; or a sequence of
            such tensors (sizes may differ; all on one device). Each frame is one still image.
        dtype: float32 (bit-exact with transformers' PIL processor), bfloat16 or float16.
        mean: per-channel mean (RGB).
        std: per-channel std (RGB).
        formula: normalisation recipe, ``"pil"`` or ``"torchvision"`` (see :func:`normalize_table`).

    Returns:
        ``(pixel_values, image_grid_thw)``: ``pixel_values`` ``[L, 1176]`` of ``dtype`` on the frames'
        device with ``L = sum(h_i * w_i)`` over frames (``h = H/14``, ``w = W/14``), frames in call
        order; ``image_grid_thw`` ``[T_total, 3]`` int64 on the same device, rows ``(1, h, w)``.

    Raises:
        TypeError, ValueError: see :func:`check_frames` and :func:`normalize_table`.
    """
    frames_list = [frames] if isinstance(frames, torch.Tensor) else list(frames)
    if not frames_list:
        raise ValueError("pack_qwen25vl_reference: got no frames")
    device = frames_list[0].device
    grid = grid_thw_for(frames_list)
    table = normalize_table(mean, std, dtype=dtype, device=device, formula=formula)
    total_rows = int((grid[:, 1] * grid[:, 2]).sum())
    out = torch.empty(total_rows, CHANNELS, TEMPORAL_PATCH_SIZE, PATCH_SIZE * PATCH_SIZE, dtype=dtype, device=device)
    if _impl not in ("auto", "torch", "numpy"):
        raise ValueError(f"_impl must be 'auto', 'torch' or 'numpy', got {_impl!r}")
    impl = "numpy" if device.type == "cpu" and dtype == torch.float32 else "torch"
    impl = impl if _impl == "auto" else _impl
    row = 0
    for i, fr in enumerate(frames_list):
        if fr.device != device:
            raise ValueError(f"all frame tensors must be on one device: frames[0] on {device}, frames[{i}] on {fr.device}")
        if fr.shape[0] == 0:
            continue
        n = fr.shape[0] * (fr.shape[1] // PATCH_SIZE) * (fr.shape[2] // PATCH_SIZE)
        if impl == "numpy":
            _pack_numpy(fr, table, out[row : row + n])
        else:
            _pack_torch(fr, table, out[row : row + n])
        row += n
    return out.view(total_rows, PATCH_DIM), grid.to(device)
