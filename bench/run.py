"""``eva-fast bench``: eva_fast against every peer on the same EVA-style requests, in one run.

    python -m eva_fast.bench.run            # default CPU suite (< ~5 min on 2 cores + one-time video build)
    python -m eva_fast.bench.run --quick    # ~1 min smoke run
    python -m eva_fast.bench.run --suite full --plot

For each (video, workload): every system runs once as a correctness check and warm-up (frames and
frame indices compared with eva_fast's parity frames), then the systems are timed in interleaved
rounds (``--repeats``, reduced for slow cells so a cell stays near ``--cell-budget-s``). One row per
(video, workload, system) is appended to ``<results-dir>/decode.jsonl``; the table is printed last.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import _harness as H
from ._systems import DEFAULT_PEER_ENVS, DEFAULT_SYSTEMS, Output, VideoContext, all_systems, set_peer_python
from ._videos import (
    DEFAULT_CACHE_DIR,
    DEFAULT_LONG_GOP,
    DEFAULT_REAL_VIDEOS,
    QUICK_REAL_VIDEOS,
    REAL_VIDEOS,
    BenchVideo,
    find_media_dir,
    make_long_video,
    real_videos,
)
from ._workloads import FULL_EXTRA, WORKLOADS, make_workloads, plan_call

#: suite -> (real clips, workloads on real clips, long video heights, workloads on long videos)
SUITES = {
    "default": (DEFAULT_REAL_VIDEOS, ("survey", "zoom", "detail"), (720,), ("trajectory",)),
    "full": (REAL_VIDEOS, WORKLOADS, (720, 1080), ("survey",) + FULL_EXTRA + ("zoom", "detail", "trajectory")),
    "quick": (QUICK_REAL_VIDEOS, WORKLOADS, (), ()),
}
#: Mean absolute pixel difference (0-255) a cubic peer may show against eva_fast: different FFmpeg
#: builds' YUV->RGB rounding only (same decoded pictures, same OpenCV cubic resize).
CUBIC_MEAN_TOL = 2.0
#: The same for a peer with another filter (torchcodec's bilinear+antialias Resize: measured mean up
#: to 3.2 on strong downscales): a bound that catches wrong or concealed frames (mean ~100), not the
#: filter difference.
OTHER_FILTER_MEAN_TOL = 8.0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eva-fast bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="default",
                   help="default: 3 real clips x survey/zoom/detail + a 10-min 720p trajectory; "
                        "full: 3 clips, 720p and 1080p long videos, every workload; quick: smoke run")
    p.add_argument("--quick", action="store_true", help="shorthand for --suite quick --repeats 1 (~1 min)")
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help=f"comma-separated systems (default all: {','.join(DEFAULT_SYSTEMS)})")
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated workloads for every video (default: the suite's; "
                        f"choose from {','.join(WORKLOADS + FULL_EXTRA)})")
    p.add_argument("--videos", default=None,
                   help="comma-separated real clip file names in the media folder (default: the suite's)")
    p.add_argument("--video", action="append", default=[], metavar="PATH",
                   help="an extra video file to bench (repeatable)")
    p.add_argument("--no-long", action="store_true", help="skip the generated long videos")
    p.add_argument("--long-minutes", type=float, default=10.0, help="length of the generated long videos")
    p.add_argument("--long-gop", type=int, default=DEFAULT_LONG_GOP, help="GOP (frames, at 25 fps) of the long videos")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell after the check/warm-up run")
    p.add_argument("--cell-budget-s", type=float, default=4.0,
                   help="reduce repeats (to >= 1) for a system whose warm-up run x repeats exceeds this")
    p.add_argument("--results-dir", default=str(H.DEFAULT_RESULTS_DIR), help="where rows are appended")
    p.add_argument("--results-file", default="decode.jsonl", help="jsonl file name inside --results-dir")
    p.add_argument("--media-dir", default=None, help="folder with the real clips (default ../shared/media)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="where generated long videos are cached")
    p.add_argument("--plot", action="store_true", help="write PNG charts from the jsonl results after the run")
    p.add_argument("--plot-only", action="store_true", help="only write charts from existing results")
    p.add_argument("--no-write", action="store_true", help="do not append rows (dry run)")
    p.add_argument("--peer-env", action="append", default=[], metavar="NAME=PYTHON",
                   help=f"interpreter of a peer's own environment, e.g. torchcodec=PATH/bin/python (default: "
                        f"{DEFAULT_PEER_ENVS}/NAME/bin/python, made by scripts/peer_env.sh NAME); repeatable")
    p.add_argument("--baseline", default=None, metavar="PYTHON",
                   help="also time eva_fast from another build: an interpreter whose `import eva_fast` is that "
                        "build (e.g. a wrapper setting PYTHONPATH to a `pip install --target` of another commit); "
                        "its rows are system eva_fast_baseline, with ratio_vs_eva_fast = baseline / this build")
    return p


def log(msg: str) -> None:
    print(msg, flush=True)


def _check_output(system, out: Output, ref: Output | None, plans, env_note: str = "") -> H.Check:
    want = [p.frame_indices for p in plans]
    if system.name == "eva_fast":
        idx_ok = all(list(i) == list(w) for i, w in zip(out.indices, want))
        shape_ok = all(f.shape == (p.nframes, *p.size, 3) for f, p in zip(out.frames, plans))
        return H.Check(idx_ok and shape_ok, idx_ok, shape_ok, 0, 0.0, {}, "reference frames (parity policy = plan)")
    if system.name == "eva_fast_snap":
        shape_ok = all(f.shape == (p.nframes, *p.size, 3) for f, p in zip(out.frames, plans))
        return H.Check(shape_ok, None, shape_ok, None, None, {},
                       "frames moved to keyframes by design; see snap.* for the timestamp error")
    if ref is None:
        return H.Check(False, None, False, note="no eva_fast reference frames to compare with")
    tol = CUBIC_MEAN_TOL if system.filter_close else OTHER_FILTER_MEAN_TOL
    note = "" if system.filter_close else f"other filter ({system.resize}): loose pixel bound"
    return H.compare_frames(out.frames, ref.frames, out.indices, want, tol, note)


def run_bench(args) -> list[dict]:
    env = H.environment()
    m = env["machine"]
    log(f"[bench] run {env['run_id']}  commit {(env['commit']['sha'] or '?')[:10]}"
        f"{' (dirty)' if env['commit']['dirty'] else ''}")
    log(f"[bench] machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, GPU: {m['gpu'] or 'none'}")
    v = env["versions"]
    log("[bench] versions: " + ", ".join(f"{k} {v[k]}" for k in v if k != "eva_fast_build"))
    for spec in args.peer_env:
        name, sep, python = spec.partition("=")
        if not sep or not name or not python:
            raise SystemExit(f"--peer-env must be NAME=PYTHON (e.g. torchcodec=PATH/bin/python), got {spec!r}")
        set_peer_python(name.strip(), python.strip())
    suite = "quick" if args.quick else args.suite
    real_names, real_wls, long_heights, long_wls = SUITES[suite]
    if args.videos is not None:  # "" = none of the media folder's clips (only --video files)
        real_names = tuple(x.strip() for x in args.videos.split(",") if x.strip())
    if args.workloads:
        names = tuple(x.strip() for x in args.workloads.split(",") if x.strip())
        real_wls = long_wls = names
    if args.no_long:
        long_heights = ()

    # systems ---------------------------------------------------------------
    registry = all_systems()
    wanted = [x.strip() for x in args.systems.split(",") if x.strip()]
    if args.baseline:
        set_peer_python("eva_fast_baseline", args.baseline)
        if "eva_fast_baseline" not in wanted:
            wanted.append("eva_fast_baseline")
    unknown = [x for x in wanted if x not in registry]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; choose from {list(registry)}")
    if "eva_fast" not in wanted:
        wanted.insert(0, "eva_fast")  # the reference every peer is compared with
    systems, skipped = [], {}
    for name in registry:
        if name not in wanted:
            continue
        s = registry[name]
        reason = s.unavailable()
        if reason is None:
            try:
                s.setup()
            except Exception as e:  # noqa: BLE001
                reason = f"setup failed: {type(e).__name__}: {e}"
        if reason is None:
            systems.append(s)
        else:
            skipped[name] = reason
            log(f"[bench] SKIP {name}: {reason}")
    log(f"[bench] systems: {', '.join(s.name for s in systems)}")

    # videos ----------------------------------------------------------------
    media = find_media_dir(args.media_dir)
    videos: list[tuple[BenchVideo, tuple[str, ...]]] = []
    found, missing = real_videos(real_names, media)
    for reason in missing:
        log(f"[bench] SKIP video {reason}")
    videos += [(bv, real_wls) for bv in found]
    for path in args.video:
        videos.append((BenchVideo(Path(path).stem, str(path), "real"), real_wls))
    for h in long_heights:
        if media is None:
            log(f"[bench] SKIP long {h}p video: no media folder to build it from")
            continue
        t0 = time.perf_counter()
        bv = make_long_video(h, args.long_minutes, media, Path(args.cache_dir), args.long_gop, log=log)
        log(f"[bench] long video ready: {bv.path} ({time.perf_counter() - t0:.1f} s)")
        videos.append((bv, long_wls))

    from eva_fast.video import VideoReader
    from eva_fast.video._gop import minimal_gop_work

    all_rows: list[dict] = []
    t_suite = time.perf_counter()
    for bv, wl_names in videos:
        reader = VideoReader(bv.path)
        meta = reader.metadata
        pts, key = reader.frame_table()
        kidx = np.flatnonzero(key)
        gop_s = float(np.median(np.diff(pts[key]))) if key.sum() > 1 else None
        ctx = VideoContext(bv.path, meta.stream_index, meta.average_fps, meta.start_pts_s, kidx)
        vinfo = {"name": bv.name, "path": bv.path, "kind": bv.kind, "recipe": bv.recipe, "codec": meta.codec,
                 "width": meta.width, "height": meta.height, "fps": round(meta.average_fps, 4),
                 "duration_s": round(meta.end_s, 3), "num_frames": meta.num_frames,
                 "keyframes": int(key.sum()), "median_gop_s": gop_s}
        log(f"[bench] video {bv.name}: {meta.width}x{meta.height} {meta.codec} {meta.average_fps:.2f} fps "
            f"{meta.end_s:.1f} s, {int(key.sum())} keyframes (median GOP {gop_s or 0:.2f} s)")
        for wl in make_workloads(meta, wl_names, quick=suite == "quick"):
            rows = _bench_workload(args, env, suite, systems, skipped, ctx, wl, reader, pts, key, vinfo,
                                   minimal_gop_work)
            all_rows += rows
            if not args.no_write:
                H.append_rows(rows, args.results_dir, args.results_file)
    log(f"[bench] suite done in {time.perf_counter() - t_suite:.1f} s"
        + ("" if args.no_write else f"; rows appended to {Path(args.results_dir) / args.results_file}"))
    return all_rows


def _timed(s, ctx, wl, plans) -> tuple[Output, H.Sample]:
    """Run a system once. Systems in a peer worker report their own wall and CPU time (the
    protocol is not what a user pays); the others are timed here."""
    out, sample = H.measure(lambda: s.run(ctx, wl, plans))
    if out.extra.get("timing") == "worker":
        sample = H.Sample(out.extra["wall_s"], out.extra["cpu_s"])
    return out, sample


def _bench_workload(args, env, suite, systems, skipped, ctx, wl, reader, pts, key, vinfo, minimal_gop_work):
    plans = [plan_call(c, reader) for c in wl.calls]
    n_frames = sum(p.nframes for p in plans)
    min_work = sum(minimal_gop_work(pts, key, p.frame_indices) for p in plans)
    wl_info = {"name": wl.name, "one_open": wl.one_open, "calls": [c.as_dict() for c in wl.calls],
               "planned": [{"nframes": p.nframes, "resize": round(p.resize, 6), "size": list(p.size)}
                           for p in plans]}
    log(f"[bench] {vinfo['name']} / {wl.name}: {len(plans)} call(s), {n_frames} frames, "
        f"sizes {[p.size for p in plans]}, minimal GOP work {min_work} frames")
    state: dict[str, dict] = {}
    ref: Output | None = None
    # 1. correctness check + warm-up, in registry order (eva_fast first)
    for s in systems:
        st = {"system": s, "samples": [], "peak": 0.0, "base": None, "out": None, "error": None}
        state[s.name] = st
        try:
            out, sample = _timed(s, ctx, wl, plans)
            s.after_run()
        except Exception as e:  # noqa: BLE001 - a failing peer is a row, not a crash
            st["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            log(f"[bench]   {s.name}: ERROR {st['error']}")
            continue
        if s.name == "eva_fast":
            ref = out
        st["out"], st["warm_s"] = out, sample.wall_s
        st["check"] = _check_output(s, out, ref, plans)
        st["k"] = H.repeats_for(sample.wall_s, args.repeats, args.cell_budget_s)
        c = st["check"]
        log(f"[bench]   {s.name:24s} check {'ok ' if c.ok else 'FAIL'} (max|d| {c.max_abs_diff}, "
            f"mean|d| {c.mean_abs_diff if c.mean_abs_diff is None else round(c.mean_abs_diff, 3)}) "
            f"warm-up {sample.wall_s * 1e3:8.1f} ms -> {st['k']} timed run(s)")
    # 2. timed runs, interleaved across systems
    rounds = max([st.get("k", 0) for st in state.values()] + [0])
    for r in range(rounds):
        for name, st in state.items():
            if st["error"] or st["k"] <= r:
                continue
            s = st["system"]
            H.reset_peak_rss()
            base = H.peak_rss_mb()
            out, sample = _timed(s, ctx, wl, plans)
            if out.extra.get("timing") == "worker":
                st["peak"] = max(st["peak"], out.extra.get("peak_rss_mb") or 0.0)
                st.setdefault("call_s", []).append(out.extra["call_s"])
            else:
                st["peak"] = max(st["peak"], H.peak_rss_mb())
                st["base"] = base if st["base"] is None else min(st["base"], base)
            s.after_run()
            st["samples"].append(sample)
    # 3. rows; ratios use the rows' own (rounded) medians, so they are recomputable from the rows
    def median_ms(name: str) -> float | None:
        samples = state[name]["samples"] if name in state else None
        return H.summarize(samples)["ms"]["median"] if samples else None

    eva_ms = median_ms("eva_fast")
    pack_ms = median_ms("eva_fast+pack")
    rows = []
    for name, st in state.items():
        s = st["system"]
        common = dict(video=vinfo, workload=wl_info, system=name,
                      system_info={"description": s.description, "resize": s.resize, "in_process": s.in_process},
                      min_gop_work=min_work, frames=n_frames, calls=len(plans))
        if st["error"]:
            rows.append(H.make_row(env, suite, status="error", reason=st["error"], **common))
            continue
        summ = H.summarize(st["samples"])
        med = summ["ms"]["median"]
        out: Output = st["out"]
        check: H.Check = st["check"]
        row = H.make_row(
            env, suite, status="ok" if check.ok else "failed_check", reason=None if check.ok else check.note,
            check=check.as_dict(), repeats=len(st["samples"]), warmup=1, ms=summ["ms"],
            ms_per_call=round(med / len(plans), 3), frames_per_s=round(n_frames / (med / 1e3), 2),
            cpu_ms=summ["cpu_ms"], cpu_util=round(summ["cpu_ms"] / med, 3) if med else None,
            decoded_frames=out.decoded_frames,
            decode_work_ratio=None if out.decoded_frames is None or not min_work
            else round(out.decoded_frames / min_work, 4),
            ratio_vs_eva_fast=None if eva_ms is None else round(med / eva_ms, 4), **common)
        if out.extra.get("timing") == "worker":
            row["peak_rss_mb"] = round(st["peak"], 1)
            row["rss_method"] = ("VmHWM of the peer's worker process, reset before each run (its own Python: "
                                 "interpreter, torch and the peer library included)")
            row["timing"] = "measured inside the peer's worker process around the library calls (no protocol)"
            calls = np.array(st.get("call_s") or [[]], dtype=float)
            row["call_ms"] = [round(float(x) * 1e3, 3) for x in np.median(calls, axis=0)] if calls.size else None
            row["peer"] = {"python": getattr(s, "python", None), "versions": getattr(s, "versions", None)}
        elif s.in_process:
            row["peak_rss_mb"] = round(st["peak"], 1)
            row["rss_delta_mb"] = round(st["peak"] - (st["base"] or 0.0), 1)
            row["rss_method"] = ("VmHWM reset before each timed run: process-wide peak (includes the harness "
                                 "and every imported library); rss_delta_mb = peak - RSS at reset")
        else:
            rus = getattr(s, "child_rusage", [])
            row["peak_rss_mb"] = round(max((ru.ru_maxrss for ru in rus), default=0) / 1024, 1)
            row["rss_method"] = "ru_maxrss of the per-call tool subprocess (os.wait4); parent-side processing not included"
            row["tool_timings_ms"] = out.extra.get("tool")
            cmp_name, cmp_ms = ("eva_fast+pack", pack_ms) if pack_ms is not None else ("eva_fast", eva_ms)
            row["compared_with"] = cmp_name
            row["ratio_vs_compared"] = None if cmp_ms is None else round(med / cmp_ms, 4)
            if cmp_name == "eva_fast":
                row["note"] = "eva_fast side is decode-only (eva_fast.vision.pack_qwen25vl not importable)"
            getattr(s, "child_rusage", []).clear()
        if name == "eva_fast_snap":
            err = np.abs(np.asarray(out.extra.get("snap_error_s", []), dtype=float))
            snapped_idx = []
            for p, idx in zip(plans, out.indices):
                snapped_idx.append(idx)
            snap_work = sum(minimal_gop_work(pts, key, idx) for idx in snapped_idx)
            row["snap"] = {
                "snapped": int((err > 0).sum()), "frames": int(err.size),
                "max_abs_error_s": round(float(err.max()), 4) if err.size else 0.0,
                "mean_abs_error_s": round(float(err.mean()), 4) if err.size else 0.0,
                "speedup_vs_parity": None if eva_ms is None else round(eva_ms / med, 3),
                "min_gop_work_snapped": snap_work,
            }
            row["decode_work_ratio"] = None if not min_work else round((out.decoded_frames or 0) / min_work, 4)
            row["decode_work_note"] = "decoded frames / minimal GOP work of the parity plan (snapping lowers it below 1)"
        if name == "opencv":
            row["frames_read"] = out.extra.get("frames_read")
        rows.append(row)
    for name, reason in skipped.items():
        rows.append(H.make_row(env, suite, status="skipped", reason=reason, video=vinfo, workload=wl_info,
                               system=name, min_gop_work=min_work, frames=n_frames, calls=len(plans)))
    return rows


# --------------------------------------------------------------------------- table


def format_table(rows: list[dict]) -> str:
    """The closing table: ms per call, frames/s, ratio to eva_fast, decode work ratio, check."""
    hdr = ("video", "workload", "system", "ms/call", "p90 ms", "frames/s", "x eva_fast", "work ratio", "check", "n")
    lines = []
    for r in rows:
        if r.get("status") == "skipped":
            continue
        ms = r.get("ms") or {}
        calls = r.get("calls") or 1
        ratio = r.get("ratio_vs_eva_fast")
        if r.get("system") == "eva_reference" and r.get("compared_with") == "eva_fast+pack":
            ratio_s = f"{ratio:.2f}" if ratio is not None else "-"
            ratio_s += f" ({r['ratio_vs_compared']:.2f} vs +pack)" if r.get("ratio_vs_compared") else ""
        else:
            ratio_s = f"{ratio:.2f}" if ratio is not None else "-"
        chk = r.get("check") or {}
        if r.get("status") == "error":
            chk_s = "ERROR"
        elif r.get("system") == "eva_fast_snap" and r.get("snap"):
            sn = r["snap"]
            chk_s = f"snap {sn['snapped']}/{sn['frames']}, max err {sn['max_abs_error_s']:.2f}s"
        elif chk.get("max_abs_diff") is not None:
            chk_s = f"{'ok' if chk.get('ok') else 'FAIL'} max {chk['max_abs_diff']} mean {chk['mean_abs_diff']:.2f}"
        else:
            chk_s = "ok" if chk.get("ok") else "FAIL"
        wr = r.get("decode_work_ratio")
        lines.append((
            r["video"]["name"], r["workload"]["name"], r["system"],
            f"{ms['median'] / calls:.1f}" if ms else "-", f"{ms['p90'] / calls:.1f}" if ms else "-",
            f"{r['frames_per_s']:.0f}" if r.get("frames_per_s") else "-", ratio_s,
            f"{wr:.3f}" if wr is not None else "-", chk_s, str(r.get("repeats") or "-"),
        ))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(hdr)]
    fmt = lambda cols: "  ".join(c.ljust(w) if i < 3 or i >= 8 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))  # noqa: E731
    out = [fmt(hdr), fmt(tuple("-" * w for w in widths))] + [fmt(l) for l in lines]
    skipped = {}
    for r in rows:
        if r.get("status") == "skipped":
            skipped.setdefault(r["system"], r.get("reason"))
    for name, reason in skipped.items():
        out.append(f"skipped {name}: {reason}")
    return "\n".join(out)


def table_header(rows: list[dict]) -> str:
    if not rows:
        return ""
    r = rows[0]
    m = r["machine"]
    return (f"eva_fast bench ({r['suite']} suite) {r['timestamp']}  commit {(r['commit'].get('sha') or '?')[:10]}"
            f"{' (dirty)' if r['commit'].get('dirty') else ''}\nmachine: {m['cpu']}, {m['cores']} cores, "
            f"GPU: {m['gpu'] or 'none'}\nms/call = median wall ms per frame_select call (trajectory: 3 calls on "
            f"one open video; other workloads open the video per call); x eva_fast = system / eva_fast (parity), "
            f">1 means eva_fast is faster; work ratio = decoded frames / minimal GOP work")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``eva-fast bench`` and ``python -m eva_fast.bench.run``."""
    args = make_parser().parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 1)
    if args.plot_only:
        from .plot import plot_results

        for p in plot_results(args.results_dir):
            log(f"[bench] wrote {p}")
        return 0
    rows = run_bench(args)
    if args.plot and not args.no_write:
        from .plot import plot_results

        for p in plot_results(args.results_dir):
            log(f"[bench] wrote {p}")
    print()
    print(table_header(rows))
    print(format_table(rows))
    bad = [r for r in rows if r.get("status") in ("error", "failed_check")]
    return 1 if any(r["system"].startswith("eva_fast") for r in bad) else 0


if __name__ == "__main__":
    sys.exit(main())
