"""The initial RL set (paper §3.3: "we construct the initial RL dataset by collecting failure cases
from the KTO-trained model"; §4.1: 90 % open-ended, 10 % multiple-choice questions).

:func:`abuild_rl_set` runs a model (any agent backend: in process with transformers, or a vLLM
server) over a question pool with the agent loop and EVA's trained system turn, through the eval
runner (the teacher run of :func:`eva_fast.train.data.arun_teacher`: crash-safe cache, resume by
rerunning, ``shard``), scores every episode (multiple choice: exact letter; open-ended: mean
ROUGE-1/2/L F1 at or above the threshold) and keeps the *failure cases*: questions whose share of
right episodes is below ``keep_below`` (default 1.0: any wrong episode; with one episode per
question, a wrong answer or no answer). Episodes stopped by an infrastructure error are not scored
(counted; ``retry_errors`` runs them again).

The failures are brought to the paper's mix with
:func:`eva_fast.train._rl_data.balance_types` (``mcq_ratio`` 0.1: one type subsampled, nothing
duplicated; ``mcq_ratio=None`` keeps all). Every written line is the pool's line with its
``provenance`` extended by ``rl_set``: the model's identity, the run folder, and per episode the
answer, score and stop reason.

Outputs in ``out_dir`` (``<stem>`` = ``policy``, or ``policy.shard-i-of-n``): the run's files
(``<stem>.jsonl`` results, ``.cache.jsonl``, ``.run.json``, ``.trajectories.jsonl``,
``.report.json``), ``<stem>.failures.jsonl`` (every failure case, before the mix), and, unless
sharded, ``rl.jsonl`` (the RL set) with ``rl.report.{json,md}``. Shards each write their failures;
:func:`merge_rl_set` mixes them into one ``rl.jsonl``.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eva_fast._logging import get_logger
from eva_fast.eval import output_stem
from eva_fast.train._rl_data import RLSample, balance_types, load_rl_set, write_rl_set
from eva_fast.train.data._common import DEFAULT_ROUGE_THRESHOLD, rate, write_report
from eva_fast.train.data._teacher import TeacherPrompt, arun_teacher

logger = get_logger("train.data")

#: The paper's share of multiple-choice questions in the RL set (§4.1: 90 % open / 10 % MCQ).
PAPER_MCQ_RATIO = 0.1


@dataclass
class RLSetResult:
    """What :func:`abuild_rl_set` / :func:`merge_rl_set` wrote.

    Attributes:
        rl_set: ``rl.jsonl`` (None for a shard: its failures still need :func:`merge_rl_set`).
        failures: ``<stem>.failures.jsonl`` (None for a merge).
        report: the report file of what was written last (``rl.report.json``, or the shard's
            ``<stem>.failures.report.json``).
        counts: the report's ``counts``.
        report_data: the report dict.
    """

    rl_set: Path | None
    failures: Path | None
    report: Path
    counts: dict[str, Any]
    report_data: dict[str, Any] = field(repr=False, default_factory=dict)


def _mix(samples: Sequence[RLSample], mcq_ratio: float | None, seed: int, where: str) -> list[RLSample]:
    try:
        return balance_types(samples, mcq_ratio, seed)
    except ValueError as e:
        n_mcq = sum(s.type == "mcq" for s in samples)
        raise ValueError(f"{where}: {n_mcq} multiple-choice and {len(samples) - n_mcq} open failure cases cannot make "
                         f"the mix mcq_ratio={mcq_ratio} ({e}); widen the question pool, or keep every failure "
                         "(mcq_ratio=None, --no-mix)") from None


def _type_counts(samples: Sequence[RLSample]) -> dict[str, Any]:
    n_mcq = sum(s.type == "mcq" for s in samples)
    return {"questions": len(samples), "mcq": n_mcq, "open": len(samples) - n_mcq,
            "mcq_fraction": rate(n_mcq, len(samples))}


def write_mixed_rl_set(failures: Sequence[RLSample], out_dir: str | os.PathLike, *, mcq_ratio: float | None,
                       seed: int = 0, run: Mapping[str, Any] | None = None) -> RLSetResult:
    """Bring failure cases to the mix and write ``rl.jsonl`` + ``rl.report.{json,md}``.

    Raises:
        ValueError: the mix needs a question type the failures lack (the message gives the counts).
    """
    out = Path(out_dir)
    kept = _mix(failures, mcq_ratio, seed, str(out / "rl.jsonl"))
    kept = [replace(s, provenance={**s.provenance, "rl_set": {**s.provenance.get("rl_set", {}),
                                                               "mcq_ratio": mcq_ratio, "mix_seed": seed}})
            for s in kept]
    path = out / "rl.jsonl"
    write_rl_set(path, kept)
    by_source: dict[str, Counter] = defaultdict(Counter)
    for s in failures:
        by_source[(s.source or "?").split("#", 1)[0].split(":", 1)[0]]["failures"] += 1
    for s in kept:
        by_source[(s.source or "?").split("#", 1)[0].split(":", 1)[0]]["written"] += 1
    report = {
        "run": {**dict(run or {}), "mcq_ratio": mcq_ratio, "seed": seed},
        "counts": {"failure_cases": len(failures), "written": len(kept)},
        "failure_cases": _type_counts(failures),
        "rl_set": _type_counts(kept),
        "by_source": {k: dict(v) for k, v in sorted(by_source.items())},
        "files": {"rl_set": str(path)},
    }
    jpath, _ = write_report(out / "rl", "RL set", report)
    return RLSetResult(path, None, jpath, report["counts"], report)


def merge_rl_set(failure_files: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                 mcq_ratio: float | None = PAPER_MCQ_RATIO, seed: int = 0) -> RLSetResult:
    """Mix the failure cases of sharded :func:`abuild_rl_set` runs into one ``rl.jsonl`` (a question
    in two files, by ``id`` or by video + question, is kept once; in pool order, so the shards of a
    run give the set the unsharded run gives).

    Raises:
        FileNotFoundError: a missing file; ValueError: no failures, or an impossible mix.
    """
    seen, failures = set(), []
    for f in failure_files:
        for s in load_rl_set(f):
            key = s.id or (s.video, s.prompt())
            if key not in seen:
                seen.add(key)
                failures.append(s)
    if not failures:
        raise ValueError(f"no failure cases in {[str(f) for f in failure_files]}")
    failures.sort(key=lambda s: (str(s.provenance.get("rl_set", {}).get("pool", "")),
                                 s.provenance.get("rl_set", {}).get("pool_index", 0)))
    return write_mixed_rl_set(failures, out_dir, mcq_ratio=mcq_ratio, seed=seed,
                              run={"merged": [str(f) for f in failure_files]})


async def abuild_rl_set(
    agent: Any,
    pool_path: str | os.PathLike,
    video_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    samples_per_question: int = 1,
    keep_below: float = 1.0,
    mcq_ratio: float | None = PAPER_MCQ_RATIO,
    seed: int = 0,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    concurrency: int = 8,
    rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD,
    retry_errors: bool = False,
    skip_missing: bool = False,
    run_info: Mapping[str, Any] | None = None,
    allow_config_change: bool = False,
    stem: str = "policy",
    on_start: Callable[[int, int], None] | None = None,
    on_record: Callable[[Any], None] | None = None,
) -> RLSetResult:
    """Run the model over the pool and write its failure cases as the RL set (module docstring).

    Args:
        agent: an ``AgentLoop`` with the model's backend (the KTO model); its system turn is
            EVA's trained one.
        pool_path: the question pool (RL-set jsonl, e.g. ``eva-fast data import``'s ``rl_pool.jsonl``).
        video_root: folder the pool's relative video paths are under.
        out_dir: output folder.
        samples_per_question: episodes per question (>= 1; a temperature > 0 for more than one).
        keep_below: a question is a failure case when its share of right episodes is below this,
            in (0, 1].
        mcq_ratio: multiple-choice share of the written set (paper 0.1); None keeps every failure.
        seed: seed of the mix.
        limit, shard, concurrency, retry_errors, skip_missing, allow_config_change, on_start,
            on_record: as in :func:`eva_fast.train.data.arun_teacher`.
        rouge_threshold: open-ended answers count as right at this mean ROUGE or above.
        run_info: the model's identity (backend, model, agent settings): resuming with another is
            refused; it is written into every line's provenance.
        stem: file stem of the run.

    Returns:
        An :class:`RLSetResult`.

    Raises:
        RLDataError / FileNotFoundError: a bad pool; ValueError: bad arguments or an impossible
        mix; eva_fast.eval.PreflightError: missing videos (without ``skip_missing``).
    """
    if not (isinstance(keep_below, (int, float)) and 0.0 < keep_below <= 1.0):
        raise ValueError(f"keep_below must be in (0, 1], got {keep_below!r}")
    if mcq_ratio is not None and not 0.0 <= mcq_ratio <= 1.0:
        raise ValueError(f"mcq_ratio must be in [0, 1] or None, got {mcq_ratio!r}")
    pool = load_rl_set(pool_path, infer_type=True)
    res = await arun_teacher(
        agent, pool_path, video_root, out_dir, prompt=TeacherPrompt((), student=True),
        samples_per_question=samples_per_question, limit=limit, shard=shard, concurrency=concurrency,
        rouge_threshold=rouge_threshold, require_structure=False, record_system="student", retry_errors=retry_errors,
        skip_missing=skip_missing, run_info=run_info, allow_config_change=allow_config_change, stem=stem,
        on_start=on_start, on_record=on_record)
    out = Path(out_dir)
    est = output_stem(stem, shard)
    episodes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    errors = 0
    for o in res.outcomes:
        if o["right"] is None:
            errors += 1
        else:
            episodes[o["qa_index"]].append(o)
    failures: list[RLSample] = []
    right_q = 0
    identity = {k: v for k, v in dict(run_info or {}).items() if k in ("backend", "model", "backend_args")}
    for q in sorted(episodes):
        eps = episodes[q]
        n_right = sum(bool(o["right"]) for o in eps)
        if n_right / len(eps) >= keep_below:
            right_q += 1
            continue
        s = pool[q]
        prov = {**s.provenance, "rl_set": {
            "stage": "rl-set", "pool": str(pool_path), "pool_index": q, "model": identity, "run": str(out / est),
            "episodes": len(eps), "right": n_right,
            "answers": [o["answer"] for o in eps], "scores": [None if o["score"] is None else round(o["score"], 4)
                                                              for o in eps],
            "stop_reasons": [o["stop_reason"] for o in eps]}}
        failures.append(replace(s, provenance=prov))
    fpath = out / f"{est}.failures.jsonl"
    write_rl_set(fpath, failures)
    run = {"pool": str(pool_path), "questions": res.report["run"].get("questions"),
           "samples_per_question": samples_per_question, "keep_below": keep_below,
           "rouge_threshold": rouge_threshold, "shard": f"{shard[0]}/{shard[1]}" if shard else None,
           "ran_now": res.report["run"].get("ran_now"), "from_cache": res.report["run"].get("from_cache"),
           "model": identity}
    scored = {"questions_scored": len(episodes), "questions_right": right_q, "failure_cases": len(failures),
              "episodes": len(res.outcomes), "episodes_with_errors": errors,
              "missing_videos": res.report["counts"].get("missing_videos", 0)}
    if shard is not None:
        report = {"run": run, "counts": scored, "failure_cases": _type_counts(failures), "files": {"failures": str(fpath)}}
        jpath, _ = write_report(out / f"{est}.failures", "RL set failure cases (shard)", report)
        return RLSetResult(None, fpath, jpath, scored, report)
    if not failures:
        raise ValueError(f"the model answered every scored question of {pool_path} right ({scored}): no failure cases "
                         "for the RL set")
    mixed = write_mixed_rl_set(failures, out, mcq_ratio=mcq_ratio, seed=seed, run=run)
    mixed.report_data["counts"] = {**scored, **mixed.counts}
    write_report(out / "rl", "RL set", mixed.report_data)
    return RLSetResult(mixed.rl_set, fpath, mixed.report, mixed.report_data["counts"], mixed.report_data)


__all__ = ["PAPER_MCQ_RATIO", "RLSetResult", "abuild_rl_set", "merge_rl_set", "write_mixed_rl_set"]
