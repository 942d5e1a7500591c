"""Evaluation of the EVA agent on EVA's six benchmarks: datasets, runner, scoring, reports.

    from eva_fast.eval import BENCHMARKS, run_benchmark, score_file
    from eva_fast.agent import AgentConfig, AgentLoop, get_backend

    loop = AgentLoop(get_backend("openai", ...), AgentConfig())   # the published evaluation's settings
    result = run_benchmark(loop, "videomme", "/data/VideoMME/video", "out/eval", concurrency=32)
    print(result.summary.format())
    print(score_file("out/eval/videomme.jsonl").accuracy)   # any results file in EVA's format

The command line is ``eva-fast eval {list,preflight,run,score,merge,report}``.

Modules: ``_datasets`` (benchmark registry ``BENCHMARKS``, annotation loading, video paths,
preflight), ``_runner`` (the agent over a benchmark: async, resumable from an fsynced cache,
shardable; a run's settings are its identity, compared across eva_fast versions with
``AgentConfig.flatten``), ``_records`` (result and cache files), ``_score`` (EVA's
``accuracy.py``), ``_report`` (report.md, charts, timelines), ``_cli``. jsonl goes through
``eva_fast._jsonl``, the package's one reader.
"""

from eva_fast._jsonl import JsonlFormatError, read_jsonl
from eva_fast.eval._datasets import (
    BENCHMARKS,
    BenchmarkSpec,
    PreflightReport,
    Sample,
    get_benchmark,
    load_samples,
    parse_shard,
    preflight,
    resolve_video,
    select_samples,
    video_candidates,
)
from eva_fast.eval._records import (
    NORMAL_STOP_REASONS,
    CacheLockedError,
    ResultCache,
    load_records,
    merge_result_files,
    should_retry,
    write_records_atomic,
)
from eva_fast.eval._report import load_results, write_report
from eva_fast.eval._runner import (
    PreflightError,
    Progress,
    RunResult,
    arun_benchmark,
    output_stem,
    record_from_trajectory,
    run_benchmark,
    run_samples,
)
from eva_fast.eval._score import CategoryScore, Summary, is_correct, normalize_answer, score_file, score_records

__all__ = [
    "BENCHMARKS",
    "NORMAL_STOP_REASONS",
    "BenchmarkSpec",
    "CacheLockedError",
    "CategoryScore",
    "JsonlFormatError",
    "PreflightError",
    "PreflightReport",
    "Progress",
    "ResultCache",
    "RunResult",
    "Sample",
    "Summary",
    "arun_benchmark",
    "get_benchmark",
    "is_correct",
    "load_records",
    "load_results",
    "load_samples",
    "merge_result_files",
    "normalize_answer",
    "output_stem",
    "parse_shard",
    "preflight",
    "read_jsonl",
    "record_from_trajectory",
    "resolve_video",
    "run_benchmark",
    "run_samples",
    "score_file",
    "score_records",
    "select_samples",
    "should_retry",
    "video_candidates",
    "write_records_atomic",
    "write_report",
]
