"""Teacher trajectories for SFT (paper §3.2, EVA-SFT): the agent loop with a teacher model (any
OpenAI-compatible server, e.g. Qwen2.5-VL-72B behind vLLM) over a source QA set; the trajectories
whose answer is right become SFT records.

The teacher gets a system prompt built from editable templates (``prompts/teacher_system.txt`` plus
the chosen *prompt families*, each one file):

* ``experience`` (``family_experience.txt``): past success experiences, short summaries of earlier
  successful trajectories (:func:`experience_summary`), a few per question;
* ``workflow`` (``family_workflow.txt``): hints on planning and selecting frames efficiently;
* ``reflective`` (``family_reflective.txt``): check whether the visual evidence suffices before
  answering.

Every reply follows the per-round structure Summary -> Planning -> Action (a ``frame_select`` call
or the answer), and the next reply opens with the Reflection on the frames received:
``<reflection>...</reflection>`` (from round 2) ``<summary>...</summary><planning>...</planning>``
then ``<tool_call>...</tool_call>`` or ``<answer>...</answer>``. The tool protocol, frames and
conversation are the agent loop's own, so a kept trajectory is exactly what the student will see.

The run is an eval run (:func:`eva_fast.eval.arun_benchmark`) over a question file written from the
QA set: the same crash-safe append-only cache, resume (rerun the same command), ``--shard i/n`` and
preflight. Outputs, with ``<stem>`` = ``teacher`` (or ``teacher.shard-i-of-n``) in ``out_dir``:

* ``<stem>.sft.jsonl``: the kept trajectories as training records (``eva_fast.trajectory``), the
  system turn replaced by the student's (``record_system="student"``, default);
* ``<stem>.trajectories.jsonl``: every finished trajectory as a record with ``label`` = right answer
  (input of ``eva-fast data kto-label``);
* ``<stem>.jsonl`` / ``.cache.jsonl`` / ``.run.json`` / ``.summary.json``: the eval run's files
  (``<stem>.summary.json`` counts exact matches only; the teacher report has the real rule);
* ``<stem>.report.json`` / ``.report.md``: counts, accept rates, reject reasons, per type and source.

Kept = stop reason ``answer_found``, the answer right (multiple choice: exact letter; open-ended:
mean ROUGE-1/2/L F1 >= ``rouge_threshold``), and (``require_structure``) every reply carries the
round structure. Malformed teacher output never stops the run: it ends that trajectory with the
loop's stop reason (``no_valid_tool_call``, ``arguments_not_json``, ...) and is counted.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eva_fast._checks import positive_int
from eva_fast._files import write_atomic
from eva_fast._logging import get_logger
from eva_fast.agent import SYSTEM_PROMPT
from eva_fast.eval import BenchmarkSpec, arun_benchmark, output_stem
from eva_fast.train._records import RecordError, load_records, record_from_trajectory, write_records
from eva_fast.train._rl_data import RLSample, load_rl_set
from eva_fast.train.data._common import (
    DEFAULT_ROUGE_THRESHOLD,
    is_model_stop,
    load_prompt,
    prompt_hash,
    rate,
    render_prompt,
    score_answer,
    write_report,
)

logger = get_logger("train.data")

#: Prompt families of the paper (§3.2), in the order they are added to the system prompt.
PROMPT_FAMILIES = ("experience", "workflow", "reflective")
#: Round-structure tags every teacher reply must carry (reflection from the second reply on).
STRUCTURE_TAGS = ("reflection", "summary", "planning")
RECORD_SYSTEMS = ("student", "teacher")


# ---------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------


def _mmss(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def experience_summary(record: Any) -> str:
    """A past success experience: one line describing a successful trajectory's strategy, built
    from its record (no model call)::

        Question: What is shown? ... (video 600 s). Steps: 1) 32 frames of 00:00-10:00 at resize
        0.25; 2) 8 frames of 02:00-03:00 at resize 0.5. Answered "B" after 3 rounds.
    """
    steps = []
    for k in sorted(record.calls):
        for c in record.calls[k]:
            w = c.extra.get("window_s") or [c.arguments.get("start_time"), c.arguments.get("end_time")]
            steps.append(f"{c.nframes} frames of {_mmss(float(w[0]))}-{_mmss(float(w[1]))} at resize "
                         f"{c.arguments.get('resize', 1.0)}")
    q = " ".join(record.question.split())
    q = q if len(q) <= 160 else q[:157] + "..."
    dur = record.video_meta.get("duration_s")
    head = f"Question: {q}" + (f" (video {int(dur)} s)" if dur else "")
    body = "; ".join(f"{i + 1}) {s}" for i, s in enumerate(steps)) if steps else "answered without selecting frames"
    return f"{head}. Steps: {body}. Answered \"{record.answer or ''}\" after {record.num_turns} rounds."


def load_experiences(path: str | os.PathLike) -> list[str]:
    """Past success experiences: from a jsonl of training records (each summarised with
    :func:`experience_summary`; records with ``label`` false are skipped), or from a text file
    (one experience per paragraph, paragraphs separated by blank lines).

    Raises:
        FileNotFoundError: no such file; ValueError: a file with no experience.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiences file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        out = [experience_summary(r) for r in load_records(path) if r.label is not False]
    else:
        out = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    if not out:
        raise ValueError(f"{path}: no experiences")
    return out


@dataclass(frozen=True)
class TeacherPrompt:
    """The teacher's system prompt: ``teacher_system.txt`` with the chosen families inserted.

    Args:
        families: names from :data:`PROMPT_FAMILIES` (any subset, in any order; empty = none).
        prompt_dir: folder with edited copies of the templates (same file names); missing files
            fall back to the packaged ones.
        experiences: past success experiences (needed by ``experience``).
        num_experiences: experiences per question, chosen per question with ``seed`` (so a resumed
            run asks the same).
        seed: seed of the choice.
        student: no teacher prompt: the agent's own trained system turn
            (:data:`eva_fast.agent.SYSTEM_PROMPT`), to resample the student (the SFT model or the
            policy) over a QA set; ``families`` must then be empty.

    Raises:
        ValueError: an unknown family, ``experience`` without experiences, families with ``student``.
    """

    families: tuple[str, ...] = ("workflow", "reflective")
    prompt_dir: str | None = None
    experiences: tuple[str, ...] = ()
    num_experiences: int = 3
    seed: int = 0
    student: bool = False

    def __post_init__(self) -> None:
        if self.student:
            if self.families:
                raise ValueError(f"the student prompt takes no prompt families, got {self.families}")
            return
        for f in self.families:
            if f not in PROMPT_FAMILIES:
                raise ValueError(f"unknown prompt family {f!r}; choose from {PROMPT_FAMILIES}")
        if "experience" in self.families and not self.experiences:
            raise ValueError("the 'experience' prompt family needs past success experiences (--experiences FILE)")
        if self.num_experiences < 1:
            raise ValueError(f"num_experiences must be >= 1, got {self.num_experiences}")
        for f in self.families:  # fail early on a missing or broken template
            load_prompt(f"family_{f}", self.prompt_dir)
        load_prompt("teacher_system", self.prompt_dir)

    def system(self, key: int) -> str:
        """The system prompt for question ``key`` (its experiences depend on ``seed`` and ``key``)."""
        if self.student:
            return SYSTEM_PROMPT
        parts = []
        for f in self.families:
            values: dict[str, Any] = {}
            if f == "experience":
                rng = random.Random(f"{self.seed}:{key}")
                picked = rng.sample(list(self.experiences), min(self.num_experiences, len(self.experiences)))
                values["experiences"] = "\n".join(f"- {e}" for e in picked)
            parts.append(render_prompt(f"family_{f}", self.prompt_dir, **values))
        return render_prompt("teacher_system", self.prompt_dir, families="".join(parts))

    def identity(self) -> dict[str, Any]:
        """What the prompts are (families, template hash, experiences hash, choice) for run identity."""
        if self.student:
            return {"student": True}
        texts = [load_prompt("teacher_system", self.prompt_dir)] + [load_prompt(f"family_{f}", self.prompt_dir)
                                                                  for f in self.families]
        return {"families": list(self.families), "templates": prompt_hash(*texts),
                "experiences": prompt_hash(*self.experiences) if "experience" in self.families else None,
                "num_experiences": self.num_experiences, "seed": self.seed}


def structure_problems(turn_texts: Sequence[str]) -> list[str]:
    """What breaks the round structure in a trajectory's replies: for each reply, the missing tags
    (``summary`` and ``planning`` always, ``reflection`` from the second reply on), tags out of order
    (reflection -> summary -> planning -> action), or an action before the planning. Empty = fine."""
    problems = []
    for k, text in enumerate(turn_texts):
        need = STRUCTURE_TAGS if k > 0 else STRUCTURE_TAGS[1:]
        pos = []
        for tag in need:
            a, b = text.find(f"<{tag}>"), text.find(f"</{tag}>")
            if a < 0 or b < a:
                problems.append(f"reply {k + 1}: no <{tag}>...</{tag}>")
            else:
                pos.append((a, tag))
        if len(pos) == len(need) and [t for _, t in sorted(pos)] != list(need):
            problems.append(f"reply {k + 1}: tags out of order (want {' -> '.join(need)})")
        action = min((i for i in (text.find("<tool_call>"), text.find("<answer>")) if i >= 0), default=-1)
        plan_end = text.find("</planning>")
        if action >= 0 and plan_end >= 0 and action < plan_end:
            problems.append(f"reply {k + 1}: the action comes before the planning")
    return problems


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


@dataclass
class TeacherResult:
    """What a teacher run produced.

    Attributes:
        sft_path, trajectories_path, results_path, report_path: files written.
        kept, finished, total: trajectories kept as SFT data, finished, run in all (this shard).
        report: the report dict.
        eval_result: the underlying :class:`eva_fast.eval.RunResult` (None when only the selection ran).
        outcomes: per episode, in index order: its :func:`teacher_meta` fields plus ``index``,
            ``right`` (None: an infrastructure error), ``score``, ``reason`` (why not kept, None when
            kept), ``stop_reason``, ``answer``, ``gt``.
    """

    sft_path: Path
    trajectories_path: Path
    results_path: Path
    report_path: Path
    kept: int
    finished: int
    total: int
    report: dict[str, Any] = field(repr=False)
    eval_result: Any = field(repr=False, default=None)
    outcomes: list[dict[str, Any]] = field(repr=False, default_factory=list)


def teacher_meta(qa: Sequence[RLSample], samples_per_question: int, qa_name: str) -> dict[int, dict[str, Any]]:
    """Per question-file index (question ``q`` sample ``k`` has index ``q * samples_per_question +
    k``): ``qa_index``, ``sample``, ``type``, ``video``, ``category``, ``source`` (the QA line's, else
    ``<qa_name>#<q>``), ``id``."""
    meta: dict[int, dict[str, Any]] = {}
    for q, s in enumerate(qa):
        for k in range(samples_per_question):
            meta[q * samples_per_question + k] = {
                "qa_index": q, "sample": k, "type": s.type, "video": s.video, "category": s.category,
                "source": s.source or f"{qa_name}#{q}", "id": s.id}
    return meta


def write_questions(qa: Sequence[RLSample], prompt: TeacherPrompt, path: Path, samples_per_question: int,
                    qa_name: str) -> dict[int, dict[str, Any]]:
    """Write the eval-format question file of a teacher run (EVA's normalized jsonl: ``videos``,
    ``prompt`` with the teacher's system turn, ``reward_model.ground_truth``, ``index``): question
    ``q`` sample ``k`` has index ``q * samples_per_question + k``. Returns :func:`teacher_meta`."""
    meta = teacher_meta(qa, samples_per_question, qa_name)
    lines = []
    for q, s in enumerate(qa):
        system = prompt.system(q)
        for k in range(samples_per_question):
            item = {
                "videos": [s.video],
                "prompt": [{"role": "system", "content": system}, {"role": "user", "content": s.prompt()}],
                "reward_model": {"style": "rule", "ground_truth": s.answer},
                "index": q * samples_per_question + k,
                "category": s.category or "",
            }
            lines.append(json.dumps(item, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return meta  # e.g. another shard wrote it
    write_atomic(path, text)  # shards write the same content: whichever lands last, the file is whole
    return meta


def judge_teacher_record(rec: Mapping[str, Any], meta: Mapping[str, Any], *, rouge_threshold: float,
                         require_structure: bool) -> tuple[bool | None, float | None, str | None]:
    """``(right, score, reject_reason)`` of one eval record of a teacher run: ``right`` None when an
    infrastructure error stopped the episode (``reject_reason`` ``error``); a trajectory the teacher
    ended without an answer (malformed call, no call, too many turns) is wrong, ``stop:<reason>``."""
    stop = str(rec.get("stop_reason") or "")
    if rec.get("error") or not is_model_stop(stop):
        return None, None, "error"
    right, score = score_answer(rec.get("answer") or "", str(rec.get("gt")), meta["type"], rouge_threshold)
    if stop != "answer_found":
        return False, score, f"stop:{stop}"
    if not right:
        return False, score, "wrong_answer" if meta["type"] == "mcq" else "low_rouge"
    if require_structure:
        texts = [t.get("text", "") for t in (rec.get("trajectory") or {}).get("turns", [])]
        if structure_problems(texts):
            return True, score, "missing_structure"
    return True, score, None


async def arun_teacher(
    agent: Any,
    qa_path: str | os.PathLike,
    video_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prompt: TeacherPrompt | None = None,
    samples_per_question: int = 1,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    concurrency: int = 8,
    rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD,
    require_structure: bool = True,
    record_system: str = "student",
    retry_errors: bool = False,
    skip_missing: bool = False,
    run_info: Mapping[str, Any] | None = None,
    allow_config_change: bool = False,
    stem: str = "teacher",
    on_start: Callable[[int, int], None] | None = None,
    on_record: Callable[[Any], None] | None = None,
) -> TeacherResult:
    """Run (or resume) the teacher over a QA set and write SFT data (see the module docstring).

    Args:
        agent: an ``AgentLoop`` with the teacher's backend (its ``system_prompt`` is not used: each
            question carries the teacher prompt).
        qa_path: source QA set (jsonl: ``video``, ``question``, ``answer``, optional ``options``,
            ``type``, ``category``, ``source``; see :mod:`eva_fast.train._rl_data`).
        video_root: folder the QA set's relative video paths are under.
        out_dir: output folder.
        prompt: the teacher prompt (default: workflow + reflective families).
        samples_per_question: trajectories per question (>= 1; use a temperature > 0 for more than 1).
        limit: only the first ``limit`` questions; shard: ``(i, n)``: every n-th trajectory from i.
        concurrency: trajectories in flight.
        rouge_threshold: open-ended answers count as right at this mean ROUGE or above.
        require_structure: reject right trajectories whose replies break the round structure.
        record_system: ``"student"`` (SFT records get the student's system turn,
            :data:`eva_fast.agent.SYSTEM_PROMPT`) or ``"teacher"`` (keep the teacher prompt).
        retry_errors, skip_missing, allow_config_change: as in :func:`eva_fast.eval.arun_benchmark`.
        run_info: backend identity; resuming with other settings is refused.
        stem: output file stem (and the ``source`` prefix of the records).
        on_start, on_record: progress callbacks (see ``arun_benchmark``).

    Raises:
        RLDataError / FileNotFoundError: a bad QA set; ValueError: bad arguments;
        eva_fast.eval.PreflightError: missing videos (without ``skip_missing``).
    """
    positive_int("samples_per_question", samples_per_question)
    if record_system not in RECORD_SYSTEMS:
        raise ValueError(f"record_system must be one of {RECORD_SYSTEMS}, got {record_system!r}")
    if not 0.0 <= rouge_threshold <= 1.0:
        raise ValueError(f"rouge_threshold must be in [0, 1], got {rouge_threshold!r}")
    ep = await arun_teacher_episodes(
        agent, qa_path, video_root, out_dir, prompt=prompt, samples_per_question=samples_per_question, limit=limit,
        shard=shard, concurrency=concurrency, retry_errors=retry_errors, skip_missing=skip_missing, run_info=run_info,
        allow_config_change=allow_config_change, stem=stem, on_start=on_start, on_record=on_record)
    return select_teacher_data(
        ep.result.records, ep.meta, out_dir, ep.est, stem=stem, qa_name=ep.qa_name, rouge_threshold=rouge_threshold,
        require_structure=require_structure, record_system=record_system, run=ep.run,
        missing_videos=ep.result.skipped_missing, eval_result=ep.result)


@dataclass
class TeacherEpisodes:
    """The episodes of a teacher run, before the SFT-data selection (:func:`select_teacher_data`).

    Attributes:
        result: the eval run's :class:`eva_fast.eval.RunResult` (``records``: every episode of this run).
        meta: :func:`teacher_meta` of the QA set.
        est: output stem (``<stem>`` or ``<stem>.shard-i-of-n``); qa_name: the QA file's name.
        run: run facts for reports (QA set, questions, samples, shard, prompt families, ran / cached).
    """

    result: Any
    meta: dict[int, dict[str, Any]]
    est: str
    qa_name: str
    run: dict[str, Any]


def qa_set_name(path: str | os.PathLike) -> str:
    """A QA file's name without ``.jsonl`` (the ``<qa_name>`` of record sources)."""
    p = Path(path)
    return p.name[:-len(".jsonl")] if p.name.endswith(".jsonl") else p.stem


async def arun_teacher_episodes(
    agent: Any,
    qa_path: str | os.PathLike,
    video_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prompt: TeacherPrompt | None = None,
    samples_per_question: int = 1,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    concurrency: int = 8,
    retry_errors: bool = False,
    skip_missing: bool = False,
    run_info: Mapping[str, Any] | None = None,
    allow_config_change: bool = False,
    stem: str = "teacher",
    on_start: Callable[[int, int], None] | None = None,
    on_record: Callable[[Any], None] | None = None,
) -> TeacherEpisodes:
    """Run (or resume) the teacher's episodes over a QA set through the eval runner, without the
    SFT-data selection (arguments as in :func:`arun_teacher`). Writes the question file and the
    eval run's files (``<est>.jsonl``, ``.cache.jsonl``, ``.run.json``, ``.summary.json``).

    Raises:
        RLDataError / FileNotFoundError: a bad QA set; ValueError: bad arguments;
        eva_fast.eval.PreflightError: missing videos (without ``skip_missing``).
    """
    positive_int("samples_per_question", samples_per_question)
    prompt = prompt or TeacherPrompt()
    qa_path = Path(qa_path)
    qa = load_rl_set(qa_path, infer_type=True)
    positive_int("limit", limit, allow_none=True)
    out = Path(out_dir)
    qname = qa_set_name(qa_path)
    questions = out / f"{stem}.questions.jsonl"
    meta = write_questions(qa, prompt, questions, samples_per_question, qname)
    spec = BenchmarkSpec(stem, stem, questions, None, "field:category", None)
    info = {**dict(run_info or {}), "prompt": prompt.identity(), "samples_per_question": samples_per_question,
            "questions_sha": prompt_hash(questions.read_text(encoding="utf-8"))}
    result = await arun_benchmark(
        agent, spec, video_root, out, concurrency=concurrency, shard=shard, retry_errors=retry_errors,
        limit=None if limit is None else limit * samples_per_question,  # the first `limit` questions' samples
        skip_missing=skip_missing, run_info=info, allow_config_change=allow_config_change,
        on_start=on_start, on_record=on_record,
    )
    run = {"qa_set": str(qa_path), "questions": len(qa) if limit is None else min(limit, len(qa)),
           "samples_per_question": samples_per_question, "shard": f"{shard[0]}/{shard[1]}" if shard else None,
           "prompt_families": list(prompt.families), "ran_now": result.ran, "from_cache": result.skipped_cached}
    return TeacherEpisodes(result, meta, output_stem(stem, shard), qname, run)


def select_teacher_data(
    records: Sequence[Mapping[str, Any]],
    meta: Mapping[int, Mapping[str, Any]],
    out_dir: str | os.PathLike,
    est: str,
    *,
    stem: str = "teacher",
    qa_name: str = "qa",
    rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD,
    require_structure: bool = True,
    record_system: str = "student",
    run: Mapping[str, Any] | None = None,
    missing_videos: int = 0,
    eval_result: Any = None,
) -> TeacherResult:
    """The SFT-data step of a teacher run: keep the right, well-structured trajectories (see the
    module docstring) and write ``<est>.sft.jsonl``, ``<est>.trajectories.jsonl`` and the report.

    Args:
        records: the run's eval records (``<est>.jsonl``: ``index``, ``gt``, ``answer``,
            ``stop_reason``, ``trajectory``, ...); indices not in ``meta`` are ignored.
        meta: :func:`teacher_meta` of the run's QA set.
        out_dir: the run's folder; est: the output stem (``teacher`` or ``teacher.shard-i-of-n``).
        stem, qa_name: the ``source`` of the records is ``<stem>:<qa_name>#<q>/<sample>``.
        rouge_threshold, require_structure, record_system: see :func:`arun_teacher`.
        run: run facts for the report; missing_videos: questions skipped for a missing video.

    Raises:
        ValueError: bad ``record_system`` / ``rouge_threshold``.
    """
    if record_system not in RECORD_SYSTEMS:
        raise ValueError(f"record_system must be one of {RECORD_SYSTEMS}, got {record_system!r}")
    if not 0.0 <= rouge_threshold <= 1.0:
        raise ValueError(f"rouge_threshold must be in [0, 1], got {rouge_threshold!r}")
    out = Path(out_dir)
    qname = qa_name
    outcomes: list[dict[str, Any]] = []
    sft, trajs = [], []
    reasons: Counter = Counter()
    stops: Counter = Counter()
    by_type: dict[str, Counter] = defaultdict(Counter)
    by_source: dict[str, Counter] = defaultdict(Counter)
    by_category: dict[str, Counter] = defaultdict(Counter)
    kept_rounds, kept_visual, kept_frames = [], [], []
    for rec in sorted(records, key=lambda r: int(r["index"])):
        m = meta.get(int(rec["index"]))
        if m is None:
            continue
        stops[str(rec.get("stop_reason"))] += 1
        right, score, reason = judge_teacher_record(rec, m, rouge_threshold=rouge_threshold,
                                                    require_structure=require_structure)
        outcomes.append({**m, "index": int(rec["index"]), "right": right, "score": score, "reason": reason,
                         "stop_reason": str(rec.get("stop_reason") or ""), "answer": rec.get("answer") or "",
                         "gt": str(rec.get("gt"))})
        src = m["source"].rsplit("#", 1)[0]
        for c in (by_type[m["type"]], by_source[src], by_category[m["category"] or "uncategorized"]):
            c["trajectories"] += 1
            c["finished"] += right is not None
            c["right"] += bool(right)
            c["kept"] += reason is None
        if reason is not None:
            reasons[reason] += 1
        if right is None:
            continue
        traj = dict(rec["trajectory"])
        source = f"{stem}:{qname}#{m['qa_index']}/{m['sample']}"
        rewards = {"accuracy" if m["type"] == "mcq" else "rouge": float(score)}
        try:
            as_teacher = record_from_trajectory(traj, gt=str(rec["gt"]), label=bool(right), source=source,
                                                rewards=rewards, video=m["video"])
            trajs.append(as_teacher)
            if reason is None:
                if record_system == "student":
                    traj["system"] = SYSTEM_PROMPT
                sft.append(record_from_trajectory(traj, gt=str(rec["gt"]), source=source, rewards=rewards,
                                                  video=m["video"]))
                kept_rounds.append(rec.get("num_rounds", 0))
                kept_visual.append(rec.get("visual_tokens", 0))
                kept_frames.append(sum(c.nframes for cs in as_teacher.calls.values() for c in cs))
        except RecordError as e:
            reasons["unconvertible"] += 1
            logger.warning("teacher record %s cannot be converted: %s", rec.get("index"), e)
    sft_path, trajs_path = out / f"{est}.sft.jsonl", out / f"{est}.trajectories.jsonl"
    write_records(sft_path, sft)
    write_records(trajs_path, trajs)

    total = len(outcomes)
    finished = sum(c["finished"] for c in by_type.values())

    def _rows(groups: Mapping[str, Counter]) -> dict[str, dict[str, Any]]:
        return {k: {"trajectories": c["trajectories"], "finished": c["finished"], "right": c["right"],
                    "kept": c["kept"], "accept_rate": rate(c["kept"], c["trajectories"])}
                for k, c in sorted(groups.items())}

    report = {
        "run": {**dict(run or {}), "rouge_threshold": rouge_threshold, "require_structure": require_structure,
                "record_system": record_system},
        "counts": {"trajectories": total, "finished": finished, "right": sum(c["right"] for c in by_type.values()),
                   "kept": len(sft), "accept_rate": rate(len(sft), total),
                   "missing_videos": missing_videos},
        "rejected": dict(sorted(reasons.items())),
        "stop_reasons": dict(sorted(stops.items())),
        "by_type": _rows(by_type),
        "by_source": _rows(by_source),
        "by_category": _rows(by_category),
        "kept_trajectories": {"mean_rounds": _mean(kept_rounds), "mean_visual_tokens": _mean(kept_visual),
                              "mean_frames": _mean(kept_frames)},
        "files": {"sft": str(sft_path), "trajectories": str(trajs_path), "results": str(out / f"{est}.jsonl")},
    }
    jpath, _ = write_report(out / est, "Teacher trajectories", report)
    return TeacherResult(sft_path, trajs_path, out / f"{est}.jsonl", jpath, len(sft), finished, total, report,
                         eval_result, outcomes)


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None
