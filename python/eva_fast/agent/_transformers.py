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

Batching: outside a round of episodes each turn is one ``generate`` of batch 1 (``eva-fast ask``,
eval). Inside a round (``expect`` ... ``drain``: GRPO rollouts through
:class:`eva_fast.train.RolloutEngine`, the CSV judge's prompts of a step) the turns of all live
episodes are served turn-synchronously, one left-padded batched ``generate`` per tick
(:meth:`TransformersBackend.generate_turns`, :mod:`eva_fast.agent._ticks`), each row with its own
frames; a batch-1 turn is the same function with one row. The KV cache is not kept across turns:
every turn prefills the episode's whole sequence (vision tower included), whose share of the
generate time the ticks record (``TickStats.prefill_ms``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from eva_fast.agent._ticks import SyncFn, TickStats, TurnBatcher, TurnRequest
from eva_fast.agent._types import Generation, ImagePart, Message, TextPart, TokenTrace
from eva_fast.vision import pack_qwen25vl, warm_up_pack

logger = get_logger("agent")
_SESSION_SEQ = itertools.count()

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
    token, keeping one ``[B, V]`` row block at a time (the token of step ``t`` is known at step
    ``t + 1``), and the time of the first call (the prefill: prompt and vision tower).

    transformers applies custom processors after its penalty processors and before temperature and
    top-k/top-p, so ``scores`` are the raw logits when no penalty is configured (GRPO rollouts).
    """

    def __init__(self, temperature: float, device: torch.device) -> None:
        self.inv_t = 1.0 / (temperature if temperature > 0 else 1.0)
        self.device = device
        self.prev: torch.Tensor | None = None
        self.out: list[torch.Tensor] = []
        self.t0 = time.perf_counter()
        self.prefill_ms = 0.0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:
            self.out.append(self.prev.gather(-1, input_ids[:, -1:])[:, 0])
        else:
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
            self.prefill_ms = (time.perf_counter() - self.t0) * 1e3
        self.prev = torch.log_softmax(scores.float() * self.inv_t, dim=-1)
        return scores

    def finish(self, last_token: torch.Tensor) -> torch.Tensor:
        """float32 ``[B, steps]``: each row's logprob of the token generated at each step."""
        if self.prev is not None:
            self.out.append(self.prev.gather(-1, last_token.view(-1, 1))[:, 0])
            self.prev = None
        if not self.out:
            return torch.zeros(last_token.numel(), 0)
        return torch.stack(self.out, 1).cpu()


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
        #: creation number: the session's row order in a batched tick (TurnRequest.order)
        self.seq = next(_SESSION_SEQ)
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


@dataclass
class TurnResult:
    """One model turn as a batched call produced it (what batch-1 generation records).

    Attributes:
        token_ids: the generated ids, up to and including the end-of-turn token (or cut at the
            turn's ``max_new_tokens``).
        logprobs: each id's sampling log-probability (``log_softmax(logits / T)``; T = 1 when greedy).
        prompt_tokens: the episode's prompt length for this turn (its own ids, no padding).
        generate_ms: wall time of the call that served it, milliseconds.
        pack_ms: time spent packing this episode's new frames before the call, milliseconds.
    """

    token_ids: list[int]
    logprobs: list[float]
    prompt_tokens: int
    generate_ms: float
    pack_ms: float = 0.0


class _TransformersSession(TokenSession):
    def __init__(self, backend: TransformersBackend) -> None:
        super().__init__(backend.renderer, backend.device, backend.dtype, backend.pack_backend)
        self._b = backend

    # -- generation -----------------------------------------------------------------------------

    def _generate_alone(self, messages: Sequence[Message], max_new_tokens: int, temperature: float) -> TurnResult:
        b = self._b
        with b.lock:
            self.prepare(messages)
            (result,), _ = b.generate_turns([TurnRequest(self, max_new_tokens, temperature)])
        return result

    async def generate(self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float) -> Generation:
        b = self._b
        if b.batcher.active:  # a round of episodes: this turn joins the next tick (which packs its frames)
            await asyncio.to_thread(self.prepare, list(messages))
            result = await b.batcher.submit(TurnRequest(self, max_new_tokens, temperature, self.seq))
        else:
            result = await asyncio.to_thread(self._generate_alone, list(messages), max_new_tokens, temperature)
        new = result.token_ids
        text = b.tokenizer.decode(new, skip_special_tokens=True)
        self.record_generation(new, result.logprobs, text)
        ended = bool(new) and new[-1] in b.eos_token_ids
        return Generation(
            text=text,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=len(new),
            finish_reason="stop" if ended else "length",
            timings_ms={"generate": result.generate_ms, "pack": result.pack_ms},
            completion_token_ids=list(new),
            completion_logprobs=list(result.logprobs),
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
        batch_turns: inside a round of episodes (:meth:`expect` ... :meth:`drain`, what
            :class:`eva_fast.train.RolloutEngine` and the CSV judge do), serve the turns of all live
            episodes with one batched ``generate`` per tick (:mod:`eva_fast.agent._ticks`); False:
            one ``generate`` per turn (batch 1), as outside a round.
        sync: element-wise max of a list of ints over all processes (multi-process training: the
            processes then make the same number of ``generate`` calls, with the vision tower run on
            every process whenever it runs on one); None for one process.
        cache_implementation: ``generate``'s KV cache (None: transformers' default, the dynamic
            cache; ``"static"``: preallocated, the prerequisite of a compiled decoding step).
        compile_decoding: with ``cache_implementation="static"`` on CUDA, let transformers compile
            the decoding step (``torch.compile``); False keeps it eager (``disable_compile``).

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
        batch_turns: bool = True,
        sync: SyncFn | None = None,
        cache_implementation: str | None = None,
        compile_decoding: bool = False,
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
        if cache_implementation not in (None, "dynamic", "static"):
            raise ValueError(f"cache_implementation must be None, 'dynamic' or 'static', got {cache_implementation!r}")
        if compile_decoding and cache_implementation != "static":
            raise ValueError("compile_decoding needs cache_implementation='static' (transformers compiles only then)")
        self.cache_implementation = cache_implementation
        self.compile_decoding = compile_decoding
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else min(self.eos_token_ids)
        self.batch_turns = batch_turns
        self.batcher = TurnBatcher(self._run_tick, sync=sync, flags=self._tick_flags)
        self._dummy_image: Any = None
        self.pack_backend = pack_backend
        #: milliseconds the packer's one-time compile took at construction (0.0 on CPU): it happens
        #: here, not inside the first episode's timed ``pack`` stage
        self.pack_warmup_ms = warm_up_pack(self.device, self.dtype, pack_backend)
        self.lock = threading.Lock()  # one generate at a time: the model keeps per-call state (rope_deltas)

    def session(self) -> Session:
        return _TransformersSession(self)

    # -- a round of episodes (turn-synchronous batching, eva_fast.agent._ticks) ---------------------

    def expect(self, episodes: int, max_concurrency: int | None = None) -> None:
        """Open a round of ``episodes`` episodes (no-op with ``batch_turns=False``)."""
        if self.batch_turns:
            self.batcher.expect(episodes, max_concurrency)

    def episode_done(self) -> None:
        """One episode of the round ended."""
        if self.batch_turns:
            self.batcher.episode_done()

    async def drain(self) -> None:
        """Join ticks until every process's episodes are done, then close the round."""
        if self.batch_turns:
            await self.batcher.drain()

    @property
    def tick_stats(self) -> list[TickStats]:
        """The last round's ticks (empty with ``batch_turns=False``)."""
        return list(self.batcher.ticks) if self.batch_turns else []

    def _tick_flags(self, requests: list[TurnRequest]) -> list[int]:
        # what every process's call of this tick must agree on: whether any batch carries images
        # (then the vision tower runs everywhere: under FSDP it gathers parameters), the longest turn
        return [int(any(r.session._visual for r in requests)), max((r.max_new_tokens for r in requests), default=0)]

    def _run_tick(self, requests: list[TurnRequest], agreed: list[int]) -> tuple[list[TurnResult], TickStats]:
        with self.lock:
            return self.generate_turns(requests, agreed)

    def generation_kwargs_for(self, max_new_tokens: int, temperature: float) -> dict[str, Any]:
        """``generate`` settings of a turn: the checkpoint's generation config overridden by
        ``generation_kwargs``, the turn's limit, greedy at ``temperature == 0`` else sampling at
        it, every end-of-turn id as EOS, the KV-cache options."""
        kw: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), **self.generation_kwargs}
        kw.setdefault("eos_token_id", sorted(self.eos_token_ids))
        kw.setdefault("pad_token_id", self.pad_token_id)
        if temperature > 0:
            kw.update(do_sample=True, temperature=float(temperature))
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None, min_p=None)
        if self.cache_implementation is not None:
            kw["cache_implementation"] = self.cache_implementation
            kw["disable_compile"] = not self.compile_decoding
        return kw

    def _dummy_row(self, with_image: bool) -> tuple[list[int], Any]:
        """A one-token row for a call this process must make without a turn of its own: an image
        pad with one black 28x28 frame (one merged token) when the vision tower must run, else an
        end-of-turn id."""
        if not with_image:
            return [self.renderer.end_of_turn_id], None
        if self._dummy_image is None:
            frame = torch.zeros(1, 28, 28, 3, dtype=torch.uint8, device=self.device)
            self._dummy_image = pack_qwen25vl(frame, dtype=self.dtype, backend=self.pack_backend)
        return [self.image_token_id], self._dummy_image

    def generate_turns(self, requests: Sequence[TurnRequest], agreed: Sequence[int] | None = None
                       ) -> tuple[list[TurnResult], TickStats]:
        """Generate the next turn of every request's session in one ``generate`` call.

        Rows are the sessions' token ids (their new frames packed first, one session after another:
        :meth:`TokenSession.pack`), left-padded to the longest with ``pad_token_id`` (attention mask
        0 there; M-RoPE positions skip the pads, as transformers' ``get_rope_index`` does with the
        mask), ``pixel_values`` / ``image_grid_thw`` the rows' frames in row order. Each row keeps
        its ids up to its first end-of-turn id or its own ``max_new_tokens``, and the sampling
        logprob of each (:class:`_LogprobRecorder`): what a call with that row alone records (equal
        token for token at temperature 0 up to float rounding of the padded matmuls, tested on CPU).

        Args:
            requests: the turns (possibly none: a call that only joins the other processes').
            agreed: ``[live, any_images, max_new_tokens]`` agreed over processes (see
                :meth:`_tick_flags`); None: this process alone.

        Returns:
            One :class:`TurnResult` per request, in order, and the call's :class:`TickStats`.

        Raises:
            ValueError: the requests' temperatures differ.
        """
        temps = {float(r.temperature) for r in requests}
        if len(temps) > 1:
            raise ValueError(f"one batched call samples at one temperature; the turns ask for {sorted(temps)}")
        temperature = temps.pop() if temps else 0.0
        # the rows' new frames, one episode after another (each timed on its own, not contending)
        pack_ms = [r.session.pack() for r in requests]
        local_images, local_max = self._tick_flags(list(requests))
        any_images, max_new = (local_images, local_max) if agreed is None else (agreed[1], agreed[2])
        rows: list[list[int]] = [list(r.session.ids) for r in requests]
        packed: list[Any] = [v[3] for r in requests for v in r.session._visual]
        if not requests or (any_images and not local_images):
            ids, image = self._dummy_row(bool(any_images))
            rows.append(ids)
            if image is not None:
                packed.append(image)
        max_new = max(1, int(max_new))
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            attention[i, width - len(r):] = 1
        inputs: dict[str, torch.Tensor] = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention.to(self.device),
            "mm_token_type_ids": ((input_ids == self.image_token_id) & (attention == 1)).to(torch.int32).to(self.device),
        }
        if packed:
            inputs["pixel_values"] = torch.cat([p.pixel_values for p in packed])
            inputs["image_grid_thw"] = torch.cat([p.image_grid_thw for p in packed])
        recorder = _LogprobRecorder(temperature, self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.generation_kwargs_for(max_new, temperature),
                                      logits_processor=[recorder])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        gen_ms = (time.perf_counter() - recorder.t0) * 1e3
        new = out[:, width:].cpu()
        logprobs = recorder.finish(out[:, -1]) if new.shape[1] else torch.zeros(len(rows), 0)
        results: list[TurnResult] = []
        for i, req in enumerate(requests):
            row = new[i].tolist()
            keep = min(int(req.max_new_tokens), len(row))
            for k in range(keep):
                if row[k] in self.eos_token_ids:
                    keep = k + 1
                    break
            results.append(TurnResult(row[:keep], logprobs[i, :keep].tolist(), len(rows[i]), gen_ms, pack_ms[i]))
        stats = TickStats(
            episodes=len(requests), rows=len(rows), prompt_tokens=sum(len(r) for r in rows[: len(requests)]),
            prompt_slots=len(rows) * width, generated_tokens=sum(len(r.token_ids) for r in results),
            decode_slots=len(rows) * int(new.shape[1]), generate_ms=gen_ms, prefill_ms=recorder.prefill_ms,
        )
        return results, stats
