"""Readable plain-torch references (CPU or GPU) for every eva_fast kernel; the ground truth in tests."""

from eva_fast.kernels.reference.mrope import MRopePositions, get_rope_index
from eva_fast.kernels.reference.pack_qwen25vl import (
    CLIP_MEAN,
    CLIP_STD,
    PATCH_DIM,
    normalize_table,
    pack_qwen25vl_reference,
    patchify_uint8,
)
from eva_fast.kernels.reference.vision_index import vision_cu_seqlens, vision_position_ids, vision_window_index

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "PATCH_DIM",
    "MRopePositions",
    "get_rope_index",
    "normalize_table",
    "pack_qwen25vl_reference",
    "patchify_uint8",
    "vision_cu_seqlens",
    "vision_position_ids",
    "vision_window_index",
]
