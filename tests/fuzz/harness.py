"""Fuzz eva_fast's video layer with mutated real videos, each case in a child process.

    .venv/bin/python -m tests.fuzz --minutes 20 --seed 1 --jobs 2 --out out/fuzz   # a long run
    .venv/bin/python -m tests.fuzz --cases 300 --seed 0                            # a fixed, seeded run

Every case is a recipe (:mod:`tests.fuzz.mutate`) applied to one of the real test videos; a child
forked from this process (eva_fast already imported, torch at one thread) writes the mutant, opens
it and runs the calls a user and the agent make (metadata, frame table, ``select_frames`` surveys,
zooms, a 28-px call, ``keyframe_snap``, ``get_frames_nearest`` / ``get_frames_played_at`` with
ordinary and hostile times, the GOP-parallel path, ``decode_plan`` of a JSON round-tripped plan,
``close``). Outcomes:

* ``ok``: everything returned;
* ``documented``: an exception the API documents (``eva_fast.video.VideoError`` and its subclasses,
  ``ValueError``, ``FileNotFoundError``);
* ``undocumented``: any other exception (``IndexError``, ``OverflowError``, ``MemoryError``, ...);
* ``hang``: the child ran past ``--timeout-s`` and was killed;
* ``signal``: the child died from a signal (a crash).

Findings (undocumented, hang, signal) are printed and, with ``--out``, written as recipes to
``findings.jsonl``; a finding becomes a regression test by adding its recipe to
``tests/fuzz/regressions.json`` (replayed by ``tests/fuzz/test_fuzz.py``).
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import os
import random
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz import mutate

#: Largest data segment (heap + anonymous maps) a child may use: a runaway allocation fails there.
CHILD_DATA_LIMIT_BYTES = 3 << 30
DOCUMENTED = ("VideoError", "UnsupportedCodecError", "CorruptVideoError", "NotAVideoError", "NoVideoStreamError",
              "ValueError", "FileNotFoundError")
OUTCOMES = ("ok", "documented", "undocumented", "hang", "signal")


@dataclass
class Result:
    recipe: dict
    outcome: str
    detail: str = ""
    steps: list = field(default_factory=list)
    seconds: float = 0.0


def _probe(path: str) -> list[tuple[str, str]]:
    """The calls made on one mutant; returns ``(step, exception type or "ok")`` per step. Raises
    nothing: each step's exception is recorded and the next step runs (more code is reached)."""
    import json as _json

    from eva_fast.video import FramePlan, VideoReader, decode_plan, plan_frames, select_frames

    steps: list[tuple[str, str]] = []

    def run(name, fn, expect: type | None = None):
        try:
            fn()
            steps.append((name, "ok" if expect is None else f"NoError: expected {expect.__name__}"))
        except BaseException as e:  # noqa: BLE001 - classification is the point
            if expect is not None and type(e) is expect:
                steps.append((name, "ok"))
            else:
                steps.append((name, f"{type(e).__name__}: {str(e)[:300]}"))

    box: dict = {}

    def open_reader():
        box["r"] = VideoReader(path, gop_workers=2)

    run("open", open_reader)
    r = box.get("r")
    if r is None:
        return steps
    m = r.metadata
    end = float(m.duration_s) if m.duration_s == m.duration_s else 0.0
    run("frame_table", r.frame_table)
    run("stream_end_s", lambda: r.stream_end_s)
    run("survey", lambda: select_frames(r, 0, 1e9, 8, 0.25))
    run("zoom", lambda: select_frames(r, end * 0.3, end * 0.6, 4, 0.5))
    run("tiny_28px", lambda: select_frames(r, 0, max(end, 1.0), 3, 0.05))
    run("snap", lambda: select_frames(r, 0, 1e9, 3, 0.1, policy="keyframe_snap", resample="antialias"))
    run("nearest_hostile", lambda: r.get_frames_nearest([0.0, end / 2, 1e300, -1e300, 2.0**63, end + 1.0],
                                                         size=(56, 84)))
    run("played_at", lambda: r.get_frames_played_at([0.0, max(0.0, min(end * 0.9, r.stream_end_s - 1e-3))],
                                                     size=(28, 28)))
    run("played_at_out_of_range", lambda: r.get_frames_played_at([1e18]), expect=ValueError)

    def replan():
        p = plan_frames(r, 0, end, 5, 0.2, max_visual_tokens=None)
        decode_plan(r, FramePlan.from_dict(_json.loads(_json.dumps(p.to_dict()))))

    run("plan_round_trip", replan)
    run("close", r.close)

    def byte_limit():  # refused before anything is allocated (the ~24 GiB request of issue #12)
        with VideoReader(path, max_output_bytes=10_000_000) as small:
            select_frames(small, 0, 1e9, 1024, 8.0, max_visual_tokens=None)

    run("byte_limit", byte_limit, expect=ValueError)

    def strict():
        with VideoReader(path, on_corrupt="error", gop_workers=1, threads=1) as s:
            select_frames(s, 0, 1e9, 4, 0.25)

    run("strict", strict)
    return steps


def classify(steps: list[tuple[str, str]]) -> tuple[str, str]:
    """Worst outcome over the steps: ``undocumented`` beats ``documented`` beats ``ok``."""
    worst, detail = "ok", ""
    for name, status in steps:
        if status == "ok":
            continue
        kind = status.split(":", 1)[0]
        if kind in DOCUMENTED:
            if worst == "ok":
                worst, detail = "documented", f"{name}: {status}"
        else:
            return "undocumented", f"{name}: {status}"
    return worst, detail


def _child(recipe: dict, workdir: str, out_fd: int) -> None:
    """Runs in the forked child: never returns."""
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (CHILD_DATA_LIMIT_BYTES, CHILD_DATA_LIMIT_BYTES))
        path = os.path.join(workdir, f"case_{os.getpid()}{Path(recipe['seed']).suffix}")
        with open(path, "wb") as f:
            f.write(mutate.apply(recipe))
        steps = _probe(path)
        os.unlink(path)
        payload = json.dumps({"steps": steps}).encode()
    except BaseException:  # noqa: BLE001 - the harness itself failed: report it as undocumented
        payload = json.dumps({"steps": [["harness", "HarnessError: " + traceback.format_exc()[-500:]]]}).encode()
    os.write(out_fd, payload)
    os.close(out_fd)
    os._exit(0)


def _prepare_parent() -> int:
    """Import eva_fast once (children inherit it) and keep the parent single-threaded while it forks;
    returns torch's previous thread count, which run_cases restores (left at 1, it slowed and changed
    the sampling of every later test in the same pytest process)."""
    import torch

    import eva_fast.video  # noqa: F401

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before


def run_cases(recipes, *, jobs: int = 2, timeout_s: float = 60.0, on_result=None, deadline: float | None = None,
              probe=None) -> list[Result]:
    """Run each recipe in its own forked child, ``jobs`` at a time; returns the results in input
    order (fewer when ``deadline`` (a ``time.monotonic()`` value) passes first).

    Args:
        probe: test hook replacing the child's work: ``probe(recipe)`` runs in the child and
            returns its steps.
    """
    threads_before = _prepare_parent()
    workdir = tempfile.mkdtemp(prefix="eva_fast_fuzz_")
    results: dict[int, Result] = {}
    running: dict[int, tuple[int, int, float, dict, bytearray]] = {}  # pid -> (index, fd, start, recipe, buf)
    it = iter(enumerate(recipes))
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < jobs and (deadline is None or time.monotonic() < deadline):
                nxt = next(it, None)
                if nxt is None:
                    exhausted = True
                    break
                idx, recipe = nxt
                rfd, wfd = os.pipe()
                pid = os.fork()
                if pid == 0:  # child
                    os.close(rfd)
                    faulthandler.disable()  # a crash is reported by its signal, not a traceback dump
                    if probe is not None:
                        try:
                            steps = probe(recipe)
                        except BaseException as e:  # noqa: BLE001
                            steps = [["probe", f"{type(e).__name__}: {e}"]]
                        os.write(wfd, json.dumps({"steps": steps}).encode())
                        os._exit(0)
                    _child(recipe, workdir, wfd)
                os.close(wfd)
                running[pid] = (idx, rfd, time.monotonic(), recipe, bytearray())
            if not running:
                break
            fds = {v[1]: pid for pid, v in running.items()}
            ready, _, _ = select.select(list(fds), [], [], 0.05)
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                running[fds[fd]][4].extend(chunk)
            now = time.monotonic()
            for pid in list(running):
                idx, fd, start, recipe, buf = running[pid]
                done, status = os.waitpid(pid, os.WNOHANG)
                if done == 0 and now - start <= timeout_s:
                    continue
                if done == 0:  # hang: kill it
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    res = Result(recipe, "hang", f"no result after {timeout_s:.0f} s", seconds=now - start)
                else:
                    while True:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            break
                        buf.extend(chunk)
                    if os.WIFSIGNALED(status):
                        sig = signal.Signals(os.WTERMSIG(status)).name
                        res = Result(recipe, "signal", sig, seconds=now - start)
                    else:
                        steps = json.loads(buf.decode())["steps"] if buf else [["child", "NoResult: exit "
                                                                                     f"{os.WEXITSTATUS(status)}"]]
                        outcome, detail = classify([tuple(s) for s in steps])
                        res = Result(recipe, outcome, detail, steps, now - start)
                os.close(fd)
                del running[pid]
                results[idx] = res
                if on_result is not None:
                    on_result(res)
    finally:
        for pid, (_, fd, *_rest) in running.items():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)
        for p in Path(workdir).glob("*"):
            p.unlink()
        os.rmdir(workdir)
        import torch  # imported by _prepare_parent already; lazy in this module as there

        torch.set_num_threads(threads_before)
    return [results[i] for i in sorted(results)]


def recipes(seed: int):
    """The endless seeded stream of recipes (same seed, same cases)."""
    rng = random.Random(seed)
    while True:
        yield mutate.draw(rng)


def summarize(results: list[Result], wall_s: float) -> dict:
    counts = Counter(r.outcome for r in results)
    documented = Counter(r.detail.split(": ", 2)[1].split(":")[0] for r in results if r.outcome == "documented")
    return {
        "execs": len(results),
        "wall_s": round(wall_s, 1),
        "execs_per_s": round(len(results) / wall_s, 2) if wall_s > 0 else None,
        "outcomes": {k: counts.get(k, 0) for k in OUTCOMES},
        "documented_by_type": dict(documented.most_common()),
        "by_seed": dict(Counter(r.recipe["seed"] for r in results).most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=None, help="run for this long (default: --cases)")
    ap.add_argument("--cases", type=int, default=300, help="number of cases when --minutes is not given")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the recipe stream")
    ap.add_argument("--jobs", type=int, default=2, help="children at a time")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="per case; longer is a hang")
    ap.add_argument("--max-seconds", type=float, default=None, help="stop starting cases after this long")
    ap.add_argument("--recipes", default=None,
                    help="replay these recipes instead (JSON list of recipes or of {'recipe': ...} entries)")
    ap.add_argument("--out", default=None, help="folder for summary.json, findings.jsonl and results.jsonl")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60 if args.minutes else None
    if args.max_seconds is not None:
        deadline = min(deadline or float("inf"), t0 + args.max_seconds)
    if args.recipes:
        entries = json.loads(Path(args.recipes).read_text())
        stream = [e.get("recipe", e) for e in entries]
    else:
        stream = recipes(args.seed)
        if not args.minutes:
            stream = itertools.islice(stream, args.cases)
    findings: list[Result] = []
    counts: Counter = Counter()
    last = [t0]

    def on_result(res: Result) -> None:
        counts[res.outcome] += 1
        if res.outcome in ("undocumented", "hang", "signal"):
            findings.append(res)
            print(f"[fuzz] {res.outcome}: {res.detail} recipe={json.dumps(res.recipe)}", flush=True)
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            n = sum(counts.values())
            print(f"[fuzz] {n} execs in {last[0] - t0:.0f} s: {dict(counts)}", flush=True)

    results = run_cases(stream, jobs=args.jobs, timeout_s=args.timeout_s, on_result=on_result, deadline=deadline)
    summary = summarize(results, time.monotonic() - t0)
    summary["seed"] = args.seed
    print(json.dumps(summary, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        with open(out / "findings.jsonl", "w") as f:
            for r in findings:
                f.write(json.dumps({"outcome": r.outcome, "detail": r.detail, "recipe": r.recipe}) + "\n")
        with open(out / "results.jsonl", "w") as f:
            for r in results:
                f.write(json.dumps({"outcome": r.outcome, "detail": r.detail, "seconds": round(r.seconds, 2),
                                    "recipe": r.recipe}) + "\n")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
