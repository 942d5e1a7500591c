"""The RL question set (GRPO, paper §3.3 and §4.1) and the source QA sets of data construction:
one JSON object per line::

    {"video": "videos/abc.mp4",            # relative to the set's video root, or absolute
     "question": "What does the man pick up first?",
     "answer": "B" | "a red cup",          # mcq: the option letter; open: a short reference answer
     "type": "mcq" | "open",
     "options": ["A. a cup", "B. a phone"], # mcq only, optional (else the options are in the question)
     "category": "action order",           # optional: groups questions in reports and failure mining
     "source": "llava-video#123",          # optional provenance of the question
     "id": "enhance:7f3a...",              # optional unique id (data enhancement writes one)
     "provenance": {...}}                  # optional: how the line was made (teacher, examples, ...)

The paper trains GRPO on 90 % open-ended and 10 % multiple-choice questions: open-ended answers are
scored by ROUGE against ``answer``, multiple-choice ones by exact letter match
(:mod:`eva_fast.train.rewards`). A source QA set for the teacher (``eva-fast data teacher``) has the
same fields; there ``type`` may be left out and is then ``"mcq"`` when ``options`` is given, else
``"open"`` (``infer_type=True``).

:func:`load_rl_set` validates every line (errors name ``file:line``); :meth:`RLSample.prompt` is the
question the agent is asked (options appended one per line).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eva_fast._checks import is_number
from eva_fast._jsonl import parse_lines

QA_TYPES = ("mcq", "open")
_FIELDS = ("video", "question", "answer", "type", "options", "category", "source", "id", "provenance")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: An option that already carries its letter: "A. x", "A) x", "(A) x", "A: x".
_LABELLED_OPTION = re.compile(r"^\s*\(?([A-Z])\s*[\.\):]")


class RLDataError(ValueError):
    """A line of an RL / QA set that breaks the format; the message names the file and line."""


@dataclass(frozen=True)
class RLSample:
    """One question of an RL set or source QA set (see the module docstring for the fields).

    Attributes:
        where: ``"file:line"`` the sample came from (not written).
    """

    video: str
    question: str
    answer: str
    type: str
    options: tuple[str, ...] | None = None
    category: str | None = None
    source: str | None = None
    id: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    where: str = field(default="<memory>", compare=False)

    def __post_init__(self) -> None:
        _validate(self, self.where)

    def option_lines(self) -> list[str]:
        """The options as shown to the agent: each as given when it starts with its letter
        ("A. x", "(A) x"), else prefixed "A. ", "B. ", ... in order."""
        if not self.options:
            return []
        return [o if _LABELLED_OPTION.match(o) else f"{_LETTERS[k]}. {o}" for k, o in enumerate(self.options)]

    def prompt(self) -> str:
        """The question the agent is asked: ``question``, then the option lines (if any)."""
        lines = self.option_lines()
        return self.question.strip() + ("\n" + "\n".join(lines) if lines else "")

    def video_path(self, video_root: str | os.PathLike | None = None) -> str:
        """``video`` resolved against ``video_root`` when relative."""
        p = Path(self.video)
        return str(p if p.is_absolute() or video_root is None else Path(video_root) / p)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the line (empty optional fields left out)."""
        d: dict[str, Any] = {"video": self.video, "question": self.question, "answer": self.answer, "type": self.type}
        if self.options:
            d["options"] = list(self.options)
        for name in ("category", "source", "id"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.provenance:
            d["provenance"] = dict(self.provenance)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "<memory>", *, infer_type: bool = False) -> RLSample:
        """Parse one line.

        Args:
            d: the JSON object.
            where: ``file:line`` for error messages.
            infer_type: a missing ``type`` is ``"mcq"`` with ``options``, else ``"open"``.

        Raises:
            RLDataError: a missing or malformed field (the message names ``where`` and the field).
        """
        if not isinstance(d, Mapping):
            raise RLDataError(f"{where}: a line must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(_FIELDS)
        if unknown:
            raise RLDataError(f"{where}: unknown fields {sorted(unknown)}; allowed: {list(_FIELDS)}")
        qtype = d.get("type")
        if qtype is None and infer_type:
            qtype = "mcq" if d.get("options") else "open"
        options = d.get("options")
        if options is not None:
            if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
                raise RLDataError(f"{where}: 'options' must be a list of non-empty strings, got {options!r:.200}")
            options = tuple(options)
        prov = d.get("provenance") or {}
        if not isinstance(prov, Mapping):
            raise RLDataError(f"{where}: 'provenance' must be an object, got {type(prov).__name__}")
        answer = d.get("answer")
        if is_number(answer):
            answer = str(answer)
        return cls(
            video=d.get("video"), question=d.get("question"), answer=answer, type=qtype, options=options,
            category=None if d.get("category") is None else str(d["category"]),
            source=None if d.get("source") is None else str(d["source"]),
            id=None if d.get("id") is None else str(d["id"]),
            provenance=dict(prov), where=where,
        )


def _validate(s: RLSample, where: str) -> None:
    for name in ("video", "question", "answer"):
        v = getattr(s, name)
        if not isinstance(v, str) or not v.strip():
            raise RLDataError(f"{where}: {name!r} must be a non-empty string, got {v!r:.200}")
    if s.type not in QA_TYPES:
        raise RLDataError(f"{where}: 'type' must be one of {QA_TYPES}, got {s.type!r}")
    if s.type == "mcq":
        a = s.answer.strip().upper()
        if len(a) != 1 or a not in _LETTERS:
            raise RLDataError(f"{where}: a multiple-choice answer must be one option letter A-Z, got {s.answer!r:.80}")
        if s.options:
            if len(s.options) > len(_LETTERS):
                raise RLDataError(f"{where}: at most {len(_LETTERS)} options, got {len(s.options)}")
            letters = [(_LABELLED_OPTION.match(o).group(1) if _LABELLED_OPTION.match(o) else _LETTERS[k])
                       for k, o in enumerate(s.options)]
            if a not in letters:
                raise RLDataError(f"{where}: answer {a!r} is not one of the option letters {letters}")
    elif s.options:
        raise RLDataError(f"{where}: an open question has no 'options' (got {len(s.options)})")


def iter_rl_set(path: str | os.PathLike, *, infer_type: bool = False, skip_bad: bool = False,
                errors: list[str] | None = None) -> Iterable[RLSample]:
    """Samples of a jsonl file, in order (blank lines ignored).

    Args:
        path: the file.
        infer_type: see :meth:`RLSample.from_dict` (source QA sets).
        skip_bad: skip malformed lines instead of raising (reasons appended to ``errors``).
        errors: collects ``"file:line: reason"`` of skipped lines.

    Raises:
        FileNotFoundError: no such file.
        RLDataError: a malformed line (``skip_bad=False``); the message names ``file:line``.
    """
    yield from parse_lines(path, lambda d, where: RLSample.from_dict(d, where, infer_type=infer_type), RLDataError,
                           what="question set", skip_bad=skip_bad, errors=errors)


def load_rl_set(path: str | os.PathLike, *, infer_type: bool = False, video_root: str | os.PathLike | None = None,
                check_videos: bool = False, skip_bad: bool = False, errors: list[str] | None = None) -> list[RLSample]:
    """All samples of an RL set (or source QA set) file, validated.

    Args:
        path: the jsonl file.
        infer_type: allow a missing ``type`` (see :meth:`RLSample.from_dict`).
        video_root: folder relative ``video`` paths are resolved against (for ``check_videos``).
        check_videos: also require every video file to exist (a missing one is a bad line).
        skip_bad, errors: see :func:`iter_rl_set`.

    Raises:
        FileNotFoundError, RLDataError: see :func:`iter_rl_set`.
    """
    out = []
    for s in iter_rl_set(path, infer_type=infer_type, skip_bad=skip_bad, errors=errors):
        if check_videos and not Path(s.video_path(video_root)).is_file():
            msg = f"{s.where}: video {s.video_path(video_root)!r} does not exist"
            if not skip_bad:
                raise RLDataError(msg)
            if errors is not None:
                errors.append(msg)
            continue
        out.append(s)
    return out


def write_rl_set(path: str | os.PathLike, samples: Iterable[RLSample], append: bool = False) -> int:
    """Write samples as jsonl (one line each, appended with ``append``); returns how many. Each
    line is flushed and fsynced as a whole, so an interrupted append leaves whole lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        if append and f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write("\n")  # a file that does not end its last line
        for s in samples:
            f.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    return n


def balance_types(samples: Sequence[RLSample], mcq_ratio: float | None, seed: int = 0) -> list[RLSample]:
    """Subsample one question type so multiple-choice questions make ``mcq_ratio`` of the set
    (paper: 90 % open-ended, 10 % multiple-choice); nothing is duplicated.

    Raises:
        ValueError: the ratio needs a type the set lacks.
    """
    if mcq_ratio is None:
        return list(samples)
    mcq = [s for s in samples if s.type == "mcq"]
    opn = [s for s in samples if s.type == "open"]
    if (mcq_ratio > 0 and not mcq) or (mcq_ratio < 1 and not opn):
        raise ValueError(f"mcq_ratio={mcq_ratio} but the set has {len(mcq)} multiple-choice and {len(opn)} open questions")
    rng = random.Random(seed)
    if mcq_ratio in (0.0, 1.0):
        keep = mcq if mcq_ratio == 1.0 else opn
    elif len(mcq) / (len(mcq) + len(opn)) > mcq_ratio:
        n = int(round(len(opn) * mcq_ratio / (1 - mcq_ratio)))
        keep = rng.sample(mcq, max(1, n)) + opn
    else:
        n = int(round(len(mcq) * (1 - mcq_ratio) / mcq_ratio))
        keep = mcq + rng.sample(opn, max(1, n))
    order = {id(s): k for k, s in enumerate(samples)}
    return sorted(keep, key=lambda s: order[id(s)])


__all__ = ["QA_TYPES", "RLDataError", "RLSample", "balance_types", "iter_rl_set", "load_rl_set", "write_rl_set"]
