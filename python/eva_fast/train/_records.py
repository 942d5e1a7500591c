"""The training data format: one EVA conversation per JSON line (format ``eva_fast.trajectory``, version 2).

A line holds the messages exactly as the agent loop renders them, with each tool turn's frames as
*references* to the ``frame_select`` calls that produced them, never pixels or image files::

    {"format": "eva_fast.trajectory", "version": 2,
     "video": "videos/abc.mp4", "question": "What ... A. ... B. ...",
     "video_meta": {"duration_s": 13.013, "width": 480, "height": 270},
     "frame_options": {"max_visual_tokens": 12000, "maxp": 720, "resample": "cubic", "policy": "parity",
                       "smart_resize_by": "processor", "min_pixels": 3136, "max_pixels": 12845056,
                       "snap_tolerance_s": 2.0, "snap_fraction": 0.25},
     "timestamp_fmt": "mmss",
     "messages": [
       {"role": "system", "content": "Use Frame Select Tool ..."},
       {"role": "user", "content": "Video Length: 12 seconds. Original video resolution: 270p. What ..."},
       {"role": "assistant", "content": "... <tool_call>{...}</tool_call>"},
       {"role": "tool",
        "content": [{"type": "text", "text": "<tool_response>"},
                    {"type": "text", "text": "Frame 0 at [00:01]: "}, {"type": "frame", "call": 0, "index": 0},
                    ...,
                    {"type": "text", "text": "\\nIf more information is needed, ...</tool_response>"}],
        "calls": [{"arguments": {"start_time": 1, "end_time": 12, "nframes": 8, "resize": 0.5},
                   "frames": {"frame_indices": [...], "size": [140, 252], "window_s": [1.0, 12.0],
                              "nframes": 8, "resize": 0.5, "label_s": [1, 2, ...]}}]},
       {"role": "assistant", "content": "<answer>B</answer>"}],
     "gt": "B", "answer": "B", "label": true, "source": "eval:videomme#12", "rewards": {"accuracy": 1.0}}

``{"type": "frame", "call": c, "index": i}`` is frame ``i`` of call ``c`` of that tool turn. The
collator plans it again with the agent's own planning (:func:`eva_fast.agent.plan_tool_call`) from
the call's ``arguments`` and the record's ``frame_options`` (:meth:`eva_fast.video.FrameOptions.to_dict`),
checks that it resolves to the recorded ``frame_indices`` and ``size``, and decodes that plan (so
training sees exactly the agent's pixels, or fails naming the sample). ``timestamp_fmt`` is the
tool turns' label format (``AgentConfig.timestamp_fmt``).

Version 1 (still read): the frame settings and the label format together in ``"frame_config"``,
``{"max_visual_tokens", "maxp", "resample", "frame_policy", "smart_resize_by", "timestamp_fmt"}``
(settings it lacks take their defaults).

Teacher data made elsewhere may instead hold image files in its tool turns,
``{"type": "image", "path": "frames/q1_0.png"}`` (relative to the jsonl file), with no ``calls``;
see :func:`record_from_image_conversation`.

Optional fields: ``gt`` (ground truth), ``answer`` (the final answer given), ``label`` (bool: KTO
chosen/rejected), ``source`` (provenance), ``rewards`` (name -> float), ``id``.

Source of the message layout: the agent loop (``eva_fast.agent.Trajectory.conversation``), which
reproduces EVA's published evaluation (``eval-eva.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eva_fast._checks import is_int, is_number
from eva_fast._jsonl import parse_lines
from eva_fast.agent import TIMESTAMP_FORMATS, Trajectory, recorded_frame_options
from eva_fast.video import FrameOptions
from eva_fast.vision import FACTOR

FORMAT = "eva_fast.trajectory"
#: Version written; :data:`READ_VERSIONS` are read.
VERSION = 2
READ_VERSIONS = (1, 2)
ROLES = ("system", "user", "assistant", "tool")
#: ``frame_config`` keys of version-1 records (frame settings under their old names + the label format).
V1_FRAME_CONFIG_KEYS = ("max_visual_tokens", "maxp", "resample", "frame_policy", "smart_resize_by", "timestamp_fmt")


class RecordError(ValueError):
    """A training record that breaks the format; the message names the file and line."""


@dataclass(frozen=True)
class RecordedCall:
    """One successful ``frame_select`` call of a tool turn, and what it resolved to.

    Attributes:
        arguments: the four tool arguments as the model gave them (``start_time``, ``end_time``
            seconds; ``nframes``; ``resize``).
        frame_indices: frame indices the call returned (presentation order).
        size: ``(H, W)`` pixels of its frames (multiples of 28).
        extra: the rest of the recorded ``frames`` object (``window_s``, ``label_s``, ...), kept as is.
    """

    arguments: dict[str, Any]
    frame_indices: tuple[int, ...]
    size: tuple[int, int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nframes(self) -> int:
        return len(self.frame_indices)

    def to_dict(self) -> dict[str, Any]:
        frames = dict(self.extra)
        frames.update(frame_indices=list(self.frame_indices), size=list(self.size), nframes=self.nframes)
        return {"arguments": dict(self.arguments), "frames": frames}


@dataclass
class TrajectoryRecord:
    """One training conversation (see the module docstring for the JSON layout).

    Attributes:
        video: video path as written (resolved against a video root when relative).
        question: the question as given to the agent.
        messages: chat messages; tool turns hold text parts and ``frame`` (or ``image``) parts.
        calls: for each message index of a tool turn with ``frame`` parts, its recorded calls.
        frame_options: the :class:`~eva_fast.video.FrameOptions` the calls were planned with.
        timestamp_fmt: the tool turns' frame label format (``AgentConfig.timestamp_fmt``).
        video_meta: ``duration_s``, ``width``, ``height`` the first user turn was built from (or {}).
        gt, answer, label, source, rewards, id: optional fields (see the module docstring).
        where: ``"file:line"`` the record came from (for error messages; not written).
        base_dir: folder of the file it came from (image paths are relative to it; not written).
    """

    video: str
    question: str
    messages: list[dict[str, Any]]
    calls: dict[int, list[RecordedCall]] = field(default_factory=dict)
    frame_options: FrameOptions = field(default_factory=FrameOptions)
    timestamp_fmt: str = "mmss"
    video_meta: dict[str, Any] = field(default_factory=dict)
    gt: str | None = None
    answer: str | None = None
    label: bool | None = None
    source: str | None = None
    rewards: dict[str, float] = field(default_factory=dict)
    id: str | None = None
    where: str = "<memory>"
    base_dir: str | None = None

    # -- views ----------------------------------------------------------------------------------

    def template_messages(self) -> list[dict[str, Any]]:
        """Messages as chat-template dicts: frame and image parts become ``{"type": "image"}``."""
        out = []
        for m in self.messages:
            c = m["content"]
            if isinstance(c, str):
                out.append({"role": m["role"], "content": c})
            else:
                out.append({"role": m["role"], "content": [
                    {"type": "text", "text": p["text"]} if p["type"] == "text" else {"type": "image"} for p in c
                ]})
        return out

    def image_parts(self) -> list[tuple[int, dict[str, Any]]]:
        """``(message index, part)`` of every frame/image part, in conversation order."""
        return [
            (k, p)
            for k, m in enumerate(self.messages)
            if not isinstance(m["content"], str)
            for p in m["content"]
            if p["type"] in ("frame", "image")
        ]

    @property
    def num_turns(self) -> int:
        """Assistant turns."""
        return sum(1 for m in self.messages if m["role"] == "assistant")

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the line (format and version first)."""
        messages = []
        for k, m in enumerate(self.messages):
            m = {"role": m["role"], "content": m["content"]}
            if k in self.calls:
                m["calls"] = [c.to_dict() for c in self.calls[k]]
            messages.append(m)
        d: dict[str, Any] = {"format": FORMAT, "version": VERSION, "video": self.video, "question": self.question}
        if self.video_meta:
            d["video_meta"] = dict(self.video_meta)
        d["frame_options"] = self.frame_options.to_dict()
        d["timestamp_fmt"] = self.timestamp_fmt
        d["messages"] = messages
        for name in ("gt", "answer", "label", "source", "id"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        if self.rewards:
            d["rewards"] = dict(self.rewards)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Any, where: str = "<memory>", base_dir: str | None = None) -> TrajectoryRecord:
        """Parse and validate one record.

        Raises:
            RecordError: anything that breaks the format (the message starts with ``where``).
        """
        return _parse(d, where, base_dir)

    def __repr__(self) -> str:
        n_img = len(self.image_parts())
        return (
            f"TrajectoryRecord({self.where}, video={self.video!r}, turns={self.num_turns}, images={n_img}"
            + (f", label={self.label}" if self.label is not None else "")
            + ")"
        )


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _fail(where: str, msg: str) -> RecordError:
    return RecordError(f"{where}: {msg}")


def _parse(d: Any, where: str, base_dir: str | None) -> TrajectoryRecord:
    if not isinstance(d, dict):
        raise _fail(where, f"a record must be a JSON object, got {type(d).__name__}")
    if d.get("format", FORMAT) != FORMAT:
        raise _fail(where, f"format must be {FORMAT!r}, got {d.get('format')!r}")
    version = d.get("version", VERSION)
    if version not in READ_VERSIONS:
        raise _fail(where, f"unsupported version {version!r} (this eva_fast reads versions {READ_VERSIONS})")
    for key in ("video", "question"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise _fail(where, f"{key!r} must be a non-empty string, got {d.get(key)!r}")
    msgs = d.get("messages")
    if not isinstance(msgs, list) or len(msgs) < 3:
        raise _fail(where, "'messages' must be a list of at least 3 messages (system, user, assistant)")
    frame_options, timestamp_fmt = _frame_settings(d, version, where)

    messages: list[dict[str, Any]] = []
    calls: dict[int, list[RecordedCall]] = {}
    for k, m in enumerate(msgs):
        at = f"{where}: message {k}"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RecordError(f"{at}: role must be one of {ROLES}, got {m.get('role') if isinstance(m, dict) else m!r}")
        role, content = m["role"], m.get("content")
        expected = ("system", "user")[k] if k < 2 else ("assistant" if k % 2 == 0 else "tool")
        if role != expected:
            raise RecordError(f"{at}: expected role {expected!r} (system, user, then assistant and tool turns alternating), got {role!r}")
        if role == "tool":
            messages.append({"role": role, "content": _tool_content(content, at)})
            if m.get("calls") is not None:
                calls[k] = _calls(m["calls"], at)
        else:
            if not isinstance(content, str):
                raise RecordError(f"{at}: {role} content must be a string, got {type(content).__name__}")
            messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "assistant":
        raise _fail(where, "the conversation must end with an assistant turn (its last trained reply)")

    # frame references point at recorded calls and frames
    for k, m in enumerate(messages):
        if m["role"] != "tool":
            continue
        refs = [p for p in m["content"] if p["type"] == "frame"]
        if not refs:
            continue
        if k not in calls:
            raise _fail(where, f"message {k}: frame parts need the tool turn's 'calls'")
        seen = set()
        for p in refs:
            c, i = p["call"], p["index"]
            if not (0 <= c < len(calls[k]) and 0 <= i < calls[k][c].nframes):
                raise _fail(where, f"message {k}: frame part (call {c}, index {i}) has no recorded frame")
            if (c, i) in seen:
                raise _fail(where, f"message {k}: frame (call {c}, index {i}) appears twice")
            seen.add((c, i))

    meta = d.get("video_meta") or {}
    if meta:
        try:
            meta = {"duration_s": float(meta["duration_s"]), "width": int(meta["width"]), "height": int(meta["height"])}
        except (KeyError, TypeError, ValueError) as e:
            raise _fail(where, f"'video_meta' needs numeric duration_s, width, height: {e}") from e
    label = d.get("label")
    if label is not None and not isinstance(label, bool):
        raise _fail(where, f"'label' must be true, false or absent, got {label!r}")
    rewards = d.get("rewards") or {}
    if not isinstance(rewards, dict) or not all(is_number(v) for v in rewards.values()):
        raise _fail(where, f"'rewards' must map names to numbers, got {rewards!r}")
    opt = {}
    for name in ("gt", "answer", "source", "id"):
        v = d.get(name)
        if v is not None and not isinstance(v, (str, int)):
            raise _fail(where, f"{name!r} must be a string, got {type(v).__name__}")
        opt[name] = None if v is None else str(v)
    return TrajectoryRecord(
        video=d["video"], question=d["question"], messages=messages, calls=calls, frame_options=frame_options,
        timestamp_fmt=timestamp_fmt,
        video_meta=meta, label=label, rewards={k: float(v) for k, v in rewards.items()}, where=where,
        base_dir=base_dir, **opt,
    )


def _frame_settings(d: dict[str, Any], version: int, where: str) -> tuple[FrameOptions, str]:
    """``(frame_options, timestamp_fmt)`` of a record (version 1: both in ``frame_config``)."""
    if version == 1:
        fc = d.get("frame_config") or {}
        if not isinstance(fc, dict):
            raise _fail(where, f"'frame_config' must be an object, got {type(fc).__name__}")
        unknown = set(fc) - set(V1_FRAME_CONFIG_KEYS)
        if unknown:
            raise _fail(where, f"unknown frame_config keys {sorted(unknown)}; allowed: {sorted(V1_FRAME_CONFIG_KEYS)}")
        raw, fmt = fc, fc.get("timestamp_fmt", "mmss")
    else:
        raw, fmt = d.get("frame_options") or {}, d.get("timestamp_fmt", "mmss")
        if not isinstance(raw, dict):
            raise _fail(where, f"'frame_options' must be an object, got {type(raw).__name__}")
        raw = {"frame_options": raw}
    try:
        options = recorded_frame_options(raw)
    except ValueError as e:
        raise _fail(where, str(e)) from e
    if fmt not in TIMESTAMP_FORMATS:
        raise _fail(where, f"'timestamp_fmt' must be one of {TIMESTAMP_FORMATS}, got {fmt!r}")
    return options, fmt


def _tool_content(content: Any, at: str) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content:
        raise RecordError(f"{at}: tool content must be a non-empty list of parts")
    out = []
    for j, p in enumerate(content):
        t = p.get("type") if isinstance(p, dict) else None
        if t == "text" and isinstance(p.get("text"), str):
            out.append({"type": "text", "text": p["text"]})
        elif t == "frame" and all(is_int(p.get(x)) for x in ("call", "index")):
            out.append({"type": "frame", "call": p["call"], "index": p["index"]})
        elif t == "image" and isinstance(p.get("path"), str) and p["path"]:
            out.append({"type": "image", "path": p["path"]})
        else:
            raise RecordError(
                f"{at}: part {j} must be {{'type': 'text', 'text': str}}, {{'type': 'frame', 'call': int, "
                f"'index': int}} or {{'type': 'image', 'path': str}}, got {p!r:.200}"
            )
    return out


def _calls(raw: Any, at: str) -> list[RecordedCall]:
    if not isinstance(raw, list):
        raise RecordError(f"{at}: 'calls' must be a list")
    out = []
    for j, c in enumerate(raw):
        try:
            args = dict(c["arguments"])
            fr = dict(c["frames"])
            idx = tuple(int(i) for i in fr.pop("frame_indices"))
            h, w = (int(v) for v in fr.pop("size"))
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"{at}: call {j} needs 'arguments' and 'frames' with 'frame_indices' and 'size' [h, w]: {e!r}") from e
        fr.pop("nframes", None)
        if not idx or any(i < 0 for i in idx):
            raise RecordError(f"{at}: call {j}: frame_indices must be non-empty and >= 0")
        if h <= 0 or w <= 0 or h % FACTOR or w % FACTOR:
            raise RecordError(f"{at}: call {j}: size must be positive multiples of {FACTOR}, got {[h, w]}")
        for key in ("start_time", "end_time", "nframes"):
            v = args.get(key)
            if not is_number(v) or not math.isfinite(v):
                raise RecordError(f"{at}: call {j}: arguments.{key} must be a finite number, got {v!r}")
        out.append(RecordedCall(args, idx, (h, w), fr))
    return out


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def iter_records(path: str | os.PathLike, *, skip_bad: bool = False, errors: list[str] | None = None
                 ) -> Iterator[TrajectoryRecord]:
    """Records of a jsonl file, in order (blank lines ignored).

    Args:
        path: the file.
        skip_bad: skip malformed lines instead of raising (each reason is appended to ``errors``).
        errors: list that collects ``"file:line: reason"`` of skipped lines.

    Raises:
        FileNotFoundError: no such file.
        RecordError: a malformed line (``skip_bad=False``); the message names ``file:line``.
    """
    base = str(Path(path).resolve().parent)
    yield from parse_lines(path, lambda d, where: TrajectoryRecord.from_dict(d, where, base), RecordError,
                           what="training data file", skip_bad=skip_bad, errors=errors)


def load_records(path: str | os.PathLike, *, skip_bad: bool = False, errors: list[str] | None = None
                 ) -> list[TrajectoryRecord]:
    """All records of a jsonl file (see :func:`iter_records`)."""
    return list(iter_records(path, skip_bad=skip_bad, errors=errors))


def write_records(path: str | os.PathLike, records: Iterable[TrajectoryRecord], append: bool = False) -> int:
    """Write records as jsonl (one line each); returns how many. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_json() + "\n")
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# converters
# ---------------------------------------------------------------------------------------------


def record_from_trajectory(traj: Any, *, gt: str | None = None, label: bool | None = None,
                           source: str | None = None, rewards: dict[str, float] | None = None,
                           video: str | None = None) -> TrajectoryRecord:
    """A training record from an agent trajectory: an ``eva_fast.agent.Trajectory``, its
    ``to_dict()`` (``eva-fast ask --json``), or an eval result record (which holds the trajectory
    under ``"trajectory"`` and the ground truth under ``"gt"``).

    The messages are :meth:`eva_fast.agent.Trajectory.conversation` (the loop's own rendering);
    each tool turn's calls keep their arguments and resolved frames; ``frame_options`` and
    ``timestamp_fmt`` are the trajectory's agent settings (:meth:`Trajectory.frame_options`).

    Args:
        traj: the trajectory or eval record.
        gt, label, source, rewards: optional fields (``gt`` defaults to the eval record's).
        video: override the video path (e.g. to make it relative to a video root).

    Raises:
        RecordError: the trajectory has no assistant turn, ends on a tool turn, or never opened its video.
    """
    if isinstance(traj, dict) and "trajectory" in traj and isinstance(traj["trajectory"], dict):
        gt = gt if gt is not None else traj.get("gt")
        source = source or (f"eval#{traj['index']}" if "index" in traj else None)
        traj = traj["trajectory"]
    if isinstance(traj, dict):
        traj = Trajectory.from_dict(traj)
    if not isinstance(traj, Trajectory):
        raise TypeError(f"expected a Trajectory, its dict, or an eval record, got {type(traj).__name__}")
    where = f"trajectory of {traj.video_path}"
    try:
        messages = traj.conversation()
    except ValueError as e:
        raise RecordError(f"{where}: {e}") from e
    while messages and messages[-1]["role"] == "tool":  # e.g. max_turns_exceeded: nothing to train after it
        messages.pop()
    calls: dict[int, list[RecordedCall]] = {}
    k = 2
    for turn in traj.turns:
        k += 1  # past this turn's assistant message: k is where its tool turn would be
        ok = [c for c in turn.tool_calls if c.frames is not None]
        if ok and k < len(messages) and messages[k]["role"] == "tool":
            recorded = []
            for c in ok:
                fr = c.frames.to_dict()  # the record layout (also what a plan-less old record holds)
                args = {key: (c.arguments or {}).get(key) for key in ("start_time", "end_time", "nframes", "resize")}
                if args["resize"] is None:
                    args["resize"] = 1.0
                extra = {"window_s": list(fr["window_s"]), "label_s": list(fr["label_s"]), "resize": fr["resize"],
                         "budget_steps": list(fr["budget_steps"])}
                recorded.append(RecordedCall(args, tuple(fr["frame_indices"]), tuple(fr["size"]), extra))
            calls[k] = recorded
            k += 1
    d = TrajectoryRecord(
        video=video or traj.video_path, question=traj.question, messages=messages, calls=calls,
        frame_options=traj.frame_options(), timestamp_fmt=traj.config.get("timestamp_fmt", "mmss"),
        video_meta={"duration_s": traj.duration_s, "width": traj.width, "height": traj.height},
        gt=None if gt is None else str(gt), answer=traj.answer, label=label, source=source,
        rewards=dict(rewards or {}),
    ).to_dict()
    return TrajectoryRecord.from_dict(d, where)  # the same validation as a file line


def record_from_image_conversation(conversation: dict[str, Any], *, base_dir: str | os.PathLike | None = None
                                   ) -> TrajectoryRecord:
    """A training record from a conversation whose tool turns hold image files (teacher data made
    outside eva_fast).

    Accepted image parts in tool turns: ``{"type": "image", "path": P}``, ``{"type": "image",
    "image": P}`` and ``{"type": "image_url", "image_url": {"url": "file://P"}}`` (``P`` absolute, or
    relative to ``base_dir``). The conversation needs ``video``, ``question`` and ``messages``
    (system, user, then alternating assistant/tool turns, ending with an assistant turn); other
    record fields (``gt``, ``label``, ...) are kept. The images are loaded by the collator and, if
    their size is not already Qwen2.5-VL's ``smart_resize`` size, resized as transformers'
    processor does (Pillow bicubic).

    Raises:
        RecordError: the conversation does not fit the format.
    """
    if not isinstance(conversation, dict):
        raise RecordError(f"conversation must be a JSON object, got {type(conversation).__name__}")
    d = dict(conversation)
    msgs = []
    for k, m in enumerate(d.get("messages") or []):
        if not isinstance(m, dict):
            raise RecordError(f"message {k} must be an object")
        m = dict(m)
        if m.get("role") == "tool" and isinstance(m.get("content"), list):
            parts = []
            for p in m["content"]:
                if isinstance(p, dict) and p.get("type") == "image" and "path" not in p and isinstance(p.get("image"), str):
                    parts.append({"type": "image", "path": p["image"]})
                elif isinstance(p, dict) and p.get("type") == "image_url":
                    url = str((p.get("image_url") or {}).get("url", ""))
                    if not url.startswith("file://"):
                        raise RecordError(f"message {k}: image_url parts must be file:// URLs, got {url[:80]!r}")
                    parts.append({"type": "image", "path": url[len("file://"):]})
                else:
                    parts.append(p)
            m["content"] = parts
        msgs.append(m)
    d["messages"] = msgs
    d.setdefault("format", FORMAT)
    d.setdefault("version", VERSION)
    return TrajectoryRecord.from_dict(d, "<conversation>", None if base_dir is None else str(base_dir))
