"""Scoring exactly as EVA's reference ``accuracy.py`` defines it, plus our breakdowns.

The reference rule (wangruohui/EfficientVideoAgent ``accuracy.py``), restated:

* every line of the results file is one question (no de-duplication); an empty file is an error;
* ``num_rounds`` and ``total_tokens`` must be present, not null, and numbers, on every line;
* ``stop_reason`` defaults to ``"missing_stop_reason"`` and is counted as ``str(...)``;
* ``gt`` and ``answer`` default to ``""``, are turned into text with ``str`` (so a JSON ``null``
  becomes ``"None"``), stripped and upper-cased; an empty answer counts as wrong (and as
  "failed (empty answer)"), otherwise the answer is right when the two strings are equal;
* accuracy = right / lines; average rounds and tokens are over all lines.

We add: averages of ``estimated_visual_tokens`` / ``visual_tokens`` where present, how many
records carry an ``error``, repeated indices (reported, still counted as the reference does), and
per-category accuracy (a multi-label question counts in each of its categories).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from eva_fast._checks import is_number
from eva_fast._jsonl import read_jsonl


def normalize_answer(value: Any) -> str:
    """The reference's comparison form: ``str(value).strip().upper()``."""
    return str(value).strip().upper()


def is_correct(record: Mapping[str, Any]) -> bool:
    """True when the record's answer is non-empty and equals its ground truth (reference rule)."""
    answer = normalize_answer(record.get("answer", ""))
    return answer != "" and answer == normalize_answer(record.get("gt", ""))


def _require_number(record: Mapping[str, Any], key: str, where: str) -> float:
    if key not in record:
        raise ValueError(f"{where}: missing required field `{key}`")
    value = record[key]
    if value is None:
        raise ValueError(f"{where}: field `{key}` is None")
    if not isinstance(value, (int, float)):  # bool is an int, as in the reference
        raise ValueError(f"{where}: field `{key}` must be a number, got {type(value).__name__}")
    return value


@dataclass
class CategoryScore:
    """Accuracy of one category: ``correct`` of ``total`` questions."""

    total: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


@dataclass
class Summary:
    """The score of one results file (or list of records).

    Attributes:
        total: records scored (lines of the file).
        correct: right answers; ``accuracy = correct / total`` (fraction in [0, 1]).
        empty_answers: records whose answer is empty after stripping (counted wrong).
        avg_rounds: mean ``num_rounds``; avg_total_tokens: mean ``total_tokens`` (last round's
            prompt + completion tokens, the reference's definition).
        stop_reasons: stop reason -> count, most common first.
        avg_estimated_visual_tokens / avg_visual_tokens: means over the records that carry the
            field (``None`` when none does).
        errors: records with a non-empty ``error`` field.
        duplicate_indices: indices that occur on more than one line.
        categories: category -> :class:`CategoryScore`.
        missing_indices: questions of the benchmark with no record (only when a benchmark's
            index list was given); they are not in ``total``.
    """

    total: int
    correct: int
    empty_answers: int
    avg_rounds: float
    avg_total_tokens: float
    stop_reasons: dict[str, int]
    avg_estimated_visual_tokens: float | None = None
    avg_visual_tokens: float | None = None
    errors: int = 0
    duplicate_indices: list[int] = field(default_factory=list)
    categories: dict[str, CategoryScore] = field(default_factory=dict)
    missing_indices: list[int] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracy"] = self.accuracy
        d["categories"] = {k: {"total": v.total, "correct": v.correct, "accuracy": v.accuracy}
                           for k, v in self.categories.items()}
        return d

    def format(self, title: str = "") -> str:
        """Human-readable text in the layout of the reference script's summary, plus ours."""
        lines = [f"Evaluating {title}..." if title else "summary:"]
        if title:
            lines.append("summary:")
        lines += [
            f"  total entries: {self.total}",
            f"  accuracy: {self.correct}/{self.total} = {self.accuracy:.4%}",
            f"  failed (empty answer): {self.empty_answers}",
            f"  avg rounds: {self.avg_rounds:.4f}",
            f"  avg total_tokens: {self.avg_total_tokens:.4f}",
        ]
        if self.avg_estimated_visual_tokens is not None:
            lines.append(f"  avg estimated_visual_tokens: {self.avg_estimated_visual_tokens:.4f}")
        if self.avg_visual_tokens is not None:
            lines.append(f"  avg visual_tokens (exact): {self.avg_visual_tokens:.4f}")
        lines.append("  stop_reason stats:")
        lines += [f"    {reason}: {count}" for reason, count in self.stop_reasons.items()]
        if self.errors:
            lines.append(f"  records with an error: {self.errors}")
        if self.duplicate_indices:
            lines.append(f"  WARNING: {len(self.duplicate_indices)} indices occur more than once "
                         f"(counted every time, as the reference does): {self.duplicate_indices[:10]}")
        if self.missing_indices:
            lines.append(f"  missing results: {len(self.missing_indices)} questions have no record "
                         f"(not counted above)")
        if self.categories:
            lines.append("  per category:")
            width = max(len(k) for k in self.categories)
            for name, c in sorted(self.categories.items()):
                lines.append(f"    {name:<{width}}  {c.correct:>5}/{c.total:<5} = {c.accuracy:.4%}")
        return "\n".join(lines)


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def score_records(records: Sequence[Mapping[str, Any]], categories_by_index: Mapping[int, Sequence[str]] | None = None,
                  expected_indices: Iterable[int] | None = None, source: str = "records",
                  linenos: Sequence[int] | None = None) -> Summary:
    """Score records with the reference rule (see the module docstring).

    Args:
        records: result records (reference format: ``gt``, ``answer``, ``stop_reason``,
            ``num_rounds``, ``total_tokens``; ``index`` optional).
        categories_by_index: index -> categories; when absent a record's own ``categories`` field
            is used.
        expected_indices: the benchmark's indices, to list questions with no record.
        source: name used in error messages (the file).
        linenos: the file line of each record, for error messages (default 1..N).

    Raises:
        ValueError: no records, or a record without numeric ``num_rounds``/``total_tokens``
            (the message names ``source`` and the line).
    """
    if not records:
        raise ValueError(f"{source} is empty")
    reasons: Counter[str] = Counter()
    correct = empty = errors = 0
    rounds: list[float] = []
    tokens: list[float] = []
    est: list[float] = []
    vis: list[float] = []
    seen: Counter[int] = Counter()
    cats: dict[str, CategoryScore] = {}
    for k, rec in enumerate(records):
        where = f"{source}:{linenos[k] if linenos is not None else k + 1}"
        reasons[str(rec.get("stop_reason", "missing_stop_reason"))] += 1
        rounds.append(_require_number(rec, "num_rounds", where))
        tokens.append(_require_number(rec, "total_tokens", where))
        for key, acc in (("estimated_visual_tokens", est), ("visual_tokens", vis)):
            v = rec.get(key)
            if is_number(v):
                acc.append(v)
        if rec.get("error"):
            errors += 1
        ok = is_correct(rec)
        if normalize_answer(rec.get("answer", "")) == "":
            empty += 1
        correct += ok
        index = rec.get("index")
        if isinstance(index, int):
            seen[index] += 1
        if categories_by_index is not None and isinstance(index, int):
            rec_cats = categories_by_index.get(index, ())
        else:
            rec_cats = rec.get("categories") or ()
            if isinstance(rec_cats, str):
                rec_cats = (rec_cats,)
        for c in rec_cats:
            cs = cats.setdefault(str(c), CategoryScore())
            cs.total += 1
            cs.correct += ok
    n = len(records)
    missing = sorted(set(expected_indices) - set(seen)) if expected_indices is not None else []
    return Summary(
        total=n,
        correct=correct,
        empty_answers=empty,
        avg_rounds=math.fsum(rounds) / n,
        avg_total_tokens=math.fsum(tokens) / n,
        stop_reasons=dict(reasons.most_common()),
        avg_estimated_visual_tokens=_mean(est),
        avg_visual_tokens=_mean(vis),
        errors=errors,
        duplicate_indices=sorted(i for i, c in seen.items() if c > 1),
        categories=cats,
        missing_indices=missing,
    )


def score_file(path: str | os.PathLike, categories_by_index: Mapping[int, Sequence[str]] | None = None,
               expected_indices: Iterable[int] | None = None) -> Summary:
    """Score a results jsonl (any file in the reference format) line by line.

    Raises:
        JsonlFormatError: a line that is not a JSON object (names file and line).
        ValueError: an empty file, or a line without numeric ``num_rounds``/``total_tokens``.
    """
    linenos, records = [], []
    for lineno, rec in read_jsonl(path):
        linenos.append(lineno)
        records.append(rec)
    return score_records(records, categories_by_index, expected_indices, source=str(path), linenos=linenos)


__all__ = ["CategoryScore", "Summary", "is_correct", "normalize_answer", "score_file",
           "score_records"]
