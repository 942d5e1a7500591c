"""PNG charts from bench/results/*.jsonl (run after the timing loop, never inside it).

    python -m eva_fast.bench.plot [results_dir]

One chart per video of the latest run: ms per call of every system on every workload (log scale,
drawn with Pillow so no plotting library is needed), and a ratio chart (system / eva_fast).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ._harness import DEFAULT_RESULTS_DIR, latest_run, load_rows

_COLORS = {
    "eva_fast": (214, 39, 40), "eva_fast_snap": (255, 127, 14), "eva_fast+pack": (148, 103, 189),
    "decord": (31, 119, 180), "pyav": (44, 160, 44), "opencv": (140, 86, 75),
    "group cache on": (214, 39, 40), "group cache off": (127, 127, 127), "decord+pil+hf": (31, 119, 180),
    "torchcodec_exact": (23, 190, 207), "torchcodec_approximate": (188, 189, 34), "eva_reference": (127, 127, 127),
    "torchcodec_exact+Resize": (0, 110, 140), "torchcodec_approximate+Resize": (120, 120, 0),
    "batched": (214, 39, 40), "batch1": (127, 127, 127), "batched-static": (255, 127, 14),
    "batched-compiled": (148, 103, 189), "batched-nocache": (31, 119, 180),
}


def _bar_chart(title: str, groups: list[str], series: dict[str, list[float | None]], unit: str, log: bool,
               path: Path) -> Path:
    from PIL import Image, ImageDraw

    W, H, L, R, T, B = 1100, 560, 80, 200, 50, 70
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((L, 15), title, fill="black")
    vals = [v for vs in series.values() for v in vs if v]
    if not vals:
        img.save(path)
        return path
    vmax, vmin = max(vals), min(vals)
    if log:
        lo, hi = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
        hi = max(hi, lo + 1)
        f = lambda v: (math.log10(v) - lo) / (hi - lo)  # noqa: E731
        ticks = [10**e for e in range(lo, hi + 1)]
    else:
        top = vmax * 1.1
        f = lambda v: v / top  # noqa: E731
        ticks = [top * i / 5 for i in range(6)]
    ph = H - T - B
    for t in ticks:
        y = T + ph - f(t) * ph
        d.line([(L, y), (W - R, y)], fill=(225, 225, 225))
        d.text((5, y - 6), f"{t:g} {unit}", fill="black")
    d.line([(L, T), (L, T + ph), (W - R, T + ph)], fill="black")
    names = list(series)
    gw = (W - L - R) / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(names))
    for gi, g in enumerate(groups):
        x0 = L + gi * gw + gw * 0.1
        d.text((x0, T + ph + 10), g, fill="black")
        for si, n in enumerate(names):
            v = series[n][gi]
            if not v:
                continue
            h = max(1.0, f(v) * ph)
            x = x0 + si * bw
            d.rectangle([x, T + ph - h, x + bw - 2, T + ph], fill=_COLORS.get(n, (0, 0, 0)))
    for si, n in enumerate(names):
        y = T + 10 + si * 18
        d.rectangle([W - R + 15, y, W - R + 27, y + 12], fill=_COLORS.get(n, (0, 0, 0)))
        d.text((W - R + 32, y), n, fill="black")
    img.save(path)
    return path


def plot_results(results_dir: str | Path = DEFAULT_RESULTS_DIR) -> list[Path]:
    """Charts of the latest run in ``results_dir`` into ``results_dir/plots``; returns the paths."""
    rows = [r for r in latest_run([r for r in load_rows(results_dir, "decode*.jsonl") if "workload" in r and "video" in r])
            if r.get("status") in ("ok", "failed_check")]
    out_dir = Path(results_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for video in sorted({r["video"]["name"] for r in rows}):
        vr = [r for r in rows if r["video"]["name"] == video]
        groups = list(dict.fromkeys(r["workload"]["name"] for r in vr))
        systems = list(dict.fromkeys(r["system"] for r in vr))
        get = lambda s, g, key: next((r.get(key) for r in vr if r["system"] == s and r["workload"]["name"] == g), None)  # noqa: E731
        ms = {s: [get(s, g, "ms_per_call") for g in groups] for s in systems}
        ratio = {s: [get(s, g, "ratio_vs_eva_fast") for g in groups] for s in systems}
        head = f"{video} - {vr[0]['machine']['cpu']} x{vr[0]['machine']['cores']} - {vr[0]['timestamp']}"
        paths.append(_bar_chart(f"ms per frame_select call (log) - {head}", groups, ms, "ms", True,
                                out_dir / f"{video}_ms_per_call.png"))
        paths.append(_bar_chart(f"time / eva_fast time (>1: eva_fast faster) - {head}", groups, ratio, "x", False,
                                out_dir / f"{video}_ratio.png"))
    return paths


def plot_training(results_dir: str | Path = DEFAULT_RESULTS_DIR) -> list[Path]:
    """The training benches' latest runs: the collator against decord + Pillow + transformers (ms per
    trajectory), and a GRPO step's rollouts by stage, per mode (batched turns, batch 1, ...)."""
    import json

    out_dir = Path(results_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    def latest(name: str) -> list[dict]:
        f = Path(results_dir) / name
        if not f.is_file():
            return []
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        return [r for r in rows if r.get("run_id") == rows[-1].get("run_id")] if rows else []

    col = latest("collator.jsonl")
    if col:
        groups = [f"{r['video']} ({r['frames']} fr)" for r in col]
        series = {"eva_fast": [r["eva_fast_ms"] for r in col], "decord+pil+hf": [r["baseline_ms"] for r in col]}
        head = f"{col[0]['machine']['cpu']} x{col[0]['machine']['cores']} - {col[0]['timestamp']}"
        paths.append(_bar_chart(f"training collator, ms per trajectory (log) - {head}", groups, series, "ms", True,
                                out_dir / "collator.png"))
    ro = latest("rollout.jsonl")
    if ro:
        # per mode (batched / batch1 / ...; rows before modes: group cache on / off); "model" = the
        # generate calls' wall time (older rows: the episodes' summed generate stage)
        stages = ["wall", "model", "decoder_work", "pack"]

        def label(r: dict) -> str:
            return r.get("mode") or ("group cache on" if r["share_frames"] else "group cache off")

        def value(r: dict, s: str) -> float:
            if s == "wall":
                return r["wall_ms"]
            if s == "model":
                return r.get("model_ms", r["stages_ms"].get("generate", 0.0))
            return r["stages_ms"].get(s, 0.0)

        series = {}
        for name in dict.fromkeys(label(r) for r in ro):
            rs = [r for r in ro if label(r) == name]
            series[name] = [sum(value(r, s) for r in rs) / len(rs) / 1e3 for s in stages]
        head = (f"{ro[0]['questions']} questions x {ro[0]['generations']} episodes, {ro[0]['model']} model, "
                f"{ro[0]['device']} - {ro[0]['timestamp']}")
        paths.append(_bar_chart(f"GRPO rollout batch, seconds by stage - {head}", stages, series, "s", False,
                                out_dir / "rollout.png"))
    return paths


if __name__ == "__main__":
    d = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_RESULTS_DIR
    for p in plot_results(d) + plot_training(d):
        print(p)
