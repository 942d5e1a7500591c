"""Pieces the data-construction steps share: prompt templates, answer scoring, reading trajectory
inputs, the model backend, content keys for resumable caches, and per-run reports."""

from __future__ import annotations

import hashlib
import json
import os
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eva_fast._checks import is_number
from eva_fast._jsonl import JsonlFormatError, json_lines
from eva_fast._logging import get_logger
from eva_fast.agent import get_backend
from eva_fast.train._records import FORMAT, RecordError, TrajectoryRecord, record_from_trajectory
from eva_fast.train.rewards import mcq_accuracy, rouge_reward

logger = get_logger("train.data")

#: Packaged prompt templates (``string.Template``: ``$name`` placeholders, ``$$`` for a dollar sign).
PROMPT_DIR = Path(__file__).parent / "prompts"
#: Default ROUGE threshold (mean of ROUGE-1/2/L F1) above which an open-ended answer counts as right.
DEFAULT_ROUGE_THRESHOLD = 0.5


# ---------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------


def load_prompt(name: str, prompt_dir: str | os.PathLike | None = None) -> str:
    """The template ``<name>.txt``: from ``prompt_dir`` when it has one (user-edited copies), else
    the packaged one (:data:`PROMPT_DIR`).

    Raises:
        FileNotFoundError: no such template (the message lists the packaged names).
    """
    for d in ([Path(prompt_dir)] if prompt_dir else []) + [PROMPT_DIR]:
        p = d / f"{name}.txt"
        if p.is_file():
            return p.read_text(encoding="utf-8")
    known = sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))
    raise FileNotFoundError(f"no prompt template {name!r} (in {prompt_dir or PROMPT_DIR}); packaged: {known}")


def render_prompt(name: str, prompt_dir: str | os.PathLike | None = None, **values: Any) -> str:
    """:func:`load_prompt` with ``$placeholders`` filled from ``values``.

    Raises:
        ValueError: the template uses a placeholder not given (names it and the template).
    """
    text = load_prompt(name, prompt_dir)
    try:
        return string.Template(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as e:
        raise ValueError(f"prompt template {name!r} uses ${e.args[0]}, which this step does not fill; "
                         f"available: {sorted(values)}") from None
    except ValueError as e:  # a lone '$'
        raise ValueError(f"prompt template {name!r}: {e} (write a literal dollar sign as $$)") from None


def prompt_hash(*texts: str) -> str:
    """Short content hash of prompt texts (recorded so a resumed run notices edited prompts)."""
    return content_key(*texts)[:12]


def content_key(*parts: Any) -> str:
    """SHA-1 of the JSON of ``parts``: the identity of a cached unit of work (inputs + prompt +
    model), so a resumed run redoes exactly the units whose inputs changed."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# answers
# ---------------------------------------------------------------------------------------------

_OPTION_MARK = ("{}.", "({})", "{})", "{}:")


def infer_answer_type(gt: str, question: str) -> str:
    """``"mcq"`` when ``gt`` is one letter A-Z that the question lists as an option ("B.", "(B)",
    "B)" or "B:"), else ``"open"`` (used when an input does not say its type)."""
    g = str(gt).strip().upper()
    if len(g) == 1 and g.isalpha() and g.isascii():
        if any(m.format(g) in question for m in _OPTION_MARK):
            return "mcq"
    return "open"


def score_answer(answer: str, gt: str, qtype: str, rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD
                 ) -> tuple[bool, float]:
    """``(right, score)`` of an answer: multiple choice by exact letter after ``strip().upper()``
    (EVA's ``accuracy.py``, :func:`eva_fast.train.rewards.mcq_accuracy`), open-ended by the mean of
    ROUGE-1/2/L F1 with stemming (:func:`eva_fast.train.rewards.rouge_reward`) at or above
    ``rouge_threshold``.

    Raises:
        ValueError: ``qtype`` not ``"mcq"``/``"open"``.
    """
    if qtype == "mcq":
        s = mcq_accuracy(answer or "", gt)
        return s == 1.0, s
    if qtype == "open":
        s = rouge_reward(answer or "", gt)
        return s >= rouge_threshold, s
    raise ValueError(f"question type must be 'mcq' or 'open', got {qtype!r}")


# ---------------------------------------------------------------------------------------------
# trajectory inputs
# ---------------------------------------------------------------------------------------------

def is_model_stop(stop_reason: str) -> bool:
    """Whether an episode ended by the model's doing (an answer, no call, a malformed call, a frame
    tool refusal, too many turns) rather than an infrastructure error (``exception: ...``, a refused
    request), which says nothing about the model. An empty stop reason (unknown) counts as the model's."""
    s = str(stop_reason or "")
    return not (s.startswith("exception") or s == "openai_bad_request")


@dataclass
class Case:
    """One episode read from an input file.

    Attributes:
        where: ``file:line``.
        record: the episode as a training record, or None when it could not be converted.
        stop_reason: the episode's stop reason ("" when the input does not say).
        gt: ground truth ("" when unknown); qtype: ``"mcq"``/``"open"`` or None when unknown.
        categories: the question's categories.
        correct: whether the answer is right, None when it cannot be told.
        score: the answer's score (accuracy or ROUGE), None when unknown.
        error: why the line could not be used, or None.
        raw: the input object.
    """

    where: str
    record: Any = None
    stop_reason: str = ""
    gt: str = ""
    qtype: str | None = None
    categories: tuple[str, ...] = ()
    correct: bool | None = None
    score: float | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def question(self) -> str:
        return self.record.question if self.record is not None else str(self.raw.get("question", ""))

    @property
    def answer(self) -> str:
        return (self.record.answer if self.record is not None else self.raw.get("answer")) or ""

    @property
    def source(self) -> str:
        return (self.record.source if self.record is not None else None) or self.where


def _reward_correct(obj: Mapping[str, Any]) -> tuple[bool | None, float | None]:
    """Correctness from reward fields of a rollout dump: ``correct`` (bool), else ``accuracy`` /
    ``rewards.accuracy`` / ``reward_accuracy`` (1 = right)."""
    if isinstance(obj.get("correct"), bool):
        return obj["correct"], float(obj["correct"])
    rewards = obj.get("rewards") if isinstance(obj.get("rewards"), Mapping) else {}
    for v in (obj.get("accuracy"), rewards.get("accuracy"), obj.get("reward_accuracy")):
        if is_number(v):
            return float(v) >= 0.5, float(v)
    return None, None


def case_from_object(obj: Any, where: str, *, base_dir: str | None = None, qtype: str | None = None,
                     rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD) -> Case:
    """A :class:`Case` from one input line: a training record (``format`` ``eva_fast.trajectory``;
    its ``label`` is taken as the outcome when set), an eval result record (``trajectory`` + ``gt``),
    or a trajectory dict (``Trajectory.to_dict()``, e.g. a GRPO rollout dump) with optional ``gt``,
    ``type``, ``category`` and reward fields (``correct``, ``accuracy``, ``rewards.accuracy``).

    Outcome: a record's ``label``; else the answer scored against ``gt`` (:func:`score_answer`, type
    from ``type``/``qtype`` or :func:`infer_answer_type`); else the reward fields. Never raises for
    a bad line: ``error`` says what is wrong.
    """
    if not isinstance(obj, dict):
        return Case(where, error=f"not a JSON object ({type(obj).__name__})")
    case = Case(where, raw=obj)
    try:
        if obj.get("format") == FORMAT:
            case.record = TrajectoryRecord.from_dict(obj, where, base_dir)
            case.stop_reason = "answer_found" if case.record.answer else ""
        elif isinstance(obj.get("trajectory"), dict) or "turns" in obj:
            traj = obj["trajectory"] if isinstance(obj.get("trajectory"), dict) else obj
            case.stop_reason = str(obj.get("stop_reason") or traj.get("stop_reason") or "")
            gt = obj.get("gt", obj.get("answer_gt"))
            case.record = record_from_trajectory(obj if "trajectory" in obj else traj,
                                                 gt=None if gt is None else str(gt), source=obj.get("source") or where)
        else:
            return Case(where, raw=obj, error="not a training record, eval result or trajectory")
    except (RecordError, KeyError, TypeError, ValueError) as e:
        case.error = f"{type(e).__name__}: {e}"
        return case
    rec = case.record
    cats = obj.get("categories") or ([obj["category"]] if obj.get("category") else [])
    case.categories = tuple(str(c) for c in cats) if isinstance(cats, (list, tuple)) else (str(cats),)
    case.gt = "" if rec.gt is None else str(rec.gt)
    t = obj.get("type") or qtype
    if rec.label is not None and obj.get("format") == FORMAT:
        case.correct = rec.label
        case.score = rec.rewards.get("accuracy", rec.rewards.get("rouge"))
        case.qtype = t or (infer_answer_type(case.gt, rec.question) if case.gt else None)
    elif case.gt:
        case.qtype = t or infer_answer_type(case.gt, rec.question)
        case.correct, case.score = score_answer(rec.answer or "", case.gt, case.qtype, rouge_threshold)
    else:
        case.qtype = t
        case.correct, case.score = _reward_correct(obj)
    return case


def iter_cases(paths: Sequence[str | os.PathLike], **kwargs: Any) -> Iterator[Case]:
    """:func:`case_from_object` for every line of every file (a single JSON object file, as
    ``eva-fast ask --json`` writes, counts as one line).

    Raises:
        FileNotFoundError: a missing input file.
    """
    for name in paths:
        base = str(Path(name).resolve().parent)
        for lineno, obj in json_lines(name, what="input", single_object=True):
            where = f"{Path(name)}:{lineno}"
            if isinstance(obj, JsonlFormatError):
                yield Case(where, error=f"not JSON ({obj.detail})")
            else:
                yield case_from_object(obj, where, base_dir=base, **kwargs)


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------


def parse_key_values(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` (values parsed as JSON when they are) -> dict.

    Raises:
        ValueError: an item without ``=`` (names the flag).
    """
    out: dict[str, Any] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE, got {p!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def make_backend(name: str, *, base_url: str | None = None, model: str | None = None,
                 backend_args: Mapping[str, Any] | None = None) -> Any:
    """An agent backend (:func:`eva_fast.agent.get_backend`): ``openai`` takes ``base_url`` and the
    served ``model`` name; in-process backends take ``model`` as ``model_path``.

    Raises:
        ValueError: unknown backend or an argument it does not take.
    """
    kw = dict(backend_args or {})
    if name == "openai":
        if base_url is not None:
            kw.setdefault("base_url", base_url)
        if model is not None:
            kw.setdefault("model", model)
    elif model is not None:
        kw.setdefault("model_path", model)
    try:
        return get_backend(name, **kw)
    except TypeError as e:
        raise ValueError(f"backend {name!r}: {e}") from None


def backend_identity(name: str, model: str | None, backend_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """What makes a backend's answers comparable across a resume (server addresses, keys and
    timeouts left out, as the eval runner does)."""
    args = {k: str(v) for k, v in (backend_args or {}).items()
            if not any(w in k.lower() for w in ("url", "key", "timeout", "concurren", "retr"))}
    return {"backend": name, "model": model, "backend_args": args}


async def ask(backend: Any, messages: Sequence[Any], *, max_new_tokens: int, temperature: float = 0.0) -> Any:
    """One model turn outside the agent loop (judge, question writer): a session, one generate."""
    session = backend.session()
    try:
        return await session.generate(list(messages), max_new_tokens=max_new_tokens, temperature=temperature)
    finally:
        await session.aclose()


def extract_json(text: str, kind: type) -> Any:
    """The first JSON value of type ``kind`` (``dict`` or ``list``) in a model reply: the whole
    reply, else a ```json fenced block, else the span from the first opening bracket to the last
    closing one.

    Raises:
        ValueError: none parses to a ``kind`` (the message quotes the start of the reply).
    """
    opener, closer = ("{", "}") if kind is dict else ("[", "]")
    candidates = [text.strip()]
    if "```" in text:
        for block in text.split("```")[1::2]:
            candidates.append(block[4:] if block.lower().startswith("json") else block)
    a, b = text.find(opener), text.rfind(closer)
    if 0 <= a < b:
        candidates.append(text[a : b + 1])
    for c in candidates:
        try:
            v = json.loads(c.strip())
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(v, kind):
            return v
    raise ValueError(f"no JSON {kind.__name__} in the reply: {text[:160]!r}")


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------


def rate(num: int, den: int) -> float | None:
    """``num / den`` rounded to 4 places, None when ``den`` is 0."""
    return round(num / den, 4) if den else None


def write_report(stem: str | os.PathLike, title: str, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``<stem>.report.json`` (the dict) and ``<stem>.report.md`` (one table per section:
    flat key/value sections as two columns, nested ``{row: {col: value}}`` as a grid). Returns both
    paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    jpath, mpath = Path(f"{stem}.report.json"), Path(f"{stem}.report.md")
    jpath.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    lines = [f"# {title}", ""]
    for section, body in report.items():
        lines.append(f"## {section}")
        lines.append("")
        if isinstance(body, Mapping) and body and all(isinstance(v, Mapping) for v in body.values()):
            cols = list(dict.fromkeys(c for v in body.values() for c in v))
            lines.append("| | " + " | ".join(cols) + " |")
            lines.append("|---|" + "---:|" * len(cols))
            for row, v in body.items():
                lines.append(f"| {row} | " + " | ".join(_cell(v.get(c)) for c in cols) + " |")
        elif isinstance(body, Mapping):
            lines.append("| | |")
            lines.append("|---|---:|")
            for k, v in body.items():
                lines.append(f"| {k} | {_cell(v)} |")
        else:
            lines.append(_cell(body))
        lines.append("")
    mpath.write_text("\n".join(lines), encoding="utf-8")
    return jpath, mpath


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_cell(x)}" for k, x in v.items())
    return str(v).replace("|", "\\|").replace("\n", " ")
