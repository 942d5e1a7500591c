"""Benchmark: the decoder's cubic resize (``eva_fast._C.resize_rgb``) against cv2.resize(INTER_CUBIC).

What the exact arithmetic costs (issue #26): the cubic resize reproduces cv2's float32 IPP path bit
for bit (csrc/resize.h). This times, on EVA-sized requests (a 720p and a 1080p frame to the sizes the
frame tool produces at resize 0.5 and 0.1, and an upscale), in one run:

* ``eva_fast``: this checkout's ``resize_rgb(..., "cubic")`` (one thread, as in the decoder);
* ``opencv_1t`` / ``opencv``: ``cv2.resize(INTER_CUBIC)`` with one thread / cv2's default threads
  (what a user would otherwise call; the EVA reference does);
* ``eva_fast_base`` (with ``--base-ref REF``): the same call in eva_fast built at git ref REF (e.g.
  the commit before the exact arithmetic), in a subprocess on the same frames.

Timed runs go round-robin across the systems (the base's worker runs one when asked).

Every system's output is first compared with cv2's (``check.equal_fraction``; this checkout must be
1.0 where cv2 runs IPP's AVX-512 path); then each is timed (median of ``--repeats`` runs over
``--frames`` frames). Rows go to ``bench/results/resize.jsonl``.

Usage::

    python bench/bench_resize.py --base-ref 3428fa7          # ~1 min build of the base + ~20 s
    python -m eva_fast.bench.bench_resize --quick --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:  # run as a script from the repository root, or as eva_fast.bench.bench_resize
    from eva_fast.bench._harness import DEFAULT_RESULTS_DIR, append_rows, environment, make_row
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench._harness import DEFAULT_RESULTS_DIR, append_rows, environment, make_row

# (source (H, W), output (H, W)): EVA sizes round(side * r / 28) * 28 at r = 0.5 and 0.1, and 2x up
CASES = [((720, 1280), (364, 644)), ((720, 1280), (84, 140)), ((1080, 1920), (532, 952)),
         ((1080, 1920), (112, 196)), ((270, 480), (532, 952))]

_WORKER = r"""
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
# an editable install of this checkout would win over sys.path: drop its import hooks
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower() and "scikit" not in repr(f).lower()]
from eva_fast import _C
import eva_fast
assert eva_fast.__file__.startswith(sys.argv[1]), eva_fast.__file__
frames = np.load(sys.argv[2])
dh, dw = int(sys.argv[3]), int(sys.argv[4])
np.save(sys.argv[5], np.stack([_C.resize_rgb(f, dh, dw, "cubic") for f in frames]))
print("ready", flush=True)
for line in sys.stdin:  # one timed run per line, so the parent can interleave systems
    t = time.perf_counter()
    for f in frames:
        _C.resize_rgb(f, dh, dw, "cubic")
    print((time.perf_counter() - t) * 1e3, flush=True)
"""


class _BaseWorker:
    """eva_fast at the base ref in a subprocess on the same frames: output once, then timed runs on request."""

    def __init__(self, site: Path, frames: np.ndarray, dst: tuple[int, int], tmp: Path):
        np.save(tmp / "in.npy", frames)
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(site), str(tmp / "in.npy"), str(dst[0]),
                                      str(dst[1]), str(tmp / "out.npy")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"base worker failed (exit {self.proc.wait()})")
        self.out = np.load(tmp / "out.npy")

    def run_ms(self) -> float:
        self.proc.stdin.write("t\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def build_base(ref: str, cache: Path) -> Path:
    """eva_fast built at git ref ``ref`` (CPU only), unpacked under ``cache``; reused when present."""
    commit = subprocess.run(["git", "rev-parse", "--short", ref], check=True, capture_output=True, text=True).stdout.strip()
    site = cache / f"base-{commit}"
    if (site / "eva_fast").is_dir():
        return site
    with tempfile.TemporaryDirectory() as tmp:
        src, wheels = Path(tmp) / "src", Path(tmp) / "wheels"
        subprocess.run(["git", "worktree", "add", "--detach", str(src), commit], check=True, capture_output=True)
        try:
            env = dict(os.environ, EVA_FAST_CUDA="OFF")
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w",
                            str(wheels), str(src)], check=True, env=env)
            site.mkdir(parents=True, exist_ok=True)
            import zipfile

            (whl,) = wheels.glob("eva_fast-*.whl")
            zipfile.ZipFile(whl).extractall(site)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(src)], check=False, capture_output=True)
    return site


def _frames(shape: tuple[int, int], n: int, video: Path | None) -> np.ndarray:
    """n RGB frames of ``shape``: decoded from ``video`` when given (resized to the source size by
    cv2 INTER_AREA), else uniform noise (the harder case for a vectorised pass: no flat areas)."""
    if video is None:
        return np.random.default_rng(0).integers(0, 256, (n, *shape, 3), dtype=np.uint8)
    import cv2

    from eva_fast.video import VideoReader

    r = VideoReader(video)
    times = np.linspace(0, r.stream_end_s * 0.9, n).tolist()
    f = r.get_frames_played_at(times).frames.numpy()
    return np.stack([cv2.resize(x, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) for x in f])


def _run_ms(fn, frames: np.ndarray) -> float:
    t = time.perf_counter()
    for f in frames:
        fn(f)
    return (time.perf_counter() - t) * 1e3


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8, help="frames per timed run (default 8)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per system (median reported)")
    ap.add_argument("--video", type=Path, default=None, help="frames from this clip instead of noise")
    ap.add_argument("--base-ref", default=None, help="also time eva_fast built at this git ref")
    ap.add_argument("--quick", action="store_true", help="2 cases, 3 frames, 3 repeats")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR))
    a = ap.parse_args(argv)
    import cv2

    from eva_fast import _C

    cases = CASES[:2] if a.quick else CASES
    frames_n, repeats = (3, 3) if a.quick else (a.frames, a.repeats)
    base = build_base(a.base_ref, (Path("bench") / ".cache").resolve()) if a.base_ref else None
    env = environment()
    env["versions"] = dict(env["versions"], opencv=cv2.__version__, ipp=cv2.ipp.getIppVersion())
    rows = []
    for src, dst in cases:
        frames = _frames(src, frames_n, a.video)
        ref = np.stack([cv2.resize(f, (dst[1], dst[0]), interpolation=cv2.INTER_CUBIC) for f in frames])
        ours = lambda f: _C.resize_rgb(f, dst[0], dst[1], "cubic")  # noqa: E731
        cvf = lambda f: cv2.resize(f, (dst[1], dst[0]), interpolation=cv2.INTER_CUBIC)  # noqa: E731
        threads = cv2.getNumThreads()

        def opencv_1t(f):
            cv2.setNumThreads(1)
            try:
                return cvf(f)
            finally:
                cv2.setNumThreads(threads)

        runners = {"eva_fast": lambda: _run_ms(ours, frames), "opencv_1t": lambda: _run_ms(opencv_1t, frames),
                   "opencv": lambda: _run_ms(cvf, frames)}
        outputs = {"eva_fast": np.stack([ours(f) for f in frames]), "opencv_1t": ref, "opencv": ref}
        with tempfile.TemporaryDirectory() as tmp:
            worker = _BaseWorker(base, frames, dst, Path(tmp)) if base is not None else None
            if worker is not None:
                runners["eva_fast_base"], outputs["eva_fast_base"] = worker.run_ms, worker.out
            for fn in runners.values():  # warm-up
                fn()
            times: dict[str, list[float]] = {k: [] for k in runners}
            for _ in range(repeats):  # round-robin, so load on the machine hits every system alike
                for name, fn in runners.items():
                    times[name].append(fn())
            if worker is not None:
                worker.close()
        systems = {k: (outputs[k], times[k]) for k in runners}
        med = {k: float(np.median(v[1])) for k, v in systems.items()}
        for name, (out, ms) in systems.items():
            equal = float((out == ref).mean())
            m = med[name]
            row = make_row(
                env, "quick" if a.quick else "default", video=str(a.video.name) if a.video else "noise",
                workload=f"{src[0]}x{src[1]}->{dst[0]}x{dst[1]}", system=name, status="ok",
                check={"equal_fraction_vs_opencv": round(equal, 7), "max_abs_diff": int(np.abs(out.astype(int) - ref).max())},
                repeats=len(ms), ms={"median": round(m, 3), "all": [round(x, 3) for x in ms]},
                ms_per_call=round(m / len(frames), 4), frames_per_s=round(len(frames) / m * 1e3, 1),
                ratio_vs_eva_fast=round(m / med["eva_fast"], 3),
                ref=a.base_ref if name == "eva_fast_base" else None,
                threads=1 if name in ("eva_fast", "eva_fast_base", "opencv_1t") else threads,
            )
            rows.append(row)
            print(f"{row['workload']:>22} {name:>14}: {row['ms_per_call']:7.3f} ms/frame  x{row['ratio_vs_eva_fast']:5.2f}"
                  f"  equal to cv2 {equal:.5f}", flush=True)
    if not a.no_write:
        print("->", append_rows(rows, a.results_dir, "resize.jsonl"))
    return rows


if __name__ == "__main__":
    main()
