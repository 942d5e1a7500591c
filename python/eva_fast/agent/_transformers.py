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
from eva_fast.vision import pack_qwen25vl, warm_up_pack

logger = get_logger("agent")

__all__ = [
    "END_OF_TURN",
    "TokenSession",
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


class TokenSession(Session):
    """A session that keeps the episode as token ids (base of the ``transformers`` and GRPO vLLM
    sessions): the first prompt is rendered whole, every later turn appends the generated ids and
    the rendered tool turn (:meth:`ChatRenderer.continuation`), frames stay tensors.

    Subclasses implement :meth:`generate` with :meth:`prepare` (bring the ids up to the
    conversation) and :meth:`record_generation` (append what the model produced).

    Args:
        renderer: the chat renderer.
        device: where frames are moved for packing (``"cpu"`` or a CUDA device).
        pack_dtype: ``pixel_values`` dtype of :meth:`packed_inputs`.
        pack_backend: ``pack_qwen25vl`` backend (None: auto).
    """

    def __init__(self, renderer: ChatRenderer, device: Any = "cpu", pack_dtype: torch.dtype = torch.float32,
                 pack_backend: str | None = None) -> None:
        self.renderer = renderer
        self.device = torch.device(device)
        self.pack_dtype = pack_dtype
        self.pack_backend = pack_backend
        self._messages: list[Message] = []  # the conversation accounted for in _ids (up to the last prompt)
        self._ids: list[int] = []
        self._n_prompt = 0
        self._mask: list[int] = []
        self._logprobs: list[float] = []
        # per message with images: (message, frame runs uint8 [T_i, H, W, 3], tokens per image, packed or None)
        self._visual: list[list[Any]] = []
        self._last_text: str | None = None
        self._last_ended = True  # the last generated turn ended with <|im_end|>

    # -- ids ------------------------------------------------------------------------------------

    def _add_visual(self, messages: Sequence[Message]) -> list[int]:
        tokens: list[int] = []
        for m in messages:
            parts = m.images()
            if parts:
                runs = frame_runs(parts)
                toks = [p.num_tokens for p in parts]
                self._visual.append([m, runs, toks, None])
                tokens.extend(toks)
        return tokens

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

    def prepare(self, messages: Sequence[Message]) -> None:
        """Bring the session's ids up to ``messages`` + the assistant prefix.

        The first call renders the whole conversation. A call that continues the conversation
        after this session's own last reply appends only the new messages (ids extended); any
        other history (e.g. turns scripted elsewhere) is rendered from scratch, and the token
        trace starts over from that prompt.
        """
        r = self.renderer
        if self._extends_last_turn(messages):
            n = len(self._messages)
            new = list(messages[n + 1 :])
            tokens = self._add_visual(new)
            bridge = [] if self._last_ended else [r.end_of_turn_id]
            bridge += r.continuation(template_messages(messages[: n + 1]), template_messages(new), tokens)
            self._ids += bridge
            self._mask += [0] * len(bridge)
            self._logprobs += [0.0] * len(bridge)
        else:
            if self._ids:
                logger.debug("token session: history not continued from its own reply; rendering it whole")
            self._visual = []
            tokens = self._add_visual(messages)
            rendered = r.render(template_messages(messages), tokens, add_generation_prompt=True)
            self._ids = list(rendered.input_ids)
            self._n_prompt = len(self._ids)
            self._mask, self._logprobs = [], []
        self._messages = list(messages)

    def record_generation(self, new_ids: Sequence[int], logprobs: Sequence[float], text: str) -> None:
        """Append one generated turn (its ids as generated, their sampling log-probabilities)."""
        if len(logprobs) != len(new_ids):
            raise ValueError(f"{len(new_ids)} generated ids but {len(logprobs)} logprobs")
        self._ids += list(new_ids)
        self._mask += [1] * len(new_ids)
        self._logprobs += [float(x) for x in logprobs]
        # the continuation assumes the turn ended with <|im_end|>; otherwise (length cut, or another
        # EOS id) the next prepare() closes it with one, as the chat template would
        self._last_text = text
        self._last_ended = bool(new_ids) and new_ids[-1] == self.renderer.end_of_turn_id

    @property
    def ids(self) -> list[int]:
        """The whole sequence so far (prompt + response), image pads expanded."""
        return self._ids

    def images(self) -> list[torch.Tensor]:
        """Every image so far, uint8 ``[H, W, 3]``, in the order of the image-pad runs."""
        return [f for _, runs, _, _ in self._visual for run in runs for f in run]

    # -- frames as model inputs -----------------------------------------------------------------

    def pack(self) -> float:
        """Pack the frames not packed yet (:func:`pack_qwen25vl`); returns the milliseconds spent."""
        t0 = time.perf_counter()
        did = False
        for v in self._visual:
            if v[3] is None:
                runs = [c.to(self.device, non_blocking=True) for c in v[1]]
                v[1] = runs
                v[3] = pack_qwen25vl(runs, dtype=self.pack_dtype, backend=self.pack_backend)
                did = True
        if did and self.device.type == "cuda":
            # this stream's work only: a device-wide synchronize also waited for other episodes'
            # decoder kernels and charged them to "pack"
            torch.cuda.current_stream(self.device).synchronize()
        return (time.perf_counter() - t0) * 1e3 if did else 0.0

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The current ids (+ frames) as ``generate``/``forward`` inputs on the session's device:
        ``input_ids`` int64 ``[1, L]``, ``attention_mask`` int64 ``[1, L]``, ``mm_token_type_ids``
        int32 ``[1, L]`` (1 on image pads) and, with images, ``pixel_values`` ``[P, 1176]``
        (``pack_dtype``) and ``image_grid_thw`` int64 ``[T, 3]``. Call :meth:`pack` first."""
        ids = torch.tensor(self._ids, dtype=torch.long)
        inputs: dict[str, torch.Tensor] = {
            "input_ids": ids[None].to(self.device),
            "attention_mask": torch.ones(1, ids.numel(), dtype=torch.long, device=self.device),
            "mm_token_type_ids": (ids == self.renderer.image_token_id).to(torch.int32)[None].to(self.device),
        }
        if self._visual:
            inputs["pixel_values"] = torch.cat([v[3].pixel_values for v in self._visual])
            inputs["image_grid_thw"] = torch.cat([v[3].image_grid_thw for v in self._visual])
        return inputs

    def build_inputs(self, messages: Sequence[Message]) -> tuple[dict[str, torch.Tensor], float]:
        """Model inputs for ``messages`` + the assistant prefix, and the packing time (ms)."""
        self.prepare(messages)
        pack_ms = self.pack()
        return self.model_inputs(), pack_ms

    def token_trace(self) -> TokenTrace | None:
        if not self._ids:
            return None
        n = self._n_prompt
        return TokenTrace(
            prompt_ids=self._ids[:n],
            response_ids=self._ids[n:],
            response_mask=list(self._mask),
            response_logprobs=list(self._logprobs),
            frames=[run for _, runs, _, _ in self._visual for run in runs],
            tokens_per_image=[t for _, _, toks, _ in self._visual for t in toks],
        )


class _TransformersSession(TokenSession):
    def __init__(self, backend: TransformersBackend) -> None:
        super().__init__(backend.renderer, backend.device, backend.dtype, backend.pack_backend)
        self._b = backend

    # -- generation -----------------------------------------------------------------------------

    def _generate_sync(self, messages: Sequence[Message], max_new_tokens: int, temperature: float) -> Generation:
        b = self._b
        with b.lock, torch.inference_mode():
            inputs, pack_ms = self.build_inputs(messages)
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
        self.record_generation(new, logprobs, text)
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
            from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration  # optional heavy dependency
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
        #: milliseconds the packer's one-time compile took at construction (0.0 on CPU): it happens
        #: here, not inside the first episode's timed ``pack`` stage
        self.pack_warmup_ms = warm_up_pack(self.device, self.dtype, pack_backend)
        self.lock = threading.Lock()  # one generate at a time: the model keeps per-call state (rope_deltas)

    def session(self) -> Session:
        return _TransformersSession(self)
