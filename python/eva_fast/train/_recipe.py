"""EVA's whole training recipe as one resumable pipeline (paper §3.2-§4.1): public datasets in,
SFT -> KTO -> RL set -> GRPO -> data-enhanced GRPO out. Command line: ``eva-fast recipe
run|status --config configs/recipe/eva.yaml``.

The ten stages, each one existing eva_fast step, each in its own folder ``<out_dir>/NN_<stage>``:

==  ===============  ==============================================================================
 1  teacher          read LLaVA-Video-178K / CG-Bench / HD-VILA-100M (:mod:`eva_fast.train.data._sources`)
                     into ``data/teacher_qa.jsonl``, ``data/rl_pool.jsonl``, ``data/enhance_videos.txt``;
                     the teacher runs the agent loop over the teacher QA set (eval runner)
 2  sft_data         keep the right, well-structured teacher trajectories as SFT records
                     (:func:`~eva_fast.train.data.select_teacher_data`)
 3  sft              ``eva-fast train sft``
 4  resample         successful trajectories re-sampled over the teacher QA set (teacher by default,
                     the SFT model with ``from: sft``)
 5  kto_labels       rejected = the teacher's wrong trajectories the judge calls guessing, chosen = the
                     resampled ones, 63/37 (:func:`~eva_fast.train.data.alabel`)
 6  kto              ``eva-fast train kto`` from the SFT model (also the reference)
 7  rl_set           the KTO model over the RL pool: its failure cases, 90 % open / 10 % MCQ
 8  grpo             ``eva-fast train grpo`` from the KTO model (rollout dumps on)
 9  enhance          GRPO's failures as examples; the teacher writes open QA on unseen HD-VILA
                     videos, appended to a copy of the RL set
10  grpo_enhanced    ``eva-fast train grpo`` again, from the GRPO model, on the enlarged set
==  ===============  ==============================================================================

Data stages run in this process (their caches make them resumable: a rerun repeats only the work
in flight when it stopped); training stages run as subprocesses (``launcher`` + ``-m eva_fast.cli
train ...``; under ``accelerate launch`` for several GPUs) and resume from the newest complete
``checkpoint-N`` in their folder. Every stage writes ``provenance.json``: stage, config hash (of its
resolved settings, the run ids of the stages it reads and the digests of external inputs), inputs,
outputs with digests, a summary of counts, attempts and times. A stage is *done* when that file says
complete, its config hash is the one the current config gives and its outputs exist; done stages
are skipped. A done stage whose hash changed is *stale*: the run stops and names it (``--redo-stale``
moves its folder aside and runs it again; nothing is deleted). A stage that started and did not
finish (killed, failed) is *partial* and resumes.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import eva_fast
from eva_fast._files import read_mapping, write_atomic
from eva_fast._logging import get_logger
from eva_fast.agent import AgentConfig, AgentLoop
from eva_fast.eval import load_records
from eva_fast.train._rl_data import load_rl_set
from eva_fast.train.data._common import backend_identity, make_backend
from eva_fast.train.data._enhance import QuestionWriter, aenhance, list_videos
from eva_fast.train.data._label import EXTRA_REJECTIONS, GuessingJudge, alabel
from eva_fast.train.data._rl_set import abuild_rl_set
from eva_fast.train.data._sources import CGBENCH_FORMS, HDVILA_UNITS, expand_paths, import_sources
from eva_fast.train.data._teacher import (
    TeacherPrompt,
    arun_teacher,
    arun_teacher_episodes,
    load_experiences,
    qa_set_name,
    select_teacher_data,
    teacher_meta,
)

logger = get_logger("train.recipe")

#: The stages in order (names are the config's ``stages`` keys and the ``{name}`` placeholders).
STAGES = ("teacher", "sft_data", "sft", "resample", "kto_labels", "kto", "rl_set", "grpo", "enhance", "grpo_enhanced")
TITLES = {
    "teacher": "teacher trajectories over LLaVA-Video-178K + CG-Bench questions",
    "sft_data": "SFT data: the right, well-structured teacher trajectories",
    "sft": "SFT (eva-fast train sft)",
    "resample": "resample successful trajectories (KTO chosen candidates)",
    "kto_labels": "KTO labels: judge-flagged guessing vs resampled successes, 63/37",
    "kto": "KTO (eva-fast train kto)",
    "rl_set": "RL set: the KTO model's failure cases, 90 % open / 10 % MCQ",
    "grpo": "GRPO (eva-fast train grpo)",
    "enhance": "data enhancement: new open QA on unseen HD-VILA-100M videos",
    "grpo_enhanced": "GRPO on the enhanced RL set",
}
TRAINING = {"sft": "sft", "kto": "kto", "grpo": "grpo", "grpo_enhanced": "grpo"}
PROVENANCE = "provenance.json"
FORMAT = "eva_fast.recipe.stage"
#: Settings that do not change a stage's result (left out of its config hash).
_UNHASHED = ("concurrency",)

_MODEL_KEYS = ("backend", "base_url", "model", "backend_args")
_DEFAULTS: dict[str, Any] = {
    "name": "eva",
    "out_dir": "out/recipe",
    "roots": None,
    "datasets": {"llava_video": None, "cgbench": None, "hdvila": None, "rl_pool_fraction": 0.5, "seed": 0,
                 "cgbench_form": "both", "hdvila_unit": "video", "max_questions": None, "max_videos": None},
    "models": {"teacher": {"backend": "openai", "base_url": None, "model": None, "backend_args": {}},
               "judge": "teacher"},
    "launcher": None,
    "stages": {
        "teacher": {"prompts": ["workflow", "reflective"], "prompt_dir": None, "experiences": None,
                    "num_experiences": 3, "samples_per_question": 1, "temperature": 0.0, "max_turns": 6,
                    "max_new_tokens": 2048, "limit": None, "agent_args": {}, "concurrency": 64, "seed": 0},
        "sft_data": {"rouge_threshold": 0.5, "require_structure": True},
        "sft": {"config": "configs/train/sft.yaml", "overrides": {}},
        "resample": {"from": "teacher", "backend": None, "base_url": None, "model": None, "backend_args": {},
                     "prompts": None, "samples_per_question": 4, "temperature": 0.7, "max_turns": 6,
                     "max_new_tokens": 2048, "require_structure": None, "rouge_threshold": 0.5, "limit": None,
                     "agent_args": {}, "concurrency": 64},
        "kto_labels": {"chosen_fraction": 0.63, "extra_rejections": [], "seed": 0, "rouge_threshold": 0.5,
                       "prompt_dir": None, "concurrency": 16},
        "kto": {"config": "configs/train/kto.yaml", "overrides": {}},
        "rl_set": {"backend": "transformers", "base_url": None, "model": "{kto}", "backend_args": {},
                   "samples_per_question": 1, "keep_below": 1.0, "mcq_ratio": 0.1, "seed": 0, "temperature": 0.0,
                   "max_turns": 6, "max_new_tokens": 2048, "rouge_threshold": 0.5, "limit": None, "agent_args": {},
                   "concurrency": 8},
        "grpo": {"config": "configs/train/grpo.yaml", "overrides": {}},
        "enhance": {"examples": 3, "questions_per_video": 3, "frames": 8, "resize": 0.5, "max_answer_words": 8,
                    "self_check": True, "self_check_threshold": 0.5, "temperature": 0.7, "seed": 0,
                    "limit_videos": None, "rouge_threshold": 0.5, "prompt_dir": None, "concurrency": 8},
        "grpo_enhanced": {"config": "configs/train/grpo.yaml", "overrides": {}},
    },
}
#: What each training stage's config is wired to (``{stage}`` = that stage's folder); overrides win.
_WIRING = {
    "sft": {"train_file": "{sft_data}/teacher.sft.jsonl"},
    "kto": {"model_name_or_path": "{sft}", "train_file": "{kto_labels}/kto.jsonl"},
    "grpo": {"model_name_or_path": "{kto}", "train_file": "{rl_set}/rl.jsonl"},
    "grpo_enhanced": {"model_name_or_path": "{grpo}", "train_file": "{enhance}/rl.jsonl"},
}


class RecipeError(ValueError):
    """A recipe that cannot run as configured (the message says which stage and what to change)."""

# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------


def _merge(base: Any, over: Any, where: str) -> Any:
    """``over`` on top of the defaults ``base``: mappings key by key (an unknown key is an error),
    anything else replaced."""
    if isinstance(base, Mapping) and base and over is None:
        return dict(base)
    if isinstance(base, Mapping) and base and isinstance(over, Mapping):
        unknown = set(over) - set(base)
        if unknown:
            raise RecipeError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(base)}")
        return {k: _merge(base[k], over[k], f"{where}.{k}") if k in over else base[k] for k in base}
    return over


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """``["stages.sft.overrides.max_steps=2", ...]`` (values parsed as YAML) -> a nested mapping.

    Raises:
        RecipeError: an item without ``=``; a key set both to a value and to keys below it.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set takes KEY=VALUE (dotted key), got {item!r}")
        node = out
        parts = key.split(".")
        for k, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {'.'.join(parts[:k + 1])} was set to a value by an earlier --set, "
                                  "it cannot also take keys")
        node[parts[-1]] = yaml.safe_load(value)
    return out


def _deep_update(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in b.items():
        a[k] = _deep_update(dict(a.get(k) or {}), v) if isinstance(v, Mapping) and isinstance(a.get(k), Mapping) else v
    return a


@dataclass
class Recipe:
    """A loaded recipe config (see ``configs/recipe/eva.yaml`` for every key).

    Attributes:
        path: the YAML file (None when built from a mapping).
        name: recipe name; out_dir: where the stage folders go.
        roots: dataset name -> video folder; datasets: annotation files and import settings.
        models: ``teacher`` and ``judge`` backends (``backend``, ``base_url``, ``model``, ``backend_args``).
        launcher: command prefix of training stages (default: this Python).
        stages: per stage, its settings (defaults filled in).
    """
    path: Path | None
    name: str
    out_dir: Path
    roots: dict[str, str]
    datasets: dict[str, Any]
    models: dict[str, dict[str, Any]]
    launcher: list[str]
    stages: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: Sequence[str] | None = None) -> Recipe:
        """Read a recipe YAML file, apply ``--set`` overrides, fill defaults, validate.

        Raises:
            FileNotFoundError: no such file; RecipeError: unknown keys or bad values (named).
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"recipe config {str(p)!r} does not exist")
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise RecipeError(f"{p}: a recipe config is a mapping, got {type(data).__name__}")
        return cls.from_mapping(_deep_update(data, parse_set(overrides)), p)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: Path | None = None) -> Recipe:
        """See :meth:`load`."""
        where = str(path) if path else "recipe"
        cfg = _merge(_DEFAULTS, dict(data), where)
        judge = cfg["models"]["judge"]
        models = {"teacher": _model_spec(cfg["models"]["teacher"], f"{where}.models.teacher")}
        models["judge"] = models["teacher"] if judge == "teacher" else _model_spec(judge, f"{where}.models.judge")
        roots = cfg["roots"]
        if isinstance(roots, str):
            roots = read_mapping(roots, "dataset name -> video folder")
        roots = {str(k): str(v) for k, v in (roots or {}).items()}
        launcher = cfg["launcher"]
        launcher = shlex.split(launcher) if isinstance(launcher, str) else list(launcher or [sys.executable])
        r = cls(path, str(cfg["name"]), Path(os.path.abspath(cfg["out_dir"])), roots, cfg["datasets"], models, launcher,
                cfg["stages"], cfg)
        r.validate(where)
        return r

    def validate(self, where: str) -> None:
        """Check what can be checked before running (values and wiring, not the files).

        Raises:
            RecipeError: naming the key and what is allowed.
        """
        d = self.datasets
        if not (d["llava_video"] or d["cgbench"]):
            raise RecipeError(f"{where}: datasets needs LLaVA-Video-178K and/or CG-Bench annotation files "
                              "(datasets.llava_video, datasets.cgbench): the teacher's questions")
        for key, allowed in (("cgbench_form", CGBENCH_FORMS), ("hdvila_unit", HDVILA_UNITS)):
            if d[key] not in allowed:
                raise RecipeError(f"{where}: datasets.{key} must be one of {allowed}, got {d[key]!r}")
        for name in ("llava_video", "cgbench", "hdvila"):
            if d[name] and name not in self.roots:
                raise RecipeError(f"{where}: roots has no {name!r} entry (the folder of its videos)")
        for name, spec in (("models.teacher", self.models["teacher"]), ("models.judge", self.models["judge"]),
                           ("stages.rl_set", self.stages["rl_set"]), ("stages.resample", self.stages["resample"])):
            if name == "stages.resample" and spec["from"] != "sft":
                continue
            if (spec["backend"] or "transformers") == "openai" and not (spec["base_url"] or
                                                                       (spec["backend_args"] or {}).get("base_url")):
                raise RecipeError(f"{where}: {name}.base_url is required with the openai backend")
        rs = self.stages["resample"]
        if rs["from"] not in ("teacher", "sft"):
            raise RecipeError(f"{where}: stages.resample.from must be 'teacher' or 'sft', got {rs['from']!r}")
        bad = [x for x in self.stages["kto_labels"]["extra_rejections"] or [] if x not in EXTRA_REJECTIONS]
        if bad:
            raise RecipeError(f"{where}: stages.kto_labels.extra_rejections {bad} unknown; choose from {EXTRA_REJECTIONS}")
        for st in TRAINING:
            o = self.stages[st]["overrides"] or {}
            c = self.stages[st]["config"]
            if c and not Path(c).is_file():
                raise RecipeError(f"{where}: stages.{st}.config {c!r} does not exist (relative paths are relative to "
                                  f"the working directory, {os.getcwd()})")
            if "output_dir" in o:
                raise RecipeError(f"{where}: stages.{st}.overrides.output_dir: the output folder is the stage's own")
        grpo = self.train_config("grpo", check_files=False)
        if not grpo.get("dump_every_steps"):
            raise RecipeError(f"{where}: stage grpo must dump its rollouts (dump_every_steps > 0): enhance mines "
                              "them for failure cases")

    # -- paths ----------------------------------------------------------------------------------

    def stage_dir(self, stage: str) -> Path:
        return self.out_dir / f"{STAGES.index(stage) + 1:02d}_{stage}"

    def subst(self, value: Any) -> Any:
        """``{stage}`` placeholders in strings (recursively) -> that stage's folder."""
        if isinstance(value, str):
            return re.sub(r"\{(\w+)\}", lambda m: str(self.stage_dir(m.group(1))) if m.group(1) in STAGES else m.group(0),
                          value)
        if isinstance(value, Mapping):
            return {k: self.subst(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.subst(v) for v in value]
        return value

    def train_config(self, stage: str, check_files: bool = True) -> dict[str, Any]:
        """The resolved TRL config of a training stage: its base YAML (``config``), the wiring to the
        other stages, the ``overrides``, ``output_dir`` = the stage folder.

        Raises:
            FileNotFoundError: the base config is missing (``check_files``).
        """
        s = self.stages[stage]
        base: dict[str, Any] = {}
        if s["config"]:
            p = Path(s["config"])
            if p.is_file():
                base = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            elif check_files:
                raise FileNotFoundError(f"stages.{stage}.config {str(p)!r} does not exist")
        out = {**base, **self.subst(_WIRING.get(stage, {})), **self.subst(dict(s["overrides"] or {}))}
        out["output_dir"] = str(self.stage_dir(stage))
        return out


def _model_spec(spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise RecipeError(f"{where}: a model is a mapping of {_MODEL_KEYS}, got {spec!r}")
    out = _merge({"backend": "openai", "base_url": None, "model": None, "backend_args": {}}, dict(spec), where)
    return out


# ---------------------------------------------------------------------------------------------
# digests and provenance
# ---------------------------------------------------------------------------------------------

_BIG = 512 * 2**20


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes (files over 512 MiB: ``size:<n>:mtime_ns:<t>``); computed
    once per (path, size, mtime) in a process."""
    p = Path(path)
    st = p.stat()
    if st.st_size > _BIG:
        return f"size:{st.st_size}:mtime_ns:{st.st_mtime_ns}"
    key = (os.path.abspath(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = "sha256:" + h.hexdigest()
    return _DIGESTS[key]


def dir_digest(path: str | os.PathLike) -> str:
    """``files:<hex>``: SHA-256 of a folder's file listing (relative name, size; ``checkpoint-*``
    folders and the recipe's own files left out): cheap for model folders."""
    p = Path(path)
    rows = []
    for f in sorted(p.rglob("*")):
        rel = f.relative_to(p)
        if rel.parts[0].startswith("checkpoint-") or rel.name in (PROVENANCE, "train.log", "train.stdout"):
            continue
        if f.is_file():
            rows.append(f"{rel}\t{f.stat().st_size}")
    return "files:" + hashlib.sha256("\n".join(rows).encode()).hexdigest()


def digest(path: str | os.PathLike) -> str | None:
    """:func:`file_digest` / :func:`dir_digest`, None when the path does not exist."""
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    if p.is_dir():
        return dir_digest(p)
    return None


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()[:16]


def read_provenance(stage_dir: Path) -> dict[str, Any] | None:
    """A stage folder's ``provenance.json`` (None when absent or unreadable)."""
    p = stage_dir / PROVENANCE
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------


@dataclass
class StagePlan:
    """One stage as the current config sees it.

    Attributes:
        stage, index, dir: name, 1-based position, folder.
        state: ``done`` / ``stale`` / ``partial`` / ``pending`` / ``blocked`` (an input stage is not done).
        reason: why (for stale / partial / blocked / missing inputs).
        config_hash: of its settings, input stages' run ids and external inputs' digests (None while blocked).
        settings: the resolved settings; inputs: ``{"name", "path", "from_stage"?}``; outputs: ``{"name", "path"}``.
        command: a training stage's command line.
        provenance: its ``provenance.json`` (None if none).
    """
    stage: str
    index: int
    dir: Path
    state: str
    reason: str = ""
    config_hash: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    command: list[str] | None = None
    provenance: dict[str, Any] | None = None


def _deps(r: Recipe, stage: str) -> list[str]:
    return {
        "teacher": [],
        "sft_data": ["teacher"],
        "sft": ["sft_data"],
        "resample": ["teacher"] + (["sft"] if r.stages["resample"]["from"] == "sft" else []),
        "kto_labels": ["sft_data", "resample"],
        "kto": ["sft", "kto_labels"],
        "rl_set": ["teacher", "kto"],
        "grpo": ["kto", "rl_set"],
        "enhance": ["teacher", "rl_set", "grpo"],
        "grpo_enhanced": ["grpo", "enhance"],
    }[stage]


def _io(r: Recipe, stage: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(inputs, outputs)`` of a stage: paths, with the stage each input comes from."""
    d = {s: r.stage_dir(s) for s in STAGES}
    data = d["teacher"] / "data"

    def i(name: str, path: Path | str, src: str | None = None) -> dict[str, Any]:
        return {"name": name, "path": str(path), **({"from_stage": src} if src else {})}

    def o(name: str, path: Path) -> dict[str, Any]:
        return {"name": name, "path": str(path)}

    if stage == "teacher":
        ins = []
        for name in ("llava_video", "cgbench", "hdvila"):
            pats = r.datasets[name]
            if pats:
                try:
                    ins += [i(name, p) for p in expand_paths(pats, name)]
                except FileNotFoundError:
                    ins += [i(name, p) for p in ([pats] if isinstance(pats, str) else pats)]
        t = r.stages["teacher"]
        if t["experiences"]:
            ins.append(i("experiences", t["experiences"]))
        outs = [o("teacher_qa", data / "teacher_qa.jsonl"), o("rl_pool", data / "rl_pool.jsonl"),
                o("teacher_results", d["teacher"] / "teacher.jsonl")]
        if r.datasets["hdvila"]:
            outs.append(o("enhance_videos", data / "enhance_videos.txt"))
        return ins, outs
    if stage == "sft_data":
        return ([i("teacher_qa", data / "teacher_qa.jsonl", "teacher"), i("teacher_results", d["teacher"] / "teacher.jsonl", "teacher")],
                [o("sft", d[stage] / "teacher.sft.jsonl"), o("trajectories", d[stage] / "teacher.trajectories.jsonl")])
    if stage == "resample":
        ins = [i("teacher_qa", data / "teacher_qa.jsonl", "teacher")]
        if r.stages["resample"]["from"] == "sft":
            ins.append(i("model", d["sft"], "sft"))
        return ins, [o("chosen_candidates", d[stage] / "resample.sft.jsonl"),
                     o("trajectories", d[stage] / "resample.trajectories.jsonl")]
    if stage == "kto_labels":
        return ([i("rejected_from", d["sft_data"] / "teacher.trajectories.jsonl", "sft_data"),
                 i("chosen_from", d["resample"] / "resample.sft.jsonl", "resample")],
                [o("kto", d[stage] / "kto.jsonl"), o("labels", d[stage] / "kto.labels.jsonl")])
    if stage == "rl_set":
        return ([i("rl_pool", data / "rl_pool.jsonl", "teacher"), i("model", d["kto"], "kto")],
                [o("rl_set", d[stage] / "rl.jsonl"), o("failures", d[stage] / "policy.failures.jsonl")])
    if stage == "enhance":
        return ([i("rl_set", d["rl_set"] / "rl.jsonl", "rl_set"), i("rollouts", d["grpo"] / "rollouts", "grpo"),
                 i("videos", data / "enhance_videos.txt", "teacher")],
                [o("rl_set", d[stage] / "rl.jsonl"), o("accepted", d[stage] / "enhance.accepted.jsonl")])
    # training stages
    cfg = r.train_config(stage, check_files=False)
    src = {"sft": ("sft_data", None), "kto": ("kto_labels", "sft"), "grpo": ("rl_set", "kto"),
           "grpo_enhanced": ("enhance", "grpo")}[stage]
    ins = [i("train_file", cfg.get("train_file"), src[0])]
    model = cfg.get("model_name_or_path")
    ins.append(i("model", model, src[1] if src[1] and str(model) == str(d[src[1]]) else None))
    return ins, [o("model", d[stage])]


def _settings(r: Recipe, stage: str) -> dict[str, Any]:
    """What decides a stage's result (hashed)."""
    s = {k: v for k, v in r.stages[stage].items() if k not in _UNHASHED}
    if stage == "teacher":
        t = r.models["teacher"]
        s = {**s, "datasets": r.datasets, "roots": r.roots,
             "teacher": _identity(t)}
    elif stage in TRAINING:
        s = {"train_config": r.train_config(stage, check_files=False)}  # the launcher is deployment, not hashed
    elif stage == "resample" and s["from"] == "teacher":
        t = r.models["teacher"]
        s = {**s, "teacher": _identity(t),
             "prompts": s["prompts"] if s["prompts"] is not None else r.stages["teacher"]["prompts"]}
    elif stage == "kto_labels":
        j = r.models["judge"]
        s = {**s, "judge": _identity(j)}
    elif stage == "enhance":
        t = r.models["teacher"]
        s = {**s, "teacher": _identity(t)}
    return r.subst(s)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest ``checkpoint-N`` folder with a ``trainer_state.json`` (a checkpoint the trainer
    finished writing), or None."""
    best = None
    for c in Path(out_dir).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", c.name)
        if m and (c / "trainer_state.json").is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), c)
    return best[1] if best else None


def _train_command(r: Recipe, stage: str) -> list[str]:
    return [*r.launcher, "-m", "eva_fast.cli", "train", TRAINING[stage], "--config",
            str(r.stage_dir(stage) / "train.yaml")]


def plan(r: Recipe) -> list[StagePlan]:
    """Every stage's state under the current config, in order (nothing is run or written)."""
    plans: list[StagePlan] = []
    by: dict[str, StagePlan] = {}
    for k, stage in enumerate(STAGES):
        d = r.stage_dir(stage)
        ins, outs = _io(r, stage)
        prov = read_provenance(d)
        p = StagePlan(stage, k + 1, d, "pending", settings=_settings(r, stage), inputs=ins, outputs=outs,
                      provenance=prov, command=_train_command(r, stage) if stage in TRAINING else None)
        plans.append(p)
        by[stage] = p
        not_done = [s for s in _deps(r, stage) if by[s].state != "done"]
        external = [x for x in ins if "from_stage" not in x and x["name"] != "model"]
        missing = [x["path"] for x in external if not Path(x["path"]).exists()]
        if not_done:
            p.state, p.reason = "blocked", f"waits for {', '.join(not_done)}"
        elif missing:
            p.state, p.reason = "blocked", f"inputs missing: {', '.join(missing[:3])}"
        else:
            upstream = {s: by[s].provenance.get("run_id") for s in _deps(r, stage)}
            ext = {x["path"]: digest(x["path"]) for x in external}
            model = next((x for x in ins if x["name"] == "model" and "from_stage" not in x), None)
            if model and Path(model["path"]).exists():  # a model from outside the recipe (e.g. a local base checkpoint)
                ext[model["path"]] = digest(model["path"])
            p.config_hash = _hash({"stage": stage, "settings": p.settings, "upstream": upstream, "external": ext})
        if prov is None:
            continue
        if p.config_hash is None:
            p.state = "blocked" if p.state == "blocked" else "pending"
            continue
        if prov.get("config_hash") != p.config_hash:
            p.state = "stale"
            p.reason = (f"its config hash was {prov.get('config_hash')}, the current config gives {p.config_hash} "
                        "(settings, an input stage or an input file changed)")
            if prov.get("status") != "complete":
                p.reason += "; it was started with the old settings and did not finish"
        elif prov.get("status") != "complete":
            p.state = "partial"
            p.reason = f"started {prov.get('started')}, attempt {prov.get('attempts')}, not finished"
            if prov.get("error"):
                p.reason += f" (it failed: {prov['error'][:300]})"
        else:
            gone = [o["path"] for o in outs if not Path(o["path"]).exists()]
            changed = [o["path"] for o in prov.get("outputs", []) if Path(o["path"]).is_file() and o.get("digest")
                       and o["digest"].startswith("sha256:") and digest(o["path"]) != o["digest"]]
            if gone or changed:
                p.state = "stale"
                p.reason = f"outputs missing {gone}" if gone else f"outputs changed since: {changed}"
            else:
                p.state = "done"
    return plans


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Child of a training stage: killed when the recipe process dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class _Lock:
    """An exclusive lock on the recipe's output folder (two runs would write the same stages)."""
    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / ".recipe.lock"
        self.f = open(self.path, "w")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.close()
            raise RecipeError(f"another 'eva-fast recipe run' is using {out_dir} (lock {self.path})") from None
        self.f.write(str(os.getpid()))
        self.f.flush()

    def release(self) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A model spec's identity (backend, model, result-changing backend arguments)."""
    return backend_identity(spec["backend"], spec["model"], spec["backend_args"])


def _backend(spec: Mapping[str, Any]) -> Any:
    """The agent backend of a model spec (``backend``, ``base_url``, ``model``, ``backend_args``)."""
    return make_backend(spec["backend"], base_url=spec["base_url"], model=spec["model"],
                        backend_args=spec["backend_args"])


def _agent(spec: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The agent loop of a model spec with a stage's turn settings, and its identity."""
    config = AgentConfig(max_turns=settings["max_turns"], max_new_tokens=settings["max_new_tokens"],
                         temperature=float(settings["temperature"]), **(settings.get("agent_args") or {}))
    return AgentLoop(_backend(spec), config), {**_identity(spec), "agent_config": config.to_dict()}


async def _closing(loop: Any, coro: Any) -> Any:
    try:
        return await coro
    finally:
        await loop.backend.aclose()


def _stage_teacher(r: Recipe, s: dict[str, Any], d: Path, data: Path) -> dict[str, Any]:
    """Stage 1: read the datasets, run the teacher's episodes over its QA set."""
    ds = r.datasets
    imp = import_sources(data, r.roots, llava_video=ds["llava_video"], cgbench=ds["cgbench"], hdvila=ds["hdvila"],
                         rl_pool_fraction=ds["rl_pool_fraction"], seed=ds["seed"], cgbench_form=ds["cgbench_form"],
                         hdvila_unit=ds["hdvila_unit"], max_questions=ds["max_questions"],
                         max_videos=ds["max_videos"])
    if not load_rl_set(imp.teacher_qa):
        raise RecipeError(f"stage teacher: no teacher questions after the import ({imp.counts}); see {imp.report}")
    exps = tuple(load_experiences(s["experiences"])) if s["experiences"] else ()
    prompt = TeacherPrompt(tuple(s["prompts"] or ()), s["prompt_dir"], exps, s["num_experiences"], s["seed"])
    loop, ident = _agent(r.models["teacher"], s)
    ep = asyncio.run(_closing(loop, arun_teacher_episodes(
        loop, imp.teacher_qa, data, d, prompt=prompt, samples_per_question=s["samples_per_question"],
        limit=s["limit"], concurrency=s["concurrency"], skip_missing=True, run_info=ident, stem="teacher")))
    return {"import": {k: {kk: v[kk] for kk in ("questions", "mcq", "open", "missing_videos", "teacher_qa",
                                                "rl_pool", "videos", "skipped") if kk in v}
                       for k, v in imp.counts.items()},
            "episodes": len(ep.result.records), "ran_now": ep.result.ran, "from_cache": ep.result.skipped_cached,
            "unreadable_videos_skipped": ep.result.skipped_missing}


def _stage_sft_data(r: Recipe, s: dict[str, Any], d: Path, data: Path) -> dict[str, Any]:
    """Stage 2: the SFT records of the teacher's right, well-structured trajectories."""
    teacher_qa = data / "teacher_qa.jsonl"
    t = r.stages["teacher"]
    meta = teacher_meta(load_rl_set(teacher_qa, infer_type=True), t["samples_per_question"], qa_set_name(teacher_qa))
    res = select_teacher_data(load_records(r.stage_dir("teacher") / "teacher.jsonl"), meta, d, "teacher",
                              stem="teacher", qa_name=qa_set_name(teacher_qa), rouge_threshold=s["rouge_threshold"],
                              require_structure=s["require_structure"], record_system="student",
                              run={"qa_set": str(teacher_qa), "results": str(r.stage_dir("teacher") / "teacher.jsonl")})
    if not res.kept:
        raise RecipeError(f"stage sft_data: no teacher trajectory was kept ({res.report['rejected']}): nothing to "
                          f"fine-tune on; see {res.report_path}")
    return {k: res.report["counts"][k] for k in ("trajectories", "finished", "right", "kept")} | {
        "rejected": res.report["rejected"]}


def _stage_resample(r: Recipe, s: dict[str, Any], d: Path, data: Path) -> dict[str, Any]:
    """Stage 4: successful trajectories re-sampled (the teacher, or the SFT model)."""
    teacher_qa = data / "teacher_qa.jsonl"
    if s["from"] == "teacher":
        spec = r.models["teacher"]
        fams = s["prompts"] if s["prompts"] is not None else r.stages["teacher"]["prompts"]
        prompt = TeacherPrompt(tuple(fams or ()), r.stages["teacher"]["prompt_dir"])
    else:
        spec = {"backend": s["backend"] or "transformers", "base_url": s["base_url"],
                "model": r.subst(s["model"] or "{sft}"), "backend_args": s["backend_args"]}
        prompt = TeacherPrompt((), student=True)
    structure = s["require_structure"] if s["require_structure"] is not None else s["from"] == "teacher"
    loop, ident = _agent(spec, s)
    res = asyncio.run(_closing(loop, arun_teacher(
        loop, teacher_qa, data, d, prompt=prompt, samples_per_question=s["samples_per_question"], limit=s["limit"],
        concurrency=s["concurrency"], rouge_threshold=s["rouge_threshold"], require_structure=structure,
        record_system="student", skip_missing=True, run_info=ident, stem="resample")))
    return {"from": s["from"], **{k: res.report["counts"][k] for k in ("trajectories", "finished", "right", "kept")},
            "ran_now": res.report["run"]["ran_now"], "from_cache": res.report["run"]["from_cache"]}


def _stage_kto_labels(r: Recipe, s: dict[str, Any], d: Path, data: Path) -> dict[str, Any]:
    """Stage 5: KTO labels as the paper builds them."""
    j = r.models["judge"]
    backend = _backend(j)
    judge = GuessingJudge(backend, s["prompt_dir"])

    async def go() -> dict[str, Any]:
        try:
            return await alabel(
                [str(r.stage_dir("sft_data") / "teacher.trajectories.jsonl"),
                 str(r.stage_dir("resample") / "resample.sft.jsonl")], d / "kto.jsonl", judge=judge,
                roles=["rejected", "chosen"], chosen_fraction=s["chosen_fraction"], seed=s["seed"],
                rouge_threshold=s["rouge_threshold"], concurrency=s["concurrency"],
                judge_identity=_identity(j),
                extra_rejections=s["extra_rejections"])
        finally:
            await backend.aclose()

    rep = asyncio.run(go())
    mix = rep["label_mix"]["written"]
    if not (mix["chosen"] and mix["rejected"]):
        raise RecipeError(f"stage kto_labels: KTO needs chosen and rejected samples, got {mix} (judge verdicts "
                          f"{rep['judge_verdicts']}, unused {rep['unused']}); see {d / 'kto.report.md'}")
    return {"chosen": mix["chosen"], "rejected": mix["rejected"], "chosen_fraction": mix["chosen_fraction"],
            "judged": rep["counts"]["judged"], "judge_verdicts": rep["judge_verdicts"], "unused": rep["unused"],
            "recommended_kto_weights": rep["recommended_kto_weights"]}


def _stage_rl_set(r: Recipe, s: dict[str, Any], d: Path, data: Path) -> dict[str, Any]:
    """Stage 7: the KTO model's failure cases over the RL pool, mixed 90/10."""
    spec = {k: r.subst(s[k]) for k in _MODEL_KEYS}
    loop, ident = _agent(spec, s)
    res = asyncio.run(_closing(loop, abuild_rl_set(
        loop, data / "rl_pool.jsonl", data, d, samples_per_question=s["samples_per_question"],
        keep_below=s["keep_below"], mcq_ratio=s["mcq_ratio"], seed=s["seed"], limit=s["limit"],
        concurrency=s["concurrency"], rouge_threshold=s["rouge_threshold"], skip_missing=True, run_info=ident)))
    return {**res.counts, "rl_set": res.report_data["rl_set"]}


def _stage_enhance(r: Recipe, s: dict[str, Any], d: Path, data: Path) -> dict[str, Any]:
    """Stage 9: new open QA on unseen videos from GRPO's failures, appended to a copy of the RL set."""
    rl = d / "rl.jsonl"
    if not rl.exists():  # the enlarged set starts as a copy of the RL set (atomic: a kill leaves none or all)
        tmp = d / "rl.jsonl.tmp"
        shutil.copyfile(r.stage_dir("rl_set") / "rl.jsonl", tmp)
        os.replace(tmp, rl)
    dumps = sorted(str(p) for p in (r.stage_dir("grpo") / "rollouts").glob("*.jsonl"))
    if not dumps:
        raise RecipeError(f"stage enhance: GRPO wrote no rollout dumps in {r.stage_dir('grpo') / 'rollouts'}")
    videos = data / "enhance_videos.txt"
    if not videos.is_file():
        raise RecipeError("stage enhance needs unseen videos: give HD-VILA-100M metadata (datasets.hdvila)")
    t = r.models["teacher"]
    backend = _backend(t)
    writer = QuestionWriter(backend, prompt_dir=s["prompt_dir"], nframes=s["frames"], resize=s["resize"],
                            questions_per_video=s["questions_per_video"], max_answer_words=s["max_answer_words"],
                            self_check=s["self_check"], self_check_threshold=s["self_check_threshold"],
                            temperature=s["temperature"])

    async def go() -> dict[str, Any]:
        try:
            return await aenhance(dumps, list_videos(videos), rl, d, writer, examples_per_prompt=s["examples"],
                                  limit_videos=s["limit_videos"], concurrency=s["concurrency"], seed=s["seed"],
                                  run_name=f"{r.name}-enhance",
                                  teacher_identity=_identity(t),
                                  rouge_threshold=s["rouge_threshold"])
        finally:
            await backend.aclose()

    rep = asyncio.run(go())
    return {"failure_cases": rep["failure_cases"]["failures"], "videos": rep["videos"],
            "questions": rep["questions"], "rl_set_lines": len(load_rl_set(rl))}


def _run_data_stage(r: Recipe, stage: str) -> dict[str, Any]:
    """Run one data stage in this process (its caches make a rerun resume); returns its summary."""
    d = r.stage_dir(stage)
    d.mkdir(parents=True, exist_ok=True)
    return _DATA_STAGES[stage](r, r.stages[stage], d, r.stage_dir("teacher") / "data")


_DATA_STAGES: dict[str, Callable[[Recipe, dict[str, Any], Path, Path], dict[str, Any]]] = {
    "teacher": _stage_teacher,
    "sft_data": _stage_sft_data,
    "resample": _stage_resample,
    "kto_labels": _stage_kto_labels,
    "rl_set": _stage_rl_set,
    "enhance": _stage_enhance,
}


def _run_training(r: Recipe, stage: str) -> dict[str, Any]:
    d = r.stage_dir(stage)
    d.mkdir(parents=True, exist_ok=True)
    cfg = r.train_config(stage)
    for key in ("train_file", "model_name_or_path"):
        v = cfg.get(key)
        if not v:
            raise RecipeError(f"stage {stage}: {key} is not set (stages.{stage}.config / overrides)")
    if not Path(cfg["train_file"]).is_file():
        raise RecipeError(f"stage {stage}: train_file {cfg['train_file']!r} does not exist")
    (d / "train.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    cmd = _train_command(r, stage)
    ckpt = latest_checkpoint(d)
    if ckpt is not None:
        cmd += ["--resume_from_checkpoint", str(ckpt)]
    log = d / "train.log"
    with open(log, "a", encoding="utf-8") as lf, open(d / "train.stdout", "w", encoding="utf-8") as out:
        lf.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(cmd)}\n")
        lf.flush()
        logger.info("stage %s: %s%s", stage, shlex.join(cmd), f" (resuming from {ckpt.name})" if ckpt else "")
        proc = subprocess.run(cmd, stdout=out, stderr=lf, preexec_fn=_die_with_parent, check=False)
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
        raise RecipeError(f"stage {stage}: `{shlex.join(cmd)}` exited with {proc.returncode}; the end of {log}:\n{tail}")
    summary: dict[str, Any] = {}
    for line in reversed((d / "train.stdout").read_text(encoding="utf-8").splitlines()):
        if line.startswith("{"):
            try:
                summary = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    summary.pop("output_dir", None)
    return {**summary, "resumed_from": ckpt.name if ckpt else None}


@dataclass
class RunEvent:
    """What :func:`run` reports per stage: ``event`` is ``skip`` (done), ``start`` / ``resume``,
    ``done`` (with ``summary``) or ``redo`` (a stale stage moved aside)."""
    stage: str
    index: int
    event: str
    detail: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


def run(r: Recipe, *, until: str | None = None, redo_stale: bool = False,
        on_event: Callable[[RunEvent], None] | None = None) -> list[StagePlan]:
    """Run the recipe: skip done stages, resume partial ones, run pending ones, in order.

    Args:
        r: the recipe.
        until: stop after this stage.
        redo_stale: run stale stages again (their folders are renamed ``<dir>.stale-<time>``, never deleted).
        on_event: progress callback.

    Returns:
        The final :func:`plan`.

    Raises:
        RecipeError: a stale stage without ``redo_stale``, a stage that failed (its message names it
        and where its log is), an unknown ``until``; another run holding the output folder.
    """
    if until is not None and until not in STAGES:
        raise RecipeError(f"--until {until!r}: choose from {STAGES}")
    last = STAGES.index(until) if until else len(STAGES) - 1
    lock = _Lock(r.out_dir)
    emit = on_event or (lambda e: None)
    try:
        _write_json_atomic(r.out_dir / "recipe.json", {"name": r.name, "config": str(r.path) if r.path else None,
                                                      "resolved": r.raw})
        for k in range(last + 1):
            stage = STAGES[k]
            p = next(x for x in plan(r) if x.stage == stage)
            if p.state == "done":
                emit(RunEvent(stage, k + 1, "skip", f"done (run {p.provenance.get('run_id')})", p.provenance.get("summary", {})))
                continue
            if p.state == "blocked":
                raise RecipeError(f"stage {stage} cannot run: {p.reason}")
            if p.state == "stale":
                if not redo_stale:
                    raise RecipeError(f"stage {k + 1} {stage} is stale: {p.reason}. Restore the config it ran with, "
                                      f"or pass --redo-stale to move {p.dir} aside and run it (and what follows) again")
                aside = p.dir.with_name(p.dir.name + time.strftime(".stale-%Y%m%d-%H%M%S"))
                os.replace(p.dir, aside)
                emit(RunEvent(stage, k + 1, "redo", f"moved the stale folder to {aside}"))
                p.provenance = None
            prov = p.provenance if p.state == "partial" else None
            attempts = (prov or {}).get("attempts", 0) + 1
            started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            emit(RunEvent(stage, k + 1, "resume" if prov else "start", TITLES[stage]))
            record = {"format": FORMAT, "version": 1, "recipe": r.name, "stage": stage, "index": k + 1,
                      "config_hash": p.config_hash, "status": "running", "attempts": attempts,
                      "first_started": (prov or {}).get("first_started", started), "started": started,
                      "settings": p.settings, "inputs": p.inputs, "command": p.command}
            _write_json_atomic(p.dir / PROVENANCE, record)
            t0 = time.monotonic()
            try:
                summary = _run_training(r, stage) if stage in TRAINING else _run_data_stage(r, stage)
            except Exception as e:  # recorded for status, then raised: the stage stays partial and resumes
                _write_json_atomic(p.dir / PROVENANCE, {**record, "status": "failed", "error": f"{type(e).__name__}: {e}"})
                raise
            by = {x.stage: x for x in plan(r)}
            inputs = []
            for x in p.inputs:
                src = x.get("from_stage")
                inputs.append({**x, **({"run_id": by[src].provenance.get("run_id")} if src else {}),
                               "digest": digest(x["path"]) if Path(x["path"]).exists() else None})
            missing = [o["path"] for o in p.outputs if not Path(o["path"]).exists()]
            if missing:
                error = RecipeError(f"stage {stage} finished without its outputs {missing}")
                _write_json_atomic(p.dir / PROVENANCE, {**record, "status": "failed", "error": f"RecipeError: {error}"})
                raise error
            record.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          seconds=round(time.monotonic() - t0, 1), run_id=uuid.uuid4().hex, inputs=inputs,
                          outputs=[{**o, "digest": digest(o["path"])} for o in p.outputs], summary=summary,
                          eva_fast=_version())
            _write_json_atomic(p.dir / PROVENANCE, record)
            emit(RunEvent(stage, k + 1, "done", f"{record['seconds']} s", summary))
        return plan(r)
    finally:
        lock.release()


def _version() -> dict[str, Any]:
    return {"version": getattr(eva_fast, "__version__", None)}


__all__ = [
    "STAGES",
    "TITLES",
    "Recipe",
    "RecipeError",
    "RunEvent",
    "StagePlan",
    "digest",
    "latest_checkpoint",
    "parse_set",
    "plan",
    "read_provenance",
    "run",
]
