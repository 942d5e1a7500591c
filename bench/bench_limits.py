"""Decode limits: what the machine's decoders can do at most, and eva_fast's calls as a fraction of it.

The GPU check's ``limits`` step (``scripts/gpu_check.sh``). On the bench's long 720p H.264 video
(``bench/_videos.py``: 10 minutes, 25 fps, GOP 2 s, B-frames) it measures, in one run:

* **the NVDEC engine limit**: the ``ffmpeg`` CLI decoding the first ``--window-s`` seconds with
  ``-hwaccel cuda -hwaccel_output_format cuda`` to the null muxer (frames stay on the GPU), one
  process and ``--procs`` processes at once (each process is one NVDEC session);
* **the CPU limit**: ``ffmpeg -threads <cores>`` on the same window;
* **eva_fast's calls**, one reader, per device (``cuda`` and ``cpu``): ``dense`` (1,024 frames at
  resize 0.25 over the window: every frame of it decoded), ``survey256`` (EVA's 256 frames at 0.1
  over the whole video), ``survey256_snap`` (the same with ``policy="keyframe_snap"``) and
  ``survey64`` (64 at 0.25); each row's ``fraction_of_limit`` is its decoded frames/s over the
  matching limit (one NVDEC session for ``cuda``, ``ffmpeg -threads <cores>`` for ``cpu``);
* **readers at once** (``--readers``, default 1 2 4 8; ``cuda``): K threads, each with its own reader,
  two 64-frame calls over 120 s windows each; decoded frames/s of all together, as a fraction of
  the one-session and the ``--procs``-session NVDEC limits.
* **decoders per request** (GOP-parallel decoding, issue #24): the ``--sweep-calls`` (default
  ``survey256``) with ``gpu_workers`` in ``--gpu-workers`` (``cuda``; 0 = the GPU's default) and
  ``gop_workers`` in ``--gop-workers`` (CPU), each checked to return the frames of the first count
  in its list (bit for bit);
* **the paper's long video** (``--anchor-minutes``, 0 = skipped): EVA's 256 @ 0.1 survey, exact and
  ``keyframe_snap``, on a ``--anchor-minutes``-long 720p video with ``--anchor-gop``-frame GOPs,
  per device.

The summary row's ``goals`` hold issue #24's targets as measured: one request's decoded frames/s
(``survey256`` and ``dense`` on ``cuda``) against 5,000, against the 8-reader aggregate and against
``ffmpeg -hwaccel cuda`` (1 and ``--procs`` sessions); the long video's survey on ``cuda`` against
3 s exact and 1 s snapped.

Frame counts of the ffmpeg rows come from eva_fast's demux-only frame table (frames with pts inside
the window), so both sides count the same frames. Every eva_fast call is checked before it is
timed: its frame indices equal those of the same call on the CPU reader.

Rows (jsonl, appended and flushed as they are made), in this order: ``kind=env``, ``kind=ffmpeg``,
``kind=eva``, ``kind=anchor``, ``kind=workers`` (cuda), ``kind=readers``, ``kind=workers`` (cpu),
``kind=summary``: the goals' rows come before the repeats of the hand-run measurement, so a run the
GPU check's budget cuts short keeps them.

    python -m eva_fast.bench.bench_limits --device cuda --anchor-minutes 110 --out DIR/limits.jsonl   # GPU check
    python -m eva_fast.bench.bench_limits --device cpu --video tests/data/nasa_13013.mp4 --out /tmp/l.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

#: (name, nframes, resize, policy, whole video?) of the eva_fast calls; dense covers the window only.
CALLS = (
    ("dense", 1024, 0.25, "parity", False),
    ("survey256", 256, 0.1, "parity", True),
    ("survey256_snap", 256, 0.1, "keyframe_snap", True),
    ("survey64", 64, 0.25, "parity", True),
)


class Rows:
    """jsonl writer: every row gets the run's id and is flushed at once (a killed step keeps it)."""

    def __init__(self, path: Path, env: dict) -> None:
        self.path = path
        self.env = env
        path.parent.mkdir(parents=True, exist_ok=True)
        self.emit(kind="env", **{k: env[k] for k in ("timestamp", "commit", "machine", "versions")})

    def emit(self, **row) -> dict:
        row = {"bench": "limits", "run_id": self.env["run_id"], **row}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(json.dumps(row, default=str) if row["kind"] != "env" else f"[limits] run {row['run_id']}", flush=True)
        return row


def frames_in_window(pts_s: np.ndarray, window_s: float) -> int:
    """Frames whose pts (seconds from the first frame) lie in ``[0, window_s)``."""
    return int(np.count_nonzero(pts_s < window_s))


def ffmpeg_limit(ffmpeg: str, video: str, window_s: float, frames: int, *, hwaccel: bool, procs: int,
                 threads: int | None = None) -> dict:
    """Decode ``window_s`` seconds of ``video`` with ``procs`` ffmpeg processes at once; frames/s of all."""
    args = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostats"]
    if hwaccel:
        args += ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"]
    if threads:
        args += ["-threads", str(threads)]
    args += ["-t", f"{window_s:g}", "-i", video, "-map", "0:v:0", "-f", "null", "-"]
    t0 = time.perf_counter()
    ps = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(procs)]
    errs = [p.communicate()[1].decode(errors="replace")[-300:] for p in ps]
    s = time.perf_counter() - t0
    rcs = [p.returncode for p in ps]
    ok = all(rc == 0 for rc in rcs)
    return {"procs": procs, "s": round(s, 3), "frames": frames * procs,
            "fps": round(frames * procs / s, 1) if ok else None, "ok": ok, "rc": rcs,
            "error": next((e for e, rc in zip(errs, rcs) if rc), "") or None}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def eva_call(reader, device: str, start_s: float, end_s: float, n: int, resize: float, policy: str):
    """One ``select_frames`` call, timed to the frames being ready on ``device``: (seconds, batch)."""
    from eva_fast.video import select_frames

    _sync(device)
    t0 = time.perf_counter()
    batch = select_frames(reader, start_s, end_s, n, resize, policy=policy, device=device)
    _sync(device)
    return time.perf_counter() - t0, batch


def warm_up(reader, device: str, duration_s: float) -> None:
    """Untimed: a call over the whole video, so the reader's NVDEC sessions, resize tables, buffer
    pools and every GOP-run decoder it will use are open before anything is timed."""
    eva_call(reader, device, 0, duration_s, 32, 0.1, "parity")


def readers_at_once(video: str, device: str, k: int, duration_s: float) -> dict:
    """``k`` threads, one reader each, two 64-frame calls over 120 s windows: decoded frames/s of all."""
    from eva_fast.video import VideoReader

    barrier = threading.Barrier(k)
    res: dict[int, tuple[int, float]] = {}
    errors: list[str] = []
    span = min(120.0, duration_s)

    def work(i: int) -> None:
        try:
            with VideoReader(video, device=device) as rd:
                warm_up(rd, device, duration_s)
                barrier.wait()
                t0 = time.perf_counter()
                decoded = 0
                for j in range(2):
                    s = (i * 37 + j * 101) % max(1, int(duration_s - span)) if duration_s > span else 0.0
                    _, b = eva_call(rd, device, s, s + span, 64, 0.25, "parity")
                    decoded += b.stats.decoded_frames
                res[i] = (decoded, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - recorded in the row
            errors.append(f"{type(e).__name__}: {e}")
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors or len(res) != k:
        return {"readers": k, "ok": False, "error": errors[0] if errors else "a reader did not finish"}
    decoded = sum(d for d, _ in res.values())
    s = max(t for _, t in res.values())
    return {"readers": k, "ok": True, "decoded": decoded, "s": round(s, 3), "decoded_fps": round(decoded / s, 1)}


def _fraction(x: float | None, limit: float | None) -> float | None:
    return round(x / limit, 3) if x and limit else None


#: Issue #24's goals: one request's decoded frames/s on NVDEC, the long video's survey on cuda (s).
GOAL_ONE_REQUEST_FPS = 5000.0
GOAL_ANCHOR_S = {"parity": 3.0, "keyframe_snap": 1.0}


def workers_sweep(rows: Rows, video: str, device: str, counts: list[int], calls: list[str], duration_s: float,
                  window_s: float, base: dict) -> list[dict]:
    """The calls with each decoder count per request (``gpu_workers`` on cuda, ``gop_workers`` on the
    CPU; 0 = the reader's default); frames checked equal to those of the first count."""
    import torch

    from eva_fast.video import VideoReader

    spec = {c[0]: c for c in CALLS}
    out, ref = [], {}
    for n in counts:
        kw = {} if n == 0 else ({"gpu_workers": n} if device.startswith("cuda") else {"gop_workers": n})
        with VideoReader(video, device=device, **kw) as rd:
            workers = rd.gpu_workers if rd.backend == "nvdec" else rd.gop_workers
            warm_up(rd, device, duration_s)
            for name in calls:
                _, nframes, resize, policy, whole = spec[name]
                dt, b = eva_call(rd, device, 0, duration_s if whole else window_s, nframes, resize, policy)
                st = b.stats
                same = bool(torch.equal(b.frames, ref[name])) if name in ref else True
                ref.setdefault(name, b.frames)
                out.append(rows.emit(kind="workers", device=device, backend=st.backend, call=name, nframes=nframes,
                                     resize=resize, policy=policy, workers=workers, workers_arg=n,
                                     gop_workers_used=st.gop_workers, worker_failures=st.worker_failures,
                                     ms=round(dt * 1e3, 1), decoded=st.decoded_frames,
                                     decoded_fps=round(st.decoded_frames / dt, 1) if dt > 0 else None,
                                     frames_equal_first=same, **base))
    return out


def anchor_surveys(rows: Rows, devices: list[str], minutes: float, gop: int, media_dir, cache_dir: str) -> list[dict]:
    """EVA's 256 @ 0.1 survey (exact, then keyframe_snap) on a long 720p video, per device."""
    from eva_fast.bench._videos import find_media_dir, make_long_video
    from eva_fast.video import VideoReader

    media = find_media_dir(media_dir)
    if media is None:
        return [rows.emit(kind="anchor", ok=False, error="no media folder for the long video")]
    t0 = time.perf_counter()
    v = make_long_video(720, minutes, media, cache_dir=Path(cache_dir), gop=gop)
    made_s = time.perf_counter() - t0
    out = []
    for device in devices:
        t1 = time.perf_counter()
        with VideoReader(v.path, device=device) as rd:
            open_ms = (time.perf_counter() - t1) * 1e3
            duration_s = float(rd.metadata.duration_s)
            warm_up(rd, device, duration_s)
            for policy in ("parity", "keyframe_snap"):
                dt, b = eva_call(rd, device, 0, duration_s, 256, 0.1, policy)
                st = b.stats
                goal = GOAL_ANCHOR_S[policy] if device.startswith("cuda") else None
                out.append(rows.emit(kind="anchor", ok=True, video=Path(v.path).name, duration_s=round(duration_s, 1),
                                     gop=gop, made_s=round(made_s, 1), device=device, backend=st.backend, policy=policy,
                                     open_ms=round(open_ms, 1), s=round(dt, 3), frames=int(b.frames.shape[0]),
                                     decoded=st.decoded_frames, decoded_fps=round(st.decoded_frames / dt, 1),
                                     gop_workers_used=st.gop_workers, goal_s=goal,
                                     meets_goal=None if goal is None else dt <= goal))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda: NVDEC limits + eva_fast on cuda and cpu; cpu: the CPU half")
    p.add_argument("--video", help="video to measure on (default: the bench's long 720p video, made if missing)")
    p.add_argument("--minutes", type=float, default=10, help="length of the long video (default 10)")
    p.add_argument("--window-s", type=float, default=120, help="seconds the ffmpeg rows and the dense call decode")
    p.add_argument("--procs", type=int, default=4, help="ffmpeg processes at once for the NVDEC engine limit")
    p.add_argument("--readers", type=int, nargs="*", default=[1, 2, 4, 8], help="readers at once (cuda)")
    p.add_argument("--gpu-workers", type=int, nargs="*", default=[1, 2, 4, 0],
                   help="NVDEC decoders per request to sweep (cuda; 0 = the GPU's default); frames checked equal "
                        "to the first count's")
    p.add_argument("--gop-workers", type=int, nargs="*", default=[4, 8, 16],
                   help="CPU decoders per request to sweep (0 = the default: every hardware thread)")
    p.add_argument("--sweep-calls", nargs="*", default=["survey256"], choices=[c[0] for c in CALLS],
                   help="calls of the decoder sweeps")
    p.add_argument("--anchor-minutes", type=float, default=0,
                   help="length of the paper's long video for the 256 @ 0.1 survey rows (0 = skip; GPU check: 110)")
    p.add_argument("--anchor-gop", type=int, default=125, help="GOP of that video, frames at 25 fps (5 s)")
    p.add_argument("--media-dir", help="real clips the long video is made from (default: shared/media)")
    p.add_argument("--cache-dir", default=str(Path("build") / "bench_cache"))
    p.add_argument("--out", default=str(Path("bench") / "results" / "limits.jsonl"))
    a = p.parse_args(argv)

    from eva_fast.bench._harness import environment
    from eva_fast.video import VideoReader, plan_frames

    cuda = a.device.startswith("cuda")
    if cuda:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda needs a visible GPU (use --device cpu for the CPU half)")
    video = a.video
    if video is None:
        from eva_fast.bench._videos import find_media_dir, make_long_video

        media = find_media_dir(a.media_dir)
        if media is None:
            sys.exit("no media folder for the long video (give --media-dir or --video)")
        video = make_long_video(720, a.minutes, media, cache_dir=Path(a.cache_dir)).path
    ffmpeg = shutil.which("ffmpeg")
    rows = Rows(Path(a.out), environment())
    t_start = time.perf_counter()

    with VideoReader(video) as probe:
        meta = probe.metadata
        pts, _ = probe.frame_table()
    duration_s = float(meta.duration_s)
    window_s = min(a.window_s, duration_s)
    frames = frames_in_window(pts, window_s)
    base = {"video": Path(video).name, "width": meta.width, "height": meta.height, "codec": meta.codec,
            "duration_s": round(duration_s, 3), "window_s": window_s}
    cores = os.cpu_count() or 1

    # -- the limits
    limits: dict[str, float | None] = {"nvdec_1": None, f"nvdec_{a.procs}": None, "cpu_threads": None}
    if ffmpeg is None:
        rows.emit(kind="ffmpeg", label="missing", ok=False, error="no ffmpeg on PATH: limits not measured", **base)
    else:
        if cuda:
            for procs in (1, a.procs):
                r = ffmpeg_limit(ffmpeg, video, window_s, frames, hwaccel=True, procs=procs)
                limits[f"nvdec_{procs}"] = r["fps"]
                rows.emit(kind="ffmpeg", label="nvdec", **base, **r)
        r = ffmpeg_limit(ffmpeg, video, window_s, frames, hwaccel=False, procs=1, threads=cores)
        limits["cpu_threads"] = r["fps"]
        rows.emit(kind="ffmpeg", label="cpu_threads", threads=cores, **base, **r)

    # -- eva_fast, one reader per device
    devices = ["cuda", "cpu"] if cuda else ["cpu"]
    results: dict[tuple[str, str], dict] = {}
    with VideoReader(video) as cpu_reader:
        for device in devices:
            limit_name = "nvdec_1" if device == "cuda" else "cpu_threads"
            with VideoReader(video, device=device) as rd:
                warm_up(rd, device, duration_s)
                for name, n, resize, policy, whole in CALLS:
                    end_s = duration_s if whole else window_s
                    dt, b = eva_call(rd, device, 0, end_s, n, resize, policy)
                    # the frames chosen are the ones the CPU reader plans (checked, untimed)
                    ref = plan_frames(cpu_reader, 0, end_s, n, resize, policy=policy)
                    check = list(b.plan.frame_indices) == list(ref.frame_indices)
                    st = b.stats
                    fps = st.decoded_frames / dt if dt > 0 else None
                    row = rows.emit(kind="eva", device=device, backend=st.backend, call=name, nframes=n,
                                    resize=resize, policy=policy, start_s=0, end_s=round(end_s, 3), check_ok=check,
                                    ms=round(dt * 1e3, 1), frames=int(b.frames.shape[0]), decoded=st.decoded_frames,
                                    seeks=st.seeks, decoded_fps=round(fps, 1) if fps else None, limit=limit_name,
                                    limit_fps=limits[limit_name], fraction_of_limit=_fraction(fps, limits[limit_name]),
                                    **base)
                    results[(device, name)] = row

    # -- the paper's long video, then decoders per request: issue #24's goals first, so a run the GPU
    # check's budget cuts short keeps them (the readers-at-once aggregate was measured by hand before)
    anchors = anchor_surveys(rows, devices, a.anchor_minutes, a.anchor_gop, a.media_dir, a.cache_dir) \
        if a.anchor_minutes > 0 else []
    sweeps: list[dict] = []
    if cuda and a.gpu_workers:
        sweeps += workers_sweep(rows, video, "cuda", a.gpu_workers, a.sweep_calls, duration_s, window_s, base)

    # -- readers at once (NVDEC sessions in parallel)
    readers = {}
    if cuda:
        for k in a.readers:
            r = readers_at_once(video, "cuda", k, duration_s)
            readers[k] = r.get("decoded_fps")
            rows.emit(kind="readers", device="cuda", **base, **r,
                      fraction_of_nvdec_1=_fraction(r.get("decoded_fps"), limits["nvdec_1"]),
                      **{f"fraction_of_nvdec_{a.procs}": _fraction(r.get("decoded_fps"), limits[f"nvdec_{a.procs}"])})
    if a.gop_workers:
        sweeps += workers_sweep(rows, video, "cpu", a.gop_workers, a.sweep_calls, duration_s, window_s, base)

    goals = {}
    if cuda:
        top = max(readers) if readers else None
        for name in ("survey256", "dense"):
            fps = (results.get(("cuda", name)) or {}).get("decoded_fps")
            goals[f"one_request_{name}_fps"] = fps
            goals[f"one_request_{name}_meets_{GOAL_ONE_REQUEST_FPS:.0f}"] = None if fps is None else fps >= GOAL_ONE_REQUEST_FPS
            if top is not None:
                goals[f"one_request_{name}_vs_readers_{top}"] = _fraction(fps, readers[top])
            for lim in ("nvdec_1", f"nvdec_{a.procs}"):
                goals[f"one_request_{name}_vs_{lim}"] = _fraction(fps, limits[lim])
        for r in anchors:
            if r.get("ok") and r["device"] == "cuda":
                goals[f"long_video_survey_{r['policy']}_s"] = r["s"]
                goals[f"long_video_survey_{r['policy']}_meets_{r['goal_s']:g}_s"] = r["meets_goal"]
    rows.emit(kind="summary", wall_s=round(time.perf_counter() - t_start, 1), limits=limits,
              checks_failed=sum(not r["check_ok"] for r in results.values())
              + sum(not r["frames_equal_first"] for r in sweeps), goals=goals, **base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
