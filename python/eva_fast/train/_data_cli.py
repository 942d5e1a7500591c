"""``eva-fast data ...``: build training data in the ``eva_fast.trajectory`` format (and the RL set).

    eva-fast data convert ask.json out/eval/videomme.jsonl --out sft.jsonl [--label auto] [--only-correct]
    eva-fast data teacher qa.jsonl --video-root videos --out out/teacher --base-url http://teacher:8000/v1
    eva-fast data kto-label out/teacher/teacher.trajectories.jsonl --out kto.jsonl --judge-base-url URL
    eva-fast data enhance --failures out/eval/*.jsonl --videos new_videos/ --rl-set rl.jsonl --out out/enhance \
        --base-url URL
    eva-fast data import --llava-video 'LLaVA-Video-178K/*/*_mc_*.json' --cgbench cgbench.json \
        --hdvila 'hdvila100m/hdvila_part*.jsonl' --roots roots.yaml --out out/data
    eva-fast data rl-set out/data/rl_pool.jsonl --backend transformers --model out/kto --out out/rl

This module is an entry point: printing and progress bars live here, the work in
:mod:`eva_fast.train.data`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from eva_fast._files import read_mapping
from eva_fast._jsonl import JsonlFormatError, json_lines
from eva_fast._subcommands import run_subcommand
from eva_fast.agent import AgentConfig, AgentLoop
from eva_fast.eval import CacheLockedError, PreflightError, parse_shard
from eva_fast.train._records import (
    RecordError,
    TrajectoryRecord,
    record_from_image_conversation,
    record_from_trajectory,
    write_records,
)
from eva_fast.train.data._common import (
    DEFAULT_ROUGE_THRESHOLD,
    PROMPT_DIR,
    backend_identity,
    make_backend,
    parse_key_values,
)
from eva_fast.train.data._enhance import QuestionWriter, aenhance, list_videos
from eva_fast.train.data._label import (
    DEFAULT_CHOSEN_FRACTION,
    EXTRA_REJECTIONS,
    LABEL_RECORD_SYSTEMS,
    FailureRules,
    GuessingJudge,
    alabel,
)
from eva_fast.train.data._rl_set import PAPER_MCQ_RATIO, abuild_rl_set, merge_rl_set
from eva_fast.train.data._sources import CGBENCH_FORMS, HDVILA_UNITS, import_sources
from eva_fast.train.data._teacher import PROMPT_FAMILIES, RECORD_SYSTEMS, TeacherPrompt, arun_teacher, load_experiences
from eva_fast.train.rewards import mcq_accuracy

USAGE = """usage: eva-fast data {import,convert,teacher,kto-label,rl-set,enhance} ...

  import     public datasets (LLaVA-Video-178K, CG-Bench, HD-VILA-100M annotation files) -> the
             teacher's QA set, the RL question pool and the enhance video list, videos resolved
             under --roots (missing ones reported and skipped)
  convert    trajectories (eva-fast ask --json, eval result files, jsonl of trajectories) or
             conversations with image files -> training records (eva_fast.trajectory jsonl)
  teacher    the agent loop with a teacher model over a QA set -> SFT records of the right
             trajectories (resumable, --shard i/n)
  kto-label  trajectories -> KTO records labelled chosen/rejected (paper: the teacher's wrong
             trajectories an LLM judge calls guessing vs resampled right ones, 63/37)
  rl-set     a model over a question pool -> its failure cases as the RL set (90 % open / 10 %
             multiple choice; resumable, --shard i/n, --merge)
  enhance    failure cases + unseen videos -> new open-ended questions appended to the RL set
"""


def _label(mode: str, record: Any) -> bool | None:
    if mode == "none":
        return None
    if mode in ("chosen", "rejected"):
        return mode == "chosen"
    # auto: right answer = chosen (needs gt)
    if record.gt is None:
        return None

    return mcq_accuracy(record.answer or "", record.gt) == 1.0


def cmd_convert(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="eva-fast data convert", description="convert trajectories into training records")
    p.add_argument("inputs", nargs="+", help="ask --json files, eval result jsonl, trajectory jsonl, or image conversations")
    p.add_argument("--out", required=True, help="output jsonl (eva_fast.trajectory records)")
    p.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    p.add_argument("--label", choices=["auto", "chosen", "rejected", "none"], default="none",
                   help="KTO label: auto = right answer (needs gt) is chosen")
    p.add_argument("--only-correct", action="store_true", help="keep only trajectories whose answer equals gt")
    p.add_argument("--relative-to", help="write video paths relative to this folder (the training video_root)")
    p.add_argument("--source", help="provenance written into every record")
    p.add_argument("--skip-bad", action="store_true", help="skip inputs that cannot be converted (reported) instead of stopping")
    a = p.parse_args(argv)

    records, bad = [], []
    for name in a.inputs:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"input {name!r} does not exist")
        for n, obj in json_lines(path, what="input", single_object=True):
            where = f"{path}:{n}"
            if isinstance(obj, JsonlFormatError):
                raise ValueError(f"{where}: not JSON ({obj.detail})")
            try:
                if isinstance(obj, dict) and obj.get("format") == "eva_fast.trajectory":
                    rec = TrajectoryRecord.from_dict(obj, where, str(path.resolve().parent))
                elif isinstance(obj, dict) and ("turns" in obj or "trajectory" in obj):
                    rec = record_from_trajectory(obj)
                    rec.source = rec.source or where
                elif isinstance(obj, dict) and "messages" in obj:
                    rec = record_from_image_conversation(obj, base_dir=path.resolve().parent)
                else:
                    raise RecordError(f"{where}: not a trajectory, eval record, record or conversation")
                if a.relative_to:
                    rec.video = os.path.relpath(os.path.abspath(rec.video), os.path.abspath(a.relative_to))
                if a.only_correct:
                    if rec.gt is None or mcq_accuracy(rec.answer or "", rec.gt) != 1.0:
                        continue
                lab = _label(a.label, rec)
                if lab is not None:
                    rec.label = lab
                if a.source:
                    rec.source = a.source
                records.append(rec)
            except (RecordError, ValueError, KeyError, TypeError) as e:
                if not a.skip_bad:
                    raise ValueError(f"{where}: {e}") from e
                bad.append(f"{where}: {e}")
    n = write_records(a.out, records, append=a.append)
    summary = {"out": a.out, "records": n, "skipped": len(bad),
               "labels": {"chosen": sum(1 for r in records if r.label is True),
                          "rejected": sum(1 for r in records if r.label is False)}}
    print(json.dumps(summary))
    for line in bad[:20]:
        print(f"skipped: {line}", file=sys.stderr)
    return 0


def _add_backend_args(p: argparse.ArgumentParser, prefix: str = "", what: str = "teacher") -> None:
    d = prefix.replace("-", "_")
    p.add_argument(f"--{prefix}backend", dest=f"{d}backend", default="openai",
                   help=f"{what} backend: openai (any OpenAI-compatible server), transformers, or package.module:Class")
    p.add_argument(f"--{prefix}base-url", dest=f"{d}base_url", help=f"{what} server URL with /v1 (openai backend)")
    p.add_argument(f"--{prefix}model", dest=f"{d}model",
                   help=f"{what} model: served model name (openai; default: the server's first) or checkpoint path")
    p.add_argument(f"--{prefix}backend-arg", dest=f"{d}backend_arg", action="append", metavar="KEY=VALUE",
                   help=f"extra {what} backend argument (repeatable), e.g. max_concurrency=64, image_format=jpeg")


def _backend(a: argparse.Namespace, prefix: str = "") -> tuple[Any, dict[str, Any]]:
    name, url, model = getattr(a, f"{prefix}backend"), getattr(a, f"{prefix}base_url"), getattr(a, f"{prefix}model")
    kw = parse_key_values(getattr(a, f"{prefix}backend_arg"), f"--{prefix.replace('_', '-')}backend-arg")
    if name == "openai" and url is None and "base_url" not in kw:
        raise ValueError(f"--{prefix.replace('_', '-')}base-url is required with the openai backend")
    return make_backend(name, base_url=url, model=model, backend_args=kw), backend_identity(name, model, kw)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or not total:
        return None
    from tqdm.auto import tqdm  # optional progress bars

    return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True, file=sys.stderr)


class _Progress:
    """A ``(done, total)`` progress callback drawing a bar (opened on the first call with work)."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = _bar(total, self.desc, self.enabled)
            if self.bar is not None:
                self.bar.update(done)
        else:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _RunProgress:
    """The eval runner's ``on_start(todo, cached)`` / ``on_record(record)`` callbacks of a run (the
    teacher's, the RL set's): a line with what is cached and to run, then a bar of the episodes."""

    def __init__(self, name: str, unit: str, enabled: bool) -> None:
        self.name, self.unit, self.enabled, self.bar = name, unit, enabled, None

    def on_start(self, todo: int, cached: int) -> None:
        print(f"[{self.name}] {cached} {self.unit} already done, {todo} to run", file=sys.stderr)
        self.bar = _bar(todo, self.name, self.enabled)

    def on_record(self, record: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_teacher(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="eva-fast data teacher",
        description="Run the agent loop with a teacher model over a source QA set and keep the right trajectories as "
                    f"SFT records. Prompt templates: {PROMPT_DIR} (copy, edit, pass --prompt-dir). Rerun the same "
                    "command to resume.")
    p.add_argument("qa", help="source QA set: jsonl of video, question, answer, optional options/type/category/source")
    p.add_argument("--video-root", help="folder the QA set's video paths are relative to (default: the QA file's folder)")
    p.add_argument("--out", required=True, help="output folder")
    _add_backend_args(p)
    p.add_argument("--prompts", default="workflow,reflective",
                   help=f"prompt families, comma-separated, from {','.join(PROMPT_FAMILIES)} ('none' for none)")
    p.add_argument("--student-prompt", action="store_true",
                   help="no teacher prompt: EVA's trained system turn (resample the SFT model or the policy; "
                        "implies --prompts none)")
    p.add_argument("--prompt-dir", help="folder with edited prompt templates (same file names as the packaged ones)")
    p.add_argument("--experiences", help="past success experiences: jsonl of training records or a text file "
                   "(one per paragraph); needed by the 'experience' family")
    p.add_argument("--num-experiences", type=int, default=3, help="experiences shown per question")
    p.add_argument("--samples-per-question", type=int, default=1, help="trajectories per question (resampling)")
    p.add_argument("--temperature", type=float, default=0.0, help="teacher sampling temperature")
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--rouge-threshold", type=float, default=DEFAULT_ROUGE_THRESHOLD,
                   help="open-ended answers count as right at this mean ROUGE-1/2/L F1 or above")
    p.add_argument("--no-require-structure", action="store_true",
                   help="keep right trajectories even when replies lack the summary/planning/reflection structure")
    p.add_argument("--record-system", choices=RECORD_SYSTEMS, default="student",
                   help="system turn of the SFT records: the student's (default) or the teacher prompt")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--shard", help="i/n: this process's share of the trajectories")
    p.add_argument("--concurrency", type=int, default=8, help="trajectories in flight")
    p.add_argument("--seed", type=int, default=0, help="seed of the experiences chosen per question")
    p.add_argument("--retry-errors", action="store_true", help="run again the trajectories that stopped on an error")
    p.add_argument("--skip-missing", action="store_true", help="run the questions whose videos exist, skip the others")
    p.add_argument("--allow-config-change", action="store_true", help="resume even though settings changed")
    p.add_argument("--name", default="teacher", help="output file stem (default teacher)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    families = () if a.student_prompt else tuple(f for f in a.prompts.split(",") if f and f != "none")
    experiences = tuple(load_experiences(a.experiences)) if a.experiences else ()
    prompt = TeacherPrompt(families, a.prompt_dir, experiences, a.num_experiences, a.seed, a.student_prompt)
    shard = parse_shard(a.shard) if a.shard else None
    backend, ident = _backend(a)
    config = AgentConfig(max_turns=a.max_turns, max_new_tokens=a.max_new_tokens, temperature=a.temperature)
    loop = AgentLoop(backend, config)
    progress = _RunProgress(a.name, "trajectory(ies)", not a.no_progress)
    video_root = a.video_root or str(Path(a.qa).resolve().parent)
    try:
        res = asyncio.run(arun_teacher(
            loop, a.qa, video_root, a.out, prompt=prompt, samples_per_question=a.samples_per_question, limit=a.limit,
            shard=shard, concurrency=a.concurrency, rouge_threshold=a.rouge_threshold,
            require_structure=not a.no_require_structure, record_system=a.record_system, retry_errors=a.retry_errors,
            skip_missing=a.skip_missing, allow_config_change=a.allow_config_change,
            run_info={**ident, "agent_config": config.to_dict()}, stem=a.name, on_start=progress.on_start,
            on_record=progress.on_record))
    except PreflightError as e:
        print(f"eva-fast data teacher: {e}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    c = res.report["counts"]
    print(f"[{a.name}] {c['trajectories']} trajectories, {c['finished']} finished, {c['right']} right, {c['kept']} kept "
          f"(accept rate {c['accept_rate']}); rejected: {res.report['rejected']}", file=sys.stderr)
    print(json.dumps({"sft": str(res.sft_path), "trajectories": str(res.trajectories_path),
                      "report": str(res.report_path), **c}))
    return 0


def cmd_kto_label(argv: list[str]) -> int:
    d = FailureRules()
    p = argparse.ArgumentParser(
        prog="eva-fast data kto-label",
        description="Label trajectories chosen/rejected for KTO as the paper does (§3.2): rejected = the teacher's "
                    "wrong trajectories an LLM judge calls guessing; chosen = re-sampled successful trajectories; the "
                    "mix brought to the target chosen fraction (0.63). Stricter rules are opt-in "
                    f"(--extra-rejections {','.join(EXTRA_REJECTIONS)}).")
    p.add_argument("inputs", nargs="*", help="files giving both chosen and rejected samples: teacher *.trajectories.jsonl, "
                   "training records, eval result files, or trajectory jsonl (GRPO rollout dumps)")
    p.add_argument("--rejected-from", nargs="+", default=[], metavar="FILE",
                   help="files whose wrong trajectories are the rejected candidates (the teacher's *.trajectories.jsonl)")
    p.add_argument("--chosen-from", nargs="+", default=[], metavar="FILE",
                   help="files whose right trajectories are chosen (a resampling run's *.sft.jsonl)")
    p.add_argument("--out", required=True, help="output jsonl of labelled records")
    p.add_argument("--extra-rejections", default="none",
                   help=f"comma-separated opt-in rejections beyond the paper's: {', '.join(EXTRA_REJECTIONS)} "
                        "(default none)")
    p.add_argument("--chosen-fraction", type=float, default=DEFAULT_CHOSEN_FRACTION,
                   help="target share of chosen samples in the output (paper: 0.63)")
    p.add_argument("--no-balance", action="store_true", help="keep every labelled sample (report the mix only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rouge-threshold", type=float, default=DEFAULT_ROUGE_THRESHOLD)
    p.add_argument("--type", choices=["mcq", "open"], help="question type of inputs that do not say (default: inferred)")
    p.add_argument("--record-system", choices=LABEL_RECORD_SYSTEMS, default="student",
                   help="system turn of the written records: the student's (default) or as in the input")
    p.add_argument("--dense-max-fps", type=float, default=d.dense_max_fps,
                   help="dense_short_window: a call is 'dense' above this many frames per second of its window ...")
    p.add_argument("--dense-min-frames", type=int, default=d.dense_min_frames, help="... with at least this many frames")
    p.add_argument("--sparse-min-window-s", type=float, default=d.sparse_min_window_s,
                   help="sparse_long_window: every call covers at least this many seconds ...")
    p.add_argument("--sparse-max-spacing-s", type=float, default=d.sparse_max_spacing_s,
                   help="... with more than this many seconds between frames")
    _add_backend_args(p, "judge-", "judge")
    p.add_argument("--no-judge", action="store_true", help="no LLM judge (needs --extra-rejections wrong_answer)")
    p.add_argument("--prompt-dir", help="folder with an edited judge_guessing.txt")
    p.add_argument("--concurrency", type=int, default=16, help="judge requests in flight")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    inputs = [*a.inputs, *a.rejected_from, *a.chosen_from]
    roles = ["both"] * len(a.inputs) + ["rejected"] * len(a.rejected_from) + ["chosen"] * len(a.chosen_from)
    if not inputs:
        raise ValueError("no inputs: give trajectory files, --rejected-from FILE and/or --chosen-from FILE")
    rules = FailureRules(a.dense_max_fps, a.dense_min_frames, a.sparse_min_window_s, a.sparse_max_spacing_s)
    judge, ident = None, None
    if not a.no_judge:
        if a.judge_backend == "openai" and a.judge_base_url is None:
            raise ValueError("give the judge server with --judge-base-url URL, or pass --no-judge")
        backend, ident = _backend(a, "judge_")
        judge = GuessingJudge(backend, a.prompt_dir)
    on_judged = _Progress("judge", not a.no_progress)
    try:
        report = asyncio.run(alabel(inputs, a.out, judge=judge, rules=rules, chosen_fraction=a.chosen_fraction,
                                    balance=not a.no_balance, seed=a.seed, rouge_threshold=a.rouge_threshold,
                                    qtype=a.type, concurrency=a.concurrency, judge_identity=ident, on_judged=on_judged,
                                    roles=roles, extra_rejections=a.extra_rejections, record_system=a.record_system))
    finally:
        on_judged.close()
    mix = report["label_mix"]["written"]
    print(f"[kto-label] {report['counts']['inputs']} inputs, {report['counts']['unusable']} unusable, "
          f"{report['counts']['unused']} unused; written {mix['chosen']} chosen / {mix['rejected']} rejected; rejected "
          f"by reason {report['rejected_by_reason']}; recommended weights {report['recommended_kto_weights']}",
          file=sys.stderr)
    print(json.dumps({"out": a.out, **report["counts"], **mix}))
    return 0


def cmd_enhance(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="eva-fast data enhance",
        description="Data-enhanced GRPO: the policy's failures (eval results, GRPO rollout dumps) become in-context "
                    "examples for a teacher that writes new open-ended QA on unseen videos; validated questions are "
                    "appended to the RL set. Rerun the same command to resume.")
    p.add_argument("--failures", nargs="+", required=True, help="eval result files and/or GRPO rollout dumps (jsonl)")
    p.add_argument("--videos", required=True, help="folder of candidate videos, or a text file with one path per line")
    p.add_argument("--rl-set", required=True, help="the RL set to append to (jsonl; created when missing)")
    p.add_argument("--video-root", help="the RL set's video root (new lines get paths relative to it)")
    p.add_argument("--out", required=True, help="output folder (cache, accepted lines, report)")
    _add_backend_args(p)
    p.add_argument("--examples", type=int, default=3, help="failure cases per prompt")
    p.add_argument("--questions-per-video", type=int, default=3)
    p.add_argument("--frames", type=int, default=8, help="frames shown per video (evenly over its length)")
    p.add_argument("--resize", type=float, default=0.5, help="frame scale")
    p.add_argument("--max-answer-words", type=int, default=8)
    p.add_argument("--self-check", action="store_true", help="ask the teacher to answer each new question again")
    p.add_argument("--self-check-threshold", type=float, default=DEFAULT_ROUGE_THRESHOLD)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--rouge-threshold", type=float, default=DEFAULT_ROUGE_THRESHOLD,
                   help="failures: open-ended answers below this mean ROUGE are wrong")
    p.add_argument("--type", choices=["mcq", "open"], help="question type of failure inputs that do not say")
    p.add_argument("--limit-videos", type=int, help="use only the first N unseen videos")
    p.add_argument("--concurrency", type=int, default=8, help="videos in flight")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-name", help="provenance tag (default: the --out folder's name)")
    p.add_argument("--prompt-dir", help="folder with edited enhance_*.txt templates")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    backend, ident = _backend(a)
    writer = QuestionWriter(backend, prompt_dir=a.prompt_dir, nframes=a.frames, resize=a.resize,
                            questions_per_video=a.questions_per_video, max_answer_words=a.max_answer_words,
                            self_check=a.self_check, self_check_threshold=a.self_check_threshold,
                            temperature=a.temperature)
    on_video = _Progress("enhance", not a.no_progress)
    try:
        report = asyncio.run(aenhance(a.failures, list_videos(a.videos), a.rl_set, a.out, writer,
                                      video_root=a.video_root, examples_per_prompt=a.examples,
                                      limit_videos=a.limit_videos, concurrency=a.concurrency, seed=a.seed,
                                      run_name=a.run_name, teacher_identity=ident, rouge_threshold=a.rouge_threshold,
                                      qtype=a.type, on_video=on_video))
    finally:
        on_video.close()
    q = report["questions"]
    print(f"[enhance] {report['failure_cases']['failures']} failure cases; {report['videos']['unseen']} unseen videos; "
          f"{q['generated']} questions written, {q['accepted']} accepted, {q['appended_to_rl_set']} appended to "
          f"{a.rl_set}", file=sys.stderr)
    print(json.dumps({"rl_set": a.rl_set, **q}))
    return 0


def cmd_import(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="eva-fast data import",
        description="Read the public datasets of EVA's training (LLaVA-Video-178K and CG-Bench questions, HD-VILA-100M "
                    "videos) into the teacher's QA set (teacher_qa.jsonl), the RL question pool (rl_pool.jsonl) and "
                    "the enhance video list (enhance_videos.txt). Videos resolve under --roots; missing ones are "
                    "reported (import.missing.jsonl) and skipped with counts.")
    p.add_argument("--llava-video", nargs="+", metavar="FILE", help="LLaVA-Video-178K *_mc_*/*_oe_* json files (globs)")
    p.add_argument("--cgbench", nargs="+", metavar="FILE", help="CG-Bench cgbench.json (or _mini/_hard)")
    p.add_argument("--hdvila", nargs="+", metavar="FILE", help="HD-VILA-100M hdvila_part*.jsonl")
    p.add_argument("--roots", required=True,
                   help="YAML/JSON mapping llava_video / cgbench / hdvila -> that dataset's video folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rl-pool-fraction", type=float, default=0.5,
                   help="share of annotation items (by video) for the RL pool instead of the teacher (default 0.5)")
    p.add_argument("--cgbench-form", choices=CGBENCH_FORMS, default="both",
                   help="CG-Bench questions as multiple choice, open-ended, or both (default)")
    p.add_argument("--hdvila-unit", choices=HDVILA_UNITS, default="video", help="whole videos (default) or cut clips")
    p.add_argument("--max-questions", type=int, help="at most this many questions per dataset")
    p.add_argument("--max-videos", type=int, help="at most this many HD-VILA-100M videos")
    p.add_argument("--seed", type=int, default=0, help="seed of the teacher / RL pool split")
    a = p.parse_args(argv)
    res = import_sources(a.out, read_mapping(a.roots, "dataset name -> video folder"), llava_video=a.llava_video,
                         cgbench=a.cgbench, hdvila=a.hdvila, rl_pool_fraction=a.rl_pool_fraction, seed=a.seed,
                         cgbench_form=a.cgbench_form, hdvila_unit=a.hdvila_unit, max_questions=a.max_questions,
                         max_videos=a.max_videos)
    for name, c in res.counts.items():
        print(f"[import] {name}: {c['items']} items, {c['questions']} questions ({c['mcq']} mcq, {c['open']} open), "
              f"{c['missing_videos']} skipped for a missing video ({c['missing_video_files']} files), other skips "
              f"{c['skipped']}" + (f", {c['videos']} videos" if "videos" in c else ""), file=sys.stderr)
    print(json.dumps({"teacher_qa": str(res.teacher_qa), "rl_pool": str(res.rl_pool),
                      "enhance_videos": None if res.enhance_videos is None else str(res.enhance_videos),
                      **res.report_data["written"],
                      "missing_videos": sum(c["missing_videos"] for c in res.counts.values())}))
    return 0


def cmd_rl_set(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="eva-fast data rl-set",
        description="The initial RL set (paper §3.3): run a model (the KTO checkpoint, any backend) over a question "
                    "pool with the agent loop, keep its failure cases, and write them with the paper's 90 %% open / "
                    "10 %% multiple-choice mix and provenance per line. Rerun the same command to resume.")
    p.add_argument("pool", nargs="?", help="question pool (RL-set jsonl, e.g. eva-fast data import's rl_pool.jsonl)")
    p.add_argument("--out", required=True, help="output folder (rl.jsonl, the run's files, reports)")
    p.add_argument("--merge", nargs="+", metavar="FILE", help="instead of running: mix these shards' *.failures.jsonl")
    p.add_argument("--video-root", help="folder the pool's relative video paths are under (default: the pool's folder)")
    _add_backend_args(p, what="model")
    p.add_argument("--mcq-ratio", type=float, default=PAPER_MCQ_RATIO, help="multiple-choice share (paper: 0.1)")
    p.add_argument("--no-mix", action="store_true", help="keep every failure case")
    p.add_argument("--samples-per-question", type=int, default=1, help="episodes per question")
    p.add_argument("--keep-below", type=float, default=1.0,
                   help="a failure case: its share of right episodes is below this (default 1.0: any wrong episode)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--rouge-threshold", type=float, default=DEFAULT_ROUGE_THRESHOLD)
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--shard", help="i/n: this process's share (writes its failures; mix them with --merge)")
    p.add_argument("--concurrency", type=int, default=8, help="episodes in flight")
    p.add_argument("--seed", type=int, default=0, help="seed of the mix")
    p.add_argument("--retry-errors", action="store_true")
    p.add_argument("--skip-missing", action="store_true")
    p.add_argument("--allow-config-change", action="store_true")
    p.add_argument("--name", default="policy", help="file stem of the run (default policy)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    mcq_ratio = None if a.no_mix else a.mcq_ratio
    if a.merge:
        res = merge_rl_set(a.merge, a.out, mcq_ratio=mcq_ratio, seed=a.seed)
    else:
        if a.pool is None:
            raise ValueError("give the question pool (or --merge shard failure files)")
        backend, ident = _backend(a)
        config = AgentConfig(max_turns=a.max_turns, max_new_tokens=a.max_new_tokens, temperature=a.temperature)
        progress = _RunProgress(a.name, "episode(s)", not a.no_progress)
        try:
            res = asyncio.run(abuild_rl_set(
                AgentLoop(backend, config), a.pool, a.video_root or str(Path(a.pool).resolve().parent), a.out,
                samples_per_question=a.samples_per_question, keep_below=a.keep_below, mcq_ratio=mcq_ratio, seed=a.seed,
                limit=a.limit, shard=parse_shard(a.shard) if a.shard else None, concurrency=a.concurrency,
                rouge_threshold=a.rouge_threshold, retry_errors=a.retry_errors, skip_missing=a.skip_missing,
                run_info={**ident, "agent_config": config.to_dict()}, allow_config_change=a.allow_config_change,
                stem=a.name, on_start=progress.on_start, on_record=progress.on_record))
        except PreflightError as e:
            print(f"eva-fast data rl-set: {e}", file=sys.stderr)
            return 1
        finally:
            progress.close()
    rep = res.report_data
    print(f"[rl-set] {res.counts}; written {rep.get('rl_set', rep.get('failure_cases'))}", file=sys.stderr)
    print(json.dumps({"rl_set": None if res.rl_set is None else str(res.rl_set),
                      "failures": None if res.failures is None else str(res.failures), **res.counts}))
    return 0


def main(argv: list[str] | None = None) -> int:
    cmds = {"import": cmd_import, "convert": cmd_convert, "teacher": cmd_teacher, "kto-label": cmd_kto_label,
            "rl-set": cmd_rl_set, "enhance": cmd_enhance}
    return run_subcommand("eva-fast data", USAGE, cmds, argv, (ValueError, FileNotFoundError, CacheLockedError))
