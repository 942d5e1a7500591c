"""Shared benchmark harness (style.md §10): environment capture, correctness check before timing,
warm-up, repeated interleaved runs, median/p90, CPU time, peak RSS, and jsonl result rows.

Result rows are appended to ``bench/results/<file>.jsonl`` under the working directory, one per (video, workload, system) and
run, each carrying the run id, commit, machine and library versions. Plots are made from those
files afterwards (bench/plot.py), never inside the timing loop.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

SCHEMA_VERSION = 1
BENCH_DIR = Path(__file__).resolve().parent
#: Results go under the working directory (never inside an installed package): run from the
#: repository root, that is the committed ``bench/results``.
DEFAULT_RESULTS_DIR = Path("bench") / "results"

#: Required keys of a result row (tests check them).
ROW_KEYS = (
    "schema", "run_id", "timestamp", "commit", "machine", "versions", "suite", "video", "workload",
    "system", "status", "reason", "check", "repeats", "ms", "ms_per_call", "frames_per_s", "cpu_ms",
    "peak_rss_mb", "rss_method", "decoded_frames", "min_gop_work", "decode_work_ratio", "ratio_vs_eva_fast",
)


# --------------------------------------------------------------------------- environment


def _read(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001 - missing tools just leave the field empty
        return ""


def git_commit() -> dict:
    """Commit of the checkout (``dirty`` when it has uncommitted changes to tracked files)."""
    root = str(BENCH_DIR.parent)
    sha = _read(["git", "-C", root, "rev-parse", "HEAD"])
    dirty = bool(_read(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"]))
    return {"sha": sha or None, "dirty": dirty}


def machine_info() -> dict:
    """CPU model, core count, memory and GPU (if any)."""
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    gpu = None
    if shutil.which("nvidia-smi"):
        gpu = _read(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]).replace("\n", "; ") or None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": cpu, "cores": cores, "memory_gb": mem_gb, "gpu": gpu, "os": platform.platform(),
            "hostname": platform.node()}


def library_versions() -> dict:
    """Versions of everything the bench touches (``None`` when absent, the error when broken)."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for mod in ("eva_fast", "torch", "numpy", "av", "decord", "torchcodec", "cv2", "transformers", "PIL"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except ImportError:
            out[mod] = None
        except Exception as e:  # noqa: BLE001
            out[mod] = f"broken: {type(e).__name__}"
    try:
        from eva_fast import _C

        info = _C.build_info() if callable(_C.build_info) else _C.build_info
        out["eva_fast_build"] = info if isinstance(info, dict) else str(info)
    except Exception:  # noqa: BLE001
        pass
    line = _read(["ffmpeg", "-hide_banner", "-version"]).splitlines()
    out["ffmpeg_cli"] = line[0] if line else None
    return out


def environment() -> dict:
    """Everything a row records about where it ran (computed once per run)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return {
        "run_id": now.strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}",
        "timestamp": now.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "versions": library_versions(),
    }


# --------------------------------------------------------------------------- measuring


def _cpu_s() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), else the process lifetime peak (ru_maxrss)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Sample:
    """One timed run: wall and CPU seconds (CPU includes waited-for child processes)."""

    wall_s: float
    cpu_s: float


def measure(fn: Callable[[], Any]) -> tuple[Any, Sample]:
    """Run ``fn`` once under ``time.perf_counter`` and ``getrusage``."""
    c0, t0 = _cpu_s(), time.perf_counter()
    out = fn()
    t1, c1 = time.perf_counter(), _cpu_s()
    return out, Sample(t1 - t0, c1 - c0)


def summarize(samples: list[Sample]) -> dict:
    """Median / p90 / min / mean wall ms and median CPU ms of the timed runs."""
    ms = np.array([s.wall_s * 1e3 for s in samples])
    cpu = np.array([s.cpu_s * 1e3 for s in samples])
    return {
        "ms": {"median": round(float(np.median(ms)), 3), "p90": round(float(np.percentile(ms, 90)), 3),
               "min": round(float(ms.min()), 3), "mean": round(float(ms.mean()), 3),
               "all": [round(float(x), 3) for x in ms]},
        "cpu_ms": round(float(np.median(cpu)), 3),
    }


def repeats_for(warm_s: float, repeats: int, cell_budget_s: float) -> int:
    """Timed runs for a cell: ``repeats``, reduced (to at least 1) so a cell fits ``cell_budget_s``."""
    if warm_s <= 0:
        return repeats
    return int(max(1, min(repeats, cell_budget_s // warm_s)))


# --------------------------------------------------------------------------- correctness


@dataclass
class Check:
    """Outcome of comparing a system's output with the reference frames (eva_fast parity)."""

    ok: bool
    indices_match: bool | None
    shape_match: bool
    max_abs_diff: int | None = None
    mean_abs_diff: float | None = None
    tolerance: dict = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict:
        return {"ok": self.ok, "indices_match": self.indices_match, "shape_match": self.shape_match,
                "max_abs_diff": self.max_abs_diff,
                "mean_abs_diff": None if self.mean_abs_diff is None else round(self.mean_abs_diff, 4),
                "tolerance": self.tolerance, "note": self.note}


def compare_frames(
    frames: list[np.ndarray], ref: list[np.ndarray], indices: list[list[int] | None], want: list[tuple[int, ...]],
    mean_tol: float | None, note: str = "",
) -> Check:
    """Frame indices (where the system reports them) and pixels against the reference.

    A wrong index or shape fails the check. Pixels fail it only when ``mean_tol`` is set and the
    mean absolute difference exceeds it (``None``: pixels are reported, never failed).
    """
    idx_known = [i for i in indices if i is not None]
    idx_ok = None if not idx_known else all(
        list(i) == list(w) for i, w in zip(indices, want) if i is not None)
    shape_ok = len(frames) == len(ref) and all(a.shape == b.shape for a, b in zip(frames, ref))
    mx = mean = None
    if shape_ok:
        diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(frames, ref)]
        mx = int(max(int(d.max()) for d in diffs))
        total = sum(int(d.sum(dtype=np.int64)) for d in diffs)
        mean = total / sum(d.size for d in diffs)
    ok = shape_ok and idx_ok is not False and (mean_tol is None or (mean is not None and mean <= mean_tol))
    notes = [note] if note else []
    if idx_ok is False:
        notes.append("wrong frame indices")
    if not shape_ok:
        notes.append("wrong frame count or size")
    elif mean_tol is not None and mean is not None and mean > mean_tol:
        notes.append(f"pixels differ from eva_fast's: mean |d| {mean:.2f} > {mean_tol:g} (max {mx})")
    return Check(ok, idx_ok, shape_ok, mx, mean, {"mean_abs_diff": mean_tol}, "; ".join(notes))


# --------------------------------------------------------------------------- rows


def make_row(env: dict, suite: str, **fields: Any) -> dict:
    """A result row with every ``ROW_KEYS`` key (missing ones ``None``)."""
    row = {"schema": SCHEMA_VERSION, "run_id": env["run_id"], "timestamp": env["timestamp"],
           "commit": env["commit"], "machine": env["machine"], "versions": env["versions"], "suite": suite}
    for k in ROW_KEYS:
        row.setdefault(k, None)
    row.update(fields)
    for k in ROW_KEYS:
        row.setdefault(k, None)
    return row


def append_rows(rows: list[dict], results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR,
                name: str = "decode.jsonl") -> Path:
    """Append rows (one JSON object per line) to ``results_dir/name``."""
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=False, default=_json_default) + "\n")
    return path


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def load_rows(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, pattern: str = "*.jsonl") -> list[dict]:
    """Every row of every jsonl file in ``results_dir`` (bad lines are skipped)."""
    rows = []
    for p in sorted(Path(results_dir).glob(pattern)):
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def latest_run(rows: list[dict]) -> list[dict]:
    """Rows of the most recent run id (by timestamp)."""
    if not rows:
        return []
    last = max(rows, key=lambda r: (r.get("timestamp") or "", r.get("run_id") or ""))["run_id"]
    return [r for r in rows if r.get("run_id") == last]
