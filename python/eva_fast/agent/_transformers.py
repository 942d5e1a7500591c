"""``transformers`` backend: a local Qwen2.5-VL checkpoint, in process (CPU or GPU).

Frames never leave tensors: the tool's uint8 frames go through :func:`eva_fast.vision.pack_qwen25vl`
straight into ``Qwen2_5_VLForConditionalGeneration.generate`` as ``pixel_values`` /
``image_grid_thw`` (no PIL, no files, no second resize). The prompt is the checkpoint's own chat
template with one ``<|image_pad|>`` per frame, expanded to that frame's token count, i.e. the
ids transformers' ``Qwen2_5_VLProcessor`` produces (checked in ``tests/agent/test_transformers_backend.py``).

Decoding follows the checkpoint's ``generation_config.json`` (as ``vllm serve`` does by default),
with the request's ``temperature`` and ``max_new_tokens``: ``temperature == 0`` is greedy.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from eva_fast._logging import get_logger
from eva_fast.agent._backend import ModelBackend, Session, register_backend
from eva_fast.agent._types import Generation, ImagePart, Message, TextPart
from eva_fast.vision import PackedVisual, pack_qwen25vl

logger = get_logger("agent")

IMAGE_PAD = "<|image_pad|>"


def load_chat_template(model_path: str | os.PathLike, tokenizer: Any = None) -> str:
    """The checkpoint's chat template: ``chat_template.jinja``, else ``chat_template.json``, else the
    tokenizer's ``chat_template``.

    Raises:
        ValueError: none of them exists.
    """
    path = Path(model_path)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        tmpl = json.loads((path / "chat_template.json").read_text()).get("chat_template")
        if isinstance(tmpl, str) and tmpl:
            return tmpl
    tmpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tmpl, str) and tmpl:
        return tmpl
    raise ValueError(f"no chat template in {path} (chat_template.jinja, chat_template.json or tokenizer_config.json)")


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as chat-template dicts: string content stays a string; parts become
    ``{"type": "text", "text": ...}`` and ``{"type": "image"}``."""
    out = []
    for m in messages:
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
        else:
            parts = []
            for p in m.content:
                if isinstance(p, TextPart):
                    parts.append({"type": "text", "text": p.text})
                else:
                    parts.append({"type": "image"})
            out.append({"role": m.role, "content": parts})
    return out


def expand_image_tokens(ids: torch.Tensor, image_token_id: int, tokens_per_image: Sequence[int]) -> torch.Tensor:
    """Repeat the i-th ``image_token_id`` of ``ids`` ``tokens_per_image[i]`` times.

    Args:
        ids: int64 ``[L]`` token ids with exactly one image token per image.
        image_token_id: id of ``<|image_pad|>``.
        tokens_per_image: LLM tokens of each image, in order.

    Returns:
        int64 ``[L - n + sum(tokens_per_image)]``.

    Raises:
        ValueError: the number of image tokens in ``ids`` differs from ``len(tokens_per_image)``
            (e.g. a reply that spelled out ``<|image_pad|>`` as text).
    """
    is_img = ids == image_token_id
    n = int(is_img.sum())
    if n != len(tokens_per_image):
        raise ValueError(f"prompt has {n} {IMAGE_PAD} tokens for {len(tokens_per_image)} images")
    if n == 0:
        return ids
    counts = torch.ones_like(ids)
    counts[is_img] = torch.tensor(list(tokens_per_image), dtype=ids.dtype)
    return ids.repeat_interleave(counts)


class _TransformersSession(Session):
    def __init__(self, backend: TransformersBackend) -> None:
        self._b = backend
        # tool message -> its packed frames (each tool turn is packed once per trajectory)
        self._packed: dict[int, tuple[Message, PackedVisual]] = {}

    def _pack(self, message: Message) -> tuple[PackedVisual, float]:
        hit = self._packed.get(id(message))
        if hit is not None and hit[0] is message:
            return hit[1], 0.0
        b = self._b
        t0 = time.perf_counter()
        # consecutive frames of one batch are sliced together
        chunks: list[torch.Tensor] = []
        run: list[ImagePart] = []
        for part in message.images() + [None]:
            if run and (part is None or part.batch is not run[0].batch or part.index != run[-1].index + 1):
                chunks.append(run[0].batch.frames[run[0].index : run[-1].index + 1])
                run = []
            if part is not None:
                run.append(part)
        chunks = [c.to(b.device, non_blocking=True) for c in chunks]
        packed = pack_qwen25vl(chunks, dtype=b.dtype, backend=b.pack_backend)
        if b.device.type == "cuda":
            torch.cuda.synchronize(b.device)
        self._packed[id(message)] = (message, packed)
        return packed, (time.perf_counter() - t0) * 1e3

    def build_inputs(self, messages: Sequence[Message]) -> tuple[dict[str, torch.Tensor], float]:
        """Model inputs for ``messages`` + the assistant prefix, and the packing time (ms).

        Returns:
            ``({"input_ids": int64 [1, L], "attention_mask": int64 [1, L], "mm_token_type_ids":
            int32 [1, L], and when there are images "pixel_values": [P, 1176] (model dtype),
            "image_grid_thw": int64 [T, 3]}, pack_ms)``, all on the model's device.
        """
        b = self._b
        text = b.tokenizer.apply_chat_template(
            template_messages(messages), chat_template=b.chat_template, tokenize=False, add_generation_prompt=True
        )
        ids = torch.tensor(b.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        packs, pack_ms = [], 0.0
        for m in messages:
            if m.images():
                p, ms = self._pack(m)
                packs.append(p)
                pack_ms += ms
        tokens = [t for p in packs for t in p.tokens_per_image]
        ids = expand_image_tokens(ids, b.image_token_id, tokens)
        inputs: dict[str, torch.Tensor] = {
            "input_ids": ids[None].to(b.device),
            "attention_mask": torch.ones(1, ids.numel(), dtype=torch.long, device=b.device),
            "mm_token_type_ids": (ids == b.image_token_id).to(torch.int32)[None].to(b.device),
        }
        if packs:
            inputs["pixel_values"] = torch.cat([p.pixel_values for p in packs])
            inputs["image_grid_thw"] = torch.cat([p.image_grid_thw for p in packs])
        return inputs, pack_ms

    def _generate_sync(self, messages: Sequence[Message], max_new_tokens: int, temperature: float) -> Generation:
        b = self._b
        with b.lock, torch.inference_mode():
            inputs, pack_ms = self.build_inputs(messages)
            prompt_len = inputs["input_ids"].shape[1]
            gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
            if temperature > 0:
                gen_kwargs.update(do_sample=True, temperature=float(temperature))
            else:
                gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            t0 = time.perf_counter()
            out = b.model.generate(**inputs, **gen_kwargs)
            if b.device.type == "cuda":
                torch.cuda.synchronize(b.device)
            gen_ms = (time.perf_counter() - t0) * 1e3
        new = out[0, prompt_len:].tolist()
        # batch of one: generation ends at the first end token (no padding to strip)
        finish = "stop" if new and new[-1] in b.eos_token_ids else "length"
        text = b.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(
            text=text,
            prompt_tokens=prompt_len,
            completion_tokens=len(new),
            finish_reason=finish,
            timings_ms={"generate": gen_ms, "pack": pack_ms},
            completion_token_ids=new,
        )

    async def generate(self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float) -> Generation:
        return await asyncio.to_thread(self._generate_sync, list(messages), max_new_tokens, temperature)


@register_backend("transformers")
class TransformersBackend(ModelBackend):
    """A local Qwen2.5-VL checkpoint (e.g. the released ``WRHC/EfficientVideoAgent`` downloaded to a
    folder) run with transformers.

    Args:
        model_path: checkpoint folder (``config.json``, weights, tokenizer, chat template).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: model and ``pixel_values`` dtype; None: bfloat16 on CUDA, float32 on CPU.
        attn_implementation: passed to ``from_pretrained`` (None: transformers' default, ``"sdpa"``).
        pack_backend: ``pack_qwen25vl`` backend (None: Triton on CUDA when available, else torch).
        chat_template: override the checkpoint's chat template (Jinja text).

    Raises:
        ImportError: transformers missing (``pip install 'transformers>=4.50'``).
        FileNotFoundError: ``model_path`` is not a folder.
        ValueError: bad device, or no chat template.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str = "cpu",
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        pack_backend: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        try:
            from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
        except ImportError as e:  # pragma: no cover - transformers is a dependency of the tests
            raise ImportError("the transformers backend needs transformers: pip install 'transformers>=4.50'") from e
        path = Path(model_path)
        if not path.is_dir():
            raise FileNotFoundError(f"model_path {str(path)!r} is not a checkpoint folder")
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        kw: dict[str, Any] = {"dtype": self.dtype}
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, **kw).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.chat_template = chat_template or load_chat_template(path, self.tokenizer)
        self.image_token_id = int(self.model.config.image_token_id)
        eos = self.model.generation_config.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.pack_backend = pack_backend
        self.model_name = str(path)
        self.lock = threading.Lock()  # one generate at a time: the model keeps per-call state (rope_deltas)

    def session(self) -> Session:
        return _TransformersSession(self)
