"""Benchmark registry, annotation loading, video path resolution and the preflight check.

The six benchmarks of EVA's published evaluation ship with the package in EVA's normalized jsonl
(``eval/data/*.jsonl``, see ``eval/data/SOURCES.md``). One line is one question::

    {"videos": ["<file name or an absolute path from the authors' machine>"],
     "prompt": [{"role": "user", "content": "<question with lettered options>"}],
     "reward_model": {"style": "rule", "ground_truth": "<letter>", "reward_fn": "video_crop"},
     "index": <int>, ...extra per-benchmark fields}

Protocol points taken from the EVA authors' ``eval-eva.py`` (wangruohui/EfficientVideoAgent):
a line whose ``index`` is not an int gets its 0-based line number; the video is
``join(video_root, videos[0])``; the ground truth is ``reward_model.ground_truth``.
"""

from __future__ import annotations

import ast
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from eva_fast._checks import is_int
from eva_fast._jsonl import JsonlFormatError, read_jsonl
from eva_fast._logging import get_logger
from eva_fast.video import VideoReader

log = get_logger("eval")

DATA_DIR = Path(__file__).parent / "data"


# --------------------------------------------------------------------------------------------
# categories


def _categories_none(item: dict[str, Any]) -> tuple[str, ...]:
    return ()


def _categories_field(name: str) -> Callable[[dict[str, Any]], tuple[str, ...]]:
    """Categories from one annotation field. The field may hold a plain string (Video-Holmes
    ``Question_Type``: ``"SR"``), a list, or a Python-literal list in a string (LVBench
    ``question_type``: ``"['event understanding', 'entity recognition']"``); a multi-label
    question counts in each of its categories, as LVBench's own per-type scores do."""

    def get(item: dict[str, Any]) -> tuple[str, ...]:
        value = item.get(name)
        if value is None or value == "":
            return ()
        if isinstance(value, str) and value.startswith("["):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return (value,)
        if isinstance(value, (list, tuple)):
            return tuple(dict.fromkeys(str(v) for v in value))
        return (str(value),)

    get.__name__ = f"field:{name}"
    return get


def _categories_mlvu(item: dict[str, Any]) -> tuple[str, ...]:
    """MLVU's task is the folder its video sits in (``.../video/1_plotQA/movie101_66.mp4``)."""
    videos = item.get("videos") or []
    if not videos:
        return ()
    parent = Path(str(videos[0])).parent.name
    return (parent,) if parent and parent != "video" else ()


#: Fields the ``auto`` rule looks for, in order (a jsonl given by path uses ``auto``).
AUTO_CATEGORY_FIELDS = ("question_type", "Question_Type", "task_type", "category")


def _categories_auto(item: dict[str, Any]) -> tuple[str, ...]:
    for name in AUTO_CATEGORY_FIELDS:
        if name in item:
            return _categories_field(name)(item)
    return ()


CATEGORY_FUNCTIONS: dict[str, Callable[[dict[str, Any]], tuple[str, ...]]] = {
    "none": _categories_none,
    "auto": _categories_auto,
    "mlvu_task": _categories_mlvu,
}


def categories_function(spec: str | None) -> Callable[[dict[str, Any]], tuple[str, ...]]:
    """``None``/``"none"``, ``"auto"`` (the first of :data:`AUTO_CATEGORY_FIELDS` present),
    ``"mlvu_task"``, or ``"field:<name>"`` -> a function item -> categories."""
    if spec is None:
        return _categories_none
    if spec.startswith("field:"):
        return _categories_field(spec[len("field:"):])
    try:
        return CATEGORY_FUNCTIONS[spec]
    except KeyError:
        raise ValueError(f"unknown category rule {spec!r}; allowed: none, auto, mlvu_task, field:<name>") from None


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: its annotation file and how its questions are grouped.

    Attributes:
        name: registry key (``videomme``, ...), also the default result-file stem.
        title: display name (``VideoMME``) as in EVA's results table.
        annotation: path of the jsonl (shipped under ``eval/data`` for the six built-ins).
        num_questions: expected line count (checked on load for the built-ins; ``None`` = any).
        category_rule: ``"none"``, ``"auto"``, ``"mlvu_task"`` or ``"field:<name>"``.
        published: EVA's published ``(accuracy %, avg rounds, avg total tokens)``, if any.
    """

    name: str
    title: str
    annotation: Path
    num_questions: int | None = None
    category_rule: str = "none"
    published: tuple[float, float, float] | None = None

    def categories(self, item: dict[str, Any]) -> tuple[str, ...]:
        return categories_function(self.category_rule)(item)


# EVA README ("Main results"): accuracy %, rounds, tokens of the last round.
BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec("videomme", "VideoMME", DATA_DIR / "videomme_test_wosubtitles_raw_list_full.jsonl",
                      2700, "none", (60.15, 2.42, 16911)),
        BenchmarkSpec("longvideobench", "LongVideoBench", DATA_DIR / "LongVideoBench_nosub_raw_full.jsonl",
                      1337, "none", (54.97, 2.57, 19042)),
        BenchmarkSpec("mlvu", "MLVU", DATA_DIR / "MLVU_MCQ_raw_full.jsonl", 2174, "mlvu_task", (68.26, 2.42, 16570)),
        BenchmarkSpec("lsdbench", "LSDBench", DATA_DIR / "LSDBench_raw_full.jsonl", 1304, "none", (49.31, 2.48, 13914)),
        BenchmarkSpec("videoholmes", "VideoHolmes", DATA_DIR / "videoholmes_raw_full.jsonl", 1837,
                      "field:Question_Type", (37.18, 2.75, 9085)),
        BenchmarkSpec("lvbench", "LVBench", DATA_DIR / "LVBench_raw_full_root.jsonl", 1549,
                      "field:question_type", (43.32, 2.62, 20412)),
    )
}


def get_benchmark(name_or_path: str | os.PathLike, category_rule: str | None = None) -> BenchmarkSpec:
    """A registered benchmark by name, or an ad-hoc one from a jsonl path in the same format.

    Args:
        name_or_path: one of :data:`BENCHMARKS` (case-insensitive) or a path to a ``.jsonl``.
        category_rule: overrides how questions are grouped (``"none"``, ``"auto"``, ``"mlvu_task"``,
            ``"field:<name>"``); for a path the default is ``"auto"``.

    Raises:
        ValueError: unknown name and not an existing file.
    """
    key = str(name_or_path)
    if key.lower() in BENCHMARKS:
        spec = BENCHMARKS[key.lower()]
        if category_rule is not None:
            spec = BenchmarkSpec(spec.name, spec.title, spec.annotation, spec.num_questions, category_rule,
                                 spec.published)
        return spec
    path = Path(key)
    if path.is_file():
        stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
        return BenchmarkSpec(stem, stem, path, None, category_rule or "auto", None)
    raise ValueError(f"unknown benchmark {key!r}: allowed are {', '.join(BENCHMARKS)} or a path to a .jsonl file")


# --------------------------------------------------------------------------------------------
# samples


@dataclass(frozen=True)
class Sample:
    """One question of a benchmark.

    Attributes:
        index: the question's id (``index`` field, or the 0-based line number when not an int).
        video: ``videos[0]`` exactly as written in the annotation (name or absolute path).
        question: the first user turn's content (the agent adds the video-length preamble).
        system: a system turn's content if the prompt has one, else ``None`` (agent default).
        gt: ``reward_model.ground_truth`` (a letter for all six benchmarks).
        categories: the question's categories (empty when the benchmark has none).
        lineno: 1-based line in the annotation file.
        item: the raw annotation object.
    """

    index: int
    video: str
    question: str
    system: str | None
    gt: Any
    categories: tuple[str, ...] = ()
    lineno: int = 0
    item: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _sample_from_item(spec: BenchmarkSpec, path: Path, lineno: int, item: dict[str, Any]) -> Sample:
    videos = item.get("videos")
    if not isinstance(videos, list) or not videos or not isinstance(videos[0], str) or not videos[0]:
        raise JsonlFormatError(path, lineno, f"'videos' must be a non-empty list of file names, got {videos!r}")
    prompt = item.get("prompt")
    if not isinstance(prompt, list) or not all(isinstance(t, dict) for t in prompt):
        raise JsonlFormatError(path, lineno, f"'prompt' must be a list of chat turns, got {type(prompt).__name__}")
    question = next((t.get("content") for t in prompt if t.get("role") == "user"), None)
    if not isinstance(question, str):
        raise JsonlFormatError(path, lineno, "'prompt' has no user turn with text content")
    system = next((t.get("content") for t in prompt if t.get("role") == "system"), None)
    rm = item.get("reward_model")
    if not isinstance(rm, dict) or "ground_truth" not in rm:
        raise JsonlFormatError(path, lineno, "missing 'reward_model.ground_truth'")
    index = item.get("index")
    if not is_int(index):
        index = lineno - 1  # eval-eva.py's load_jsonl: 0-based line number
    return Sample(index, videos[0], question, system if isinstance(system, str) else None, rm["ground_truth"],
                  spec.categories(item), lineno, item)


def load_samples(spec: BenchmarkSpec | str | os.PathLike) -> list[Sample]:
    """All questions of a benchmark, in file order.

    Raises:
        JsonlFormatError: a malformed line (names file and line); a repeated index.
        ValueError: a built-in file whose line count is not the expected one.
    """
    if not isinstance(spec, BenchmarkSpec):
        spec = get_benchmark(spec)
    samples: list[Sample] = []
    seen: dict[int, int] = {}
    for lineno, item in read_jsonl(spec.annotation):
        s = _sample_from_item(spec, spec.annotation, lineno, item)
        if s.index in seen:
            raise JsonlFormatError(spec.annotation, lineno, f"index {s.index} already used on line {seen[s.index]}")
        seen[s.index] = lineno
        samples.append(s)
    if spec.num_questions is not None and len(samples) != spec.num_questions:
        raise ValueError(f"{spec.annotation}: {len(samples)} questions, expected {spec.num_questions}")
    return samples


def select_samples(samples: Sequence[Sample], limit: int | None = None, shard: tuple[int, int] | None = None,
                   ) -> list[Sample]:
    """The questions a run works on: the first ``limit`` in index order, then shard ``i`` of ``n``.

    The shard split is deterministic and balanced: in index order, the k-th question goes to shard
    ``k % n`` (benchmarks list videos grouped by length, so a round-robin split evens out the
    work). ``--limit`` applies before sharding, so the shards of a limited run together cover
    exactly the unsharded limited run.

    Raises:
        ValueError: ``limit < 1``, or a shard not ``0 <= i < n``.
    """
    ordered = sorted(samples, key=lambda s: s.index)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        ordered = ordered[:limit]
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
        ordered = ordered[i::n]
    return ordered


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``. Raises ValueError naming the text unless ``0 <= i < n``."""
    try:
        a, b = text.split("/")
        i, n = int(a), int(b)
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {text!r}")
    return i, n


# --------------------------------------------------------------------------------------------
# videos


def video_candidates(video: str, root: str | os.PathLike) -> list[Path]:
    """Where a video named in an annotation may be, best first.

    A relative name is ``root / name``. An absolute path (MLVU's entries carry the authors'
    ``/mnt/afs/.../MLVU/video/1_plotQA/x.mp4``) is tried by its relative tails under the root,
    longest first: ``root/mnt/.../x.mp4``, ..., ``root/video/1_plotQA/x.mp4``,
    ``root/1_plotQA/x.mp4``, ``root/x.mp4``; so the user's root may be any ancestor folder. Last,
    the absolute path as written (question sets made on this machine, e.g. ``eva-fast data
    import``'s, name their videos by absolute path).
    """
    root = Path(root)
    p = Path(video)
    if not p.is_absolute():
        return [root / p]
    parts = p.parts[1:]
    return [root.joinpath(*parts[k:]) for k in range(len(parts))] + [p]


def resolve_video(video: str, root: str | os.PathLike) -> Path:
    """The existing file for an annotation's video name, or the first candidate when none exists
    (the preflight reports it as missing)."""
    cands = video_candidates(video, root)
    for c in cands:
        if c.is_file():
            return c
    return cands[-2] if Path(video).is_absolute() and len(cands) > 1 else cands[0]  # root/<file name>


@dataclass
class PreflightReport:
    """What the preflight found, per unique video.

    Attributes:
        num_samples, num_videos: questions and unique videos checked.
        missing: annotation name -> path looked up (no file under the root).
        unreadable: annotation name -> error text (file exists, FFmpeg cannot open it as a video).
        affected_samples: questions whose video is missing or unreadable.
        resolved: annotation name -> resolved path, for the videos that are fine.
    """

    num_samples: int
    num_videos: int
    missing: dict[str, str]
    unreadable: dict[str, str]
    affected_samples: int
    resolved: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable

    def summary(self) -> str:
        lines = [f"{self.num_samples} questions over {self.num_videos} videos: "
                 f"{len(self.missing)} missing, {len(self.unreadable)} unreadable "
                 f"({self.affected_samples} questions affected)"]
        for name, where in sorted(self.missing.items())[:20]:
            lines.append(f"  missing     {name} (looked for {where})")
        if len(self.missing) > 20:
            lines.append(f"  ... and {len(self.missing) - 20} more missing")
        for name, err in sorted(self.unreadable.items())[:20]:
            lines.append(f"  unreadable  {name}: {err}")
        if len(self.unreadable) > 20:
            lines.append(f"  ... and {len(self.unreadable) - 20} more unreadable")
        return "\n".join(lines)


def _open_error(path: Path) -> str | None:
    try:
        meta = VideoReader(str(path)).metadata
    except Exception as e:  # any failure to open means the agent could not use it
        return f"{type(e).__name__}: {e}"
    if not (meta.duration_s > 0 and meta.width > 0 and meta.height > 0):
        return f"no usable video stream (duration {meta.duration_s} s, {meta.width}x{meta.height})"
    return None


def preflight(samples: Sequence[Sample], video_root: str | os.PathLike, open_videos: bool = True,
              workers: int = 8) -> PreflightReport:
    """Check every video of ``samples`` before any model call.

    Args:
        samples: the questions of the run.
        video_root: the benchmark's video folder.
        open_videos: also open each file with eva_fast's decoder (header and index only, nothing
            decoded) to catch files that exist but are not readable videos.
        workers: threads used to open videos.

    Returns:
        A :class:`PreflightReport` with counts; never raises for a bad video.
    """
    root = Path(video_root)
    if not root.is_dir():
        raise FileNotFoundError(f"video root {str(root)!r} is not a directory")
    per_video = Counter(s.video for s in samples)
    missing: dict[str, str] = {}
    found: dict[str, Path] = {}
    for name in per_video:
        path = resolve_video(name, root)
        if path.is_file():
            found[name] = path
        else:
            missing[name] = str(path)
    unreadable: dict[str, str] = {}
    if open_videos and found:
        names = list(found)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            for name, err in zip(names, ex.map(lambda n: _open_error(found[n]), names)):
                if err is not None:
                    unreadable[name] = err
    bad = set(missing) | set(unreadable)
    report = PreflightReport(
        num_samples=len(samples),
        num_videos=len(per_video),
        missing=missing,
        unreadable=unreadable,
        affected_samples=sum(c for n, c in per_video.items() if n in bad),
        resolved={n: str(p) for n, p in found.items() if n not in unreadable},
    )
    if not report.ok:
        log.warning("preflight: %d missing, %d unreadable videos", len(missing), len(unreadable))
    return report
