"""Client CPU of ``eva-fast eval run --backend openai``: how many questions/s one core sustains.

    python -m eva_fast.bench.bench_eval_client              # ~5 min on 2 cores (+ one-time long video)
    python -m eva_fast.bench.bench_eval_client --quick      # smoke run: one short clip, few questions
    python -m eva_fast.bench.bench_eval_client --plot-only  # chart of the latest run

The eval runner (``eva_fast.eval.arun_benchmark`` + ``AgentLoop``) answers questions on real videos
(``tests/data`` and a long 720p video made with the ffmpeg CLI, ``bench/_videos.py``) against a
local OpenAI-compatible server that replies instantly (``tests/agent/_openai_server.py``, a separate
process), so only the client's own work counts. The server plays an EVA-like conversation per
question: survey (whole video, 64 frames at 0.25) -> zoom (30 s window, 32 frames at 0.5) ->
detail (1 s, 2 frames at 1.0) -> answer, the calls of the decode suite's ``trajectory`` workload.

Systems (the client's image path): ``before`` is the openai backend of the commit before issue #17
(``--before-ref``, loaded from git: PNG at Pillow's default level, encoded on the default thread
pool), ``png`` the new default (PNG level 1, RLE), ``ppm`` uncompressed (loopback/LAN servers),
``file_ppm`` PPM files under a folder the server reads (``file://`` URLs: a server on the same
machine or a shared filesystem), ``jpeg`` the lossy opt-in (pixels reported, not required equal).

Per (video, system), in this order (systems interleaved within each step):

1. check: one question against a recording server; the images of its last request are decoded with
   Pillow and compared with the frames the frame tool returned in that run (exact for lossless
   formats) and, on frames not flagged corrupt, with the ``before`` system's; each frame must be
   encoded once (earlier turns' URLs resent unchanged); sizes are recorded;
2. profile: ``--profile-questions`` questions one at a time; CPU per stage from
   ``time.process_time`` windows around each stage (stages never overlap then): decode (open +
   ``select_frames``), pack (building the request's messages from the conversation; the server packs
   pixels), encode (frames -> image bytes -> URL), http (the openai client's call: request building,
   JSON, send/receive, parsing), other (agent loop, runner, records, asyncio; the rest of the
   process's CPU);
3. throughput: ``--questions`` questions with ``--concurrency`` in flight: wall questions/s and the
   client process's CPU per question (every thread: decode, encode, HTTP, ...), encode CPU from
   ``time.thread_time`` in the encoding threads, and the server process's CPU per question.

One core sustains ``1000 / client CPU ms per question`` questions/s: the figure for sizing client
cores per vLLM server. One row per (video, system) goes to ``<results-dir>/eval_client.jsonl``.
Run timing runs under ``flock /work/.bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _harness as H
from ._videos import find_media_dir, make_long_video
from ._workloads import Call, make_workloads

REPO = H.BENCH_DIR.parent
SERVER = REPO / "tests" / "agent" / "_openai_server.py"
TEST_VIDEOS = ("nasa_13013.mp4", "cockatoo.mp4", "bigbuckbunny.mp4")
#: The commit before issue #17 (its openai backend is the ``before`` system).
BEFORE_REF = "c3518aa"
SYSTEMS = ("before", "png", "ppm", "file_ppm", "jpeg")
#: backend arguments of each system (``before`` is the old module's backend, same arguments;
#: ``file_ppm`` also gets ``media_root``, a temporary folder)
SYSTEM_ARGS = {"before": {}, "png": {}, "ppm": {"image_format": "ppm"},
               "file_ppm": {"image_format": "file", "file_format": "ppm"}, "jpeg": {"image_format": "jpeg"}}
LOSSLESS = {"before", "png", "ppm", "file_ppm"}
RESULTS_NAME = "eval_client.jsonl"
QUESTION = "What does the video show? A. an animal B. a machine C. a person D. a landscape"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the conversation


def script_for(meta) -> list[str]:
    """The server's replies, turn by turn: survey -> zoom -> detail -> answer (EVA's reply shape:
    a short plan, then one ``<tool_call>`` block)."""
    wl = make_workloads(meta, ("trajectory",))[0]
    words = ("Survey the whole video at low resolution to find where to look.",
             "Zoom into the part that matters at a higher resolution.",
             "Check one moment in detail at full resolution.")
    replies = []
    for plan, c in zip(words, wl.calls):
        call = {"tool": "frame_select", "arguments": c.as_dict()}
        replies.append(f"Plan: {plan}\n<tool_call>{json.dumps(call)}</tool_call>")
    replies.append("The frames answer the question.\n<answer>A</answer>")
    return replies


def calls_for(meta) -> tuple[Call, ...]:
    return make_workloads(meta, ("trajectory",))[0].calls


def start_server(workdir: Path, replies: list[str], record: bool):
    """``tests/agent/_openai_server.py``'s ``ServerProcess`` playing ``replies`` (instant replies;
    ``record`` keeps every request)."""
    if not SERVER.is_file():
        raise FileNotFoundError(f"{SERVER} is missing: run the bench from a source checkout")
    spec = importlib.util.spec_from_file_location("_eva_fast_bench_openai_server", SERVER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ServerProcess(workdir, {"replies": replies}, record=record)


# --------------------------------------------------------------------------- systems and probes


def load_before_module(ref: str):
    """The openai backend module of commit ``ref``, registered as backend ``openai_before``."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:python/eva_fast/agent/_openai.py"],
                         capture_output=True, text=True)
    if src.returncode != 0:
        raise RuntimeError(f"git show {ref}:python/eva_fast/agent/_openai.py failed: {src.stderr.strip()}")
    code = src.stdout.replace('@register_backend("openai")', '@register_backend("openai_before")')
    name = "eva_fast.agent._openai_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    exec(compile(code, f"<{ref}:_openai.py>", "exec"), mod.__dict__)
    return mod


@dataclass
class Probe:
    """CPU seconds per stage. ``window`` stages use ``time.process_time`` (whole process: valid
    one question at a time); ``encode_thread`` uses ``time.thread_time`` in the encoding thread
    (valid at any concurrency)."""

    window: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("decode", "pack", "encode", "http"), 0.0))
    encode_thread: float = 0.0
    frames_encoded: int = 0
    encoded_bytes: int = 0
    batches: list | None = None
    """When a list: every ``FrameBatch`` the frame tool returned, in call order (the check pass)."""


@contextlib.contextmanager
def _patched(obj, name: str, value):
    old = obj.__dict__[name] if isinstance(obj, type) else getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def probes(system: str, mod, probe: Probe):
    """Wrap the stages of one system's client path with CPU counters."""
    import openai._base_client as openai_base
    import openai.resources.chat.completions as cc

    import eva_fast.agent._loop as loop_mod

    pt, tt = time.process_time, time.thread_time

    def timed_sync(fn, stage, keep=False):
        def w(*a, **k):
            c0 = pt()
            try:
                out = fn(*a, **k)
            finally:
                probe.window[stage] += pt() - c0
            if keep and probe.batches is not None:
                probe.batches.append(out)
            return out
        return w

    # http: the old path calls the typed ``chat.completions.create``, the new one the client's POST
    http_owner = cc.AsyncCompletions if system == "before" else openai_base.AsyncAPIClient
    http_name = "create" if system == "before" else "post"
    orig_http = getattr(http_owner, http_name)

    async def http(self, *a, **k):
        c0 = pt()
        try:
            return await orig_http(self, *a, **k)
        finally:
            probe.window["http"] += pt() - c0

    S = mod._OpenAISession
    with contextlib.ExitStack() as st:
        st.enter_context(_patched(loop_mod, "select_frames", timed_sync(loop_mod.select_frames, "decode", keep=True)))
        st.enter_context(_patched(loop_mod, "VideoReader", timed_sync(loop_mod.VideoReader, "decode")))
        st.enter_context(_patched(http_owner, http_name, http))
        if system == "before":
            orig_url, orig_enc, orig_build = S._url, mod.encode_frame, S.build_messages

            def url(self, part):
                c0 = tt()
                try:
                    return orig_url(self, part)
                finally:
                    probe.encode_thread += tt() - c0

            def enc(*a, **k):
                data = orig_enc(*a, **k)
                probe.frames_encoded += 1
                probe.encoded_bytes += len(data)
                return data

            def build(self, messages):  # pack + encode (the old path encodes while building)
                c0 = pt()
                try:
                    return orig_build(self, messages)
                finally:
                    probe.window["pack"] += pt() - c0

            st.enter_context(_patched(S, "_url", url))
            st.enter_context(_patched(mod, "encode_frame", enc))
            st.enter_context(_patched(S, "build_messages", build))
        else:
            orig_job, orig_encode, orig_build = S._encode_job, S.encode, S.build_messages

            def job(self, part, path):
                c0 = tt()
                out = orig_job(self, part, path)
                probe.encode_thread += tt() - c0
                probe.frames_encoded += 1
                probe.encoded_bytes += out.nbytes
                return out

            async def encode(self, messages):
                c0 = pt()
                try:
                    return await orig_encode(self, messages)
                finally:
                    probe.window["encode"] += pt() - c0

            st.enter_context(_patched(S, "_encode_job", job))
            st.enter_context(_patched(S, "encode", encode))
            st.enter_context(_patched(S, "build_messages", staticmethod(timed_sync(orig_build, "pack"))))
        yield probe


def make_backend(system: str, base_url: str, media_root: Path, keep_files: bool = False):
    from eva_fast.agent import get_backend

    name = "openai_before" if system == "before" else "openai"
    kw = dict(SYSTEM_ARGS[system])
    if kw.get("image_format") == "file":
        media_root.mkdir(parents=True, exist_ok=True)
        kw.update(media_root=media_root, keep_files=keep_files)
    return get_backend(name, base_url=base_url, model="bench", max_retries=0, **kw)


# --------------------------------------------------------------------------- one pass


def write_benchmark(d: Path, video_name: str, n: int) -> Path:
    path = d / "questions.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"videos": [video_name], "prompt": [{"role": "user", "content": QUESTION}],
                                "reward_model": {"style": "rule", "ground_truth": "A"}, "index": i}) + "\n")
    return path


def run_pass(system: str, mod, video: Path, server, n: int, concurrency: int, work: Path,
             keep_files: bool = False, capture: bool = False) -> dict:
    """``n`` questions on ``video`` through the eval runner; CPU and wall measurements
    (``capture``: keep the frame batches the agent got, ``probe.batches``)."""
    from eva_fast.agent import AgentConfig, AgentLoop
    from eva_fast.eval import arun_benchmark

    work.mkdir(parents=True, exist_ok=True)
    bench_file = write_benchmark(work, video.name, n)
    probe = Probe(batches=[] if capture else None)

    async def go():
        backend = make_backend(system, server.base_url, work / "media", keep_files)
        loop = AgentLoop(backend, AgentConfig())
        try:
            return await arun_benchmark(loop, str(bench_file), str(video.parent), str(work / "out"),
                                        concurrency=concurrency, open_videos=False)
        finally:
            await backend.aclose()

    with probes(system, mod, probe):
        s0 = server.cpu_s()
        c0, t0 = time.process_time(), time.perf_counter()
        result = asyncio.run(go())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        server_cpu = server.cpu_s() - s0
    bad = [r for r in result.records if r["stop_reason"] != "answer_found"]
    if bad:
        raise RuntimeError(f"{system} on {video.name}: {len(bad)} question(s) did not finish: "
                           f"{bad[0]['stop_reason']} {bad[0].get('error', '')}")
    frames = sum(len(p["frame_indices"]) for r in result.records for t in r["trajectory"]["turns"]
                 for c in t["tool_calls"] for p in [c["frames"]] if p)
    return {"n": n, "wall_s": wall, "cpu_s": cpu, "server_cpu_s": server_cpu, "probe": probe, "frames": frames}


# --------------------------------------------------------------------------- check


def _decode_url(url: str) -> tuple[np.ndarray, int]:
    from urllib.parse import unquote, urlparse

    from PIL import Image

    if url.startswith("file://"):
        data = Path(unquote(urlparse(url).path)).read_bytes()
    else:
        data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), len(data)


def check_system(system: str, mod, video: Path, meta, work: Path, before: tuple[list, list] | None
                 ) -> tuple[dict, tuple[list[np.ndarray], list[bool]]]:
    """One question against a recording server: the images of its last request decoded with Pillow
    must be the frames the frame tool returned (exact for lossless formats), earlier turns' URLs
    resent unchanged, each frame encoded once; sizes recorded. ``before``: the ``before`` system's
    (pixels, corrupt flags), compared on the frames not flagged corrupt in either run (the decoder's
    error concealment on damaged stream data may differ from run to run)."""
    server = start_server(work / "server", script_for(meta), record=True)
    try:
        res = run_pass(system, mod, video, server, 1, 1, work / "run", keep_files=True, capture=True)
        reqs = [r["body"] for r in server.requests()]
    finally:
        server.close()
    urls = [[p["image_url"]["url"] for m in r["messages"] if isinstance(m.get("content"), list)
             for p in m["content"] if p.get("type") == "image_url"] for r in reqs]
    last = urls[-1]
    # earlier turns' images are resent as the very same URL strings (encoded once)
    resent_same = all(u[: len(prev)] == prev for prev, u in zip(urls, urls[1:]))
    probe = res["probe"]
    sent = [f.numpy() for b in probe.batches for f in b.frames]
    corrupt = [bool(c) for b in probe.batches for c in b.corrupt]
    decoded = [_decode_url(u) for u in last]
    pixels = [a for a, _ in decoded]
    nbytes = [b for _, b in decoded]
    same_shape = len(pixels) == len(sent) and all(a.shape == b.shape for a, b in zip(pixels, sent))
    exact = same_shape and all(np.array_equal(a, b) for a, b in zip(pixels, sent))
    mad = (float(np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(pixels, sent)]))
           if same_shape else None)
    same_as_before, compared = None, 0
    if before is not None and system != "before":
        bpx, bcorrupt = before
        pairs = [(a, b) for a, b, c1, c2 in zip(pixels, bpx, corrupt, bcorrupt) if not (c1 or c2)]
        compared = len(pairs)
        same_as_before = len(bpx) == len(pixels) and all(np.array_equal(a, b) for a, b in pairs)
    ok = same_shape and resent_same and probe.frames_encoded == len(last) and (exact or system not in LOSSLESS)
    check = {
        "ok": bool(ok), "pixels_exact": bool(exact), "mean_abs_diff": None if mad is None else round(mad, 4),
        "identical_to_before": same_as_before, "frames_compared_with_before": compared,
        "frames_flagged_corrupt": sum(corrupt), "frames": len(last), "frames_encoded": probe.frames_encoded,
        "earlier_urls_resent_unchanged": bool(resent_same),
        "mime": sorted({u.split(";", 1)[0][5:] if u.startswith("data:") else "file:" + u.rsplit(".", 1)[-1]
                        for u in last}),
        "bytes_per_frame": round(float(np.mean(nbytes)), 1) if nbytes else None,
        "request_mb_per_question": round(sum(len(json.dumps(r, separators=(",", ":"))) for r in reqs) / 1e6, 3),
        "requests": len(reqs),
    }
    return check, (pixels, corrupt)


# --------------------------------------------------------------------------- the run


def bench_videos(args) -> list[tuple[str, Path, str]]:
    """(name, path, recipe) of the videos to run."""
    out = []
    names = [v for v in args.videos.split(",") if v]
    for n in names:
        p = REPO / "tests" / "data" / n
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found (--videos takes file names in tests/data)")
        out.append((p.stem, p, "tests/data"))
    for extra in args.video or ():
        out.append((Path(extra).stem, Path(extra), "given"))
    if args.long_minutes > 0:
        media = find_media_dir()
        if media is None:
            log("[bench] no ../shared/media folder: the long video is left out")
        else:
            bv = make_long_video(720, args.long_minutes, media, log=log)
            out.append((bv.name, Path(bv.path), bv.recipe))
    return out


def run_bench(args) -> list[dict]:
    from eva_fast.video import VideoReader

    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose from {SYSTEMS}")
    mods: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    import eva_fast.agent._openai as new_mod

    for s in systems:
        if s == "before":
            try:
                mods[s] = load_before_module(args.before_ref)
            except Exception as e:  # noqa: BLE001 - no git history: run the others, say why
                skipped[s] = f"{type(e).__name__}: {e}"
                log(f"[bench] before: skipped ({skipped[s]})")
        else:
            mods[s] = new_mod
    env = H.environment()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="eva_fast_bench_eval_"))
    for vname, vpath, recipe in bench_videos(args):
        meta = VideoReader(str(vpath)).metadata
        log(f"[bench] {vname}: {meta.width}x{meta.height}, {meta.duration_s:.1f} s")
        live = [s for s in systems if s in mods]
        checks: dict[str, dict] = {}
        before_px = None
        for s in sorted(live, key=lambda s: s != "before"):  # before first: the others compare with it
            try:
                checks[s], px = check_system(s, mods[s], vpath, meta, tmp / vname / s / "check", before_px)
                if s == "before":
                    before_px = px
                log(f"[bench]   check {s}: {'ok' if checks[s]['ok'] else 'FAILED'} {checks[s]}")
            except Exception as e:  # noqa: BLE001
                checks[s] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                log(f"[bench]   check {s}: error {checks[s]['error']}")
        timed = [s for s in live if checks[s].get("ok")]
        prof: dict[str, dict] = {}
        thr: dict[str, dict] = {}
        server = start_server(tmp / vname / "server", script_for(meta), record=False)
        try:
            for s in timed:
                prof[s] = run_pass(s, mods[s], vpath, server, args.profile_questions, 1, tmp / vname / s / "profile")
            for s in timed:
                thr[s] = run_pass(s, mods[s], vpath, server, args.questions, args.concurrency, tmp / vname / s / "thr")
                log(f"[bench]   {s}: {thr[s]['n'] / thr[s]['wall_s']:.2f} q/s, "
                    f"{thr[s]['cpu_s'] / thr[s]['n'] * 1e3:.0f} client CPU ms/q")
        finally:
            server.close()
        for s in systems:
            base = {"schema": H.SCHEMA_VERSION, "run_id": env["run_id"], "timestamp": env["timestamp"],
                    "commit": env["commit"], "machine": env["machine"], "versions": env["versions"],
                    "suite": "eval_client", "video": {"name": vname, "path": str(vpath), "recipe": recipe,
                                                      "width": meta.width, "height": meta.height,
                                                      "duration_s": round(meta.duration_s, 3)},
                    "system": s, "backend_args": SYSTEM_ARGS[s],
                    "before_ref": args.before_ref if s == "before" else None,
                    "conversation": [c.as_dict() for c in calls_for(meta)]}
            if s in skipped:
                rows.append({**base, "status": "skipped", "reason": skipped[s]})
                continue
            if s not in timed:
                rows.append({**base, "status": "failed_check", "reason": checks[s].get("error", "check failed"),
                             "check": checks[s]})
                continue
            rows.append({**base, "status": "ok", "check": checks[s], **summarize(s, prof[s], thr[s], args.concurrency)})
    return rows


def summarize(system: str, prof: dict, thr: dict, concurrency: int) -> dict:
    pn, tn = prof["n"], thr["n"]
    w = prof["probe"].window
    stage = {k: w[k] / pn * 1e3 for k in ("decode", "pack", "encode", "http")}
    if system == "before":  # the old path encodes while building the messages
        stage["encode"] = prof["probe"].encode_thread / pn * 1e3
        stage["pack"] = max(0.0, stage["pack"] - stage["encode"])
    total = prof["cpu_s"] / pn * 1e3
    stage["other"] = max(0.0, total - sum(stage.values()))
    cpu_q = thr["cpu_s"] / tn * 1e3
    frames_q = thr["frames"] / tn
    enc_q = thr["probe"].encode_thread / tn * 1e3
    return {
        "profile": {"questions": pn, "cpu_ms_per_question": round(total, 2),
                    "stage_cpu_ms_per_question": {k: round(v, 2) for k, v in stage.items()},
                    "encode_over_decode": round(stage["encode"] / stage["decode"], 4) if stage["decode"] else None},
        "throughput": {"questions": tn, "concurrency": concurrency, "wall_s": round(thr["wall_s"], 3),
                       "questions_per_s": round(tn / thr["wall_s"], 4),
                       "cpu_ms_per_question": round(cpu_q, 2),
                       "encode_cpu_ms_per_question": round(enc_q, 2),
                       "server_cpu_ms_per_question": round(thr["server_cpu_s"] / tn * 1e3, 2)},
        "frames_per_question": round(frames_q, 2),
        "frames_encoded_per_question": round(thr["probe"].frames_encoded / tn, 2),
        "encode_ms_per_frame": round(thr["probe"].encode_thread * 1e3 / max(1, thr["probe"].frames_encoded), 3),
        "encoded_bytes_per_frame": round(thr["probe"].encoded_bytes / max(1, thr["probe"].frames_encoded), 1),
        "one_core_questions_per_s": round(1000.0 / cpu_q, 4),
    }


# --------------------------------------------------------------------------- output


def format_table(rows: list[dict]) -> str:
    head = ("| video | system | q/s | client CPU ms/q | decode | pack | encode | http | other | encode/decode "
            "| encode ms/frame | kB/frame | MB sent/q | q/s per core |\n|" + "---|" * 14)
    lines = [head]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['video']['name']} | {r['system']} | {r['status']}: {r.get('reason', '')} |")
            continue
        st, th = r["profile"]["stage_cpu_ms_per_question"], r["throughput"]
        lines.append(
            f"| {r['video']['name']} | {r['system']} | {th['questions_per_s']:.2f} | {th['cpu_ms_per_question']:.0f} | "
            + " | ".join(f"{st[k]:.0f}" for k in ("decode", "pack", "encode", "http", "other"))
            + f" | {r['profile']['encode_over_decode']:.2f} | {r['encode_ms_per_frame']:.2f} | "
              f"{r['encoded_bytes_per_frame'] / 1e3:.0f} | {r['check']['request_mb_per_question']:.1f} | "
              f"{r['one_core_questions_per_s']:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """Stacked CPU ms per question by stage, one bar per (video, system)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    stages = ("decode", "pack", "encode", "http", "other")
    colors = {"decode": "#1f77b4", "pack": "#9467bd", "encode": "#d62728", "http": "#2ca02c", "other": "#7f7f7f"}
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(ok) + 2), 5.5))
    x = np.arange(len(ok))
    bottom = np.zeros(len(ok))
    for s in stages:
        v = np.array([r["profile"]["stage_cpu_ms_per_question"][s] for r in ok])
        ax.bar(x, v, bottom=bottom, color=colors[s], label=s, width=0.7)
        bottom += v
    ax.set_xticks(x, [f"{r['video']['name']} {r['system']}" for r in ok], fontsize=7, rotation=40, ha="right")
    ax.set_ylabel("client CPU ms per question")
    ax.set_title("eval client CPU per question by stage (instant server; one question at a time)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eva_fast.bench.bench_eval_client",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", default=",".join(TEST_VIDEOS), help="file names in tests/data (comma-separated)")
    p.add_argument("--video", action="append", help="another video file (repeatable)")
    p.add_argument("--long-minutes", type=float, default=10.0,
                   help="length of the generated 720p video (0 leaves it out; default 10)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {SYSTEMS}")
    p.add_argument("--before-ref", default=BEFORE_REF, help="commit whose openai backend is 'before'")
    p.add_argument("--questions", type=int, default=8, help="questions of the throughput pass (default 8)")
    p.add_argument("--profile-questions", type=int, default=2, help="questions of the per-stage pass (default 2)")
    p.add_argument("--concurrency", type=int, default=8, help="questions in flight in the throughput pass")
    p.add_argument("--quick", action="store_true", help="nasa_13013 only, no long video, 2+1 questions")
    p.add_argument("--results-dir", default=str(H.DEFAULT_RESULTS_DIR))
    p.add_argument("--no-write", action="store_true", help="print the table, write no rows")
    p.add_argument("--plot", action="store_true", help="also draw <results-dir>/plots/eval_client.png")
    p.add_argument("--plot-only", action="store_true", help="draw the chart of the latest run and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    plot_path = Path(args.results_dir) / "plots" / "eval_client.png"
    if args.plot_only:
        rows = H.latest_run(H.load_rows(args.results_dir, RESULTS_NAME))
        log(f"[bench] wrote {plot(rows, plot_path)}")
        return 0
    if args.quick:
        args.videos, args.long_minutes, args.questions, args.profile_questions = "nasa_13013.mp4", 0, 2, 1
    rows = run_bench(args)
    if not args.no_write:
        log(f"[bench] rows -> {H.append_rows(rows, args.results_dir, RESULTS_NAME)}")
        if args.plot:
            log(f"[bench] wrote {plot(rows, plot_path)}")
    print(format_table(rows))
    return 1 if any(r["status"] != "ok" and r["status"] != "skipped" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
