"""Readers for the public datasets EVA is trained on (paper §3.2-§3.3, §4.1): their annotation
files in, eva_fast's question sets out (:mod:`eva_fast.train._rl_data` lines), every video resolved
under its dataset's folder (``--roots``) and every question that cannot be used reported with a
count and a reason, never dropped silently.

* **LLaVA-Video-178K** (:func:`read_llava_video`; SFT questions on short videos). Schema: the
  dataset card of ``lmms-lab/LLaVA-Video-178K`` (Hugging Face; ``configs``: per subset folder,
  ``*cap*.json`` = caption, ``*oe*.json`` = open_ended, ``*mc*.json`` = multi_choice) and the LLaVA
  conversation layout its files use: a JSON list of ``{"id", "data_source", "video",
  "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": ...},
  ...]}``, each human/gpt pair one question about ``video`` (a path relative to the dataset folder,
  e.g. ``academic_source/Charades/RW587.mp4``; the subset's video tarballs unpack there or inside
  the subset folder). Multiple-choice human turns carry the question, one option per line
  (``A. ...``) and an instruction line (``Please respond with only the letter ...``); the gpt turn
  starts with the letter. Caption files are not questions: read, counted, skipped.
* **CG-Bench** (:func:`read_cgbench`; SFT questions on long videos). Schema: ``cgbench.json`` /
  ``cgbench_mini.json`` of the benchmark's repository (``github.com/CG-Bench/CG-Bench``, read at
  f826608) and its dataset card: a JSON list of ``{"qid", "video_uid", "question", "answer",
  "choices", "right_answer", "clue_intervals", "domain", "sub_category", "duration"}``; videos are
  ``cg_videos_720p/<video_uid>.mp4`` (``run/extract_frames.py``). Each item gives a
  multiple-choice question (``choices``, ``right_answer``) and, with the benchmark's ``open`` task,
  an open-ended one (``answer``); ``form`` picks which.
* **HD-VILA-100M** (:func:`read_hdvila`; the unseen videos of data-enhanced GRPO, no QA). Schema:
  ``hd-vila-100m/README.md`` of ``github.com/microsoft/XPretrain``: jsonl lines ``{"video_id",
  "url", "clip": [{"clip_id": "<video_id>.<n>.mp4", "span": ["HH:MM:SS.mmm", "HH:MM:SS.mmm"]},
  ...]}``; the downloaded video is ``<video_id>.mp4`` (``.mkv``/``.webm``), a cut clip ``<clip_id>``.

:func:`import_sources` runs the readers and writes ``teacher_qa.jsonl`` (the teacher's QA set,
``eva-fast data teacher``), ``rl_pool.jsonl`` (the question pool of ``eva-fast data rl-set``), the
two split by a seeded hash of each annotation item's video (a video's questions all land on one
side), ``enhance_videos.txt`` (``eva-fast data enhance --videos``), ``import.missing.jsonl`` (every
skipped video with the paths tried) and ``import.report.{json,md}``. Command line: ``eva-fast data
import``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eva_fast._jsonl import JsonlFormatError, json_lines
from eva_fast._logging import get_logger
from eva_fast.eval import video_candidates
from eva_fast.train._rl_data import RLDataError, RLSample, write_rl_set
from eva_fast.train.data._common import write_report

logger = get_logger("train.data")

#: Source names (keys of ``--roots`` and of ``source`` in the written lines).
SOURCES = ("llava_video", "cgbench", "hdvila")
DATASET_TITLES = {"llava_video": "LLaVA-Video-178K", "cgbench": "CG-Bench", "hdvila": "HD-VILA-100M"}
CGBENCH_FORMS = ("mcq", "open", "both")
HDVILA_UNITS = ("video", "clip")
HDVILA_EXTENSIONS = (".mp4", ".mkv", ".webm")
#: How a LLaVA-Video-178K file's name says its kind (the dataset card's split globs).
_LLAVA_KIND = (("_mc_", "mcq"), ("_oe_", "open"), ("_cap_", "caption"), ("_qa_", "open"))
_MEDIA_TOKEN = re.compile(r"<(?:image|video)>\s*")
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[\.\):]\s*(\S.*?)\s*$")
_ANSWER_LETTER = re.compile(r"^\s*\(?([A-Z])(?:[\.\):,]|\s|$)")
_SPAN = re.compile(r"^(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)$")
#: Reported examples per skip reason.
_EXAMPLES = 5


@dataclass
class ReadResult:
    """What one reader produced.

    Attributes:
        source: ``llava_video`` / ``cgbench`` / ``hdvila``.
        samples: the questions (``video`` = the resolved path), in file order.
        groups: per sample, the split key: its dataset and video as the annotation names it (not
            where it is stored), so the split is the same on every machine.
        videos: HD-VILA only: ``{"video": path, "video_id", "url", "clips": n}`` per video found.
        missing: ``{"where", "video", "tried"}`` per question (or HD-VILA video) skipped because its
            video is not under the root.
        skipped: reason -> count of items / questions skipped for another reason.
        examples: reason -> the first few messages of each skip, each starting with where the item
            is: ``file:line`` (jsonl) or ``file[item]`` (a JSON list, 0-based).
        items: annotation items read (lines / list entries).
    """

    source: str
    samples: list[RLSample] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    videos: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    items: int = 0

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < _EXAMPLES:
            ex.append(message)

    def add(self, sample: RLSample, group: str) -> None:
        self.samples.append(sample)
        self.groups.append(group)

    def counts(self) -> dict[str, Any]:
        out = {"items": self.items, "questions": len(self.samples),
               "mcq": sum(s.type == "mcq" for s in self.samples), "open": sum(s.type == "open" for s in self.samples),
               "missing_videos": len(self.missing), "missing_video_files": len({m["video"] for m in self.missing}),
               "skipped": dict(sorted(self.skipped.items()))}
        if self.source == "hdvila":
            out["videos"] = len(self.videos)
        return out


def expand_paths(patterns: str | os.PathLike | Sequence[str | os.PathLike], what: str) -> list[Path]:
    """Files named by paths or glob patterns, in order (each pattern's matches sorted).

    Raises:
        FileNotFoundError: a pattern that matches no file (names the pattern and ``what``).
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    out: list[Path] = []
    for p in patterns:
        p = str(p)
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else ([p] if Path(p).is_file() else [])
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise FileNotFoundError(f"{what} annotation file {p!r} does not exist (or the pattern matches no file)")
        out.extend(files)
    return out


def _root(root: str | os.PathLike, source: str) -> Path:
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"video folder of {DATASET_TITLES[source]} ({source!r} in --roots) {str(r)!r} is not a directory")
    return r


def _resolve(root: Path, video: str, subdirs: Sequence[str] = ()) -> tuple[str | None, list[str]]:
    """``(path, tried)``: the first existing file among ``root/video`` and ``root/<subdir>/video``
    (an absolute ``video`` is tried by its tails under ``root``, as eval's ``--roots``)."""
    tried: list[Path] = []
    for base in [root, *(root / d for d in subdirs if d)]:
        for c in video_candidates(video, base):
            if c not in tried:
                tried.append(c)
    for c in tried:
        if c.is_file():
            return os.path.abspath(c), [str(t) for t in tried]
    return None, [str(t) for t in tried]


def _load_json_items(path: Path, res: ReadResult) -> list[tuple[str, str, Any]]:
    """``(where, position, item)`` of every annotation item of a file. A JSON list (the file starts
    with ``[``; not a ``.jsonl`` file) item by item: ``where`` = ``file[item]`` (0-based); anything
    else as jsonl, line by line: ``where`` = ``file:line``, and a line that is not JSON is counted as
    ``malformed`` with its ``file:line``. ``position`` is the item index or the line number.

    Raises:
        ValueError: a JSON list file that does not parse, or a multi-line ``.json`` file that is one
        JSON value but not a list (names the file and what it holds).
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
        return [(f"{path}[{k}]", str(k), item) for k, item in enumerate(data)]
    elif path.suffix == ".json" and "\n" in text.strip():
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # not one JSON value: one item per line
        else:
            raise ValueError(f"{path}: expected a JSON list of annotation items (or one item per line), got one "
                             f"{type(data).__name__}")
    out = []
    for lineno, obj in json_lines(path, what="annotation"):
        if isinstance(obj, JsonlFormatError):
            res.skip("malformed", str(obj))
            continue
        out.append((f"{path}:{lineno}", str(lineno), obj))
    return out


# ---------------------------------------------------------------------------------------------
# LLaVA-Video-178K
# ---------------------------------------------------------------------------------------------


def llava_file_kind(path: str | os.PathLike) -> str:
    """``mcq`` / ``open`` / ``caption`` from a LLaVA-Video-178K file name (the dataset card's
    split globs: ``*mc*``, ``*oe*``, ``*cap*``; LLaVA-Hound's ``*_qa_*`` is open-ended).

    Raises:
        ValueError: a name that says none of these (pass ``kind`` to the reader).
    """
    name = Path(path).name
    for mark, kind in _LLAVA_KIND:
        if mark in name:
            return kind
    raise ValueError(f"cannot tell the kind of LLaVA-Video-178K file {name!r}: its name has none of "
                     f"{[m for m, _ in _LLAVA_KIND]} (the dataset card's mc/oe/cap files); give the kind explicitly")


def parse_llava_mcq(human: str, gpt: str) -> tuple[str, list[str], str, str]:
    """``(question, options, answer_letter, instruction)`` of one LLaVA-Video-178K multiple-choice
    turn: the human text (media token removed) is the question lines, then one option per line
    (``A. x``, ``(A) x``, ``A) x``; an ``Options:`` line before them is dropped), then instruction
    lines (kept apart); the gpt text starts with the answer letter (``B``, ``B.``, ``(B) ...``).
    Options come back as ``"A. x"`` lines.

    Raises:
        ValueError: no options, options not lettered A, B, C... in order, no question, or an
            answer that is not one of the option letters (the message quotes it).
    """
    lines = [ln for ln in _MEDIA_TOKEN.sub("", human).strip().splitlines()]
    first = next((k for k, ln in enumerate(lines) if _OPTION_LINE.match(ln)), None)
    if first is None:
        raise ValueError(f"no option lines ('A. ...') in the question {human[:120]!r}")
    question_lines = [ln for ln in lines[:first] if ln.strip()]
    if question_lines and question_lines[-1].strip().rstrip(":").lower() in ("options", "choices"):
        question_lines.pop()
    question = "\n".join(question_lines).strip()
    if not question:
        raise ValueError(f"no question text before the options in {human[:120]!r}")
    options, k = [], first
    while k < len(lines) and _OPTION_LINE.match(lines[k]):
        m = _OPTION_LINE.match(lines[k])
        options.append((m.group(1), m.group(2)))
        k += 1
    letters = [a for a, _ in options]
    if letters != [chr(ord("A") + i) for i in range(len(letters))] or len(letters) < 2:
        raise ValueError(f"options must be lettered A, B, C, ... in order (at least two), got {letters}")
    m = _ANSWER_LETTER.match(gpt or "")
    if not m or m.group(1) not in letters:
        raise ValueError(f"answer {(gpt or '')[:60]!r} does not start with one of the option letters {letters}")
    instruction = "\n".join(ln for ln in lines[k:] if ln.strip()).strip()
    return question, [f"{a}. {t}" for a, t in options], m.group(1), instruction


def read_llava_video(paths: str | os.PathLike | Sequence[str | os.PathLike], root: str | os.PathLike, *,
                     kind: str | None = None, max_questions: int | None = None) -> ReadResult:
    """Questions of LLaVA-Video-178K annotation files (schema: the module docstring).

    Args:
        paths: annotation files or glob patterns (``*_mc_*``, ``*_oe_*``; ``*_cap_*`` files are
            counted and skipped).
        root: the dataset folder; a ``video`` resolves to ``root/video``, else
            ``root/<data_source>/video``, else ``root/<annotation file's folder name>/video``.
        kind: ``mcq`` / ``open`` for every file (default: from each file's name).
        max_questions: stop after this many questions (None: all).

    Returns:
        A :class:`ReadResult`; lines: ``source`` ``llava_video#<data_source>/<mcq|open>/<id>/<turn>``,
        ``category`` the ``data_source``, ``provenance`` (dataset, file, id, turn, data_source, the
        multiple-choice instruction dropped).

    Raises:
        FileNotFoundError: a missing file or root; ValueError: a file that is not a JSON list, an
        unknown kind.
    """
    if kind is not None and kind not in ("mcq", "open"):
        raise ValueError(f"LLaVA-Video-178K kind must be 'mcq' or 'open', got {kind!r}")
    res = ReadResult("llava_video")
    base = _root(root, "llava_video")
    for path in expand_paths(paths, "LLaVA-Video-178K"):
        fkind = kind or llava_file_kind(path)
        for where, pos, item in _load_json_items(path, res):
            if max_questions is not None and len(res.samples) >= max_questions:
                return res
            res.items += 1
            if fkind == "caption":
                res.skip("caption_not_qa", f"{where}: a caption item (the *cap* split), not a question")
                continue
            if not (isinstance(item, dict) and isinstance(item.get("video"), str) and item["video"].strip()
                    and isinstance(item.get("conversations"), list)):
                res.skip("malformed", f"{where}: needs 'video' (string) and 'conversations' (list)")
                continue
            ds = str(item.get("data_source") or path.parent.name)
            item_id = str(item.get("id", pos))
            video, tried = _resolve(base, item["video"], (ds, path.parent.name))
            conv = item["conversations"]
            pairs = [(conv[i], conv[i + 1]) for i in range(0, len(conv) - 1, 2)]
            if not pairs:
                res.skip("malformed", f"{where}: no human/gpt turn pair")
                continue
            for turn, (h, g) in enumerate(pairs):
                w = f"{where}#{turn}"
                if not (isinstance(h, dict) and isinstance(g, dict) and h.get("from") == "human"
                        and g.get("from") == "gpt" and isinstance(h.get("value"), str) and isinstance(g.get("value"), str)):
                    res.skip("malformed", f"{w}: turns must alternate human/gpt with string values")
                    continue
                if video is None:
                    res.missing.append({"where": w, "video": item["video"], "tried": tried})
                    continue
                prov = {"dataset": DATASET_TITLES["llava_video"], "file": str(path), "id": item_id, "turn": turn,
                        "data_source": ds, "video": item["video"]}
                try:
                    if fkind == "mcq":
                        question, options, answer, instruction = parse_llava_mcq(h["value"], g["value"])
                        if instruction:
                            prov["instruction"] = instruction
                        sample = RLSample(video, question, answer, "mcq", tuple(options), ds,
                                          f"llava_video#{ds}/{fkind}/{item_id}/{turn}", f"llava_video:{ds}:{fkind}:{item_id}:{turn}",
                                          prov, w)
                    else:
                        question = _MEDIA_TOKEN.sub("", h["value"]).strip()
                        sample = RLSample(video, question, g["value"].strip(), "open", None, ds,
                                          f"llava_video#{ds}/{fkind}/{item_id}/{turn}", f"llava_video:{ds}:{fkind}:{item_id}:{turn}",
                                          prov, w)
                except (ValueError, RLDataError) as e:
                    res.skip("bad_question", f"{w}: {e}")
                    continue
                res.add(sample, f"llava_video:{item['video']}")
                if max_questions is not None and len(res.samples) >= max_questions:
                    return res
    return res


# ---------------------------------------------------------------------------------------------
# CG-Bench
# ---------------------------------------------------------------------------------------------


def read_cgbench(paths: str | os.PathLike | Sequence[str | os.PathLike], root: str | os.PathLike, *,
                 form: str = "both", max_questions: int | None = None) -> ReadResult:
    """Questions of CG-Bench annotation files (schema: the module docstring).

    Args:
        paths: ``cgbench.json`` / ``cgbench_mini.json`` / ``cgbench_hard.json`` (or patterns).
        root: the benchmark folder: ``root/<video_uid>.mp4`` or ``root/cg_videos_720p/<video_uid>.mp4``.
        form: ``mcq`` (``choices`` + ``right_answer``), ``open`` (``answer``, the benchmark's
            open-ended task) or ``both`` (two questions per item).
        max_questions: stop after this many questions.

    Returns:
        A :class:`ReadResult`; lines: ``source`` ``cgbench#<qid>`` (``#<qid>/open`` for the
        open form), ``category`` the ``sub_category``, ``provenance`` (qid, domain, duration_s,
        clue_intervals_s). An item whose ``right_answer`` does not pick its ``answer`` among the
        ``choices`` is skipped as ``inconsistent``.

    Raises:
        FileNotFoundError: a missing file or root; ValueError: a bad ``form`` or a file that is not
        a JSON list.
    """
    if form not in CGBENCH_FORMS:
        raise ValueError(f"CG-Bench form must be one of {CGBENCH_FORMS}, got {form!r}")
    res = ReadResult("cgbench")
    base = _root(root, "cgbench")
    forms = ("mcq", "open") if form == "both" else (form,)
    for path in expand_paths(paths, "CG-Bench"):
        for where, pos, item in _load_json_items(path, res):
            if max_questions is not None and len(res.samples) >= max_questions:
                return res
            res.items += 1
            need = {"qid": (int, str), "video_uid": str, "question": str, "answer": str, "choices": list,
                    "right_answer": str}
            bad = [k for k, t in need.items() if not isinstance(item, dict) or not isinstance(item.get(k), t)
                   or isinstance(item.get(k), bool)]
            if bad:
                res.skip("malformed", f"{where}: missing or mistyped fields {bad}")
                continue
            choices = item["choices"]
            letter = item["right_answer"].strip().upper()
            k = ord(letter) - ord("A") if len(letter) == 1 and "A" <= letter <= "Z" else -1
            if not (0 <= k < len(choices)) or not all(isinstance(c, str) and c.strip() for c in choices):
                res.skip("malformed", f"{where}: right_answer {item['right_answer']!r} must pick one of "
                                      f"{len(choices)} non-empty choices")
                continue
            if choices[k].strip().casefold() != item["answer"].strip().casefold():
                res.skip("inconsistent", f"{where}: right_answer {letter} is {choices[k]!r} but answer is "
                                         f"{item['answer']!r}")
                continue
            uid = item["video_uid"]
            video, tried = _resolve(base, f"{uid}.mp4", ("cg_videos_720p",))
            qid = str(item["qid"])
            if video is None:
                res.missing.append({"where": where, "video": f"{uid}.mp4", "tried": tried})
                continue
            prov = {"dataset": DATASET_TITLES["cgbench"], "file": str(path), "qid": item["qid"], "video_uid": uid,
                    "domain": item.get("domain"), "duration_s": item.get("duration"),
                    "clue_intervals_s": item.get("clue_intervals")}
            cat = str(item.get("sub_category") or "") or None
            for f in forms:
                try:
                    if f == "mcq":
                        s = RLSample(video, item["question"].strip(), letter, "mcq", tuple(c.strip() for c in choices),
                                     cat, f"cgbench#{qid}", f"cgbench:{qid}:mcq", {**prov, "form": "mcq"}, where)
                    else:
                        s = RLSample(video, item["question"].strip(), item["answer"].strip(), "open", None, cat,
                                     f"cgbench#{qid}/open", f"cgbench:{qid}:open", {**prov, "form": "open"}, where)
                except RLDataError as e:
                    res.skip("bad_question", f"{where}: {e}")
                    continue
                res.add(s, f"cgbench:{uid}")
                if max_questions is not None and len(res.samples) >= max_questions:
                    return res
    return res


# ---------------------------------------------------------------------------------------------
# HD-VILA-100M
# ---------------------------------------------------------------------------------------------


def parse_span_s(span: Any) -> tuple[float, float]:
    """``(start_s, end_s)`` of an HD-VILA-100M clip span ``["HH:MM:SS.mmm", "HH:MM:SS.mmm"]``.

    Raises:
        ValueError: not two such strings, or end before start.
    """
    if not (isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(t, str) for t in span)):
        raise ValueError(f"span must be two 'HH:MM:SS.mmm' strings, got {span!r:.80}")
    out = []
    for t in span:
        m = _SPAN.match(t.strip())
        if not m:
            raise ValueError(f"span time {t!r} is not HH:MM:SS.mmm")
        out.append(int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)))
    if out[1] < out[0]:
        raise ValueError(f"span {span} ends before it starts")
    return out[0], out[1]


def read_hdvila(paths: str | os.PathLike | Sequence[str | os.PathLike], root: str | os.PathLike, *,
                unit: str = "video", max_videos: int | None = None) -> ReadResult:
    """Videos of HD-VILA-100M metadata files (schema: the module docstring).

    Args:
        paths: ``hdvila_part*.jsonl`` files (or patterns).
        root: the download folder: ``root/<video_id>.mp4`` (``.mkv``, ``.webm``; ``unit="video"``),
            or ``root/<clip_id>`` / ``root/<video_id>/<clip_id>`` (``unit="clip"``).
        unit: ``video`` (the whole video, EVA's long-video setting) or ``clip`` (cut clips).
        max_videos: stop after this many videos found.

    Returns:
        A :class:`ReadResult` with ``videos`` (no questions); a video id seen twice is counted
        (``duplicate``) once.

    Raises:
        FileNotFoundError: a missing file or root; ValueError: a bad ``unit``.
    """
    if unit not in HDVILA_UNITS:
        raise ValueError(f"HD-VILA-100M unit must be one of {HDVILA_UNITS}, got {unit!r}")
    res = ReadResult("hdvila")
    base = _root(root, "hdvila")
    seen: set[str] = set()
    for path in expand_paths(paths, "HD-VILA-100M"):
        for where, pos, item in _load_json_items(path, res):
            if max_videos is not None and len(res.videos) >= max_videos:
                return res
            res.items += 1
            if not (isinstance(item, dict) and isinstance(item.get("video_id"), str) and item["video_id"].strip()
                    and isinstance(item.get("clip", []), list)):
                res.skip("malformed", f"{where}: needs 'video_id' (string) and 'clip' (list)")
                continue
            vid = item["video_id"]
            try:
                clips = [(c["clip_id"], parse_span_s(c["span"])) for c in item.get("clip", [])
                         if isinstance(c, dict) and isinstance(c.get("clip_id"), str)]
                if len(clips) != len(item.get("clip", [])):
                    raise ValueError("every clip needs a string 'clip_id' and a 'span'")
            except (KeyError, ValueError) as e:
                res.skip("malformed", f"{where}: {e}")
                continue
            units = [(vid, None)] if unit == "video" else [(cid, span) for cid, span in clips]
            for name, span in units:
                if name in seen:
                    res.skip("duplicate", f"{where}: {name} listed before")
                    continue
                seen.add(name)
                if unit == "video":
                    found, tried = None, []
                    for ext in HDVILA_EXTENSIONS:
                        found, t = _resolve(base, f"{vid}{ext}")
                        tried += t
                        if found:
                            break
                else:
                    found, tried = _resolve(base, name, (vid,))
                if found is None:
                    res.missing.append({"where": where, "video": name, "tried": tried})
                    continue
                entry = {"video": found, "video_id": vid, "url": item.get("url"), "clips": len(clips)}
                if span is not None:
                    entry.update(clip_id=name, span_s=list(span))
                res.videos.append(entry)
                if max_videos is not None and len(res.videos) >= max_videos:
                    return res
    return res


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """Files written by :func:`import_sources` and the per-source counts.

    Attributes:
        teacher_qa, rl_pool, enhance_videos, missing, report: paths written (``enhance_videos``
            only with HD-VILA-100M input).
        counts: source -> counts (:meth:`ReadResult.counts`, plus ``teacher_qa`` / ``rl_pool``).
        report_data: the report dict.
    """

    teacher_qa: Path
    rl_pool: Path
    enhance_videos: Path | None
    missing: Path
    report: Path
    counts: dict[str, dict[str, Any]]
    report_data: dict[str, Any] = field(repr=False, default_factory=dict)


def pool_side(group: str, rl_pool_fraction: float, seed: int = 0) -> str:
    """``"rl_pool"`` or ``"teacher"`` for a split key: a seeded SHA-1 of the key as a number in
    [0, 1) below ``rl_pool_fraction`` goes to the RL pool (stable across runs and machines)."""
    h = int.from_bytes(hashlib.sha1(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
    return "rl_pool" if h < rl_pool_fraction else "teacher"


def import_sources(
    out_dir: str | os.PathLike,
    roots: Mapping[str, str],
    *,
    llava_video: str | Sequence[str] | None = None,
    cgbench: str | Sequence[str] | None = None,
    hdvila: str | Sequence[str] | None = None,
    rl_pool_fraction: float = 0.5,
    seed: int = 0,
    cgbench_form: str = "both",
    hdvila_unit: str = "video",
    max_questions: int | None = None,
    max_videos: int | None = None,
) -> ImportResult:
    """Read the public datasets and write eva_fast's question sets (see the module docstring).

    Args:
        out_dir: output folder.
        roots: source name (``llava_video``, ``cgbench``, ``hdvila``) -> its video folder.
        llava_video, cgbench, hdvila: annotation files (or glob patterns) of each dataset given.
        rl_pool_fraction: share of annotation items (by video) that go to the RL question pool
            instead of the teacher's QA set, in [0, 1].
        seed: seed of that split.
        cgbench_form, hdvila_unit: see :func:`read_cgbench`, :func:`read_hdvila`.
        max_questions: per QA dataset, at most this many questions; max_videos: HD-VILA videos.

    Returns:
        An :class:`ImportResult`.

    Raises:
        ValueError: no dataset given, a dataset without its ``roots`` entry, a fraction outside
        [0, 1]; FileNotFoundError: a missing annotation file or video folder.
    """
    if not (0.0 <= rl_pool_fraction <= 1.0):
        raise ValueError(f"rl_pool_fraction must be in [0, 1], got {rl_pool_fraction!r}")
    given = {k: v for k, v in (("llava_video", llava_video), ("cgbench", cgbench), ("hdvila", hdvila)) if v}
    if not given:
        raise ValueError("no dataset given: pass LLaVA-Video-178K, CG-Bench and/or HD-VILA-100M annotation files")
    for name in given:
        if name not in roots:
            raise ValueError(f"--roots has no {name!r} entry (the {DATASET_TITLES[name]} video folder); "
                             f"it has {sorted(roots)}")
    results: dict[str, ReadResult] = {}
    if "llava_video" in given:
        results["llava_video"] = read_llava_video(given["llava_video"], roots["llava_video"], max_questions=max_questions)
    if "cgbench" in given:
        results["cgbench"] = read_cgbench(given["cgbench"], roots["cgbench"], form=cgbench_form,
                                          max_questions=max_questions)
    if "hdvila" in given:
        results["hdvila"] = read_hdvila(given["hdvila"], roots["hdvila"], unit=hdvila_unit, max_videos=max_videos)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sides: dict[str, list[RLSample]] = {"teacher": [], "rl_pool": []}
    counts: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        c = r.counts()
        per = Counter()
        for s, g in zip(r.samples, r.groups):
            side = pool_side(g, rl_pool_fraction, seed)
            sides[side].append(s)
            per[side] += 1
        if name != "hdvila":
            c.update(teacher_qa=per["teacher"], rl_pool=per["rl_pool"])
        counts[name] = c
        if r.missing:
            logger.warning("%s: %d question(s)/video(s) skipped, their video is not under %s (listed in %s)",
                           DATASET_TITLES[name], len(r.missing), roots[name], out / "import.missing.jsonl")
    teacher_qa, rl_pool = out / "teacher_qa.jsonl", out / "rl_pool.jsonl"
    write_rl_set(teacher_qa, sides["teacher"])
    write_rl_set(rl_pool, sides["rl_pool"])
    enhance = None
    if "hdvila" in results:
        enhance = out / "enhance_videos.txt"
        enhance.write_text("".join(v["video"] + "\n" for v in results["hdvila"].videos), encoding="utf-8")
        with open(out / "enhance_videos.jsonl", "w", encoding="utf-8") as f:
            for v in results["hdvila"].videos:
                f.write(json.dumps(v, ensure_ascii=False) + "\n")
    missing = out / "import.missing.jsonl"
    with open(missing, "w", encoding="utf-8") as f:
        for name, r in results.items():
            for m in r.missing:
                f.write(json.dumps({"source": name, **m}, ensure_ascii=False) + "\n")
    report = {
        "run": {"roots": {k: str(v) for k, v in roots.items() if k in results}, "rl_pool_fraction": rl_pool_fraction,
                "seed": seed, "cgbench_form": cgbench_form if "cgbench" in results else None,
                "hdvila_unit": hdvila_unit if "hdvila" in results else None, "max_questions": max_questions},
        "counts": counts,
        "written": {"teacher_qa": len(sides["teacher"]), "rl_pool": len(sides["rl_pool"]),
                    "teacher_qa_mcq": sum(s.type == "mcq" for s in sides["teacher"]),
                    "rl_pool_mcq": sum(s.type == "mcq" for s in sides["rl_pool"]),
                    "enhance_videos": len(results["hdvila"].videos) if "hdvila" in results else 0},
        "skip_examples": {f"{name}:{reason}": ex for name, r in results.items() for reason, ex in r.examples.items()},
        "files": {"teacher_qa": str(teacher_qa), "rl_pool": str(rl_pool), "enhance_videos": str(enhance) if enhance else None,
                  "missing": str(missing)},
    }
    jpath, _ = write_report(out / "import", "Dataset import", report)
    return ImportResult(teacher_qa, rl_pool, enhance, missing, jpath, counts, report)


__all__ = [
    "CGBENCH_FORMS",
    "DATASET_TITLES",
    "HDVILA_UNITS",
    "SOURCES",
    "ImportResult",
    "ReadResult",
    "expand_paths",
    "import_sources",
    "llava_file_kind",
    "parse_llava_mcq",
    "parse_span_s",
    "pool_side",
    "read_cgbench",
    "read_hdvila",
    "read_llava_video",
]
