"""``eva-fast`` command line: ``info``, ``frames`` and ``ask`` here; ``eval`` (:mod:`eva_fast.eval._cli`),
``train``, ``data`` and ``recipe`` (:mod:`eva_fast.train`, the optional train extra) and ``bench``
(:mod:`eva_fast.bench`) dispatch to their packages."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

import eva_fast
from eva_fast.agent import _cli as ask_cli
from eva_fast.eval import _cli as eval_cli
from eva_fast.video import (
    MAX_NFRAMES,
    FrameBatch,
    VideoReader,
    add_frame_option_flags,
    frame_options_from_flags,
    select_frames,
)

# The CLI is an entry point: printing to stdout is its job.


def _cmd_info(args: argparse.Namespace) -> int:
    info = eva_fast.build_info()
    if args.video:
        meta = VideoReader(args.video).metadata
        info = {"build": info, "video": {k: getattr(meta, k) for k in meta.__dataclass_fields__}}
        info["video"]["end_s"] = meta.end_s
    print(json.dumps(info, indent=2, default=list))
    return 0


def _contact_sheet(frames, labels: list[str], path: Path, max_width: int = 1600) -> None:
    """One PNG with every frame in a grid, each labelled with its index and time."""
    n, h, w, _ = frames.shape
    cols = max(1, min(n, max_width // max(w, 1) or 1, math.ceil(math.sqrt(n * h / max(w, 1)) * 1.5) or 1))
    rows = math.ceil(n / cols)
    label_h = 14
    sheet = Image.new("RGB", (cols * w, rows * (h + label_h)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = c * w, r * (h + label_h)
        sheet.paste(Image.fromarray(frames[i].numpy()), (x, y + label_h))
        draw.text((x + 2, y + 1), labels[i], fill=(255, 255, 255))
    sheet.save(path)


def frames_summary(batch: FrameBatch) -> dict:
    """``eva-fast frames --json``: the call's plan (``plan``, as :meth:`FramePlan.to_dict`), flat
    copies of its main fields, the decoded pts, corrupt flags, decoder work and timings (no pixels)."""
    p, st = batch.plan, batch.stats
    return {
        "video": batch.video.path if batch.video else None,
        "request": p.request.to_dict(),
        "window_s": [p.start_s, p.end_s],
        "timestamps": list(p.timestamps_s),
        "frame_indices": list(p.frame_indices),
        "pts_s": list(batch.pts_s),
        "corrupt": list(batch.corrupt),
        "size": list(p.size),
        "nframes": p.nframes,
        "resize": p.resize,
        "tokens_per_frame": p.tokens_per_frame,
        "num_visual_tokens": p.num_visual_tokens,
        "estimated_visual_tokens": p.estimated_visual_tokens,
        "final_estimated_visual_tokens": p.final_estimated_visual_tokens,
        "budget_steps": list(p.budget_steps),
        "resample": p.resample,
        "policy": p.policy,
        "snap_error_s": list(p.snap_error_s),
        "backend": st.backend,
        "fallback_reason": st.fallback_reason,
        "decoded_frames": st.decoded_frames,
        "seeks": st.seeks,
        "decode_ms": round(st.decode_ms, 3),
        "convert_ms": round(st.convert_ms, 3),
        "total_ms": round(batch.total_ms, 3),
        "plan": p.to_dict(),
    }


def _cmd_frames(args: argparse.Namespace) -> int:
    options = frame_options_from_flags(args)
    batch = select_frames(args.video, args.start, args.end, args.nframes, args.resize, options=options)
    plan = batch.plan
    summary = frames_summary(batch)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for i, (idx, pts) in enumerate(zip(plan.frame_indices, batch.pts_s)):
            name = out / f"frame_{i:03d}_idx{idx:06d}_{pts:09.3f}s.png"
            Image.fromarray(batch.frames[i].numpy()).save(name)
            files.append(str(name))
        labels = [f"#{i} idx {idx} {pts:.2f}s" for i, (idx, pts) in enumerate(zip(plan.frame_indices, batch.pts_s))]
        sheet = out / "contact_sheet.png"
        _contact_sheet(batch.frames, labels, sheet)
        summary["files"] = files
        summary["contact_sheet"] = str(sheet)
    if args.json:
        print(json.dumps(summary))
        return 0
    m = batch.video
    print(f"video      {m.path}")
    print(f"           {m.codec} {m.pixel_format} {m.width}x{m.height} {m.average_fps:.3f} fps, "
          f"{m.num_frames} frames, {m.duration_s:.3f} s")
    print(f"request    start={plan.request.start_time} end={plan.request.end_time} "
          f"nframes={plan.request.nframes} resize={plan.request.resize}")
    if plan.budget_steps:
        print(f"budget     over {options.max_visual_tokens} tokens (estimate {plan.estimated_visual_tokens}): "
              f"{' + '.join(plan.budget_steps)} -> nframes={plan.nframes} resize={plan.resize:.4f}")
    print(f"window     [{plan.start_s:.3f}, {plan.end_s:.3f}] s")
    print(f"timestamps {', '.join(f'{t:.3f}' for t in plan.timestamps_s)}")
    print(f"frames     {', '.join(str(i) for i in plan.frame_indices)}")
    print(f"size       {plan.size[0]}x{plan.size[1]} (HxW), {plan.tokens_per_frame} tokens/frame, "
          f"{plan.num_visual_tokens} tokens")
    print(f"decode     {batch.stats.decoded_frames} frames decoded, {batch.stats.seeks} seeks, "
          f"{batch.stats.decode_ms:.1f} ms decode + {batch.stats.convert_ms:.1f} ms convert/resize, "
          f"{batch.total_ms:.1f} ms total")
    if any(batch.corrupt):
        print(f"WARNING    {sum(batch.corrupt)} frame(s) come from damaged stream data")
    if args.out:
        print(f"wrote      {len(plan.frame_indices)} PNGs and {summary['contact_sheet']}")
    return 0


def _cmd_bench(rest: list[str]) -> int:
    try:  # bench/ ships as eva_fast.bench; a partial install may lack it
        from eva_fast.bench import run
    except ImportError as e:  # pragma: no cover - shipped with the package
        raise SystemExit(f"eva_fast.bench is not available: {e}") from e
    return int(run.main(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eva-fast", description="eva_fast: EVA's frame tool, fast.")
    sub = p.add_subparsers(dest="cmd", required=True)

    pi = sub.add_parser("info", help="print build info (and a video's metadata)")
    pi.add_argument("video", nargs="?", help="optional video file to describe")

    pf = sub.add_parser("frames", help="run EVA's frame_select tool on a video")
    pf.add_argument("video")
    pf.add_argument("--start", type=float, required=True, help="window start, seconds")
    pf.add_argument("--end", type=float, required=True, help="window end, seconds")
    pf.add_argument("--nframes", type=int, required=True, help=f"frames to select (1..{MAX_NFRAMES})")
    pf.add_argument("--resize", type=float, default=1.0, help="scale on the original resolution (default 1.0)")
    add_frame_option_flags(pf)
    pf.add_argument("--out", help="write the frames as PNG and a contact sheet into this folder")
    pf.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    sub.add_parser("bench", help="throughput suite against peer decoders (see bench/README.md)", add_help=False)
    sub.add_parser("eval", help="evaluate the agent on EVA's benchmarks (eva-fast eval -h)", add_help=False)
    sub.add_parser("train", help="train EVA on TRL: sft, kto, grpo (eva-fast train -h)", add_help=False)
    sub.add_parser("data", help="build training data: import, convert, teacher, kto-label, rl-set, enhance "
                   "(eva-fast data -h)", add_help=False)
    sub.add_parser("recipe", help="EVA's whole training recipe, resumable: run, status (eva-fast recipe -h)",
                   add_help=False)

    ask_cli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _cmd_bench(argv[1:])
    if argv and argv[0] == "eval":
        return eval_cli.main(argv[1:])
    if argv and argv[0] == "train":
        from eva_fast.train._cli import main as train_main  # eva_fast.train needs the optional train extra (TRL)

        return train_main(argv[1:])
    if argv and argv[0] == "data":
        from eva_fast.train._data_cli import main as data_main  # eva_fast.train: the optional train extra

        return data_main(argv[1:])
    if argv and argv[0] == "recipe":
        from eva_fast.train._recipe_cli import main as recipe_main  # eva_fast.train: the optional train extra

        return recipe_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "info":
            return _cmd_info(args)
        if args.cmd == "frames":
            return _cmd_frames(args)
        if args.cmd == "ask":
            return ask_cli.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"eva-fast {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
