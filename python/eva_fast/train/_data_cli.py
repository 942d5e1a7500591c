"""``eva-fast data ...``: build training data in the ``eva_fast.trajectory`` format.

    eva-fast data convert ask.json out/eval/videomme.jsonl --out sft.jsonl [--label auto] [--only-correct]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

USAGE = """usage: eva-fast data {convert} ...

  convert   trajectories (eva-fast ask --json, eval result files, jsonl of trajectories) or
            conversations with image files -> training records (eva_fast.trajectory jsonl)
"""


def _iter_json_objects(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n{" not in stripped.strip():
        try:
            yield 1, json.loads(stripped)
            return
        except json.JSONDecodeError:
            pass  # maybe jsonl after all
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from e


def _label(mode: str, record: Any) -> bool | None:
    if mode == "none":
        return None
    if mode in ("chosen", "rejected"):
        return mode == "chosen"
    # auto: right answer = chosen (needs gt)
    if record.gt is None:
        return None
    from eva_fast.train.rewards import mcq_accuracy

    return mcq_accuracy(record.answer or "", record.gt) == 1.0


def cmd_convert(argv: list[str]) -> int:
    from eva_fast.train._records import (
        RecordError,
        TrajectoryRecord,
        record_from_image_conversation,
        record_from_trajectory,
        write_records,
    )

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
        for n, obj in _iter_json_objects(path):
            where = f"{path}:{n}"
            try:
                if isinstance(obj, dict) and obj.get("format") == "eva_fast.trajectory":
                    rec = TrajectoryRecord.from_dict(obj, where, str(path.resolve().parent))
                elif isinstance(obj, dict) and ("turns" in obj or "trajectory" in obj):
                    rec = record_from_trajectory(obj, source=a.source or where)
                elif isinstance(obj, dict) and "messages" in obj:
                    rec = record_from_image_conversation(obj, base_dir=path.resolve().parent)
                else:
                    raise RecordError(f"{where}: not a trajectory, eval record, record or conversation")
                if a.relative_to:
                    rec.video = os.path.relpath(os.path.abspath(rec.video), os.path.abspath(a.relative_to))
                if a.only_correct:
                    from eva_fast.train.rewards import mcq_accuracy

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmds = {"convert": cmd_convert}
    if argv[0] not in cmds:
        print(f"eva-fast data: unknown command {argv[0]!r}; choose from {sorted(cmds)}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return cmds[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError) as e:
        print(f"eva-fast data {argv[0]}: error: {e}", file=sys.stderr)
        return 2
