"""Vision side: Qwen2.5-VL sizing, token accounting, packing and a drop-in image processor.

Public entry points::

    from eva_fast.vision import pack_qwen25vl, PackedVisual, EvaQwen2VLImageProcessor
    packed = pack_qwen25vl(frames)            # uint8 [T, H, W, 3], H, W multiples of 28
    model(**packed.model_inputs(), ...)

M-RoPE positions for interleaved text/image sequences: :func:`get_rope_index` (batch, equal to
transformers') and :class:`MRopePositions` (running counter across agent turns).
"""

from eva_fast.kernels.reference.mrope import MRopePositions, get_rope_index
from eva_fast.kernels.reference.pack_qwen25vl import CLIP_MEAN, CLIP_STD, PATCH_DIM
from eva_fast.vision._pack import BACKENDS, PackedVisual, pack_qwen25vl, warm_up_pack
from eva_fast.vision._smart_resize import FACTOR, MAX_PIXELS, MIN_PIXELS, smart_resize, tokens_for_size


def __getattr__(name: str):
    # the image processor imports transformers; load it only when asked for
    if name in ("EvaQwen2VLImageProcessor", "EvaQwen25VLProcessor"):
        from eva_fast.vision import _processor  # imports transformers: only when asked for

        return getattr(_processor, name)
    raise AttributeError(f"module 'eva_fast.vision' has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "CLIP_MEAN",
    "CLIP_STD",
    "FACTOR",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "PATCH_DIM",
    "EvaQwen25VLProcessor",
    "EvaQwen2VLImageProcessor",
    "MRopePositions",
    "PackedVisual",
    "get_rope_index",
    "pack_qwen25vl",
    "smart_resize",
    "tokens_for_size",
    "warm_up_pack",
]
