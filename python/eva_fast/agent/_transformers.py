"""``transformers`` backend: a Qwen2.5-VL model in process (CPU or GPU), from a checkpoint folder or a
live model object (GRPO rollouts on the policy being trained).

Frames never leave tensors: the tool's uint8 frames go through :func:`eva_fast.vision.pack_qwen25vl`
straight into ``Qwen2_5_VLForConditionalGeneration.generate`` as ``pixel_values`` /
``image_grid_thw`` (no PIL, no files, no second resize).

Token ids (:class:`eva_fast.agent._render.ChatRenderer`, shared with the training collator): the
first prompt is the checkpoint's chat template rendered with one ``<|image_pad|>`` per frame,
expanded to that frame's token count (the ids transformers' ``Qwen2_5_VLProcessor`` produces,
checked in ``tests/agent/test_transformers_backend.py``). Every later turn *extends* the ids: the
model's generated ids stay as generated, and the tool turn that follows is rendered and appended —
the history is never re-rendered and re-tokenized. So the session's :meth:`token_trace` is exactly
what the model was conditioned on and produced (prompt ids, response ids, a mask that is 1 on
generated ids, and each generated id's sampling log-probability): what GRPO's loss needs.

Decoding follows the checkpoint's ``generation_config.json`` (as ``vllm serve`` does by default)
overridden by ``generation_kwargs``, at the request's ``temperature`` and ``max_new_tokens``:
``temperature == 0`` is greedy.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from eva_fast._logging import get_logger
from eva_fast.agent._backend import ModelBackend, Session, register_backend
from eva_fast.agent._render import (
    END_OF_TURN,
    IMAGE_PAD,
    ChatRenderer,
    expand_image_tokens,
    load_chat_template,
)
from eva_fast.agent._types import Generation, ImagePart, Message, TextPart, TokenTrace
from eva_fast.vision import PackedVisual, pack_qwen25vl

logger = get_logger("agent")

__all__ = [
    "END_OF_TURN",
    "IMAGE_PAD",
    "TransformersBackend",
    "expand_image_tokens",
    "load_chat_template",
    "template_messages",
]


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


def frame_runs(parts: Sequence[ImagePart]) -> list[torch.Tensor]:
    """Consecutive frames of one batch as one tensor slice each (uint8 ``[T_i, H, W, 3]``), in order."""
    chunks: list[torch.Tensor] = []
    run: list[ImagePart] = []
    for part in list(parts) + [None]:
        if run and (part is None or part.batch is not run[0].batch or part.index != run[-1].index + 1):
            chunks.append(run[0].batch.frames[run[0].index : run[-1].index + 1])
            run = []
        if part is not None:
            run.append(part)
    return chunks


class _LogprobRecorder:
    """A logits processor that records, for each generated token, ``log_softmax(scores / T)`` at that
    token, keeping one ``[B, V]`` row at a time (the token of step ``t`` is known at step ``t + 1``).

    transformers applies custom processors after its penalty processors and before temperature and
    top-k/top-p, so ``scores`` are the raw logits when no penalty is configured (GRPO rollouts).
    """

    def __init__(self, temperature: float) -> None:
        self.inv_t = 1.0 / (temperature if temperature > 0 else 1.0)
        self.prev: torch.Tensor | None = None
        self.out: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:
            self.out.append(self.prev.gather(-1, input_ids[:, -1:])[:, 0])
        self.prev = torch.log_softmax(scores.float() * self.inv_t, dim=-1)
        return scores

    def finish(self, last_token: torch.Tensor) -> list[float]:
        if self.prev is not None:
            self.out.append(self.prev.gather(-1, last_token.view(-1, 1))[:, 0])
            self.prev = None
        return torch.stack(self.out, 1)[0].tolist() if self.out else []


class _TransformersSession(Session):
    def __init__(self, backend: TransformersBackend) -> None:
        self._b = backend
        self._messages: list[Message] = []  # the conversation accounted for in _ids (up to the last prompt)
        self._ids: list[int] = []
        self._n_prompt = 0
        self._mask: list[int] = []
        self._logprobs: list[float] = []
        self._packs: list[tuple[Message, PackedVisual, list[torch.Tensor]]] = []
        self._last_text: str | None = None
        self._last_ended = True  # the last generated turn ended with an end-of-turn token

    # -- inputs ---------------------------------------------------------------------------------

    def _pack(self, message: Message) -> tuple[PackedVisual, list[torch.Tensor], float]:
        b = self._b
        t0 = time.perf_counter()
        chunks = [c.to(b.device, non_blocking=True) for c in frame_runs(message.images())]
        packed = pack_qwen25vl(chunks, dtype=b.dtype, backend=b.pack_backend)
        if b.device.type == "cuda":
            torch.cuda.synchronize(b.device)
        return packed, chunks, (time.perf_counter() - t0) * 1e3

    def _add_packs(self, messages: Sequence[Message]) -> tuple[list[int], float]:
        tokens: list[int] = []
        ms = 0.0
        for m in messages:
            if m.images():
                packed, chunks, t = self._pack(m)
                self._packs.append((m, packed, chunks))
                tokens.extend(packed.tokens_per_image)
                ms += t
        return tokens, ms

    def _extends_last_turn(self, messages: Sequence[Message]) -> bool:
        n = len(self._messages)
        return (
            bool(self._ids)
            and self._last_text is not None
            and len(messages) > n + 1
            and all(a is b for a, b in zip(messages[:n], self._messages))
            and messages[n].role == "assistant"
            and messages[n].content == self._last_text
        )

    def prepare(self, messages: Sequence[Message]) -> float:
        """Bring the session's ids up to ``messages`` + the assistant prefix; returns packing ms.

        The first call renders the whole conversation. A call that continues the conversation
        after this session's own last reply appends only the new messages (ids extended); any
        other history (e.g. turns scripted elsewhere) is rendered from scratch, and the token
        trace starts over from that prompt.
        """
        b = self._b
        if self._extends_last_turn(messages):
            n = len(self._messages)
            new = list(messages[n + 1 :])
            tokens, pack_ms = self._add_packs(new)
            bridge = [] if self._last_ended else [b.renderer.end_of_turn_id]
            bridge += b.renderer.continuation(template_messages(messages[: n + 1]), template_messages(new), tokens)
            self._ids += bridge
            self._mask += [0] * len(bridge)
            self._logprobs += [0.0] * len(bridge)
        else:
            if self._ids:
                logger.debug("transformers session: history not continued from its own reply; rendering it whole")
            self._packs = []
            tokens, pack_ms = self._add_packs(messages)
            rendered = b.renderer.render(template_messages(messages), tokens, add_generation_prompt=True)
            self._ids = list(rendered.input_ids)
            self._n_prompt = len(self._ids)
            self._mask, self._logprobs = [], []
        self._messages = list(messages)
        return pack_ms

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The current ids (+ frames) as ``generate``/``forward`` inputs on the model's device:
        ``input_ids`` int64 ``[1, L]``, ``attention_mask`` int64 ``[1, L]``, ``mm_token_type_ids``
        int32 ``[1, L]`` (1 on image pads) and, with images, ``pixel_values`` ``[P, 1176]`` (model
        dtype) and ``image_grid_thw`` int64 ``[T, 3]``."""
        b = self._b
        ids = torch.tensor(self._ids, dtype=torch.long)
        inputs: dict[str, torch.Tensor] = {
            "input_ids": ids[None].to(b.device),
            "attention_mask": torch.ones(1, ids.numel(), dtype=torch.long, device=b.device),
            "mm_token_type_ids": (ids == b.image_token_id).to(torch.int32)[None].to(b.device),
        }
        if self._packs:
            inputs["pixel_values"] = torch.cat([p.pixel_values for _, p, _ in self._packs])
            inputs["image_grid_thw"] = torch.cat([p.image_grid_thw for _, p, _ in self._packs])
        return inputs

    def build_inputs(self, messages: Sequence[Message]) -> tuple[dict[str, torch.Tensor], float]:
        """Model inputs for ``messages`` + the assistant prefix, and the packing time (ms).

        Returns:
            ``(model_inputs(), pack_ms)``; see :meth:`model_inputs`.
        """
        pack_ms = self.prepare(messages)
        return self.model_inputs(), pack_ms

    # -- generation -----------------------------------------------------------------------------

    def _generate_sync(self, messages: Sequence[Message], max_new_tokens: int, temperature: float) -> Generation:
        b = self._b
        with b.lock, torch.inference_mode():
            pack_ms = self.prepare(messages)
            inputs = self.model_inputs()
            prompt_len = inputs["input_ids"].shape[1]
            gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, **b.generation_kwargs}
            if temperature > 0:
                gen_kwargs.update(do_sample=True, temperature=float(temperature))
            else:
                gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            recorder = _LogprobRecorder(float(temperature))
            t0 = time.perf_counter()
            out = b.model.generate(**inputs, **gen_kwargs, logits_processor=[recorder])
            if b.device.type == "cuda":
                torch.cuda.synchronize(b.device)
            gen_ms = (time.perf_counter() - t0) * 1e3
        new = out[0, prompt_len:].tolist()
        logprobs = recorder.finish(out[:, -1]) if new else []
        # batch of one: generation ends at the first end token (no padding to strip)
        ended = bool(new) and new[-1] in b.eos_token_ids
        text = b.tokenizer.decode(new, skip_special_tokens=True)
        self._ids += new
        self._mask += [1] * len(new)
        self._logprobs += logprobs
        # the continuation assumes the turn ended with <|im_end|>; otherwise (length cut, or another
        # EOS id) the next prepare() closes it with one, as the chat template would
        self._last_text, self._last_ended = text, bool(new) and new[-1] == b.renderer.end_of_turn_id
        return Generation(
            text=text,
            prompt_tokens=prompt_len,
            completion_tokens=len(new),
            finish_reason="stop" if ended else "length",
            timings_ms={"generate": gen_ms, "pack": pack_ms},
            completion_token_ids=new,
            completion_logprobs=logprobs,
        )

    async def generate(self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float) -> Generation:
        return await asyncio.to_thread(self._generate_sync, list(messages), max_new_tokens, temperature)

    def token_trace(self) -> TokenTrace | None:
        if not self._ids:
            return None
        n = self._n_prompt
        frames = [c for _, _, chunks in self._packs for c in chunks]
        tokens = [t for _, p, _ in self._packs for t in p.tokens_per_image]
        return TokenTrace(
            prompt_ids=self._ids[:n],
            response_ids=self._ids[n:],
            response_mask=list(self._mask),
            response_logprobs=list(self._logprobs),
            frames=frames,
            tokens_per_image=tokens,
        )


@register_backend("transformers")
class TransformersBackend(ModelBackend):
    """A Qwen2.5-VL model run with transformers: a checkpoint folder (e.g. the released
    ``WRHC/EfficientVideoAgent`` downloaded to a folder), or a live model object (``model=``).

    Args:
        model_path: checkpoint folder (``config.json``, weights, tokenizer, chat template); not
            needed with ``model=`` and ``tokenizer=``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (ignored with ``model=``: the model's device).
        dtype: model and ``pixel_values`` dtype; None: bfloat16 on CUDA, float32 on CPU (with
            ``model=``: the model's dtype).
        attn_implementation: passed to ``from_pretrained`` (None: transformers' default, ``"sdpa"``).
        pack_backend: ``pack_qwen25vl`` backend (None: Triton on CUDA when available, else torch).
        chat_template: override the checkpoint's chat template (Jinja text).
        model: a loaded ``Qwen2_5_VLForConditionalGeneration`` (e.g. the policy being trained);
            used as is (its train/eval mode and device are not changed).
        tokenizer: the model's tokenizer (required with ``model=``).
        generation_kwargs: ``generate`` settings that override the checkpoint's generation config
            (e.g. ``{"top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}`` to sample from the plain
            tempered distribution, as GRPO rollouts do).

    Raises:
        ImportError: transformers missing (``pip install 'transformers>=4.50'``).
        FileNotFoundError: ``model_path`` is not a folder.
        ValueError: bad device, no chat template, or ``model=`` without ``tokenizer=``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "cpu",
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        pack_backend: str | None = None,
        chat_template: str | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
        except ImportError as e:  # pragma: no cover - transformers is a dependency of the tests
            raise ImportError("the transformers backend needs transformers: pip install 'transformers>=4.50'") from e
        if model is not None:
            if tokenizer is None:
                raise ValueError("TransformersBackend(model=...) also needs tokenizer=")
            self.model = model
            self.device = next(model.parameters()).device
            self.dtype = next(model.parameters()).dtype if dtype is None else (
                getattr(torch, dtype) if isinstance(dtype, str) else dtype)
            self.tokenizer = tokenizer
            template = chat_template or getattr(tokenizer, "chat_template", None)
            if not template and model_path is not None:
                template = load_chat_template(model_path, tokenizer)
            if not template:
                raise ValueError("TransformersBackend(model=...): the tokenizer has no chat_template; pass chat_template=")
            self.chat_template = template
            self.model_name = str(model_path or getattr(model.config, "_name_or_path", "") or "model")
        else:
            if model_path is None:
                raise ValueError("TransformersBackend needs model_path (a checkpoint folder) or model= and tokenizer=")
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
            self.model_name = str(path)
        self.renderer = ChatRenderer(self.tokenizer, self.chat_template)
        self.image_token_id = int(self.model.config.image_token_id)
        if self.image_token_id != self.renderer.image_token_id:
            raise ValueError(
                f"model image_token_id {self.image_token_id} differs from the tokenizer's {IMAGE_PAD} "
                f"{self.renderer.image_token_id}"
            )
        eos = self.model.generation_config.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.eos_token_ids.add(self.renderer.end_of_turn_id)
        self.generation_kwargs = dict(generation_kwargs or {})
        self.pack_backend = pack_backend
        self.lock = threading.Lock()  # one generate at a time: the model keeps per-call state (rope_deltas)

    def session(self) -> Session:
        return _TransformersSession(self)
