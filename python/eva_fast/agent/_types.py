"""Typed values of the agent loop: chat messages with frames, model generations, the Trajectory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from eva_fast.video import FrameBatch

# ---------------------------------------------------------------------------------------------
# chat messages handed to a backend
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextPart:
    """A text content part."""

    text: str


@dataclass(frozen=True, eq=False)
class ImagePart:
    """One frame of a tool call as an image content part.

    Attributes:
        batch: the tool call's frames (uint8 ``[T, H, W, 3]``, H and W multiples of 28 that already
            satisfy Qwen2.5-VL's smart_resize).
        index: which frame of the batch, in ``[0, T)``.
    """

    batch: FrameBatch
    index: int

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` pixels."""
        return self.batch.size

    @property
    def num_tokens(self) -> int:
        """LLM tokens of this frame, ``(H/28) * (W/28)``."""
        return self.batch.tokens_per_frame


@dataclass(frozen=True, eq=False)
class Message:
    """One chat message. ``content`` is a string, or a tuple of parts (tool turns)."""

    role: str
    content: str | tuple[TextPart | ImagePart, ...]

    def images(self) -> list[ImagePart]:
        """Image parts in order (empty for string content)."""
        if isinstance(self.content, str):
            return []
        return [p for p in self.content if isinstance(p, ImagePart)]


@dataclass
class Generation:
    """What a backend returns for one model turn.

    Attributes:
        text: the reply (special tokens removed, as vLLM returns it).
        prompt_tokens: tokens of the prompt (text + image tokens).
        completion_tokens: tokens generated.
        finish_reason: ``"stop"`` (end of turn) or ``"length"`` (hit ``max_new_tokens``), or what
            the server said.
        timings_ms: backend work, milliseconds: ``generate`` (model time) and, where the backend
            does it, ``pack`` (frames -> pixel_values) or ``encode`` (CPU time of turning the frames
            this request sends for the first time into images).
        completion_token_ids: generated token ids when the backend knows them (transformers).
        cached_prompt_tokens: prompt tokens served from a reused KV cache (0 when none).
        completion_logprobs: per generated token, its log-probability under the sampling
            distribution (``log_softmax(logits / T)``, ``T`` the temperature, 1 when greedy), when
            the backend knows it (transformers).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    timings_ms: dict[str, float] = field(default_factory=dict)
    completion_token_ids: list[int] | None = None
    cached_prompt_tokens: int = 0
    completion_logprobs: list[float] | None = None


@dataclass
class TokenTrace:
    """A whole episode as the model saw it, token by token (what RL needs; verl's ``AgentLoopOutput``).

    Built by backends that work on token ids (``transformers``): the prompt is rendered once, then
    every turn appends the model's generated ids and the rendered tool turn, so
    ``prompt_ids + response_ids`` is exactly the sequence the model was conditioned on and produced.

    Attributes:
        prompt_ids: ids of the first prompt (system + first user turn + ``<|im_start|>assistant\n``),
            image pads expanded.
        response_ids: every id after the prompt: generated turns and tool turns, image pads expanded.
        response_mask: same length as ``response_ids``; 1 on model-generated ids (each turn's
            content and its end-of-turn token), 0 on tool turns and template text.
        response_logprobs: same length; the sampling log-probability of each generated id, 0.0
            where ``response_mask`` is 0.
        frames: the images in order of their pad runs, uint8 ``[T_i, H_i, W_i, 3]`` tensors (one per
            tool call's run of frames); ``sum(T_i)`` images in all.
        tokens_per_image: LLM tokens of each image, in order.
    """

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    response_logprobs: list[float] = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)
    tokens_per_image: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.response_ids)
        if len(self.response_mask) != n or len(self.response_logprobs) != n:
            raise ValueError(
                f"response_ids ({n}), response_mask ({len(self.response_mask)}) and response_logprobs "
                f"({len(self.response_logprobs)}) must have the same length"
            )

    @property
    def num_generated_tokens(self) -> int:
        """Model-generated ids (``sum(response_mask)``)."""
        return sum(self.response_mask)

    def to_dict(self) -> dict[str, Any]:
        """Ids, mask, logprobs and image token counts (frames are not serialised)."""
        return {
            "prompt_ids": list(self.prompt_ids),
            "response_ids": list(self.response_ids),
            "response_mask": list(self.response_mask),
            "response_logprobs": list(self.response_logprobs),
            "tokens_per_image": list(self.tokens_per_image),
        }

    def __repr__(self) -> str:
        return (
            f"TokenTrace(prompt={len(self.prompt_ids)}, response={len(self.response_ids)}, "
            f"generated={self.num_generated_tokens}, images={len(self.tokens_per_image)})"
        )


# ---------------------------------------------------------------------------------------------
# the trajectory
# ---------------------------------------------------------------------------------------------


@dataclass
class FramesReturned:
    """The frames one successful tool call returned.

    Attributes:
        window_s: ``(start_s, end_s)`` window actually sampled (clamped), seconds.
        timestamps_s: sample times, seconds from the first frame.
        pts_s: pts of the frames returned, seconds from the first frame.
        frame_indices: frame indices returned (presentation order).
        label_s: the integer seconds in the tool turn's labels (from the call's own arguments).
        size: ``(H, W)`` of each frame, pixels (multiples of 28).
        nframes: frames returned (after the budget fallback).
        resize: resize factor applied (after the budget fallback).
        tokens_per_frame: LLM tokens per frame.
        budget_steps: token-budget fallbacks applied (``()``, ``("maxp",)``, ``("maxp", "cube_root")``).
        estimated_visual_tokens_requested: the budget estimate of the call as the model made it.
        first_frame: number of this call's first frame in the tool turn (frames are numbered
            across all calls of a turn).
        plan: the call's ``eva_fast.video.FramePlan`` as :meth:`FramePlan.to_dict` (rebuild it with
            ``FramePlan.from_dict`` and ``decode_plan`` it to get the same frames again); None in
            records written before it existed.
    """

    window_s: tuple[float, float]
    timestamps_s: list[float]
    pts_s: list[float]
    frame_indices: list[int]
    label_s: list[int]
    size: tuple[int, int]
    nframes: int
    resize: float
    tokens_per_frame: int
    budget_steps: list[str]
    estimated_visual_tokens_requested: int
    first_frame: int = 0
    plan: dict[str, Any] | None = None

    @property
    def num_visual_tokens(self) -> int:
        """Exact LLM tokens of the call's frames."""
        return self.nframes * self.tokens_per_frame


@dataclass
class ToolCall:
    """One ``frame_select`` call of a model turn.

    Attributes:
        raw: argument text as written by the model (truncated to 4096 characters in the record).
        arguments: the parsed JSON object (all keys the model wrote), None if it did not parse.
        error: per-call error (``arguments_not_json``, ``no_start_or_end_time``, ``no_nframes``,
            ``call_frame_select_failed``) or None.
        error_detail: why the frame tool refused or failed (exception text), if it did.
        frames: what the call returned (None on error).
        estimated_visual_tokens: the budget estimate after the fallback (0 on error).
        decode_ms: wall time of the frame tool (seek + decode + resize), milliseconds.
    """

    raw: str
    arguments: dict[str, Any] | None = None
    error: str | None = None
    error_detail: str | None = None
    frames: FramesReturned | None = None
    estimated_visual_tokens: int = 0
    decode_ms: float = 0.0


@dataclass
class Turn:
    """One model turn and the tool calls it made.

    Attributes:
        index: 0-based round number.
        text: the model's reply.
        prompt_tokens, completion_tokens: token counts of this round (prompt includes image tokens).
        finish_reason: ``"stop"`` or ``"length"`` (or the server's word).
        tool_calls: the calls parsed from the reply (empty when it answered or stopped).
        visual_tokens: exact image tokens of the tool turn that answered this turn's calls.
        timings_ms: ``generate`` (model), ``decode`` (frame tool, all calls), ``pack`` or
            ``encode`` (frames -> model inputs, done by the backend in the *next* generate but
            attributed here, to the calls that fetched them); milliseconds.
        cached_prompt_tokens: prompt tokens served from a reused KV cache.
        completion_token_ids: generated ids when the backend knows them.
    """

    index: int
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    visual_tokens: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    cached_prompt_tokens: int = 0
    completion_token_ids: list[int] | None = None


_RAW_MAX_CHARS = 4096
#: ``FramesReturned`` keys of records written by earlier versions -> today's names.
_OLD_FRAMES_KEYS = {"pts_seconds": "pts_s", "label_seconds": "label_s"}
#: :attr:`Trajectory.error_source` values that are failures of the machinery (backend, video,
#: caller), not behaviour of the model.
INFRA_ERROR_SOURCES = ("backend", "video", "callback")


@dataclass
class Trajectory:
    """Everything one ``AgentLoop.run`` did, JSON-serialisable with :meth:`to_dict`.

    Attributes:
        video_path: the video.
        question: the question as given.
        answer: extracted answer, ``""`` when none.
        stop_reason: ``answer_found`` | ``no_answer_no_tool_call`` | ``no_valid_tool_call`` |
            ``max_turns_exceeded`` | the per-call errors joined with ``"; "`` | ``openai_bad_request``
            | ``"exception"`` (the reference's record: ``error`` holds ``"<Type>: <message>"``; records
            written before 2026-12 have ``"exception: <Type>: <message>"`` here).
        num_rounds: model turns taken.
        total_tokens: last round's prompt + completion tokens (the reference's definition).
        estimated_visual_tokens: sum over successful tool calls of the budget estimate (after fallback).
        visual_tokens: exact image tokens fed to the model, summed over tool turns.
        turns: the rounds.
        duration_s, width, height: video metadata used in the first user turn.
        system: the system turn used.
        backend, model: which backend and model answered.
        error: exception text for ``exception``/``openai_bad_request`` stops, else None.
        error_source: what raised, for ``exception`` stops (None otherwise): ``"model_output"`` (the
            published evaluation's own arithmetic on the model's tool arguments: the reference's
            ``exception`` record, a behaviour of the model), ``"backend"`` (the model backend: a
            server error, a timeout, out of memory), ``"video"`` (the video could not be opened),
            ``"callback"`` (the caller's ``on_event``). :data:`INFRA_ERROR_SOURCES` are failures of
            the machinery, not of the model (GRPO leaves such episodes unscored).
        wall_ms: wall time of the whole run, milliseconds.
        config: the agent settings that shape the conversation and its frames (``timestamp_fmt``,
            ``max_visual_tokens``, ``maxp``, ``resample``, ``frame_policy``, ``max_turns``,
            ``temperature``); empty for records written before it existed (defaults apply).
        tokens: the episode as token ids, mask and sampling logprobs (:class:`TokenTrace`) when the
            backend works on ids (``transformers``), else None. Not written by :meth:`to_dict`
            unless asked (``to_dict(tokens=True)``; frames are never written).
    """

    video_path: str
    question: str
    answer: str = ""
    stop_reason: str = ""
    num_rounds: int = 0
    total_tokens: int = 0
    estimated_visual_tokens: int = 0
    visual_tokens: int = 0
    turns: list[Turn] = field(default_factory=list)
    duration_s: float = 0.0
    width: int = 0
    height: int = 0
    system: str = ""
    backend: str = ""
    model: str = ""
    error: str | None = None
    error_source: str | None = None
    wall_ms: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    tokens: TokenTrace | None = None

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every tool call of every turn, in order."""
        return [c for t in self.turns for c in t.tool_calls]

    def timings_ms(self) -> dict[str, float]:
        """Per-stage totals over the turns (``generate``, ``decode``, ``pack``/``encode``), ms."""
        out: dict[str, float] = {}
        for t in self.turns:
            for k, v in t.timings_ms.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def conversation(self) -> list[dict[str, Any]]:
        """The conversation exactly as the agent loop sent it, with frames as references.

        Returns chat-template dicts: ``{"role": "system"|"user"|"assistant", "content": str}`` and
        tool turns ``{"role": "tool", "content": [{"type": "text", "text": ...}, {"type": "frame",
        "call": c, "index": i}, ...]}`` where ``(c, i)`` is frame ``i`` of the turn's ``c``-th
        successful call (``[c for c in turn.tool_calls if c.frames]``). Built with the loop's own
        protocol functions (:func:`first_user_text`, :func:`tool_turn_layout`).

        Raises:
            ValueError: the trajectory never opened its video (no duration/size).
        """
        from eva_fast.agent._protocol import first_user_text, tool_turn_layout

        if self.width < 1 or self.height < 1:
            raise ValueError(f"trajectory of {self.video_path!r} has no video metadata (it stopped before opening the video)")
        fmt = self.config.get("timestamp_fmt", "mmss")
        out: list[dict[str, Any]] = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": first_user_text(self.duration_s, self.width, self.height, self.question)},
        ]
        for turn in self.turns:
            out.append({"role": "assistant", "content": turn.text})
            ok = [c.frames for c in turn.tool_calls if c.frames is not None]
            if not ok:
                continue
            layout = tool_turn_layout([(f.nframes, list(f.label_s)) for f in ok], self.question, fmt)
            out.append({"role": "tool", "content": [
                {"type": "text", "text": p} if isinstance(p, str) else {"type": "frame", "call": p[0], "index": p[1]}
                for p in layout
            ]})
        return out

    def to_dict(self, tokens: bool = False) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists; long raw call text truncated).

        Args:
            tokens: also write :attr:`tokens` (ids, mask, logprobs; never frames). Default False:
                eval records stay small.
        """
        trace = self.tokens
        self.tokens = None
        try:
            d = dataclasses.asdict(self)
        finally:
            self.tokens = trace
        d["tokens"] = trace.to_dict() if (tokens and trace is not None) else None
        for turn in d["turns"]:
            for call in turn["tool_calls"]:
                if len(call["raw"]) > _RAW_MAX_CHARS:
                    call["raw"] = call["raw"][:_RAW_MAX_CHARS] + f"...[{len(call['raw'])} chars]"
                if call["frames"] is not None:
                    call["frames"]["window_s"] = list(call["frames"]["window_s"])
                    call["frames"]["size"] = list(call["frames"]["size"])
        d["timings_ms"] = self.timings_ms()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        """Inverse of :meth:`to_dict` (extra keys such as ``timings_ms`` are ignored). Records written
        before the ``_s`` renames (``pts_seconds``, ``label_seconds``) are read too.

        Raises:
            KeyError / TypeError: ``d`` is not a trajectory dict.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names and k not in ("turns", "tokens")}
        if d.get("tokens"):
            kw["tokens"] = TokenTrace(**d["tokens"])
        turns = []
        for t in d.get("turns", []):
            calls = []
            for c in t.get("tool_calls", []):
                c = dict(c)
                fr = c.get("frames")
                if fr is not None:
                    fr = {_OLD_FRAMES_KEYS.get(k, k): v for k, v in fr.items()}
                    fr["window_s"] = tuple(fr["window_s"])
                    fr["size"] = tuple(fr["size"])
                    c["frames"] = FramesReturned(**fr)
                calls.append(ToolCall(**c))
            t = dict(t)
            t["tool_calls"] = calls
            turns.append(Turn(**t))
        return cls(turns=turns, **kw)

    def __repr__(self) -> str:
        return (
            f"Trajectory(answer={self.answer!r}, stop_reason={self.stop_reason!r}, rounds={self.num_rounds}, "
            f"calls={len(self.tool_calls)}, total_tokens={self.total_tokens}, visual_tokens={self.visual_tokens})"
        )
