"""Soak: many mixed ``select_frames`` requests, with GPU memory and host RSS recorded as they run.

The GPU check (``scripts/gpu_check.sh``, step ``soak``) runs 1,000 requests with
``device="cuda"``; flat memory is the goal (a leak per request or per NVDEC session shows as a
slope). The same script runs on the CPU (``--device cpu``), which is how it is tested without a GPU.

Requests mix what an EVA rollout does: H.264 / HEVC / HEVC 10-bit / VP9, constant and variable
frame rate, a non-zero start pts and a rotated stream (all in ``tests/data``, all decodable by
NVDEC); a cached ``VideoReader`` per video (70 %) or a path opened per call (30 %); random windows
of 0.5-30 s, 1-32 frames, resize 0.1-1.0, cubic or antialias, parity or keyframe_snap policy.

Before timing, one request per video is decoded on ``--device`` and on the CPU and compared
(same frame indices; equal frames at 8 bit, max |diff| <= 5 and p99 <= 4 levels at 10 bit: the
bounds of ``tests/video/test_nvdec.py``). During the run the first request of every ``--every`` block is
checked the same way (untimed).

Rows (jsonl, appended and flushed as they are made, so a killed run keeps its checkpoints):
``kind=env`` (run id, commit, machine, versions), ``kind=check`` (one per video), ``kind=checkpoint``
every ``--every`` requests (requests, elapsed_s, gpu_used_mib, torch_allocated_mib,
torch_reserved_mib, rss_mib, nvdec_sessions, ms_p50/p90/max, backends, errors, check) and
``kind=summary`` (growth of GPU memory and RSS from the first checkpoint to the last, ``flat``).

    python -m eva_fast.bench.bench_gpu_soak --device cuda --requests 1000 --out soak.jsonl
    python bench/bench_gpu_soak.py --device cpu --requests 50 --every 10 --out /tmp/soak.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

VIDEOS = ("nasa_13013.mp4", "h265_video.mp4", "nasa_13013_hdr.mp4", "cockatoo_vp9.webm",
          "nasa_13013_vfr.mp4", "test_non_zero_start.mp4", "nasa_13013_rotated.mp4", "bigbuckbunny.mp4")
#: GPU memory or RSS growing more than this over the run (after the first checkpoint) is not flat;
#: the same bound as tests/video/test_nvdec.py::test_1000_random_requests_memory_flat.
FLAT_MIB = 64
MIB = 1 << 20


def _default_data_dir() -> Path:
    for cand in (Path(__file__).resolve().parent.parent / "tests" / "data", Path.cwd() / "tests" / "data"):
        if (cand / VIDEOS[0]).is_file():
            return cand
    return Path.cwd() / "tests" / "data"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


class Memory:
    """GPU (device-wide used memory, torch allocator) and host memory readings."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        if self.cuda:
            import torch

            self.torch = torch

    def read(self) -> dict:
        out = {"rss_mib": round(_rss_mib(), 1), "gpu_used_mib": None, "torch_allocated_mib": None,
               "torch_reserved_mib": None, "nvdec_sessions": None}
        if self.cuda:
            t = self.torch
            t.cuda.synchronize()
            free, total = t.cuda.mem_get_info()
            out.update(gpu_used_mib=round((total - free) / MIB, 1),
                       torch_allocated_mib=round(t.cuda.memory_allocated() / MIB, 1),
                       torch_reserved_mib=round(t.cuda.memory_reserved() / MIB, 1))
            try:
                from eva_fast import _C

                n = _C.nvdec_sessions()
                out["nvdec_sessions"] = (dict(n) if isinstance(n, dict) else
                                         {k: getattr(n, k) for k in ("created", "cached") if hasattr(n, k)})
            except Exception:  # noqa: BLE001 - a build without the counter: recorded as null
                pass
        return out


def make_requests(n: int, durations: dict[str, float], seed: int) -> list[dict]:
    """``n`` request descriptions (video, reuse, window, nframes, resize, resample, policy)."""
    rng = random.Random(seed)
    names = sorted(durations)
    reqs = []
    for _ in range(n):
        name = rng.choice(names)
        dur = durations[name]
        start = rng.uniform(0, dur)
        reqs.append({
            "video": name, "reuse_reader": rng.random() < 0.7,
            "start_time": round(start, 3), "end_time": round(min(dur, start + rng.uniform(0.5, 30)), 3),
            "nframes": rng.randint(1, 32), "resize": rng.choice([0.1, 0.25, 0.5, 1.0]),
            "resample": rng.choice(["cubic", "antialias"]),
            "policy": "keyframe_snap" if rng.random() < 0.1 else "parity",
        })
    return reqs


def compare(batch, ref, bit_depth: int) -> dict:
    """Frames of ``batch`` (any device) against the CPU ``ref``: indices, max / mean |diff|, ok."""
    a = batch.frames.cpu().numpy().astype(np.int16) if hasattr(batch.frames, "cpu") else np.asarray(batch.frames)
    b = ref.frames.numpy().astype(np.int16) if hasattr(ref.frames, "numpy") else np.asarray(ref.frames, np.int16)
    idx_ok = list(batch.plan.frame_indices) == list(ref.plan.frame_indices)
    if a.shape != b.shape:
        return {"ok": False, "indices_match": idx_ok, "shape": [list(a.shape), list(b.shape)]}
    d = np.abs(a - b)
    mx, mean = int(d.max()) if d.size else 0, float(d.mean()) if d.size else 0.0
    p99 = float(np.percentile(d, 99)) if d.size else 0.0
    # 8-bit: the CUDA kernel reproduces swscale's route and the CPU resizer, so frames are equal
    # (a CPU fallback copies the CPU's frames); above 8 bits it is float maths with swscale's chroma
    # interpolation: <= 4 levels at native size, 5 after a resize (tests/kernels/test_yuv_to_rgb.py)
    pix_ok = mx == 0 if bit_depth == 8 else (mx <= 5 and p99 <= 4)
    return {"ok": bool(idx_ok and pix_ok), "indices_match": idx_ok, "max_abs_diff": mx,
            "mean_abs_diff": round(mean, 4), "p99_abs_diff": p99}


class Writer:
    def __init__(self, path: Path | None, run_id: str, device: str):
        self.path, self.run_id, self.device = path, run_id, device
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, row: dict) -> None:
        row = {"bench": "gpu_soak", "run_id": self.run_id, "device": self.device, **row}
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())


def run(args) -> dict:
    from eva_fast.bench import _harness as H
    from eva_fast.video import VideoReader, select_frames

    env = H.environment()
    write = Writer(args.out, env["run_id"], args.device)
    write({"kind": "env", **env, "args": {k: str(v) for k, v in vars(args).items()}})
    data = Path(args.data_dir)
    paths = {v: data / v for v in VIDEOS if (data / v).is_file()}
    missing = sorted(set(VIDEOS) - set(paths))
    if not paths:
        raise SystemExit(f"no soak videos found in {data} (expected {', '.join(VIDEOS)})")
    if missing:
        print(f"[soak] missing videos (skipped): {missing}", flush=True)
    mem = Memory(args.device)
    try:
        readers = {name: VideoReader(p, device=args.device) for name, p in paths.items()}
    except Exception as e:  # noqa: BLE001 - no usable device: one summary row says why
        summary = {"kind": "summary", "ok": False, "requests_done": 0, "requests_planned": args.requests,
                   "stopped": f"could not open the videos on {args.device}: {type(e).__name__}: {e}"}
        write(summary)
        print(f"[soak] {summary['stopped']}", flush=True)
        return summary
    meta = {name: r.metadata for name, r in readers.items()}
    print(f"[soak] {len(readers)} videos on {args.device}: "
          + ", ".join(f"{n} ({r.backend})" for n, r in readers.items()), flush=True)

    def call(req: dict, device: str | None = None):
        dev = device or args.device
        src = readers[req["video"]] if (req["reuse_reader"] and dev == args.device) else str(paths[req["video"]])
        b = select_frames(src, req["start_time"], req["end_time"], req["nframes"], req["resize"],
                          resample=req["resample"], policy=req["policy"], device=dev)
        if dev.startswith("cuda"):
            mem.torch.cuda.synchronize()
        return b

    def check(req: dict) -> dict:
        got = call(req)
        ref = call(req, device="cpu")
        res = compare(got, ref, meta[req["video"]].bit_depth)
        res["backend"] = got.stats.backend
        return res

    # correctness before timing: one request per video, device vs CPU
    bad = 0
    for name, m in meta.items():
        req = {"video": name, "reuse_reader": True, "start_time": 0.0, "end_time": m.end_s, "nframes": 8,
               "resize": 0.5, "resample": "cubic", "policy": "parity"}
        res = check(req)
        bad += not res["ok"]
        write({"kind": "check", "video": name, "codec": m.codec, "bit_depth": m.bit_depth, **res})
        print(f"[soak] check {name:26s} {'ok' if res['ok'] else 'FAIL'} {res}", flush=True)
    reqs = make_requests(args.requests, {n: m.end_s for n, m in meta.items()}, args.seed)
    t0 = time.perf_counter()
    checkpoints, lat, backends, errors, stopped = [], [], {}, [], "done"
    block_check = None
    for i, req in enumerate(reqs, 1):
        if args.max_s and time.perf_counter() - t0 > args.max_s:
            stopped = f"time limit {args.max_s} s after {i - 1} requests"
            break
        if args.every and (i - 1) % args.every == 0 and i > 1:
            block_check = check(req)  # untimed: this block's correctness sample
        try:
            s = time.perf_counter()
            b = call(req)
            lat.append((time.perf_counter() - s) * 1e3)
            backends[b.stats.backend] = backends.get(b.stats.backend, 0) + 1
            del b
        except Exception as e:  # noqa: BLE001 - counted and reported; too many stops the run
            errors.append(f"{req}: {type(e).__name__}: {str(e)[:200]}")
            if len(errors) > args.max_errors:
                stopped = f"more than {args.max_errors} errors"
                break
        if args.every and i % args.every == 0:
            row = {"kind": "checkpoint", "requests": i, "elapsed_s": round(time.perf_counter() - t0, 2),
                   **mem.read(), "ms_p50": round(float(np.median(lat)), 2) if lat else None,
                   "ms_p90": round(float(np.percentile(lat, 90)), 2) if lat else None,
                   "ms_max": round(max(lat), 2) if lat else None, "backends": dict(backends),
                   "errors": len(errors), "check": block_check}
            checkpoints.append(row)
            write(row)
            print(f"[soak] {i:5d} requests {row['elapsed_s']:7.1f} s  gpu {row['gpu_used_mib']} MiB  "
                  f"rss {row['rss_mib']} MiB  p50 {row['ms_p50']} ms  errors {len(errors)}"
                  + ("" if block_check is None else f"  check {'ok' if block_check['ok'] else 'FAIL'}"), flush=True)
            lat, backends, block_check = [], {}, None
    summary = {"kind": "summary", "requests_done": checkpoints[-1]["requests"] if checkpoints else 0,
               "requests_planned": args.requests, "wall_s": round(time.perf_counter() - t0, 2), "stopped": stopped,
               "errors": len(errors), "first_errors": errors[:5], "pre_checks_failed": bad,
               "block_checks_failed": sum(1 for c in checkpoints if c["check"] and not c["check"]["ok"]),
               "flat_bound_mib": FLAT_MIB}
    if len(checkpoints) >= 2:
        a, z = checkpoints[0], checkpoints[-1]
        summary["rss_growth_mib"] = round(z["rss_mib"] - a["rss_mib"], 1)
        summary["gpu_growth_mib"] = (None if a["gpu_used_mib"] is None
                                     else round(z["gpu_used_mib"] - a["gpu_used_mib"], 1))
        summary["flat"] = summary["rss_growth_mib"] < FLAT_MIB and (summary["gpu_growth_mib"] or 0) < FLAT_MIB
    else:
        summary["flat"] = None
    summary["ok"] = bool(summary["flat"] and not errors and not bad and not summary["block_checks_failed"]
                         and stopped == "done")
    write(summary)
    print(f"[soak] summary: {json.dumps({k: v for k, v in summary.items() if k != 'first_errors'})}", flush=True)
    for e in errors[:5]:
        print(f"[soak] error: {e}", flush=True)
    return summary


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="'cuda', 'cuda:N' or 'cpu' (default cuda)")
    p.add_argument("--requests", type=int, default=1000, help="requests to make (default 1000)")
    p.add_argument("--every", type=int, default=100, help="checkpoint (memory row + checked request) every N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-s", type=float, default=0.0, help="stop after this many seconds (0: no limit); the "
                   "summary says so")
    p.add_argument("--max-errors", type=int, default=20, help="stop after more failed requests than this")
    p.add_argument("--data-dir", default=str(_default_data_dir()), help="folder with the test videos (tests/data)")
    p.add_argument("--out", type=Path, default=None, help="jsonl file rows are appended to (default: print only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.requests < 1 or args.every < 1:
        raise SystemExit(f"--requests and --every must be >= 1 (got {args.requests}, {args.every})")
    summary = run(args)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
