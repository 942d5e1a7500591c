"""``eva-fast recipe {run,status} --config configs/recipe/eva.yaml``: EVA's whole training recipe
(:mod:`eva_fast.train._recipe`). This module is an entry point: printing lives here, the work there.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from eva_fast._subcommands import run_subcommand
from eva_fast.train._recipe import TITLES, Recipe, RecipeError, plan, run

USAGE = """usage: eva-fast recipe {run,status} --config RECIPE.yaml [--set KEY=VALUE ...]

  run      the ten stages in order (teacher -> SFT data -> SFT -> resample -> KTO labels -> KTO ->
           RL set -> GRPO -> enhance -> GRPO): done stages are skipped, a stage that was stopped
           resumes; --dry-run lists what would run; --until STAGE; --redo-stale
  status   each stage's state (done / partial / stale / pending / blocked), config hash and counts

Settings: configs/recipe/eva.yaml (each marked "paper" or "chosen here"); --set overrides any key
(dotted, value as YAML), e.g. --set models.teacher.base_url=http://teacher:8001/v1.
"""


def _args(prog: str, argv: list[str], run: bool) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--config", required=True, help="recipe YAML (configs/recipe/eva.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (dotted; repeatable)")
    if run:
        p.add_argument("--dry-run", action="store_true", help="list the stages and what would run; run nothing")
        p.add_argument("--until", help="stop after this stage")
        p.add_argument("--redo-stale", action="store_true",
                       help="run stale stages again (their folders are moved aside, not deleted)")
    else:
        p.add_argument("--json", action="store_true", help="one JSON object per stage")
    return p.parse_args(argv)


def _short(summary: dict[str, Any] | None) -> str:
    if not summary:
        return ""
    parts = []
    for k, v in summary.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk} {vv}" for kk, vv in v.items() if not isinstance(vv, (dict, list)))
        elif isinstance(v, float):
            v = f"{v:.4g}"
        if v in (None, "", [], {}):
            continue
        parts.append(f"{k}: {v}")
    return "; ".join(parts)


def _plan_lines(plans: list[Any], dry: bool) -> list[str]:
    would = {"done": "skip", "partial": "resume", "pending": "run", "stale": "stale: stop (or --redo-stale)",
             "blocked": "run after its inputs"}
    lines = []
    for p in plans:
        head = f"{p.index:2d}  {p.stage:<14} {p.state:<8} {p.config_hash or '-':<16}"
        if dry:
            lines.append(f"{head} {would[p.state]}")
            lines.append(f"      {TITLES[p.stage]}")
            for x in p.inputs:
                src = f" (from {x['from_stage']})" if x.get("from_stage") else ""
                lines.append(f"      in   {x['name']}: {x['path']}{src}")
            for x in p.outputs:
                lines.append(f"      out  {x['name']}: {x['path']}")
            if p.command:
                lines.append(f"      cmd  {shlex.join(p.command)}")
            if p.reason:
                lines.append(f"      note {p.reason}")
        else:
            s = _short((p.provenance or {}).get("summary")) if p.state == "done" else p.reason
            lines.append(f"{head} {s}")
    return lines


def cmd_run(argv: list[str]) -> int:
    a = _args("eva-fast recipe run", argv, run=True)
    r = Recipe.load(a.config, a.set)
    if a.dry_run:
        plans = plan(r)
        print(f"recipe {r.name}: {len(plans)} stages in {r.out_dir} (dry run: nothing is run)")
        print("\n".join(_plan_lines(plans, dry=True)))
        return 0

    def on_event(e: Any) -> None:
        print(f"[recipe] {e.index:2d}/10 {e.stage}: {e.event} {e.detail}".rstrip()
              + (f" | {_short(e.summary)}" if e.summary and e.event in ("done", "skip") else ""),
              file=sys.stderr, flush=True)

    plans = run(r, until=a.until, redo_stale=a.redo_stale, on_event=on_event)
    print(json.dumps({p.stage: p.state for p in plans}))
    return 0


def cmd_status(argv: list[str]) -> int:
    a = _args("eva-fast recipe status", argv, run=False)
    r = Recipe.load(a.config, a.set)
    plans = plan(r)
    if a.json:
        for p in plans:
            prov = p.provenance or {}
            print(json.dumps({"stage": p.stage, "index": p.index, "state": p.state, "reason": p.reason,
                              "config_hash": p.config_hash, "run_id": prov.get("run_id"),
                              "attempts": prov.get("attempts"), "summary": prov.get("summary"), "dir": str(p.dir)},
                             default=str))
        return 0
    print(f"recipe {r.name} in {r.out_dir}")
    print("\n".join(_plan_lines(plans, dry=False)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_subcommand("eva-fast recipe", USAGE, {"run": cmd_run, "status": cmd_status}, argv,
                          (RecipeError, ValueError, FileNotFoundError))
