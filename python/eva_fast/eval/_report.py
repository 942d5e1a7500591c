"""Reports: a markdown summary plus PNG charts of one or more benchmark results, and timelines of
what the agent watched for chosen questions.

Charts (matplotlib, Agg backend, written next to ``report.md``):

* ``accuracy_per_benchmark.png``: accuracy per benchmark, ours beside EVA's published number;
* ``accuracy_vs_tokens.png``: accuracy against average total tokens per benchmark (ours and EVA's);
* ``rounds_histogram.png``: how many rounds questions took, per benchmark;
* ``categories_<benchmark>.png``: accuracy per question category (where the benchmark has them);
* ``timelines/<benchmark>_<index>.png``: per chosen question, the agent's timeline plot (one row
  per round: the window of each ``frame_select`` call and the times of the frames it got).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from eva_fast._logging import get_logger
from eva_fast.agent import Trajectory
from eva_fast.agent import plot_timeline as agent_plot_timeline
from eva_fast.eval._datasets import BENCHMARKS, get_benchmark, load_samples
from eva_fast.eval._records import latest_by_index, load_records
from eva_fast.eval._score import Summary, is_correct, score_records

log = get_logger("eval")


@dataclass
class BenchmarkResults:
    """The results of one benchmark as loaded for a report.

    Attributes:
        name: benchmark name (registry key or file stem); title: display name.
        path: the results file; records: one per index, sorted by index.
        summary: their score; published: EVA's ``(acc %, rounds, tokens)`` if known.
    """

    name: str
    title: str
    path: Path
    records: list[dict[str, Any]]
    summary: Summary
    published: tuple[float, float, float] | None


def _guess_benchmark(path: Path, records: Sequence[Mapping[str, Any]]) -> str:
    names = {r.get("benchmark") for r in records if r.get("benchmark")}
    if len(names) == 1:
        return str(names.pop())
    stem = path.name.split(".")[0]
    return stem


def load_results(path: str | os.PathLike, benchmark: str | None = None) -> BenchmarkResults:
    """Load a results file (one record per index; later lines win) and score it.

    The benchmark is ``benchmark``, else the records' ``benchmark`` field, else the file name's
    first dot-separated part (``videomme.jsonl`` -> ``videomme``). For a registered benchmark,
    categories come from the annotations.
    """
    path = Path(path)
    recs = list(latest_by_index(load_records(path)).values())
    recs.sort(key=lambda r: r["index"])
    name = benchmark or _guess_benchmark(path, recs)
    cats = None
    expected = None
    title, published = name, None
    if name.lower() in BENCHMARKS:
        spec = get_benchmark(name)
        title, published = spec.title, spec.published
        samples = load_samples(spec)
        cats = {s.index: s.categories for s in samples}
        expected = [s.index for s in samples]
    summary = score_records(recs, cats, expected_indices=expected, source=str(path))
    return BenchmarkResults(name, title, path, recs, summary, published)


def _plt():
    import matplotlib  # optional (the eval extra), imported only to draw

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # after choosing the Agg backend

    return plt


def _save(plt, fig, path: Path) -> Path:
    """Lay out, write (PNG, 120 dpi) and close one chart."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_per_benchmark(results: Sequence[BenchmarkResults], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(results) + 2), 3.6))
    xs = range(len(results))
    ours = [100 * r.summary.accuracy for r in results]
    pub = [r.published[0] if r.published else math.nan for r in results]
    has_pub = any(not math.isnan(p) for p in pub)
    shift, width = (0.2, 0.4) if has_pub else (0.0, 0.6)
    ax.bar([x - shift for x in xs], ours, width=width, label="eva_fast", color="#2a7ab9")
    if has_pub:
        ax.bar([x + shift for x in xs], pub, width=width, label="EVA published", color="#bbbbbb")
    for x, v in zip(xs, ours):
        ax.text(x - shift, v + 0.5, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [f"{r.title}\n(n={r.summary.total})" for r in results], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy per benchmark")
    return _save(plt, fig, path)


def plot_accuracy_vs_tokens(results: Sequence[BenchmarkResults], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, r in enumerate(results):
        c = colors[k % len(colors)]
        ax.scatter([r.summary.avg_total_tokens], [100 * r.summary.accuracy], color=c, marker="o",
                   label=f"{r.title}")
        if r.published:
            ax.scatter([r.published[2]], [r.published[0]], color=c, marker="x")
            ax.annotate("", xy=(r.summary.avg_total_tokens, 100 * r.summary.accuracy),
                        xytext=(r.published[2], r.published[0]),
                        arrowprops={"arrowstyle": "->", "color": c, "alpha": 0.4})
    ax.set_xlabel("average total tokens (last round)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs tokens (o: eva_fast, x: EVA published)")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_rounds_histogram(results: Sequence[BenchmarkResults], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    max_r = max((int(rec.get("num_rounds", 0)) for r in results for rec in r.records), default=1)
    bins = list(range(0, max_r + 2))
    width = 0.8 / max(1, len(results))
    for k, r in enumerate(results):
        counts = Counter(int(rec.get("num_rounds", 0)) for rec in r.records)
        n = max(1, len(r.records))
        ax.bar([b + k * width - 0.4 + width / 2 for b in bins[:-1]], [100 * counts.get(b, 0) / n for b in bins[:-1]],
               width=width, label=r.title)
    ax.set_xticks(bins[:-1])
    ax.set_xlabel("rounds (model turns)")
    ax.set_ylabel("questions (%)")
    ax.set_title("Rounds per question")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_categories(result: BenchmarkResults, path: Path) -> Path:
    plt = _plt()
    cats = sorted(result.summary.categories.items(), key=lambda kv: kv[0])
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(cats) + 1.2))
    ys = range(len(cats))
    ax.barh(list(ys), [100 * c.accuracy for _, c in cats], color="#2a7ab9")
    ax.set_yticks(list(ys), [f"{k} (n={c.total})" for k, c in cats], fontsize=8)
    ax.axvline(100 * result.summary.accuracy, color="k", lw=0.8, ls="--", label="overall")
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(f"{result.title}: accuracy per category")
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_timeline(record: Mapping[str, Any], path: Path) -> Path:
    """What the agent watched for one question, drawn by the agent's own timeline plot
    (``eva_fast.agent._viz.plot_timeline``: one row per round, each call's window and a tick per
    returned frame on the video's time axis).

    Args:
        record: a result record with a ``trajectory`` (``Trajectory.to_dict()``).
        path: PNG to write.

    Raises:
        ValueError: the record has no trajectory.
    """
    traj = record.get("trajectory")
    if not isinstance(traj, Mapping):
        raise ValueError(f"record {record.get('index')} has no trajectory to draw")
    return Path(agent_plot_timeline(Trajectory.from_dict(dict(traj)), path))


def _fmt_pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def pick_timeline_samples(result: BenchmarkResults, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` records with trajectories: alternately right and wrong, in index order."""
    with_traj = [r for r in result.records if isinstance(r.get("trajectory"), Mapping)]
    right = [r for r in with_traj if is_correct(r)]
    wrong = [r for r in with_traj if not is_correct(r)]
    out: list[dict[str, Any]] = []
    while len(out) < count and (right or wrong):
        for pool in (right, wrong):
            if pool and len(out) < count:
                out.append(pool.pop(0))
    return sorted(out, key=lambda r: r["index"])


def write_report(result_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, timelines: int = 4,
                 timeline_indices: Mapping[str, Sequence[int]] | None = None) -> Path:
    """Write ``report.md`` and the charts for the given results files.

    Args:
        result_paths: results files (one per benchmark; the benchmark is read from the records or
            the file name).
        out_dir: output folder (created).
        timelines: draw this many timelines per benchmark (alternately right and wrong answers)
            when ``timeline_indices`` does not name the questions.
        timeline_indices: benchmark -> indices to draw.

    Returns:
        The path of ``report.md``.

    Raises:
        ValueError: no results files; an index in ``timeline_indices`` with no record.
    """
    if not result_paths:
        raise ValueError("report needs at least one results file")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = [load_results(p) for p in result_paths]
    charts = [
        plot_accuracy_per_benchmark(results, out / "accuracy_per_benchmark.png"),
        plot_accuracy_vs_tokens(results, out / "accuracy_vs_tokens.png"),
        plot_rounds_histogram(results, out / "rounds_histogram.png"),
    ]
    md = ["# eva_fast evaluation report", ""]
    md += ["| benchmark | questions | accuracy % | EVA published % | avg rounds | EVA rounds | avg tokens | "
           "EVA tokens | avg est. visual tokens | empty answers | errors | missing |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s, p = r.summary, r.published
        md.append(
            f"| {r.title} | {s.total} | {_fmt_pct(s.accuracy)} | {p[0] if p else '-'} | {s.avg_rounds:.2f} | "
            f"{p[1] if p else '-'} | {s.avg_total_tokens:.0f} | {p[2] if p else '-'} | "
            f"{'-' if s.avg_estimated_visual_tokens is None else f'{s.avg_estimated_visual_tokens:.0f}'} | "
            f"{s.empty_answers} | {s.errors} | {len(s.missing_indices)} |")
    md += ["", "Accuracy follows EVA's `accuracy.py`: right answers / records, an empty answer is wrong, "
           "answers compared case-insensitively after stripping. \"missing\" = questions of the benchmark "
           "with no record (not in the denominator).", ""]
    md += [f"![{c.stem}]({c.name})" for c in charts]
    md.append("")
    for r in results:
        md += [f"## {r.title}", "", f"Results: `{r.path}`", "", "Stop reasons:", ""]
        md += [f"- `{k}`: {v}" for k, v in r.summary.stop_reasons.items()]
        md.append("")
        if r.summary.categories:
            chart = plot_categories(r, out / f"categories_{r.name}.png")
            md += ["| category | questions | right | accuracy % |", "|---|---:|---:|---:|"]
            for k, c in sorted(r.summary.categories.items()):
                md.append(f"| {k} | {c.total} | {c.correct} | {_fmt_pct(c.accuracy)} |")
            md += ["", f"![categories {r.title}]({chart.name})", ""]
        if timeline_indices and r.name in timeline_indices:
            by_index = {rec["index"]: rec for rec in r.records}
            missing = [i for i in timeline_indices[r.name] if i not in by_index]
            if missing:
                raise ValueError(f"{r.name}: no record for index(es) {missing} in {r.path}")
            chosen = [by_index[i] for i in timeline_indices[r.name]]
        else:
            chosen = pick_timeline_samples(r, timelines)
        if chosen:
            (out / "timelines").mkdir(exist_ok=True)
            md += ["What the agent watched (one row per round: each call's window, a tick per frame returned):", ""]
            for rec in chosen:
                png = plot_timeline(rec, out / "timelines" / f"{r.name}_{rec['index']}.png")
                verdict = "right" if is_correct(rec) else "wrong"
                md += [f"**#{rec['index']}**: answer `{rec.get('answer')}`, ground truth `{rec.get('gt')}` ({verdict}), "
                       f"{rec.get('num_rounds')} rounds, stop `{rec.get('stop_reason')}`", "",
                       f"![{r.name} {rec['index']}](timelines/{png.name})", ""]
    report = out / "report.md"
    report.write_text("\n".join(md) + "\n")
    return report
