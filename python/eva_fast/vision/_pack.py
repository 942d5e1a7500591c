"""``pack_qwen25vl``: uint8 frames -> what Qwen2.5-VL's vision tower consumes (``PackedVisual``).

Spec: ``shared/design/qwen25vl-layout.md`` §2-§3. The packing itself runs in
``eva_fast.kernels`` (Triton on CUDA, plain-torch reference otherwise); the small vision index
tensors are host math (``eva_fast.kernels.reference.vision_index``), computed on first access.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from eva_fast.kernels._utils import triton_available
from eva_fast.kernels.reference.pack_qwen25vl import (
    CLIP_MEAN,
    CLIP_STD,
    PATCH_DIM,
    pack_qwen25vl_reference,
)
from eva_fast.kernels.reference.vision_index import vision_cu_seqlens, vision_position_ids, vision_window_index

logger = logging.getLogger("eva_fast.vision")

BACKENDS = ("torch", "triton")


@dataclasses.dataclass(frozen=True, repr=False)
class PackedVisual:
    """Packed visual input for Qwen2.5-VL (every frame a still image, ``t = 1``).

    The four vision index tensors are computed on first access (host math, moved to
    ``pixel_values.device``) and cached; pass them to the vision tower with :meth:`vision_kwargs`.
    """

    pixel_values: torch.Tensor
    """``[L, 1176]`` float32/bfloat16/float16, ``L = sum(h_i * w_i)`` patch rows (``h = H/14``,
    ``w = W/14``); rows in 2x2 merge-block raster order per frame, frames in call order; columns
    ``(channel, temporal slot, 14, 14)``, normalised with ``mean``/``std``."""
    image_grid_thw: torch.Tensor
    """``[T, 3]`` int64 on ``pixel_values.device``, rows ``(1, h, w)`` in patches."""
    tokens_per_image: tuple[int, ...]
    """LLM tokens per frame, ``h * w / 4`` (= ``(H/28) * (W/28)``), length T."""
    backend: str
    """Backend that produced ``pixel_values``: ``"torch"`` or ``"triton"``."""
    fallback: str | None = None
    """Why the preferred backend was not used (``None`` when there was no fallback)."""

    def __post_init__(self) -> None:
        pv, grid = self.pixel_values, self.image_grid_thw
        if pv.ndim != 2 or pv.shape[1] != PATCH_DIM:
            raise ValueError(f"pixel_values must be [L, {PATCH_DIM}], got {tuple(pv.shape)}")
        if grid.ndim != 2 or grid.shape[1] != 3 or grid.dtype != torch.int64:
            raise ValueError(f"image_grid_thw must be int64 [T, 3], got {grid.dtype} {tuple(grid.shape)}")
        if len(self.tokens_per_image) != grid.shape[0]:
            raise ValueError(f"tokens_per_image has {len(self.tokens_per_image)} entries for {grid.shape[0]} frames")
        if sum(self.tokens_per_image) * 4 != pv.shape[0]:
            raise ValueError(f"{pv.shape[0]} pixel_values rows do not match {sum(self.tokens_per_image)} tokens x 4")

    @property
    def num_tokens(self) -> int:
        """LLM tokens for all frames, ``sum(tokens_per_image)``."""
        return sum(self.tokens_per_image)

    @property
    def num_frames(self) -> int:
        """Frames (images) packed, T."""
        return len(self.tokens_per_image)

    @functools.cached_property
    def vision_position_ids(self) -> torch.Tensor:
        """int64 ``[L, 2]``: (patch row, patch column) of each ``pixel_values`` row (rotary ids)."""
        return vision_position_ids(self.image_grid_thw.cpu()).to(self.pixel_values.device)

    @functools.cached_property
    def cu_seqlens(self) -> torch.Tensor:
        """int32 ``[T + 1]``: full-attention segment boundaries, one segment (``h*w`` patches) per frame."""
        return vision_cu_seqlens(self.image_grid_thw.cpu()).to(self.pixel_values.device)

    @functools.cached_property
    def _windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        wi, cu = vision_window_index(self.image_grid_thw.cpu())
        return wi.to(self.pixel_values.device), cu.to(self.pixel_values.device)

    @property
    def window_index(self) -> torch.Tensor:
        """int64 ``[L / 4]``: merged-token ids in window-attention order (112-px windows)."""
        return self._windows[0]

    @property
    def cu_window_seqlens(self) -> torch.Tensor:
        """int32 ``[n_windows + 1]``: cumulative patch counts of the non-empty windows, from 0."""
        return self._windows[1]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """``{"pixel_values", "image_grid_thw"}`` as a transformers model's forward takes them."""
        return {"pixel_values": self.pixel_values, "image_grid_thw": self.image_grid_thw}

    def vision_kwargs(self) -> dict[str, torch.Tensor]:
        """Precomputed index tensors for ``model.visual(pixel_values, grid_thw=..., **kwargs)``."""
        return {
            "position_ids": self.vision_position_ids,
            "cu_seqlens": self.cu_seqlens,
            "window_index": self.window_index,
            "cu_window_seqlens": self.cu_window_seqlens,
        }

    def __repr__(self) -> str:
        pv = self.pixel_values
        return (
            f"PackedVisual(pixel_values={pv.dtype} {list(pv.shape)} on {pv.device}, "
            f"image_grid_thw=int64 {list(self.image_grid_thw.shape)}, frames={self.num_frames}, "
            f"num_tokens={self.num_tokens}, backend={self.backend!r}"
            + (f", fallback={self.fallback!r}" if self.fallback else "")
            + ")"
        )


def _as_frame_tensors(frames: Any) -> list[torch.Tensor]:
    if isinstance(frames, torch.Tensor):
        return [frames]
    # FrameBatch or DecodedFrames (.frames) from eva_fast.video
    inner = getattr(frames, "frames", None)
    if isinstance(inner, torch.Tensor):
        return [inner]
    if isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
        out = []
        for f in frames:
            out.extend(_as_frame_tensors(f))
        return out
    raise TypeError(
        "frames must be a uint8 [T, H, W, 3] torch.Tensor, a FrameBatch, or a list of them, "
        f"got {type(frames).__name__}"
    )


def _resolve_backend(backend: str | None, device: torch.device) -> tuple[str, str | None]:
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; allowed: {BACKENDS} or None (auto)")
        if backend == "triton":
            if not triton_available():
                raise ImportError("backend='triton' needs Triton: pip install triton")
            if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
                raise ValueError(
                    f"backend='triton' needs CUDA frames (got {device}); set TRITON_INTERPRET=1 before importing "
                    "eva_fast.kernels.pack_qwen25vl to run it on CPU, or use backend='torch'"
                )
        return backend, None
    if device.type == "cuda":
        if triton_available():
            return "triton", None
        reason = "frames are on CUDA but Triton is not importable (pip install triton)"
        logger.warning("pack_qwen25vl: falling back to the torch reference: %s", reason)
        return "torch", reason
    logger.debug("pack_qwen25vl: frames on %s, using the torch reference", device)
    return "torch", None


def pack_qwen25vl(
    frames: torch.Tensor | Sequence[torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> PackedVisual:
    """Pack decoded, 28-aligned uint8 frames into Qwen2.5-VL's visual input.

    Args:
        frames: uint8 RGB ``[T, H, W, 3]`` in [0, 255] with H, W multiples of 28 (sizes that already
            passed ``smart_resize``), on CPU or CUDA; or a list of such tensors of different sizes
            (packed in order), or a ``FrameBatch``. Every frame becomes one still image. No resizing.
        dtype: ``pixel_values`` dtype: float32 (bit-exact with transformers' processor), bfloat16 or
            float16 (the float32 values rounded to nearest even).
        backend: ``"triton"`` (CUDA; one fused read-uint8/write-patches kernel), ``"torch"`` (plain
            reference, any device) or ``None``: Triton for CUDA frames when Triton is importable,
            otherwise torch (a fallback on CUDA is logged on ``eva_fast.vision`` and recorded in
            ``PackedVisual.fallback``).
        mean: per-channel mean, RGB, in [0, 1] units (default OpenAI-CLIP, the checkpoint's).
        std: per-channel std, RGB (default OpenAI-CLIP).

    Returns:
        PackedVisual on the frames' device.

    Raises:
        TypeError: frames not uint8 tensors.
        ValueError: bad shapes (not ``[T, H, W, 3]``, not 28-aligned), mixed devices, unknown backend
            or dtype, or ``backend="triton"`` for CPU frames outside the Triton interpreter.
        ImportError: ``backend="triton"`` without Triton installed.
    """
    frames_list = _as_frame_tensors(frames)
    if not frames_list:
        raise ValueError("pack_qwen25vl: got no frames")
    device = frames_list[0].device
    chosen, fallback = _resolve_backend(backend, device)
    if chosen == "triton":
        from eva_fast.kernels.pack_qwen25vl import pack_qwen25vl_triton  # imports Triton (GPU only)

        pixel_values, grid = pack_qwen25vl_triton(frames_list, dtype=dtype, mean=mean, std=std)
    else:
        pixel_values, grid = pack_qwen25vl_reference(frames_list, dtype=dtype, mean=mean, std=std)
    tokens = tuple(int(h * w) // 4 for _, h, w in grid.tolist())
    return PackedVisual(pixel_values, grid, tokens, chosen, fallback)


def warm_up_pack(device: torch.device | str, dtype: torch.dtype = torch.float32, backend: str | None = None) -> float:
    """Compile (or load) the packer for ``device`` and ``dtype`` now, outside any timed or latency-bound
    region: packs one black 28x28 frame. With Triton the first launch per process and dtype compiles
    the kernel (hundreds of ms); the kernel does not specialise on sizes, so later calls of any size
    do not compile again. Returns the milliseconds it took (0.0 for CPU devices, where nothing compiles).

    Raises:
        ValueError, ImportError: as :func:`pack_qwen25vl` for ``backend``.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return 0.0
    t0 = time.perf_counter()
    pack_qwen25vl(torch.zeros(1, 28, 28, 3, dtype=torch.uint8, device=device), dtype=dtype, backend=backend)
    torch.cuda.current_stream(device).synchronize()
    return (time.perf_counter() - t0) * 1e3
