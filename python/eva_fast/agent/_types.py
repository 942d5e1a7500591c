"""Typed values of the agent loop: chat messages with frames, model generations, the Trajectory."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from eva_fast.agent._config import recorded_frame_options
from eva_fast.agent._protocol import first_user_text, tool_turn_layout
from eva_fast.video import FrameBatch, FrameOptions, FramePlan

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
        return self.batch.plan.size

    @property
    def num_tokens(self) -> int:
        """LLM tokens of this frame, ``(H/28) * (W/28)``."""
        return self.batch.plan.tokens_per_frame


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
    """The frames one successful tool call returned: the plan they were decoded from, their pts and
    their labels.

    Attributes:
        plan: the call's :class:`~eva_fast.video.FramePlan` (window, sample times, frame indices,
            size, budget steps, estimates; ``decode_plan(reader, plan)`` gives the same frames
            again). None only for records written before plans were recorded (2026-11-30), whose
            flat summary is kept in ``recorded``.
        pts_s: pts of the frames returned, seconds from the first frame.
        label_s: the integer seconds in the tool turn's labels (from the call's own arguments).
        first_frame: number of this call's first frame in the tool turn (frames are numbered
            across all calls of a turn).
        recorded: for a plan-less old record, its other keys as written (``window_s``,
            ``frame_indices``, ``size``, ``resize``, ``budget_steps``, ...); None otherwise.

    :meth:`to_dict` writes the record layout: the plan's main fields flat (``window_s``,
    ``timestamps_s``, ``frame_indices``, ``size``, ``nframes``, ``resize``, ``tokens_per_frame``,
    ``budget_steps``, ``estimated_visual_tokens_requested``) for readers of the JSON, then ``plan``.
    """

    plan: FramePlan | None
    pts_s: list[float]
    label_s: list[int]
    first_frame: int = 0
    recorded: dict[str, Any] | None = None

    @property
    def nframes(self) -> int:
        """Frames the call returned."""
        return len(self.pts_s)

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of a trajectory's ``frames`` (see the class docstring; a plan-less old
        record is written back as it was read)."""
        p = self.plan
        if p is None:
            return {**copy.deepcopy(self.recorded or {}), "pts_s": list(self.pts_s), "label_s": list(self.label_s),
                    "first_frame": self.first_frame}
        return {
            "window_s": [p.start_s, p.end_s],
            "timestamps_s": list(p.timestamps_s),
            "pts_s": list(self.pts_s),
            "frame_indices": list(p.frame_indices),
            "label_s": list(self.label_s),
            "size": list(p.size),
            "nframes": p.nframes,
            "resize": p.resize,
            "tokens_per_frame": p.tokens_per_frame,
            "budget_steps": list(p.budget_steps),
            "estimated_visual_tokens_requested": p.estimated_visual_tokens,
            "first_frame": self.first_frame,
            "plan": p.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FramesReturned:
        """Inverse of :meth:`to_dict`; also reads records written before the ``_s`` renames
        (``pts_seconds``, ``label_seconds``) and before plans were recorded (``plan`` absent or null).

        Raises:
            KeyError: no ``pts_s`` / ``label_s``; ValueError: a bad ``plan``.
        """
        d = {_OLD_FRAMES_KEYS.get(k, k): v for k, v in d.items()}
        plan = d.get("plan")
        common = {"pts_s": list(d["pts_s"]), "label_s": list(d["label_s"]), "first_frame": d.get("first_frame", 0)}
        if plan is not None:
            return cls(plan=FramePlan.from_dict(plan), **common)
        rest = {k: v for k, v in d.items() if k not in ("plan", "pts_s", "label_s", "first_frame")}
        return cls(plan=None, recorded=rest, **common)


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``raw`` cut to 4096 characters, ``frames`` as :meth:`FramesReturned.to_dict`)."""
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "frames"}
        if len(self.raw) > _RAW_MAX_CHARS:
            d["raw"] = self.raw[:_RAW_MAX_CHARS] + f"...[{len(self.raw)} chars]"
        d["frames"] = None if self.frames is None else self.frames.to_dict()
        return {f.name: d[f.name] for f in dataclasses.fields(self)}


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tool calls as :meth:`ToolCall.to_dict`)."""
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "tool_calls"}
        d["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        return {f.name: d[f.name] for f in dataclasses.fields(self)}


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
        config: the agent settings that shape the conversation and its frames
            (:meth:`AgentConfig.conversation_config`: ``timestamp_fmt``, ``max_turns``,
            ``max_new_tokens``, ``temperature``, ``tool_call_blocks``, ``frame_options``); records
            written before ``FrameOptions`` hold the frame settings flat (``max_visual_tokens``,
            ``maxp``, ``resample``, ``frame_policy``, ``smart_resize_by``), older ones nothing
            (defaults apply): read them with :meth:`frame_options`.
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

    def frame_options(self) -> FrameOptions:
        """The :class:`~eva_fast.video.FrameOptions` the episode's calls were planned with (from
        :attr:`config`, whatever version wrote it; defaults where it says nothing)."""
        return recorded_frame_options(self.config)

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
        if self.width < 1 or self.height < 1:
            raise ValueError(f"trajectory of {self.video_path!r} has no video metadata (it stopped before opening the video)")
        fmt = self.config.get("timestamp_fmt", "mmss")
        out: list[dict[str, Any]] = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": first_user_text(self.question, duration_s=self.duration_s, height=self.height,
                                                        width=self.width)},
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
        """Plain JSON-ready dict (tuples become lists; long raw call text truncated; each call's
        frames as :meth:`FramesReturned.to_dict`).

        Args:
            tokens: also write :attr:`tokens` (ids, mask, logprobs; never frames). Default False:
                eval records stay small.
        """
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "turns":
                d["turns"] = [t.to_dict() for t in v]
            elif f.name == "tokens":
                d["tokens"] = v.to_dict() if (tokens and v is not None) else None
            else:
                d[f.name] = copy.deepcopy(v)
        d["timings_ms"] = self.timings_ms()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        """Inverse of :meth:`to_dict` (extra keys such as ``timings_ms`` are ignored). Records written
        before the ``_s`` renames (``pts_seconds``, ``label_seconds``) or before plans were recorded
        are read too (see :meth:`FramesReturned.from_dict`).

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
                if c.get("frames") is not None:
                    c["frames"] = FramesReturned.from_dict(c["frames"])
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
