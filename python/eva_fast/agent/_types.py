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
            does it, ``pack`` (frames -> pixel_values) or ``encode`` (frames -> PNG/JPEG).
        completion_token_ids: generated token ids when the backend knows them (transformers).
        cached_prompt_tokens: prompt tokens served from a reused KV cache (0 when none).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    timings_ms: dict[str, float] = field(default_factory=dict)
    completion_token_ids: list[int] | None = None
    cached_prompt_tokens: int = 0


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


@dataclass
class Trajectory:
    """Everything one ``AgentLoop.run`` did, JSON-serialisable with :meth:`to_dict`.

    Attributes:
        video_path: the video.
        question: the question as given.
        answer: extracted answer, ``""`` when none.
        stop_reason: ``answer_found`` | ``no_answer_no_tool_call`` | ``no_valid_tool_call`` |
            ``max_turns_exceeded`` | the per-call errors joined with ``"; "`` | ``openai_bad_request``
            | ``"exception: <Type>: <message>"``.
        num_rounds: model turns taken.
        total_tokens: last round's prompt + completion tokens (the reference's definition).
        estimated_visual_tokens: sum over successful tool calls of the budget estimate (after fallback).
        visual_tokens: exact image tokens fed to the model, summed over tool turns.
        turns: the rounds.
        duration_s, width, height: video metadata used in the first user turn.
        system: the system turn used.
        backend, model: which backend and model answered.
        error: exception text for ``exception``/``openai_bad_request`` stops, else None.
        wall_ms: wall time of the whole run, milliseconds.
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
    wall_ms: float = 0.0

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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists; long raw call text truncated)."""
        d = dataclasses.asdict(self)
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
        kw = {k: v for k, v in d.items() if k in names and k != "turns"}
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
