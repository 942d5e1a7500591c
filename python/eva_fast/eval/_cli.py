"""``eva-fast eval``: list, preflight, run, score, merge, report.

    eva-fast eval list
    eva-fast eval preflight videomme --video-root /data/VideoMME/video
    eva-fast eval run videomme mlvu --roots roots.yaml --out out/eval --backend openai \\
        --backend-arg base_url=http://localhost:8000/v1 --concurrency 32 [--shard 0/4] [--limit 100]
    eva-fast eval score out/eval/videomme.jsonl
    eva-fast eval merge out/eval/videomme.shard-*-of-4.jsonl --benchmark videomme --out out/eval/videomme.jsonl
    eva-fast eval report out/eval/*.jsonl --out out/report

This module is an entry point: printing and the progress bar live here, not in the library.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from eva_fast._files import read_mapping
from eva_fast._jsonl import JsonlFormatError
from eva_fast.agent import AgentConfig, AgentLoop, get_backend
from eva_fast.eval._datasets import (
    BENCHMARKS,
    get_benchmark,
    load_samples,
    parse_shard,
    preflight,
    select_samples,
)
from eva_fast.eval._records import merge_result_files, write_records_atomic
from eva_fast.eval._report import write_report
from eva_fast.eval._runner import PreflightError, arun_benchmark
from eva_fast.eval._score import score_file
from eva_fast.video import add_frame_option_flags, frame_options_from_flags


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE, got {p!r}")
        out[key.replace("-", "_")] = _parse_value(value)
    return out


def _load_roots(args: argparse.Namespace, benchmarks: list[str]) -> dict[str, str]:
    """benchmark -> video root, from ``--video-root`` (one benchmark) or ``--roots FILE``."""
    roots: dict[str, str] = {}
    if getattr(args, "roots", None):
        roots.update({k.lower(): v for k, v in read_mapping(args.roots, "benchmark -> video folder").items()})
    if args.video_root:
        if len(benchmarks) != 1:
            raise ValueError("--video-root is for one benchmark; use --roots FILE (benchmark: folder) for several")
        roots[benchmarks[0].lower()] = args.video_root
    missing = [b for b in benchmarks if b.lower() not in roots and get_benchmark(b).name.lower() not in roots]
    if missing:
        raise ValueError(f"no video root for {', '.join(missing)}: pass --video-root DIR or --roots FILE")
    return {b: roots.get(b.lower(), roots.get(get_benchmark(b).name.lower())) for b in benchmarks}


def _cmd_list(args: argparse.Namespace) -> int:
    print(f"{'name':<15} {'title':<15} {'questions':>9}  {'categories':<22} EVA published (acc %, rounds, tokens)")
    for spec in BENCHMARKS.values():
        print(f"{spec.name:<15} {spec.title:<15} {spec.num_questions:>9}  {spec.category_rule:<22} {spec.published}")
    return 0


def _cmd_preflight(args: argparse.Namespace) -> int:
    roots = _load_roots(args, args.benchmarks)
    shard = parse_shard(args.shard) if args.shard else None
    ok = True
    out = {}
    for b in args.benchmarks:
        samples = select_samples(load_samples(get_benchmark(b)), args.limit, shard)
        report = preflight(samples, roots[b], open_videos=not args.no_open, workers=args.workers)
        ok &= report.ok
        if args.json:
            out[b] = {"ok": report.ok, "num_samples": report.num_samples, "num_videos": report.num_videos,
                      "missing": report.missing, "unreadable": report.unreadable,
                      "affected_samples": report.affected_samples}
        else:
            print(f"{b}: {'ok' if report.ok else 'PROBLEMS'}: {report.summary()}")
    if args.json:
        print(json.dumps(out, indent=2))
    return 0 if ok else 1


def _agent_settings(args: argparse.Namespace):
    """``(AgentConfig, backend kwargs, run_info)`` from the flags; builds nothing heavy. Frame flags
    (``--maxp``, ``--policy``, ...) apply on top of any ``--agent-arg frame_options=...``."""
    cfg_kwargs = {k: getattr(args, k) for k in ("max_turns", "max_new_tokens", "temperature", "decode_device")
                  if getattr(args, k) is not None}
    cfg_kwargs.update(_key_values(args.agent_arg, "--agent-arg"))
    config = AgentConfig.from_dict(cfg_kwargs)
    config = dataclasses.replace(config, frame_options=frame_options_from_flags(args, config.frame_options))
    backend_kwargs = _key_values(args.backend_arg, "--backend-arg")
    if args.model is not None:  # the openai backend names the served model, the others a checkpoint path
        backend_kwargs.setdefault("model" if args.backend == "openai" else "model_path", args.model)
    if args.device is not None:
        if args.backend == "openai":
            raise ValueError("--device places an in-process model; the openai backend's model runs on the server")
        backend_kwargs.setdefault("device", args.device)
    # What makes results comparable: backend, model and agent settings. Where the server is
    # (a resumed shard may talk to another replica), keys, timeouts and thread counts are left out.
    run_info = {"backend": args.backend,
                "backend_args": {k: str(v) for k, v in backend_kwargs.items()
                                 if not any(w in k.lower() for w in ("url", "key", "timeout", "concurren", "workers"))},
                "agent_config": config.to_dict()}
    return config, backend_kwargs, run_info


class _LazyAgent:
    """An AgentLoop whose backend is built only once there is work (``ensure`` is called from the
    runner's ``on_start``, before any question runs, so a bad model path or backend argument stops
    the run instead of becoming one exception record per question). A run with everything cached,
    or one stopped by the preflight, never loads a model."""

    def __init__(self, backend_name: str, backend_kwargs: dict[str, Any], config) -> None:
        self._name, self._kwargs, self._config = backend_name, backend_kwargs, config
        self._loop = None

    def ensure(self) -> None:
        if self._loop is None:
            try:
                backend = get_backend(self._name, **self._kwargs)
            except TypeError as e:  # a --backend-arg the backend does not take
                raise ValueError(f"backend {self._name!r}: {e}") from None
            self._loop = AgentLoop(backend, self._config)

    async def run(self, video_path: str, question: str, system: str | None = None):
        self.ensure()
        return await self._loop.run(video_path, question, system)

    async def aclose(self) -> None:
        if self._loop is not None:
            await self._loop.backend.aclose()


async def _run_all(args: argparse.Namespace, roots: dict[str, str], shard) -> int:
    config, backend_kwargs, run_info = _agent_settings(args)
    loop = _LazyAgent(args.backend, backend_kwargs, config)
    status = 0
    try:
        for b in args.benchmarks:
            bar = None
            label = get_benchmark(b).name

            def on_preflight(report, b=label):
                print(f"[{b}] preflight: {report.summary()}", file=sys.stderr)

            def on_start(todo: int, cached: int, b=label):
                nonlocal bar
                print(f"[{b}] {cached} question(s) already done, {todo} to run", file=sys.stderr)
                if todo:
                    loop.ensure()
                if not args.no_progress and todo:
                    from tqdm.auto import tqdm  # optional (the eval extra)

                    bar = tqdm(total=todo, desc=b, unit="q", dynamic_ncols=True, file=sys.stderr)

            def on_record(p):
                if bar is not None:
                    bar.set_postfix_str(f"acc {100 * p.accuracy:.1f}% of {p.scored}", refresh=False)
                    bar.update(1)

            try:
                result = await arun_benchmark(
                    loop, b, roots[b], args.out, concurrency=args.concurrency, limit=args.limit, shard=shard,
                    retry_errors=args.retry_errors, skip_missing=args.skip_missing, open_videos=not args.no_open,
                    run_info=run_info, allow_config_change=args.allow_config_change, on_preflight=on_preflight,
                    on_start=on_start, on_record=on_record)
            except PreflightError as e:
                print(f"eva-fast eval run: {e}", file=sys.stderr)
                status = 1
                continue
            finally:
                if bar is not None:
                    bar.close()
            print(f"[{label}] ran {result.ran}, cached {result.skipped_cached}, retried {result.retried}, "
                  f"left out (missing video) {result.skipped_missing}")
            print(f"[{label}] results: {result.results_path}")
            if result.summary is not None:
                print(result.summary.format(str(result.results_path)))
    finally:
        await loop.aclose()
    return status


def _cmd_run(args: argparse.Namespace) -> int:
    roots = _load_roots(args, args.benchmarks)
    shard = parse_shard(args.shard) if args.shard else None
    for b in args.benchmarks:
        get_benchmark(b)  # fail on a bad name before loading a model
    return asyncio.run(_run_all(args, roots, shard))


def _categories_and_indices(benchmark: str | None):
    if not benchmark:
        return None, None
    samples = load_samples(get_benchmark(benchmark))
    return {s.index: s.categories for s in samples}, [s.index for s in samples]


def _cmd_score(args: argparse.Namespace) -> int:
    cats, expected = _categories_and_indices(args.benchmark)
    out = {}
    for f in args.files:
        summary = score_file(f, cats, expected)
        if args.json:
            out[f] = summary.to_dict()
        else:
            print(summary.format(f))
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    _, expected = _categories_and_indices(args.benchmark)
    records, missing = merge_result_files(args.files, expected)
    if missing and not args.allow_missing:
        raise ValueError(f"{len(missing)} question(s) of {args.benchmark} have no record (first: {missing[:10]}); "
                         "pass --allow-missing to write the partial merge anyway")
    path = write_records_atomic(args.out, records)
    print(f"merged {len(records)} records from {len(args.files)} file(s) into {path}"
          + (f" ({len(missing)} missing)" if missing else ""))
    return 0


def _parse_timeline_spec(specs: list[str] | None) -> dict[str, list[int]] | None:
    if not specs:
        return None
    out: dict[str, list[int]] = {}
    for s in specs:
        name, sep, idx = s.partition(":")
        try:
            indices = [int(x) for x in idx.split(",") if x.strip()]
        except ValueError:
            indices = []
        if not sep or not indices:
            raise ValueError(f"--timeline takes BENCHMARK:INDEX[,INDEX...], got {s!r}")
        out.setdefault(name, []).extend(indices)
    return out


def _cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.files, args.out, timelines=args.timelines,
                        timeline_indices=_parse_timeline_spec(args.timeline))
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eva-fast eval", description="Evaluate the EVA agent on EVA's benchmarks.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the registered benchmarks")

    def add_selection(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("benchmarks", nargs="+", help=f"benchmark names ({', '.join(BENCHMARKS)}) or jsonl paths")
        sp.add_argument("--video-root", help="video folder (one benchmark)")
        sp.add_argument("--roots", help="JSON/YAML file mapping benchmark name -> video folder")
        sp.add_argument("--limit", type=int, help="only the first N questions (by index)")
        sp.add_argument("--shard", help="i/n: this process's share of the questions (round-robin by index)")
        sp.add_argument("--no-open", action="store_true", help="preflight checks existence only, opens nothing")

    pp = sub.add_parser("preflight", help="check every video exists and opens, before any model call")
    add_selection(pp)
    pp.add_argument("--workers", type=int, default=8, help="threads opening videos")
    pp.add_argument("--json", action="store_true")

    pr = sub.add_parser("run", help="run (or resume) the agent over benchmarks")
    add_selection(pr)
    pr.add_argument("--out", required=True, help="output folder (cache, results, summary)")
    pr.add_argument("--backend", default="transformers",
                    help="model backend: transformers, openai, or package.module:Class")
    pr.add_argument("--model", help="checkpoint folder (backend model_path=), or the served model name for openai")
    pr.add_argument("--backend-arg", action="append", metavar="KEY=VALUE",
                    help="backend constructor argument (value parsed as JSON when it is JSON); repeatable")
    pr.add_argument("--max-turns", type=int, help="model turns per question (AgentConfig default)")
    pr.add_argument("--max-new-tokens", type=int)
    pr.add_argument("--temperature", type=float)
    pr.add_argument("--device", help="model device of the transformers backend (cpu, cuda, cuda:1)")
    pr.add_argument("--decode-device", "--frame-device", dest="decode_device",
                    help="frame decoding device (AgentConfig.decode_device, default cpu)")
    pr.add_argument("--agent-arg", action="append", metavar="KEY=VALUE", help="other AgentConfig field; repeatable")
    add_frame_option_flags(pr, defaults=False)
    pr.add_argument("--concurrency", type=int, default=8, help="questions in flight (default 8)")
    pr.add_argument("--retry-errors", action="store_true", help="run cached error/exception records again")
    pr.add_argument("--skip-missing", action="store_true",
                    help="run the questions whose videos are fine instead of stopping at the preflight")
    pr.add_argument("--allow-config-change", action="store_true",
                    help="resume even though the backend/agent settings differ from the cached run's")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")

    ps = sub.add_parser("score", help="score results files exactly as EVA's accuracy.py")
    ps.add_argument("files", nargs="+")
    ps.add_argument("--benchmark", help="benchmark of the files: adds per-category scores and missing questions")
    ps.add_argument("--json", action="store_true")

    pm = sub.add_parser("merge", help="merge shard results into one results file")
    pm.add_argument("files", nargs="+")
    pm.add_argument("--out", required=True, help="merged results file")
    pm.add_argument("--benchmark", help="check the merge covers this benchmark's questions")
    pm.add_argument("--allow-missing", action="store_true", help="write even if questions are missing")

    pt = sub.add_parser("report", help="markdown + PNG charts (+ timelines) from results files")
    pt.add_argument("files", nargs="+")
    pt.add_argument("--out", required=True, help="report folder")
    pt.add_argument("--timelines", type=int, default=4, help="timelines per benchmark (default 4)")
    pt.add_argument("--timeline", action="append", metavar="BENCH:IDX[,IDX]", help="draw these questions")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"list": _cmd_list, "preflight": _cmd_preflight, "run": _cmd_run, "score": _cmd_score,
                "merge": _cmd_merge, "report": _cmd_report}
    try:
        return handlers[args.cmd](args)
    except KeyboardInterrupt:
        print(f"eva-fast eval {args.cmd}: interrupted; finished questions are saved, rerun the same command "
              "to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, JsonlFormatError) as e:
        print(f"eva-fast eval {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
