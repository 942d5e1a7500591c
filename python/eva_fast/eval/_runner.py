"""The eval runner: the agent loop over a benchmark's questions, async, resumable, shardable.

One run = one benchmark (optionally ``--limit N`` and ``--shard i/n``) into one output folder::

    <out>/<stem>.cache.jsonl    append-only, one fsynced line per finished question (resume source)
    <out>/<stem>.jsonl          final results, one record per question, sorted by index
                                (the reference's result-file format; ``eva-fast eval score`` reads it)
    <out>/<stem>.summary.json   the score of the final results
    <out>/<stem>.run.json       what produced them (benchmark, shard, agent config, backend)

``<stem>`` is the benchmark name, plus ``.shard-<i>-of-<n>`` for a shard. Rerunning the same
command skips every question already in the cache; ``retry_errors`` first drops the cached
records that :func:`~eva_fast.eval._records.should_retry` marks.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from eva_fast._files import write_atomic
from eva_fast._logging import get_logger
from eva_fast.agent import STOP_EXCEPTION, AgentConfig
from eva_fast.eval._datasets import (
    BenchmarkSpec,
    PreflightReport,
    Sample,
    get_benchmark,
    load_samples,
    preflight,
    resolve_video,
    select_samples,
)
from eva_fast.eval._records import ResultCache, should_retry, write_records_atomic
from eva_fast.eval._score import Summary, is_correct, score_records

log = get_logger("eval")


class AgentRunner(Protocol):
    """What the runner needs from the agent: ``eva_fast.agent.AgentLoop`` satisfies it."""

    def run(self, video_path: str, question: str, system: str | None = None) -> Awaitable[Any]: ...


class PreflightError(RuntimeError):
    """Videos of the run are missing or unreadable (``report`` has the details)."""

    def __init__(self, report: PreflightReport):
        self.report = report
        super().__init__("preflight failed: " + report.summary()
                         + "\n(fix the video root, or pass --skip-missing to run the other questions)")


def output_stem(benchmark: str, shard: tuple[int, int] | None = None) -> str:
    """File stem of a run's outputs: ``videomme`` or ``videomme.shard-0-of-4``."""
    return benchmark if shard is None else f"{benchmark}.shard-{shard[0]}-of-{shard[1]}"


def _sum_turn_timings(turns: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in turns or ():
        timings = t.get("timings_ms") if isinstance(t, Mapping) else None
        for k, v in (timings or {}).items():
            if isinstance(v, (int, float)):
                out[f"{k}_ms"] = out.get(f"{k}_ms", 0.0) + float(v)
    return out


def record_from_trajectory(sample: Sample, benchmark: str, traj: Any, wall_s: float) -> dict[str, Any]:
    """One result record: the reference's fields, then ours.

    Reference fields (eval-eva.py): ``index``, ``videos``, ``gt``, ``answer``, ``stop_reason``,
    ``num_rounds``, ``total_tokens`` (last round's prompt + completion tokens), and
    ``estimated_visual_tokens``. Ours: ``benchmark``, ``categories``, ``visual_tokens`` (exact,
    as fed to the model), ``timings`` (``wall_s`` and per-stage sums over turns, ms) and
    ``trajectory`` (``Trajectory.to_dict()``); ``error`` when the trajectory stopped on an
    exception or a refused request (as the reference's records).

    An episode that stopped with ``stop_reason == "exception"`` gets the reference's exception
    record counts: ``num_rounds``, ``total_tokens`` and ``estimated_visual_tokens`` all 0, because
    eval-eva.py's ``process_single_item`` catches the exception outside ``single()`` and writes
    literal zeros (wangruohui/EfficientVideoAgent @ 758ad8d), so EVA's published averages count such
    questions as 0 rounds and 0 tokens. What the episode really used then lives in
    ``counts_at_stop`` (the same three keys: the rounds generated, the last round's total tokens,
    and the estimates charged up to and including the call that raised). A refused request
    (``openai_bad_request``) keeps its counts, as the reference's in-loop handler does.
    """
    traj_dict = traj.to_dict()
    stage_ms = traj_dict.get("timings_ms")
    if isinstance(stage_ms, Mapping):
        stage_ms = {f"{k}_ms": float(v) for k, v in stage_ms.items() if isinstance(v, (int, float))}
    else:
        stage_ms = _sum_turn_timings(traj_dict.get("turns", []))
    timings = {"wall_s": round(wall_s, 6), **stage_ms}
    answer = traj.answer if traj.answer is not None else ""
    record = {
        "index": sample.index,
        "videos": sample.item.get("videos", [sample.video]),
        "gt": sample.gt,
        "answer": answer,
        "stop_reason": traj.stop_reason,
        "num_rounds": int(traj.num_rounds),
        "total_tokens": int(traj.total_tokens),
        "estimated_visual_tokens": int(getattr(traj, "estimated_visual_tokens", 0) or 0),
        "benchmark": benchmark,
        "categories": list(sample.categories),
        "visual_tokens": int(getattr(traj, "visual_tokens", 0) or 0),
        "timings": timings,
        "trajectory": traj_dict,
    }
    error = getattr(traj, "error", None)
    if error:  # exception / bad-request stops carry the text, as the reference's records do
        record["error"] = str(error)
    if traj.stop_reason == STOP_EXCEPTION:
        record["counts_at_stop"] = {k: record[k] for k in REFERENCE_ZEROED_ON_EXCEPTION}
        record.update(dict.fromkeys(REFERENCE_ZEROED_ON_EXCEPTION, 0))
    return record


# The counts eval-eva.py's exception handler (process_single_item) writes as literal 0.
REFERENCE_ZEROED_ON_EXCEPTION = ("num_rounds", "total_tokens", "estimated_visual_tokens")


def exception_record(sample: Sample, benchmark: str, exc: BaseException, wall_s: float) -> dict[str, Any]:
    """The record of a question whose run raised (as eval-eva.py writes one: empty answer,
    ``stop_reason="exception"``, zero rounds/tokens, ``error`` = ``"<Type>: <message>"``)."""
    return {
        "index": sample.index,
        "videos": sample.item.get("videos", [sample.video]),
        "gt": sample.gt,
        "answer": "",
        "stop_reason": "exception",
        "error": f"{type(exc).__name__}: {exc}",
        "num_rounds": 0,
        "total_tokens": 0,
        "estimated_visual_tokens": 0,
        "benchmark": benchmark,
        "categories": list(sample.categories),
        "visual_tokens": 0,
        "timings": {"wall_s": round(wall_s, 6)},
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:],
    }


@dataclass
class Progress:
    """Passed to the progress callback after each finished question.

    Attributes:
        done: questions finished in this invocation; total: questions to run in it.
        scored: records of the run's selection so far (cached + new); correct: right among them.
        record: the record just written.
    """

    done: int
    total: int
    scored: int
    correct: int
    record: dict[str, Any]

    @property
    def accuracy(self) -> float:
        return self.correct / self.scored if self.scored else float("nan")


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        results_path, cache_path, summary_path: the files written.
        summary: the score of the results (``None`` when there are none).
        preflight: the preflight report.
        ran: questions run in this invocation; skipped_cached: found done in the cache;
        retried: cached error records dropped for a retry; skipped_missing: questions left out
        because their video is missing or unreadable.
    """

    results_path: Path
    cache_path: Path
    summary_path: Path
    summary: Summary | None
    preflight: PreflightReport
    ran: int
    skipped_cached: int
    retried: int
    skipped_missing: int
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)


def _same_identity(old: Any, new: dict[str, Any]) -> bool:
    """Whether a stored run identity matches this run's. Agent settings that the older eva_fast that
    wrote ``old`` did not have yet (absent from its ``agent_config``) are not counted as a change,
    so runs resume across versions; they are logged."""
    if old is None or old == new:
        return True
    if not isinstance(old, dict) or set(old) != set(new):
        return False
    old_cfg, new_cfg = old.get("agent_config"), new.get("agent_config")
    if not isinstance(old_cfg, dict) or not isinstance(new_cfg, dict):
        return False
    old_cfg, new_cfg = AgentConfig.flatten(old_cfg), AgentConfig.flatten(new_cfg)  # layouts of earlier versions too
    added = sorted(set(new_cfg) - set(old_cfg))
    same = (set(old_cfg) <= set(new_cfg) and all(old_cfg[k] == new_cfg[k] for k in old_cfg)
            and all(old[k] == new[k] for k in old if k != "agent_config"))
    if same and added:
        log.warning("resuming a run recorded without the agent settings %s (added since); this run uses %s",
                       added, {k: new_cfg[k] for k in added})
    return same


def _check_run_meta(path: Path, meta: dict[str, Any], allow_change: bool) -> None:
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if not _same_identity(old.get("identity"), meta["identity"]) and not allow_change:
            raise ValueError(
                f"{path} records a different run ({old.get('identity')}) than this one ({meta['identity']}); "
                "resuming would mix results: use another --out folder, or pass --allow-config-change")
    write_atomic(path, json.dumps(meta, indent=2, default=str))


async def run_samples(agent: AgentRunner, samples: Sequence[Sample], video_paths: Mapping[str, str], cache: ResultCache,
                      benchmark: str, concurrency: int = 8, on_record: Callable[[Progress], None] | None = None,
                      scored_indices: set[int] | None = None) -> int:
    """Run ``agent`` on ``samples`` with at most ``concurrency`` in flight; append each record to
    ``cache`` as soon as it is finished (completion order). Returns the number run.

    Raises:
        ValueError: ``concurrency < 1``.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    sem = asyncio.Semaphore(concurrency)
    scored_indices = set(scored_indices or ())
    correct = sum(is_correct(cache.records[i]) for i in scored_indices if i in cache.records)

    async def one(sample: Sample) -> dict[str, Any]:
        async with sem:
            t0 = time.perf_counter()
            try:
                traj = await agent.run(video_paths[sample.video], sample.question, system=sample.system)
                return record_from_trajectory(sample, benchmark, traj, time.perf_counter() - t0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the agent should not raise; if it does, keep the run going
                log.warning("question %s raised %s: %s", sample.index, type(e).__name__, e)
                return exception_record(sample, benchmark, e, time.perf_counter() - t0)

    tasks = [asyncio.ensure_future(one(s)) for s in samples]
    done = 0
    try:
        for fut in asyncio.as_completed(tasks):
            record = await fut
            cache.append(record)
            done += 1
            if record["index"] not in scored_indices:
                scored_indices.add(record["index"])
                correct += is_correct(record)
            if on_record is not None:
                on_record(Progress(done, len(samples), len(scored_indices), correct, record))
    finally:
        for t in tasks:
            t.cancel()
    return done


def run_benchmark(agent: AgentRunner, benchmark: str | BenchmarkSpec, video_root: str | os.PathLike,
                  out_dir: str | os.PathLike, **kwargs: Any) -> RunResult:
    """Synchronous :func:`arun_benchmark` (one ``asyncio.run``; same arguments)."""
    return asyncio.run(arun_benchmark(agent, benchmark, video_root, out_dir, **kwargs))


async def arun_benchmark(agent: AgentRunner, benchmark: str | BenchmarkSpec, video_root: str | os.PathLike,
                         out_dir: str | os.PathLike, *, concurrency: int = 8, limit: int | None = None,
                         shard: tuple[int, int] | None = None, retry_errors: bool = False, skip_missing: bool = False,
                         open_videos: bool = True, run_info: Mapping[str, Any] | None = None,
                         allow_config_change: bool = False, on_preflight: Callable[[PreflightReport], None] | None = None,
                         on_start: Callable[[int, int], None] | None = None,
                         on_record: Callable[[Progress], None] | None = None) -> RunResult:
    """Run (or resume) one benchmark and write its results, summary and run description (async;
    several benchmarks can share one event loop and one backend client).

    Args:
        agent: an ``AgentLoop`` (or anything with its async ``run``).
        benchmark: a registered name (``videomme``, ...), a jsonl path, or a spec.
        video_root: the benchmark's video folder.
        out_dir: output folder (created).
        concurrency: questions in flight at once (>= 1).
        limit: only the first ``limit`` questions (by index).
        shard: ``(i, n)``: this process's share (see ``select_samples``).
        retry_errors: run cached error records again (see ``should_retry``).
        skip_missing: run the questions whose videos are fine instead of failing the preflight.
        open_videos: the preflight also opens every video (not only checks it exists).
        run_info: what builds the agent (backend, model, agent config), stored in ``<stem>.run.json``;
            resuming with a different ``run_info`` is refused unless ``allow_config_change``.
        on_preflight, on_start, on_record: progress callbacks (the CLI draws a progress bar);
            ``on_start(to_run, already_done)``.

    Raises:
        PreflightError: missing/unreadable videos and not ``skip_missing``; nothing was run.
        CacheLockedError: another process is writing this run's cache.
        JsonlFormatError: a malformed annotation or cache line (names file and line).
    """
    spec = benchmark if isinstance(benchmark, BenchmarkSpec) else get_benchmark(benchmark)
    samples = select_samples(load_samples(spec), limit=limit, shard=shard)
    report = await asyncio.to_thread(preflight, samples, video_root, open_videos=open_videos)
    if on_preflight is not None:
        on_preflight(report)
    bad = set(report.missing) | set(report.unreadable)
    if bad and not skip_missing:
        raise PreflightError(report)
    runnable = [s for s in samples if s.video not in bad]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(spec.name, shard)
    cache_path, results_path = out / f"{stem}.cache.jsonl", out / f"{stem}.jsonl"
    summary_path = out / f"{stem}.summary.json"
    identity = {"benchmark": spec.name, "annotation": spec.annotation.name, **dict(run_info or {})}
    meta = {"identity": identity, "shard": list(shard) if shard else None, "limit": limit,
            "video_root": str(video_root), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with ResultCache(cache_path) as cache:
        # an empty cache has nothing to mix with: a new identity just replaces the old one
        _check_run_meta(out / f"{stem}.run.json", meta, allow_config_change or not cache.records)
        selected = {s.index for s in samples}
        retried = 0
        if retry_errors:
            retried = cache.drop([i for i, r in cache.records.items() if i in selected and should_retry(r)])
        todo = [s for s in runnable if s.index not in cache.records]
        skipped_cached = len(runnable) - len(todo)
        if on_start is not None:
            on_start(len(todo), skipped_cached)
        video_paths = {s.video: report.resolved.get(s.video) or str(resolve_video(s.video, video_root))
                       for s in todo}
        done_before = {i for i in cache.records if i in selected}
        ran = await run_samples(agent, todo, video_paths, cache, spec.name, concurrency, on_record,
                                scored_indices=done_before) if todo else 0
        records = [cache.records[i] for i in sorted(selected) if i in cache.records]
    write_records_atomic(results_path, records)
    summary = None
    if records:
        summary = score_records(records, {s.index: s.categories for s in samples},
                                expected_indices=sorted(selected), source=str(results_path))
        write_atomic(summary_path, json.dumps({"benchmark": spec.name, "title": spec.title, "shard": meta["shard"],
                                                    "published": spec.published, **summary.to_dict()}, indent=2,
                                                   default=str))
    return RunResult(results_path, cache_path, summary_path, summary, report, ran, skipped_cached, retried,
                     len(samples) - len(runnable), records)
