"""Vision side: Qwen2.5-VL sizing and token accounting (packing arrives with the kernels)."""

from eva_fast.vision._smart_resize import FACTOR, MAX_PIXELS, MIN_PIXELS, smart_resize, tokens_for_size

__all__ = ["FACTOR", "MAX_PIXELS", "MIN_PIXELS", "smart_resize", "tokens_for_size"]
