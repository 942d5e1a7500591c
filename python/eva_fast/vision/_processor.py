"""``EvaQwen2VLImageProcessor``: a drop-in for transformers' ``Qwen2VLImageProcessor`` on decoded frames.

It returns the same ``BatchFeature`` (``pixel_values`` ``[L, 1176]``, ``image_grid_thw`` ``[n, 3]``) but
packs with :func:`eva_fast.vision.pack_qwen25vl` (Triton on CUDA, the torch reference otherwise).

Resize policy: a 28-aligned image whose size already satisfies ``smart_resize`` is **never resampled**
(EVA's frames, the common case). Anything else is resized to ``smart_resize(H, W)`` with Pillow's
``Image.resize(..., BICUBIC)``, exactly what transformers' PIL processor does, so the output stays
bit-identical to ``Qwen2VLImageProcessorPil`` for the Pillow installed (spec §2.3: Pillow 13 changed
the pass order for some shapes; pin Pillow for golden data).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ProcessorMixin

from eva_fast.kernels.reference.pack_qwen25vl import CLIP_MEAN, CLIP_STD, RESCALE_FACTOR
from eva_fast.vision._pack import pack_qwen25vl
from eva_fast.vision._smart_resize import MAX_PIXELS, MIN_PIXELS, smart_resize

logger = logging.getLogger("eva_fast.vision")

_PIL_BICUBIC = 3


class EvaQwen2VLImageProcessor(BaseImageProcessor):
    """Qwen2.5-VL image processor for already-decoded frames, packed by eva_fast.

    Usable wherever ``Qwen2VLImageProcessor`` is: as ``Qwen2_5_VLProcessor(image_processor=...)``, as
    ``processor.image_processor`` in TRL trainers, or called directly.

    Args:
        min_pixels: smart_resize lower bound (default 3136, the checkpoint's).
        max_pixels: smart_resize upper bound (default 12 845 056, the released checkpoint's
            ``preprocessor_config.json``; transformers' class default is 1 003 520).
        image_mean: per-channel mean, RGB (OpenAI-CLIP).
        image_std: per-channel std, RGB (OpenAI-CLIP).
        dtype: ``pixel_values`` dtype (float32 default; bfloat16/float16 save bytes).
        backend: ``pack_qwen25vl`` backend: ``None`` (auto), ``"torch"`` or ``"triton"``.
        device: optional device to pack on (e.g. ``"cuda"``); default the input's device.
        **kwargs: other ``preprocessor_config.json`` keys; checked for unsupported values, else ignored.

    Raises:
        ValueError: patch/merge/temporal sizes other than 14/2/2, or rescale/normalise switched off.
    """

    model_input_names = ["pixel_values", "image_grid_thw"]
    patch_size = 14
    temporal_patch_size = 2
    merge_size = 2
    resample = _PIL_BICUBIC
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    rescale_factor = RESCALE_FACTOR

    def __init__(
        self,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        dtype: torch.dtype = torch.float32,
        backend: str | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        size = kwargs.pop("size", None) or {}
        self.min_pixels = int(min_pixels or size.get("shortest_edge") or MIN_PIXELS)
        self.max_pixels = int(max_pixels or size.get("longest_edge") or MAX_PIXELS)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.backend = backend
        self.device = device
        self._check_fixed(kwargs)
        for key in ("image_processor_type", "processor_class", "do_resize", "do_convert_rgb", "resample"):
            kwargs.pop(key, None)
        if kwargs:
            logger.debug("EvaQwen2VLImageProcessor: ignoring config keys %s", sorted(kwargs))

    @property
    def size(self) -> dict[str, int]:
        """``{"shortest_edge": min_pixels, "longest_edge": max_pixels}`` as transformers names them."""
        return {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}

    @classmethod
    def from_image_processor(cls, image_processor: Any, **overrides: Any) -> EvaQwen2VLImageProcessor:
        """Copy min/max pixels and mean/std from a transformers Qwen2-VL image processor."""
        size = getattr(image_processor, "size", None) or {}
        get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
        kw = dict(
            min_pixels=get("shortest_edge") or getattr(image_processor, "min_pixels", None),
            max_pixels=get("longest_edge") or getattr(image_processor, "max_pixels", None),
            image_mean=list(image_processor.image_mean),
            image_std=list(image_processor.image_std),
        )
        kw.update(overrides)
        return cls(**kw)

    @staticmethod
    def _check_fixed(kw: dict[str, Any]) -> None:
        fixed = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
        for key, allowed in fixed.items():
            value = kw.pop(key, None)
            if value is not None and value != allowed:
                raise ValueError(f"{key}={value} is not supported; Qwen2.5-VL packing uses {key}={allowed}")
        for key in ("do_rescale", "do_normalize"):
            value = kw.pop(key, None)
            if value is not None and not value:
                raise ValueError(f"{key}=False is not supported; eva_fast always rescales and normalises")
        factor = kw.pop("rescale_factor", None)
        if factor is not None and abs(factor - RESCALE_FACTOR) > 1e-15:
            raise ValueError(f"rescale_factor={factor} is not supported; only 1/255")

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        """Patch rows (``h * w``, 4 per LLM token) an image of ``height x width`` becomes."""
        images_kwargs = images_kwargs or {}
        min_px = images_kwargs.get("min_pixels", self.min_pixels)
        max_px = images_kwargs.get("max_pixels", self.max_pixels)
        h, w = smart_resize(height, width, 28, min_px, max_px)
        return (h // 14) * (w // 14)

    # ------------------------------------------------------------------ inputs

    def _to_hwc_uint8(self, image: Any) -> list[torch.Tensor]:
        """One input -> list of uint8 ``[H, W, 3]`` tensors (a 4-D input is a batch)."""
        if isinstance(image, Image.Image):
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return [torch.from_numpy(np.asarray(image.convert("RGB")).copy())]
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image))
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"images must be PIL images, numpy arrays or torch tensors, got {type(image).__name__}")
        if image.dtype != torch.uint8:
            raise TypeError(f"image arrays must be uint8 RGB in [0, 255], got dtype {image.dtype}")
        if image.ndim == 4:
            return [img for t in image for img in self._to_hwc_uint8(t)]
        if image.ndim == 2:
            return [image[..., None].expand(-1, -1, 3)]
        if image.ndim == 3 and image.shape[-1] == 3:
            return [image]
        if image.ndim == 3 and image.shape[0] == 3:
            return [image.permute(1, 2, 0)]
        raise ValueError(f"image must be [H, W, 3] (or [3, H, W], [H, W], [T, H, W, 3]), got {tuple(image.shape)}")

    def _flatten(self, images: Any) -> list[torch.Tensor]:
        if isinstance(images, (list, tuple)):
            return [t for item in images for t in self._flatten(item)]
        return self._to_hwc_uint8(images)

    def _resize(self, image: torch.Tensor, min_px: int, max_px: int, do_resize: bool) -> torch.Tensor:
        height, width = image.shape[0], image.shape[1]
        th, tw = smart_resize(height, width, 28, min_px, max_px)
        if (th, tw) == (height, width):
            return image  # 28-aligned and in range: never resampled
        if not do_resize:
            raise ValueError(f"image of {height}x{width} needs resizing to {th}x{tw} but do_resize=False")
        pil = Image.fromarray(image.cpu().numpy())
        out = np.asarray(pil.resize((tw, th), resample=Image.Resampling.BICUBIC))
        return torch.from_numpy(out.copy()).to(image.device)

    def prepare_image(self, image: Any) -> torch.Tensor:
        """One image as the uint8 ``[H, W, 3]`` frame this processor packs: converted to RGB (alpha
        composited on white, as transformers does), then resized to ``smart_resize(H, W)`` with
        Pillow bicubic unless already that size (transformers' PIL processor's resize).

        Args:
            image: ``PIL.Image``, numpy/torch uint8 ``[H, W, 3]`` (or ``[3, H, W]``, ``[H, W]``).

        Raises:
            TypeError, ValueError: not a single image.
        """
        frames = self._to_hwc_uint8(image)
        if len(frames) != 1:
            raise ValueError(f"prepare_image takes one image, got a batch of {len(frames)}")
        return self._resize(frames[0], self.min_pixels, self.max_pixels, True)

    # ------------------------------------------------------------------ call

    def __call__(self, images: Any = None, *args: Any, **kwargs: Any) -> BatchFeature:
        """Same as :meth:`preprocess`."""
        return self.preprocess(images, *args, **kwargs)

    def preprocess(  # type: ignore[override]
        self, images: Any = None, return_tensors: str | None = "pt", **kwargs: Any
    ) -> BatchFeature:
        """Pack images into ``pixel_values`` / ``image_grid_thw``.

        Args:
            images: one image or a (nested) list: ``PIL.Image``, numpy uint8 ``[H, W, 3]``, torch uint8
                ``[H, W, 3]``/``[3, H, W]``, or a torch uint8 ``[T, H, W, 3]`` batch (T images).
            return_tensors: ``"pt"`` (default) or ``None`` for torch tensors, ``"np"`` for numpy.
            **kwargs: per-call overrides: ``min_pixels``, ``max_pixels``, ``size``, ``image_mean``,
                ``image_std``, ``do_resize``, ``dtype``, ``backend``, ``device``; ``patch_size`` etc.
                are checked; other transformers kwargs are ignored.

        Returns:
            BatchFeature with ``pixel_values`` ``[L, 1176]`` (``dtype``) and ``image_grid_thw`` ``[n, 3]``
            int64, images in input order.

        Raises:
            TypeError, ValueError: unsupported inputs or options.
        """
        if images is None:
            images = kwargs.pop("images", None)
        if images is None:
            raise ValueError("EvaQwen2VLImageProcessor: no images given")
        size = kwargs.pop("size", None) or {}
        if not isinstance(size, dict):
            size = {k: getattr(size, k, None) for k in ("shortest_edge", "longest_edge")}
        min_px = int(kwargs.pop("min_pixels", None) or size.get("shortest_edge") or self.min_pixels)
        max_px = int(kwargs.pop("max_pixels", None) or size.get("longest_edge") or self.max_pixels)
        mean = kwargs.pop("image_mean", None) or self.image_mean
        std = kwargs.pop("image_std", None) or self.image_std
        do_resize = kwargs.pop("do_resize", None)
        do_resize = True if do_resize is None else bool(do_resize)
        dtype = kwargs.pop("dtype", None) or self.dtype
        backend = kwargs.pop("backend", None) or self.backend
        device = kwargs.pop("device", None) or self.device
        self._check_fixed(kwargs)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt', 'np' or None")

        frames = [self._resize(img, min_px, max_px, do_resize) for img in self._flatten(images)]
        if not frames:
            raise ValueError("EvaQwen2VLImageProcessor: got an empty list of images")
        if device is not None:
            frames = [f.to(device) for f in frames]
        # consecutive same-size images go to the packer as one [T, H, W, 3] tensor
        groups: list[list[torch.Tensor]] = []
        for f in frames:
            if groups and groups[-1][0].shape == f.shape:
                groups[-1].append(f)
            else:
                groups.append([f])
        batches = [torch.stack(g) for g in groups]
        packed = pack_qwen25vl(batches, dtype=dtype, backend=backend, mean=mean, std=std)
        data: dict[str, Any] = {"pixel_values": packed.pixel_values, "image_grid_thw": packed.image_grid_thw}
        if return_tensors == "np":
            data = {k: v.cpu().numpy() for k, v in data.items()}
        return BatchFeature(data=data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able config (``dtype``/``device`` as strings)."""
        out = super().to_dict()
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        if self.device is not None:
            out["device"] = str(self.device)
        out["min_pixels"], out["max_pixels"] = self.min_pixels, self.max_pixels
        return out


class EvaQwen25VLProcessor(ProcessorMixin):
    """A Qwen2.5-VL processor of two parts, the tokenizer and :class:`EvaQwen2VLImageProcessor`,
    for trainers that need a ``ProcessorMixin`` (TRL's GRPO image path) on machines without
    torchvision (transformers' ``Qwen2_5_VLProcessor`` insists on a torchvision video processor).

    ``save_pretrained`` writes the tokenizer only: a trained checkpoint keeps the base model's
    ``preprocessor_config.json`` (copied by eva_fast's trainers), which vLLM and transformers read.

    Args:
        image_processor: an :class:`EvaQwen2VLImageProcessor`.
        tokenizer: the model's tokenizer.
        chat_template: the chat template (default the tokenizer's).
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any):
        super().__init__(image_processor, tokenizer, chat_template=chat_template or getattr(tokenizer, "chat_template", None))

    @property
    def image_token(self) -> str:
        return "<|image_pad|>"

    @property
    def image_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.image_token))

    def batch_decode(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer.decode(*args, **kwargs)

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer.save_pretrained(save_directory)
