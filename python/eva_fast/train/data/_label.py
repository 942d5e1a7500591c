"""KTO labels (paper §3.2, EVA-KTO: 63 % chosen, 37 % rejected): chosen = resampled successful
trajectories; rejected = failed ones, plus successful ones that got there the wrong way.

A trajectory is *rejected* when

* ``wrong_answer``: its answer is wrong (multiple choice: exact letter; open-ended: mean ROUGE
  below the threshold), or it stopped without an answer (``max_turns_exceeded``, no tool call, a
  malformed call, a call the frame tool refused); episodes stopped by an infrastructure error
  (``exception``, a refused request) are not labelled;
* ``no_visual_evidence``: it answered without a single successful ``frame_select`` call;
* ``dense_short_window`` (too many frames in a short window): some call took at least
  ``dense_min_frames`` frames at more than ``dense_max_fps`` frames per second of its window
  (frames closer than the content changes: tokens spent on near-duplicates);
* ``sparse_long_window`` (too few frames across a long one): every call covered a window of at
  least ``sparse_min_window_s`` seconds with more than ``sparse_max_spacing_s`` seconds between
  frames, i.e. the agent never looked closer than that before answering;
* ``judge_guessing``: an LLM judge (any OpenAI-compatible server; prompt
  ``prompts/judge_guessing.txt``) reading the episode's transcript says the answer was a guess:
  given without the visual evidence that would support it.

Windows are the clamped windows the frame tool sampled (``window_s`` in the record), frame counts
what it returned. Only successful trajectories that pass the rules go to the judge. The chosen /
rejected mix is then brought to the target chosen fraction (default the paper's 0.63) by dropping
samples of the larger class at random (seeded), unless ``balance=False``.

Outputs (``out`` = ``kto.jsonl``): the labelled records, ``kto.labels.jsonl`` (per input: label,
reasons, judge verdict; also the dropped and unusable ones), ``kto.judge.cache.jsonl`` (judge
verdicts, crash-safe; a rerun judges only what is new or changed), ``kto.report.json`` / ``.md``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eva_fast._checks import positive_int
from eva_fast._logging import get_logger
from eva_fast.agent import Message
from eva_fast.eval import ResultCache
from eva_fast.train._kto_weights import recommended_kto_weights
from eva_fast.train._records import write_records
from eva_fast.train.data._common import (
    DEFAULT_ROUGE_THRESHOLD,
    Case,
    ask,
    content_key,
    extract_json,
    is_model_stop,
    iter_cases,
    load_prompt,
    rate,
    render_prompt,
    write_report,
)

logger = get_logger("train.data")

#: The paper's chosen fraction (EVA-KTO, §3.2).
DEFAULT_CHOSEN_FRACTION = 0.63
JUDGE_VERDICTS = ("grounded", "guessing")


@dataclass(frozen=True)
class FailureRules:
    """Thresholds of the measurable failure rules (see the module docstring).

    Attributes:
        dense_max_fps: frames per second of a call's window above which a call is dense.
        dense_min_frames: a dense call has at least this many frames.
        sparse_min_window_s: a sparse look covers at least this many seconds ...
        sparse_max_spacing_s: ... with more than this many seconds between frames.
        no_visual_evidence: reject right answers given without any frames.
    """

    dense_max_fps: float = 2.0
    dense_min_frames: int = 8
    sparse_min_window_s: float = 60.0
    sparse_max_spacing_s: float = 10.0
    no_visual_evidence: bool = True

    def __post_init__(self) -> None:
        for name in ("dense_max_fps", "sparse_min_window_s", "sparse_max_spacing_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"FailureRules.{name} must be > 0, got {v!r}")
        positive_int("FailureRules.dense_min_frames", self.dense_min_frames)


def call_windows(record: Any) -> list[tuple[float, float, int]]:
    """``(start_s, end_s, nframes)`` of every recorded ``frame_select`` call of a record, in order:
    the clamped window the tool sampled (``window_s``, else the call's arguments) and the frames it
    returned."""
    out = []
    for k in sorted(record.calls):
        for c in record.calls[k]:
            w = c.extra.get("window_s") or (c.arguments.get("start_time"), c.arguments.get("end_time"))
            out.append((float(w[0]), float(w[1]), c.nframes))
    return out


def failure_flags(record: Any, rules: FailureRules) -> list[str]:
    """The rules a record breaks (names from the module docstring), in rule order; empty when none.
    Records whose tool turns hold image files (no recorded calls) are judged by the frame count only."""
    calls = call_windows(record)
    has_frames = bool(calls) or any(p["type"] == "image" for _, p in record.image_parts())
    flags = []
    if rules.no_visual_evidence and not has_frames:
        flags.append("no_visual_evidence")
    if any(n >= rules.dense_min_frames and n / max(e - s, 1e-6) > rules.dense_max_fps for s, e, n in calls):
        flags.append("dense_short_window")
    if calls and all((e - s) >= rules.sparse_min_window_s and (e - s) / max(n, 1) > rules.sparse_max_spacing_s
                     for s, e, n in calls):
        flags.append("sparse_long_window")
    return flags


def judge_transcript(record: Any, max_chars: int = 1500) -> str:
    """The episode as the judge reads it: each round's reply (cut to ``max_chars``) and what the
    tool returned (frame times and size), as text."""
    lines = []
    rnd = 0
    for k, m in enumerate(record.messages):
        if m["role"] == "assistant":
            rnd += 1
            text = m["content"].strip()
            if len(text) > max_chars:
                text = text[:max_chars] + f" ...[{len(text)} characters]"
            lines.append(f"Round {rnd}, the agent wrote:\n{text}")
        elif m["role"] == "tool":
            calls = record.calls.get(k, [])
            for c in calls:
                labels = c.extra.get("label_s") or []
                times = ", ".join(f"[{int(s) // 60:02d}:{int(s) % 60:02d}]" for s in labels[:64])
                h, w = c.size
                lines.append(f"  The tool returned {c.nframes} frames ({w}x{h} pixels) at {times or 'unknown times'}.")
            if not calls:
                n = sum(1 for p in m["content"] if p["type"] in ("frame", "image"))
                lines.append(f"  The tool returned {n} images.")
    return "\n".join(lines)


@dataclass
class LabelDecision:
    """The outcome for one input line.

    Attributes:
        where: ``file:line``; label: True (chosen) / False (rejected) / None (unusable).
        reasons: why rejected (or why unusable); flags: failure rules broken (also on failed ones).
        judge: the judge's verdict (``grounded``/``guessing``/``unparsed``/``error``) or None.
        kept: still in the output after balancing.
    """

    where: str
    label: bool | None
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    judge: str | None = None
    judge_reason: str | None = None
    kept: bool = False
    source: str = ""
    case: Case | None = field(default=None, repr=False)


class GuessingJudge:
    """The LLM judge of ``judge_guessing`` (see the module docstring).

    Args:
        backend: an agent backend (``openai`` against any OpenAI-compatible server).
        prompt_dir: folder with an edited ``judge_guessing.txt`` (else the packaged one).
        max_new_tokens: reply length.
    """

    def __init__(self, backend: Any, prompt_dir: str | None = None, max_new_tokens: int = 256) -> None:
        self.backend = backend
        self.prompt_dir = prompt_dir
        self.max_new_tokens = max_new_tokens
        self.template = load_prompt("judge_guessing", prompt_dir)

    def prompt(self, record: Any) -> str:
        return render_prompt("judge_guessing", self.prompt_dir, question=record.question.strip(),
                             duration_s=int(record.video_meta.get("duration_s", 0) or 0),
                             transcript=judge_transcript(record), answer=record.answer or "")

    @staticmethod
    def parse(reply: str) -> tuple[str, str | None]:
        """``(verdict, reason)`` of a reply: ``grounded``/``guessing``, or ``unparsed`` with the
        problem when the reply is not the JSON object the prompt asks for."""
        try:
            obj = extract_json(reply, dict)
        except ValueError as e:
            return "unparsed", str(e)
        v = str(obj.get("verdict", "")).strip().lower()
        if v not in JUDGE_VERDICTS:
            return "unparsed", f"verdict must be one of {JUDGE_VERDICTS}, got {obj.get('verdict')!r}"
        r = obj.get("reason")
        return v, None if r is None else str(r)

    async def judge(self, record: Any) -> dict[str, Any]:
        """``{"verdict", "reason", "reply"}``; a backend failure gives verdict ``error`` (never raises)."""
        try:
            gen = await ask(self.backend, [Message("user", self.prompt(record))], max_new_tokens=self.max_new_tokens)
        except Exception as e:  # one judge failure must not stop the labelling
            return {"verdict": "error", "reason": f"{type(e).__name__}: {e}", "reply": ""}
        verdict, reason = self.parse(gen.text)
        return {"verdict": verdict, "reason": reason, "reply": gen.text[:4000]}


def balance_labels(decisions: Sequence[LabelDecision], chosen_fraction: float, seed: int = 0) -> None:
    """Mark ``kept`` so the kept mix has ``chosen_fraction`` chosen (rounded), dropping random
    samples (seeded) of the larger class; every labelled sample is kept when one class is empty.

    Raises:
        ValueError: ``chosen_fraction`` outside (0, 1).
    """
    if not 0.0 < chosen_fraction < 1.0:
        raise ValueError(f"chosen fraction must be in (0, 1), got {chosen_fraction!r}")
    chosen = [d for d in decisions if d.label is True]
    rejected = [d for d in decisions if d.label is False]
    for d in chosen + rejected:
        d.kept = True
    if not chosen or not rejected:
        return
    rng = random.Random(seed)
    want_chosen = round(chosen_fraction / (1 - chosen_fraction) * len(rejected))
    if want_chosen < len(chosen):
        drop = rng.sample(chosen, len(chosen) - max(want_chosen, 1))
    else:
        want_rejected = round((1 - chosen_fraction) / chosen_fraction * len(chosen))
        drop = rng.sample(rejected, len(rejected) - max(min(want_rejected, len(rejected)), 1))
    for d in drop:
        d.kept = False
        d.reasons.append("dropped_for_ratio")


async def alabel(
    inputs: Sequence[str],
    out: str | Path,
    *,
    judge: GuessingJudge | None = None,
    rules: FailureRules | None = None,
    chosen_fraction: float = DEFAULT_CHOSEN_FRACTION,
    balance: bool = True,
    seed: int = 0,
    rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD,
    qtype: str | None = None,
    concurrency: int = 16,
    judge_identity: Mapping[str, Any] | None = None,
    on_judged: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Label trajectories for KTO and write the outputs (see the module docstring).

    Args:
        inputs: files of trajectories: ``eva-fast data teacher``'s ``*.trajectories.jsonl``, training
            records, eval result files, or trajectory jsonl (GRPO rollout dumps with reward fields).
        out: output jsonl of labelled records.
        judge: the guessing judge (None: no judge).
        rules: failure-rule thresholds.
        chosen_fraction: target chosen share of the output (paper 0.63); balance: apply it.
        seed: seed of the balancing draw.
        rouge_threshold: open-ended answers count as right at this mean ROUGE or above.
        qtype: the inputs' question type when they do not say (``mcq``/``open``; None: inferred).
        concurrency: judge requests in flight.
        judge_identity: the judge model's identity (part of each cached verdict's key).
        on_judged: progress callback ``(done, total)``.

    Returns:
        The report dict (also written to ``<out stem>.report.json``).

    Raises:
        FileNotFoundError: a missing input; ValueError: bad arguments.
    """
    rules = rules or FailureRules()
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".jsonl" else out
    decisions: list[LabelDecision] = []
    unusable: Counter = Counter()
    for case in iter_cases(inputs, qtype=qtype, rouge_threshold=rouge_threshold):
        d = LabelDecision(case.where, None, source=case.source, case=case)
        decisions.append(d)
        if case.error is not None or case.record is None:
            d.reasons.append(f"unusable: {case.error}")
            unusable["unreadable"] += 1
            continue
        if not is_model_stop(case.stop_reason):
            d.reasons.append(f"unusable: stopped by {case.stop_reason.split(':')[0]}")
            unusable["not_finished"] += 1
            continue
        if case.correct is None:
            d.reasons.append("unusable: no ground truth or reward to tell right from wrong")
            unusable["no_ground_truth"] += 1
            continue
        d.flags = failure_flags(case.record, rules)
        if not case.correct:
            d.label, d.reasons = False, ["wrong_answer"]
        elif d.flags:
            d.label, d.reasons = False, list(d.flags)
        else:
            d.label = True

    judged: Counter = Counter()
    if judge is not None:
        todo = [d for d in decisions if d.label is True]
        ident = dict(judge_identity or {})
        with ResultCache(f"{stem}.judge.cache.jsonl") as cache:
            keys = {}
            for i, d in enumerate(todo):
                keys[i] = content_key(d.case.record.to_dict(), judge.template, ident)
            pending = [i for i in keys if cache.records.get(i, {}).get("key") != keys[i]]
            sem = asyncio.Semaphore(max(1, concurrency))
            done = len(todo) - len(pending)
            if on_judged is not None:
                on_judged(done, len(todo))

            async def one(i: int) -> tuple[int, dict[str, Any]]:
                async with sem:
                    return i, await judge.judge(todo[i].case.record)

            for fut in asyncio.as_completed([one(i) for i in pending]):
                i, verdict = await fut
                cache.append({"index": i, "key": keys[i], "where": todo[i].where, **verdict})
                done += 1
                if on_judged is not None:
                    on_judged(done, len(todo))
            for i, d in enumerate(todo):
                v = cache.records[i]
                d.judge, d.judge_reason = v["verdict"], v.get("reason")
                judged[v["verdict"]] += 1
                if v["verdict"] == "guessing":
                    d.label, d.reasons = False, ["judge_guessing"]

    labelled = [d for d in decisions if d.label is not None]
    before = Counter("chosen" if d.label else "rejected" for d in labelled)
    if balance:
        balance_labels(labelled, chosen_fraction, seed)
    else:
        for d in labelled:
            d.kept = True
    kept = [d for d in labelled if d.kept]
    records = []
    for d in kept:
        r = d.case.record
        r.label = d.label
        if d.case.score is not None and not r.rewards:
            r.rewards = {"accuracy" if d.case.qtype == "mcq" else "rouge": float(d.case.score)}
        records.append(r)
    write_records(out, records)
    with open(f"{stem}.labels.jsonl", "w", encoding="utf-8") as f:
        for d in decisions:
            f.write(json.dumps({"where": d.where, "source": d.source, "label": d.label, "kept": d.kept,
                                "reasons": d.reasons, "flags": d.flags, "judge": d.judge,
                                "judge_reason": d.judge_reason}, ensure_ascii=False) + "\n")

    after = Counter("chosen" if d.label else "rejected" for d in kept)
    reasons = Counter(r for d in labelled if d.label is False for r in d.reasons if r != "dropped_for_ratio")
    flags = Counter(f for d in labelled for f in d.flags)
    per_source: dict[str, Counter] = defaultdict(Counter)
    for d in decisions:
        src = d.source.rsplit("#", 1)[0].split(":")[0] if d.source else "?"
        c = per_source[src]
        c["inputs"] += 1
        c["chosen"] += d.kept and d.label is True
        c["rejected"] += d.kept and d.label is False
        c["unusable"] += d.label is None
    n_c, n_r = after.get("chosen", 0), after.get("rejected", 0)
    weights = recommended_kto_weights(n_c, n_r) if n_c and n_r else None
    report = {
        "run": {"inputs": list(map(str, inputs)), "out": str(out), "target_chosen_fraction": chosen_fraction if balance else None,
                "seed": seed, "rouge_threshold": rouge_threshold, "judge": judge is not None, "rules": asdict(rules)},
        "counts": {"inputs": len(decisions), "labelled": len(labelled), "unusable": sum(unusable.values()),
                   "written": len(kept)},
        "unusable": dict(sorted(unusable.items())),
        "label_mix": {
            "before_balancing": {"chosen": before.get("chosen", 0), "rejected": before.get("rejected", 0),
                                 "chosen_fraction": rate(before.get("chosen", 0), len(labelled))},
            "written": {"chosen": n_c, "rejected": n_r, "chosen_fraction": rate(n_c, n_c + n_r)},
        },
        "rejected_by_reason": dict(sorted(reasons.items())),
        "failure_rule_hits": dict(sorted(flags.items())),
        "judge_verdicts": dict(sorted(judged.items())),
        "per_source": {k: dict(v) for k, v in sorted(per_source.items())},
        "recommended_kto_weights": None if weights is None else {
            "desirable_weight": round(weights.desirable_weight, 4),
            "undesirable_weight": round(weights.undesirable_weight, 4)},
    }
    write_report(stem, "KTO labels", report)
    return report
