"""Data-enhanced GRPO (paper §3.3): the current policy's failures become in-context examples for the
teacher, which writes new open-ended questions with concise answers on unseen videos; the accepted
ones are appended to the RL set and GRPO is trained again on the larger set.

1. **Failure cases** (:func:`collect_failures`): wrong answers (and episodes that ended without one)
   from eval result files or GRPO rollout dumps (``Trajectory.to_dict()`` lines with ``gt`` or
   reward fields), grouped by category.
2. **Generation** (:class:`QuestionWriter`): per unseen video, ``examples_per_prompt`` failures
   (rotating over the categories) as in-context examples, then ``nframes`` frames sampled evenly
   over the whole video (eva_fast's frame tool; each labelled with its time), then the request for
   ``questions_per_video`` new questions as a JSON list (prompts ``prompts/enhance_*.txt``).
3. **Validation** (:func:`static_problems`, :class:`DedupeIndex`): question and answer non-empty;
   the answer at most ``max_answer_words`` words and not contained in the question (word-level,
   case- and punctuation-insensitive); not a duplicate (same normalised question on the same video,
   or the same normalised question *and* answer anywhere in the RL set or earlier in the run);
   optionally the teacher's self-check: asked the question with the same frames, its answer must
   reach ``self_check_threshold`` mean ROUGE against the written answer.
4. **Append** to the RL set (:mod:`eva_fast.train._rl_data`), ``type`` ``"open"``, with ``source``
   ``enhance:<run>``, a content ``id`` and ``provenance`` (teacher, video, the failure cases used,
   frames, self-check score). A line whose ``id`` is already in the RL set is not appended again.

Resumable: each video's reply and verdicts go to ``<out>/enhance.cache.jsonl`` (the eval runner's
crash-safe cache) under a key of its inputs (video, examples, prompts, teacher, settings); a rerun
redoes only videos that are new or whose inputs changed. A malformed teacher reply is recorded
(``error``) and counted, never raised. Outputs in ``out_dir``: ``enhance.accepted.jsonl`` (the new
lines), ``enhance.failures.jsonl`` (the failure cases), ``enhance.report.json`` / ``.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eva_fast._checks import is_number, positive_int
from eva_fast._logging import get_logger
from eva_fast.agent import ImagePart, Message, TextPart, frame_label
from eva_fast.eval import ResultCache
from eva_fast.train._rl_data import RLSample, load_rl_set, write_rl_set
from eva_fast.train.data._common import (
    DEFAULT_ROUGE_THRESHOLD,
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
from eva_fast.train.rewards import rouge_reward
from eva_fast.video import VideoReader, select_frames

logger = get_logger("train.data")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
UNCATEGORIZED = "uncategorized"


# ---------------------------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureCase:
    """A question the policy got wrong.

    Attributes:
        question: the question as asked (options included for multiple choice).
        gt: the right answer; answer: the policy's answer ("" when it gave none).
        category: the question's category (``uncategorized`` when unknown).
        video: the video it was about; source: ``file:line`` of the case.
    """

    question: str
    gt: str
    answer: str
    category: str
    video: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return {"question": self.question, "gt": self.gt, "answer": self.answer, "category": self.category,
                "video": self.video, "source": self.source}


def collect_failures(paths: Sequence[str], *, rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD,
                     qtype: str | None = None) -> tuple[list[FailureCase], dict[str, Any]]:
    """Wrong answers from eval result files and GRPO rollout dumps (any input
    :func:`~eva_fast.train.data._common.iter_cases` reads); episodes stopped by an infrastructure
    error and lines without a way to tell right from wrong are skipped and counted.

    Returns:
        ``(failures, stats)``: stats has ``inputs``, ``right``, ``failures``, ``skipped`` (by reason)
        and ``by_category``.
    """
    out: list[FailureCase] = []
    skipped: Counter = Counter()
    right = n = 0
    for case in iter_cases(paths, qtype=qtype, rouge_threshold=rouge_threshold):
        n += 1
        if case.error is not None or case.record is None:
            skipped["unreadable"] += 1
        elif not is_model_stop(case.stop_reason):
            skipped["not_finished"] += 1
        elif case.correct is None:
            skipped["no_ground_truth"] += 1
        elif case.correct:
            right += 1
        else:
            r = case.record
            out.append(FailureCase(" ".join(r.question.split()), case.gt, case.answer,
                                   case.categories[0] if case.categories else UNCATEGORIZED, r.video, case.where))
    stats = {"inputs": n, "right": right, "failures": len(out), "skipped": dict(sorted(skipped.items())),
             "by_category": dict(sorted(Counter(f.category for f in out).items()))}
    return out, stats


def pick_examples(failures: Sequence[FailureCase], k: int, slot: int, seed: int = 0) -> list[FailureCase]:
    """``k`` failure cases for prompt number ``slot``: categories taken in turn starting at
    ``slot`` (so successive videos cover every category), a seeded random case of each."""
    by_cat: dict[str, list[FailureCase]] = defaultdict(list)
    for f in failures:
        by_cat[f.category].append(f)
    cats = sorted(by_cat)
    if not cats:
        return []
    rng = random.Random(f"{seed}:{slot}")
    picked: list[FailureCase] = []
    pools = {c: rng.sample(by_cat[c], len(by_cat[c])) for c in cats}
    i = 0
    while len(picked) < min(k, len(failures)):
        c = cats[(slot + i) % len(cats)]
        if pools[c]:
            picked.append(pools[c].pop())
        i += 1
    return picked


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Lower case, every run of non-alphanumerics one space, stripped (for comparisons)."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(text).lower()).split())


def static_problems(question: Any, answer: Any, max_answer_words: int) -> str | None:
    """Why a generated QA pair is unusable before any dedupe or self-check, or None:
    ``empty_question``, ``empty_answer``, ``answer_too_long`` (more than ``max_answer_words``
    words), ``answer_in_question`` (the normalised answer occurs in the normalised question as
    whole words)."""
    if not isinstance(question, str) or not normalize_text(question):
        return "empty_question"
    if not isinstance(answer, str) or not normalize_text(answer):
        return "empty_answer"
    if len(answer.split()) > max_answer_words:
        return "answer_too_long"
    if f" {normalize_text(answer)} " in f" {normalize_text(question)} ":
        return "answer_in_question"
    return None


class DedupeIndex:
    """Questions already in the RL set or accepted in this run (see the module docstring)."""

    def __init__(self) -> None:
        self._per_video: set[tuple[str, str]] = set()
        self._qa: set[tuple[str, str]] = set()

    @staticmethod
    def _video_key(video: str) -> str:
        return os.path.normpath(os.path.abspath(video))

    def add(self, video: str, question: str, answer: str) -> None:
        q = normalize_text(question)
        self._per_video.add((self._video_key(video), q))
        self._qa.add((q, normalize_text(answer)))

    def is_duplicate(self, video: str, question: str, answer: str) -> bool:
        q = normalize_text(question)
        return (self._video_key(video), q) in self._per_video or (q, normalize_text(answer)) in self._qa


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------


def list_videos(source: str | os.PathLike) -> list[str]:
    """Candidate videos: the video files under a folder (recursive, sorted), or the lines of a text
    file (paths relative to the file's folder).

    Raises:
        FileNotFoundError: ``source`` does not exist.
    """
    p = Path(source)
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file())
    if p.is_file():
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                q = Path(line)
                out.append(str(q if q.is_absolute() else p.parent / q))
        return out
    raise FileNotFoundError(f"videos source {str(p)!r} is neither a folder nor a list file")


class QuestionWriter:
    """The teacher that writes new QA pairs from failure examples and a video's frames.

    Args:
        backend: an agent backend (``openai`` against any OpenAI-compatible server).
        prompt_dir: folder with edited ``enhance_*.txt`` templates.
        nframes, resize: frames shown per video (evenly over the whole video) and their scale.
        questions_per_video: questions asked for per video.
        max_answer_words: longest accepted answer.
        self_check: ask the teacher to answer each question again from the same frames.
        self_check_threshold: ROUGE the self-check answer must reach.
        max_new_tokens: reply length.
        temperature: sampling temperature of the writer (the self-check is greedy).
    """

    def __init__(self, backend: Any, *, prompt_dir: str | None = None, nframes: int = 8, resize: float = 0.5,
                 questions_per_video: int = 3, max_answer_words: int = 8, self_check: bool = False,
                 self_check_threshold: float = DEFAULT_ROUGE_THRESHOLD, max_new_tokens: int = 1024,
                 temperature: float = 0.7) -> None:
        for name, v in (("nframes", nframes), ("questions_per_video", questions_per_video),
                        ("max_answer_words", max_answer_words)):
            positive_int(name, v)
        if not 0 < resize <= 1:
            raise ValueError(f"resize must be in (0, 1], got {resize!r}")
        self.backend = backend
        self.prompt_dir = prompt_dir
        self.nframes, self.resize = nframes, resize
        self.questions_per_video = questions_per_video
        self.max_answer_words = max_answer_words
        self.self_check, self.self_check_threshold = self_check, self_check_threshold
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.templates = {n: load_prompt(n, prompt_dir) for n in ("enhance_generate", "enhance_request", "enhance_selfcheck")}

    def settings(self) -> dict[str, Any]:
        return {"nframes": self.nframes, "resize": self.resize, "questions_per_video": self.questions_per_video,
                "max_answer_words": self.max_answer_words, "self_check": self.self_check,
                "self_check_threshold": self.self_check_threshold, "temperature": self.temperature,
                "templates": content_key(self.templates)[:12]}

    def frames(self, video: str) -> Any:
        """The video's frames for the prompt: ``nframes`` evenly over its whole length (EVA's frame
        policy, :func:`eva_fast.video.select_frames`)."""
        reader = VideoReader(video)
        return select_frames(reader, 0, reader.metadata.duration_s, self.nframes, self.resize)

    def _frame_parts(self, batch: Any) -> list[Any]:
        parts: list[Any] = []
        for i, t in enumerate(batch.plan.timestamps_s):
            parts.append(TextPart(frame_label(i, int(t))))
            parts.append(ImagePart(batch, i))
        return parts

    def messages(self, examples: Sequence[FailureCase], batch: Any) -> list[Any]:
        """The generation request: examples, the frames, the ask (one user turn)."""
        ex = "\n".join(f"- [{e.category}] Question: {e.question}\n  Right answer: {e.gt}. The agent answered: "
                       f"{e.answer or '(nothing)'}." for e in examples) or "- (no failure cases given)"
        head = render_prompt("enhance_generate", self.prompt_dir, examples=ex, nframes=batch.plan.nframes,
                             duration_s=int(batch.plan.end_s))
        ask_text = render_prompt("enhance_request", self.prompt_dir, n=self.questions_per_video,
                                 max_words=self.max_answer_words)
        return [Message("user", (TextPart(head), *self._frame_parts(batch), TextPart(ask_text)))]

    def parse(self, reply: str) -> list[dict[str, Any]]:
        """The QA items of a reply (at most ``questions_per_video``).

        Raises:
            ValueError: the reply holds no JSON list of objects.
        """
        items = extract_json(reply, list)
        if not all(isinstance(x, dict) for x in items):
            raise ValueError(f"the JSON list must hold objects with question and answer, got {str(items)[:160]!r}")
        return items[: self.questions_per_video]

    async def check(self, batch: Any, question: str, answer: str) -> dict[str, Any]:
        """The teacher's self-check of one item: ``{"answer", "rouge", "passed"}``."""
        text = render_prompt("enhance_selfcheck", self.prompt_dir, question=question, max_words=self.max_answer_words)
        gen = await ask(self.backend, [Message("user", (*self._frame_parts(batch), TextPart(text)))],
                        max_new_tokens=64)
        r = rouge_reward(gen.text.strip(), answer)
        return {"answer": gen.text.strip()[:400], "rouge": round(r, 4), "passed": r >= self.self_check_threshold}

    async def write(self, video: str, examples: Sequence[FailureCase],
                    is_duplicate: Callable[[str, str, str], bool] | None = None) -> dict[str, Any]:
        """One video: ``{"reply", "error", "items": [{"question", "answer", "category", "status",
        "self_check"}]}`` where ``status`` is ``"ok"``, the static problem, ``"duplicate"`` (by
        ``is_duplicate(video, question, answer)``, checked before the self-check so duplicates cost
        no request) or ``"self_check_failed"``. Never raises: an unreadable video, a server error or
        an unparsable reply sets ``error``."""
        out: dict[str, Any] = {"reply": "", "error": None, "items": []}
        try:
            batch = await asyncio.to_thread(self.frames, video)
        except Exception as e:  # an unreadable candidate video is skipped, with the reason
            out["error"] = f"video: {type(e).__name__}: {e}"
            return out
        try:
            gen = await ask(self.backend, self.messages(examples, batch), max_new_tokens=self.max_new_tokens,
                            temperature=self.temperature)
        except Exception as e:
            out["error"] = f"teacher: {type(e).__name__}: {e}"
            return out
        out["reply"] = gen.text[:8000]
        try:
            items = self.parse(gen.text)
        except ValueError as e:
            out["error"] = f"unparsable reply: {e}"
            return out
        default_cat = Counter(e.category for e in examples).most_common(1)[0][0] if examples else UNCATEGORIZED
        for it in items:
            q, a = it.get("question"), it.get("answer")
            if is_number(a):
                a = str(a)
            item = {"question": q.strip() if isinstance(q, str) else q, "answer": a.strip() if isinstance(a, str) else a,
                    "category": str(it.get("category") or default_cat), "status": "ok", "self_check": None}
            item["status"] = static_problems(item["question"], item["answer"], self.max_answer_words) or "ok"
            if item["status"] == "ok" and is_duplicate is not None and is_duplicate(video, item["question"], item["answer"]):
                item["status"] = "duplicate"
            if item["status"] == "ok" and self.self_check:
                try:
                    item["self_check"] = await self.check(batch, item["question"], item["answer"])
                except Exception as e:
                    item["self_check"] = {"error": f"{type(e).__name__}: {e}", "passed": False}
                if not item["self_check"]["passed"]:
                    item["status"] = "self_check_failed"
            out["items"].append(item)
        return out


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def _rl_video(video: str, video_root: str | None) -> str:
    if video_root is None:
        return os.path.abspath(video)
    rel = os.path.relpath(os.path.abspath(video), os.path.abspath(video_root))
    return rel if not rel.startswith("..") else os.path.abspath(video)


async def aenhance(
    failures_from: Sequence[str],
    videos: Sequence[str],
    rl_set: str | os.PathLike,
    out_dir: str | os.PathLike,
    writer: QuestionWriter,
    *,
    video_root: str | None = None,
    examples_per_prompt: int = 3,
    limit_videos: int | None = None,
    concurrency: int = 8,
    seed: int = 0,
    run_name: str | None = None,
    teacher_identity: Mapping[str, Any] | None = None,
    rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD,
    qtype: str | None = None,
    on_video: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Collect failures, write new QA on unseen videos, validate, append to the RL set (see the
    module docstring). Returns the report (also written to ``<out_dir>/enhance.report.json``).

    Args:
        failures_from: eval result files / GRPO rollout dumps.
        videos: candidate videos (:func:`list_videos`); those already in the RL set (except the
            lines this run appended earlier) or among the failures' videos are left out (unseen only).
        rl_set: the RL set to append to (created when missing).
        out_dir: output folder.
        writer: the question writer (teacher + settings).
        video_root: the RL set's video root (new lines' videos are written relative to it).
        examples_per_prompt: failure cases per prompt.
        limit_videos: use only the first N unseen videos.
        concurrency: videos in flight.
        seed: seed of the example choice.
        run_name: provenance tag (default: ``out_dir``'s name).
        teacher_identity: the teacher model (part of each cached unit's key and the provenance).
        rouge_threshold, qtype: how failures are told from right answers.
        on_video: progress callback ``(done, total)``.

    Raises:
        FileNotFoundError: missing inputs; RLDataError: a malformed RL set; ValueError: no failure
        cases or bad arguments.
    """
    positive_int("examples_per_prompt", examples_per_prompt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_name = run_name or out.resolve().name
    failures, fstats = collect_failures(failures_from, rouge_threshold=rouge_threshold, qtype=qtype)
    if not failures:
        raise ValueError(f"no failure cases in {list(failures_from)} ({fstats}): nothing to learn from")
    with open(out / "enhance.failures.jsonl", "w", encoding="utf-8") as f:
        for c in failures:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")

    rl_path = Path(rl_set)
    existing = load_rl_set(rl_path) if rl_path.exists() else []
    dedupe = DedupeIndex()
    for s in existing:
        dedupe.add(s.video_path(video_root), s.question, s.answer)
    # videos this run already used (its own appended lines) stay in the run, so a rerun sees the same jobs
    seen = {os.path.normpath(os.path.abspath(s.video_path(video_root))) for s in existing
            if s.source != f"enhance:{run_name}"}
    seen |= {os.path.normpath(os.path.abspath(c.video)) for c in failures}
    unseen = [v for v in videos if os.path.normpath(os.path.abspath(v)) not in seen]
    if limit_videos is not None:
        unseen = unseen[:limit_videos]
    ident = dict(teacher_identity or {})
    jobs = []
    for j, v in enumerate(unseen):
        ex = pick_examples(failures, examples_per_prompt, j, seed)
        key = content_key(os.path.abspath(v), [e.to_dict() for e in ex], writer.settings(), ident)
        jobs.append((j, v, ex, key))

    status: Counter = Counter()
    accepted: list[tuple[int, RLSample]] = []
    per_cat: dict[str, Counter] = defaultdict(Counter)
    videos_stats: Counter = Counter()
    with ResultCache(out / "enhance.cache.jsonl") as cache:
        done_keys = {j for j, _, _, key in jobs if cache.records.get(j, {}).get("key") == key}
        videos_stats["from_cache"] = len(done_keys)

        def finish(j: int, v: str, ex: Sequence[FailureCase], key: str, res: dict[str, Any], cached: bool) -> None:
            if not cached:
                for it in res["items"]:  # dedupe in completion order, after the per-item checks
                    if it["status"] == "ok":
                        if dedupe.is_duplicate(v, it["question"], it["answer"]):
                            it["status"] = "duplicate"
                        else:
                            dedupe.add(v, it["question"], it["answer"])
                cache.append({"index": j, "key": key, "video": v, "examples": [e.source for e in ex], **res})
            if res.get("error"):
                videos_stats["errors"] += 1
                status["reply_" + ("unparsable" if res["error"].startswith("unparsable") else "error")] += 1
            else:
                status["reply_parsed"] += 1
            for it in res["items"]:
                status["items"] += 1
                per_cat[it["category"]]["generated"] += 1
                if it["status"] != "ok":
                    status[f"rejected:{it['status']}"] += 1
                    continue
                per_cat[it["category"]]["accepted"] += 1
                sid = "enhance:" + content_key(os.path.abspath(v), normalize_text(it["question"]),
                                               normalize_text(it["answer"]))[:16]
                accepted.append((j, RLSample(
                    video=_rl_video(v, video_root), question=it["question"], answer=it["answer"], type="open",
                    category=it["category"], source=f"enhance:{run_name}", id=sid,
                    provenance={"teacher": ident.get("model"), "video": os.path.abspath(v),
                                "examples": [e.source for e in ex], "nframes": writer.nframes,
                                "self_check_rouge": (it.get("self_check") or {}).get("rouge")},
                )))

        # cached videos first, in order (their accepted questions join the dedupe index before new ones)
        for j, v, ex, key in jobs:
            if j in done_keys:
                res = cache.records[j]
                for it in res["items"]:
                    if it["status"] == "ok":
                        dedupe.add(v, it["question"], it["answer"])
                finish(j, v, ex, key, res, cached=True)
        todo = [job for job in jobs if job[0] not in done_keys]
        sem = asyncio.Semaphore(max(1, concurrency))
        done = len(done_keys)
        if on_video is not None:
            on_video(done, len(jobs))

        async def one(job: tuple[int, str, list[FailureCase], str]) -> tuple[Any, dict[str, Any]]:
            async with sem:
                return job, await writer.write(job[1], job[2], dedupe.is_duplicate)

        for fut in asyncio.as_completed([one(job) for job in todo]):
            (j, v, ex, key), res = await fut
            finish(j, v, ex, key, res, cached=False)
            videos_stats["processed_now"] += 1
            done += 1
            if on_video is not None:
                on_video(done, len(jobs))

    new_lines = [s for _, s in sorted(accepted, key=lambda x: x[0])]
    write_rl_set(out / "enhance.accepted.jsonl", new_lines)
    have_ids = {s.id for s in existing if s.id}
    to_append = [s for s in new_lines if s.id not in have_ids]
    appended = write_rl_set(rl_path, to_append, append=True) if to_append else 0
    items = status.get("items", 0)
    n_acc = len(new_lines)
    report = {
        "run": {"run_name": run_name, "rl_set": str(rl_path), "examples_per_prompt": examples_per_prompt,
                "seed": seed, **writer.settings(), "teacher": ident.get("model")},
        "failure_cases": {k: v for k, v in fstats.items() if k != "by_category"},
        "failures_by_category": fstats["by_category"],
        "videos": {"candidates": len(videos), "unseen": len(unseen), "from_cache": videos_stats["from_cache"],
                   "processed_now": videos_stats["processed_now"], "errors": videos_stats["errors"]},
        "questions": {"generated": items, "accepted": n_acc, "accept_rate": rate(n_acc, items),
                      "appended_to_rl_set": appended, "rl_set_size": len(existing) + appended},
        "replies_and_rejections": dict(sorted(status.items())),
        "per_category": {k: {"generated": c["generated"], "accepted": c["accepted"],
                             "accept_rate": rate(c["accepted"], c["generated"])} for k, c in sorted(per_cat.items())},
    }
    write_report(out / "enhance", "Data enhancement", report)
    return report
