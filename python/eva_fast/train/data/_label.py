"""KTO labels (paper §3.2, EVA-KTO) as the paper builds them, by default:

* **rejected** = the *incorrect* trajectories of the SFT-data construction pipeline (the teacher's
  wrong answers, ``eva-fast data teacher``'s ``*.trajectories.jsonl``) that an LLM judge classifies
  as guessing: "reasoning without enough visual tokens but still generating an answer" (any
  OpenAI-compatible server; prompt ``prompts/judge_guessing.txt``). The judge's full prompt, its
  reply and verdict are stored per sample (``kto.labels.jsonl``). A wrong trajectory the judge
  calls grounded is not used (neither chosen nor rejected);
* **chosen** = re-sampled successful trajectories (a second ``eva-fast data teacher`` run with
  ``--samples-per-question`` and a temperature: from the teacher by default, from the SFT model with
  ``--student-prompt``; its ``*.sft.jsonl`` holds the successful, well-structured ones);
* the mix is brought to 63 % chosen / 37 % rejected (``chosen_fraction``) by dropping random
  samples (seeded) of the larger class, unless ``balance=False``.

Inputs have a role: ``rejected`` inputs give only their wrong trajectories, ``chosen`` inputs only
their right ones, ``both`` (plain inputs) either. Episodes stopped by an infrastructure error
(``exception``, a refused request) and lines without a way to tell right from wrong are unusable.

**Extra rejections** (opt-in, by name; ``extra_rejections``) model the failure patterns the paper
lists ("too many frames within a short temporal window, or too few frames across a relatively long
one") and the project's earlier, stricter labelling:

* ``wrong_answer``: every wrong answer is rejected, without asking the judge;
* ``no_visual_evidence``: a right answer given without a single successful ``frame_select`` call;
* ``dense_short_window``: a right trajectory with a call of at least ``dense_min_frames`` frames at
  more than ``dense_max_fps`` frames per second of its window (tokens spent on near-duplicates);
* ``sparse_long_window``: a right trajectory whose every call covered at least
  ``sparse_min_window_s`` seconds with more than ``sparse_max_spacing_s`` seconds between frames
  (it never looked closer before answering);
* ``judge_correct``: the judge also reads the right trajectories and a ``guessing`` verdict rejects
  them (an unparsable verdict does not).

Windows are the clamped windows the frame tool sampled (``window_s`` in the record), frame counts
what it returned; the rules' hits are reported for every trajectory whether or not they reject.
The written records get the student's system turn (``record_system="student"``: the teacher's
trajectories carry the teacher prompt, the student is trained on what it sees at inference).

Outputs (``out`` = ``kto.jsonl``): the labelled records, ``kto.labels.jsonl`` (per input line:
role, label, reasons, rule hits, the judge's prompt, reply and verdict, the line in ``kto.jsonl``;
also the unused and unusable ones), ``kto.judge.cache.jsonl`` (judge verdicts, crash-safe; a rerun
judges only what is new or changed), ``kto.report.json`` / ``.md``.
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
from eva_fast.agent import SYSTEM_PROMPT, Message
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
#: Opt-in rejections beyond the paper's (see the module docstring), in the order they are checked.
EXTRA_REJECTIONS = ("wrong_answer", "no_visual_evidence", "dense_short_window", "sparse_long_window", "judge_correct")
#: What an input file contributes: its wrong trajectories (``rejected``), its right ones (``chosen``), or both.
INPUT_ROLES = ("both", "chosen", "rejected")
LABEL_RECORD_SYSTEMS = ("student", "keep")


@dataclass(frozen=True)
class FailureRules:
    """Thresholds of the measurable failure rules (see the module docstring).

    Attributes:
        dense_max_fps: frames per second of a call's window above which a call is dense.
        dense_min_frames: a dense call has at least this many frames.
        sparse_min_window_s: a sparse look covers at least this many seconds ...
        sparse_max_spacing_s: ... with more than this many seconds between frames.
        no_visual_evidence: flag right answers given without any frames (rejects them only with the
            ``no_visual_evidence`` extra rejection).
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
        where: ``file:line``; label: True (chosen) / False (rejected) / None (unused or unusable).
        reasons: why rejected (or why unused / unusable); flags: failure rules broken (also on failed ones).
        judge: the judge's verdict (``grounded``/``guessing``/``unparsed``/``error``) or None.
        judge_reason, judge_prompt, judge_reply: the judge's stated reason, the prompt it got, its reply.
        judge_for: what the judge was asked about: ``rejected`` (a wrong trajectory) or ``chosen``.
        kept: still in the output after balancing.
        role: the input's role (:data:`INPUT_ROLES`).
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
    role: str = "both"
    judge_prompt: str | None = field(default=None, repr=False)
    judge_reply: str | None = field(default=None, repr=False)
    judge_for: str | None = None  # "rejected" (a wrong trajectory) or "chosen" (judge_correct)


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
        """``{"verdict", "reason", "reply", "prompt"}``; a backend failure gives verdict ``error``
        (never raises)."""
        prompt = self.prompt(record)
        try:
            gen = await ask(self.backend, [Message("user", prompt)], max_new_tokens=self.max_new_tokens)
        except Exception as e:  # one judge failure must not stop the labelling
            return {"verdict": "error", "reason": f"{type(e).__name__}: {e}", "reply": "", "prompt": prompt}
        verdict, reason = self.parse(gen.text)
        return {"verdict": verdict, "reason": reason, "reply": gen.text[:4000], "prompt": prompt}


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


def _parse_names(values: Sequence[str] | str | None, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    out = tuple(v.strip() for v in values if v.strip() and v.strip() != "none")
    bad = [v for v in out if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad}; choose from {list(allowed)}")
    return out


def student_system(record: Any) -> Any:
    """``record`` with its system turn replaced by the student's (:data:`eva_fast.agent.SYSTEM_PROMPT`),
    or one inserted first when it has none."""
    msgs = list(record.messages)
    if msgs and msgs[0]["role"] == "system":
        msgs[0] = {**msgs[0], "content": SYSTEM_PROMPT}
        record.messages = msgs
    else:  # message indices shift by one: so do the recorded calls
        record.messages = [{"role": "system", "content": SYSTEM_PROMPT}, *msgs]
        record.calls = {k + 1: v for k, v in record.calls.items()}
    return record


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
    roles: Sequence[str] | None = None,
    extra_rejections: Sequence[str] | str | None = None,
    record_system: str = "student",
) -> dict[str, Any]:
    """Label trajectories for KTO and write the outputs (see the module docstring).

    Args:
        inputs: files of trajectories: ``eva-fast data teacher``'s ``*.trajectories.jsonl`` /
            ``*.sft.jsonl``, training records, eval result files, or trajectory jsonl (GRPO
            rollout dumps with reward fields).
        out: output jsonl of labelled records.
        judge: the guessing judge (needed unless ``wrong_answer`` is an extra rejection).
        rules: thresholds of the extra rejection rules.
        chosen_fraction: target chosen share of the output (paper 0.63); balance: apply it.
        seed: seed of the balancing draw.
        rouge_threshold: open-ended answers count as right at this mean ROUGE or above.
        qtype: the inputs' question type when they do not say (``mcq``/``open``; None: inferred).
        concurrency: judge requests in flight.
        judge_identity: the judge model's identity (part of each cached verdict's key).
        on_judged: progress callback ``(done, total)``.
        roles: per input, ``both`` / ``chosen`` / ``rejected`` (default: all ``both``).
        extra_rejections: names from :data:`EXTRA_REJECTIONS` (a list or a comma-separated string).
        record_system: ``student`` (written records get the student's system turn) or ``keep``.

    Returns:
        The report dict (also written to ``<out stem>.report.json``).

    Raises:
        FileNotFoundError: a missing input; ValueError: bad arguments, or no judge where the
        labelling needs one (the paper's rejected samples, ``judge_correct``).
    """
    rules = rules or FailureRules()
    extras = _parse_names(extra_rejections, EXTRA_REJECTIONS, "extra rejection")
    roles = list(roles) if roles is not None else ["both"] * len(inputs)
    if len(roles) != len(inputs) or any(r not in INPUT_ROLES for r in roles):
        raise ValueError(f"roles must give one of {INPUT_ROLES} per input ({len(inputs)}), got {roles}")
    if record_system not in LABEL_RECORD_SYSTEMS:
        raise ValueError(f"record_system must be one of {LABEL_RECORD_SYSTEMS}, got {record_system!r}")
    if judge is None and "judge_correct" in extras:
        raise ValueError("the 'judge_correct' extra rejection needs a judge")
    if judge is None and "wrong_answer" not in extras and any(r != "chosen" for r in roles):
        raise ValueError("the paper's rejected samples are the wrong trajectories an LLM judge calls guessing: give a "
                         "judge, or reject every wrong answer without one (extra rejection 'wrong_answer')")
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".jsonl" else out
    decisions: list[LabelDecision] = []
    unusable: Counter = Counter()
    not_used: Counter = Counter()
    for k, path in enumerate(inputs):
        role = roles[k]
        for case in iter_cases([path], qtype=qtype, rouge_threshold=rouge_threshold):
            d = LabelDecision(case.where, None, source=case.source, case=case, role=role)
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
                if role == "chosen":
                    d.reasons.append("unused: wrong answer in a chosen-only input")
                    not_used["wrong_in_chosen_input"] += 1
                elif "wrong_answer" in extras:
                    d.label, d.reasons = False, ["wrong_answer"]
                else:
                    d.judge_for = "rejected"
            elif role == "rejected":
                d.reasons.append("unused: right answer in a rejected-only input")
                not_used["right_in_rejected_input"] += 1
            else:
                hits = [f for f in d.flags if f in extras]
                if hits:
                    d.label, d.reasons = False, hits
                else:
                    d.label = True
                    if "judge_correct" in extras:
                        d.judge_for = "chosen"

    judged: Counter = Counter()
    todo = [d for d in decisions if d.judge_for is not None]
    if todo:
        ident = dict(judge_identity or {})
        with ResultCache(f"{stem}.judge.cache.jsonl") as cache:
            keys = {i: content_key(d.case.record.to_dict(), judge.template, ident) for i, d in enumerate(todo)}
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
                d.judge_prompt, d.judge_reply = v.get("prompt"), v.get("reply")
                judged[f"{d.judge_for}:{v['verdict']}"] += 1
                if v["verdict"] == "guessing":
                    d.label, d.reasons = False, ["judge_guessing"]
                elif d.judge_for == "rejected":  # a wrong answer the judge does not call a guess: not used
                    why = "wrong_not_guessing" if v["verdict"] == "grounded" else f"wrong_judge_{v['verdict']}"
                    d.reasons.append(f"unused: {why}")
                    not_used[why] += 1

    labelled = [d for d in decisions if d.label is not None]
    before = Counter("chosen" if d.label else "rejected" for d in labelled)
    if balance:
        balance_labels(labelled, chosen_fraction, seed)
    else:
        for d in labelled:
            d.kept = True
    kept = [d for d in labelled if d.kept]
    records, line_of = [], {}
    for d in kept:
        r = d.case.record
        r.label = d.label
        if d.case.score is not None and not r.rewards:
            r.rewards = {"accuracy" if d.case.qtype == "mcq" else "rouge": float(d.case.score)}
        if record_system == "student":
            student_system(r)
        line_of[id(d)] = len(records) + 1
        records.append(r)
    write_records(out, records)
    with open(f"{stem}.labels.jsonl", "w", encoding="utf-8") as f:
        for d in decisions:
            f.write(json.dumps({"where": d.where, "source": d.source, "role": d.role, "label": d.label, "kept": d.kept,
                                "kto_line": line_of.get(id(d)), "reasons": d.reasons, "flags": d.flags,
                                "judge_for": d.judge_for, "judge": d.judge, "judge_reason": d.judge_reason,
                                "judge_prompt": d.judge_prompt, "judge_reply": d.judge_reply},
                               ensure_ascii=False) + "\n")

    after = Counter("chosen" if d.label else "rejected" for d in kept)
    reasons = Counter(r for d in labelled if d.label is False for r in d.reasons if r != "dropped_for_ratio")
    flags = Counter(f for d in decisions if d.case is not None and d.case.record is not None for f in d.flags)
    per_source: dict[str, Counter] = defaultdict(Counter)
    for d in decisions:
        src = d.source.rsplit("#", 1)[0].split(":")[0] if d.source else "?"
        c = per_source[src]
        c["inputs"] += 1
        c["chosen"] += d.kept and d.label is True
        c["rejected"] += d.kept and d.label is False
        c["unused"] += d.label is None
    n_c, n_r = after.get("chosen", 0), after.get("rejected", 0)
    weights = recommended_kto_weights(n_c, n_r) if n_c and n_r else None
    report = {
        "run": {"inputs": [f"{r}:{p}" for r, p in zip(roles, map(str, inputs))], "out": str(out),
                "labelling": "paper" + (" + " + ", ".join(extras) if extras else ""),
                "extra_rejections": list(extras), "target_chosen_fraction": chosen_fraction if balance else None,
                "seed": seed, "rouge_threshold": rouge_threshold, "judge": judge is not None, "rules": asdict(rules),
                "record_system": record_system},
        "counts": {"inputs": len(decisions), "labelled": len(labelled), "unusable": sum(unusable.values()),
                   "unused": sum(not_used.values()), "judged": len(todo), "written": len(kept)},
        "unusable": dict(sorted(unusable.items())),
        "unused": dict(sorted(not_used.items())),
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
