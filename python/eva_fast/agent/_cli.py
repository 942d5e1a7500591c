"""``eva-fast ask VIDEO "QUESTION" --model PATH``: run the EVA agent on one question, showing each
round as it happens; ``--json`` saves the trajectory, ``--viz`` draws the timeline."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

from eva_fast.agent._backend import get_backend
from eva_fast.agent._config import AgentConfig
from eva_fast.agent._loop import AgentLoop
from eva_fast.agent._protocol import STOP_EXCEPTION
from eva_fast.agent._viz import plot_timeline
from eva_fast.video import add_frame_option_flags, frame_options_from_flags

# CLI entry point: printing is its job.


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``ask`` subcommand on ``eva-fast``'s subparsers (agent defaults from
    :class:`AgentConfig`, frame flags from :class:`~eva_fast.video.FrameOptions`)."""
    d = {f.name: f.default for f in dataclasses.fields(AgentConfig)}
    pa = sub.add_parser("ask", help="ask the EVA agent a question about a video",
                        description="Run EVA's agent loop (plan, fetch frames, answer) on one video.")
    pa.add_argument("video", help="video file")
    pa.add_argument("question", help="the question (with its options, e.g. 'A. ... B. ...')")
    pa.add_argument("--model", help="checkpoint folder (transformers) or model name (openai; default: the server's)")
    pa.add_argument("--backend", default="transformers", help="transformers (default), openai, or package.module:Class")
    pa.add_argument("--base-url", default="http://localhost:8000/v1", help="openai: server URL with /v1")
    pa.add_argument("--api-key", default=None, help="openai: API key (default $OPENAI_API_KEY or 'EMPTY')")
    pa.add_argument("--image-format", choices=["png", "ppm", "jpeg", "file"], default="png",
                    help="openai: frames inline as lossless PNG (default), uncompressed PPM (server on this "
                         "machine or LAN) or JPEG, or file:// URLs under --media-root")
    pa.add_argument("--media-root", default=None, help="openai --image-format file: folder the server may read")
    pa.add_argument("--device", default=None, help="transformers: model device (default cuda if available, else cpu)")
    pa.add_argument("--dtype", default=None, help="transformers: bfloat16, float16 or float32 (default by device)")
    pa.add_argument("--max-turns", type=int, default=d["max_turns"], help=f"model turns (default {d['max_turns']})")
    pa.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"],
                    help=f"tokens per turn (default {d['max_new_tokens']})")
    pa.add_argument("--temperature", type=float, default=d["temperature"],
                    help=f"0 = greedy (default {d['temperature']})")
    pa.add_argument("--decode-device", default=d["decode_device"],
                    help=f"where frames are decoded: cpu, cuda or cuda:N (default {d['decode_device']})")
    pa.add_argument("--system", default=None, help="system turn (default: the one EVA was trained with)")
    pa.add_argument("--first-turn", default=None,
                    help="use this text as the model's first reply (testing/debugging: e.g. a <tool_call> to "
                         "exercise frame fetching with a model that does not call tools)")
    pa.add_argument("--json", dest="json_path", default=None, help="write the trajectory here (JSON)")
    pa.add_argument("--viz", default=None, help="draw the timeline of what the agent watched (PNG)")
    pa.add_argument("--quiet", action="store_true", help="print only the answer")
    add_frame_option_flags(pa)
    return pa


def _print_event(event: str, traj, turn) -> None:
    if event == "generated":
        t = turn.timings_ms.get("generate", 0.0)
        print(f"── round {turn.index + 1} · {turn.prompt_tokens} prompt + {turn.completion_tokens} new tokens · "
              f"{t / 1e3:.2f} s", flush=True)
        text = turn.text if len(turn.text) <= 4000 else turn.text[:4000] + f" ... [{len(turn.text)} chars]"
        for line in text.strip().splitlines() or [""]:
            print(f"   │ {line}")
    elif event == "tools":
        for c in turn.tool_calls:
            args = {k: c.arguments.get(k) for k in ("start_time", "end_time", "nframes", "resize")} if c.arguments else c.raw[:80]
            if c.error:
                detail = f" ({c.error_detail})" if c.error_detail else ""
                print(f"   ✗ frame_select {args}: {c.error}{detail}")
                continue
            fr, plan = c.frames, c.frames.plan
            budget = f", budget {'+'.join(plan.budget_steps)}" if plan.budget_steps else ""
            pts = ", ".join(f"{p:.1f}" for p in fr.pts_s[:12]) + (" ..." if fr.nframes > 12 else "")
            print(f"   ▶ frame_select {args} -> {plan.nframes} frames {plan.size[0]}x{plan.size[1]} "
                  f"(resize {plan.resize:.3f}{budget}), window [{plan.start_s:.1f}, {plan.end_s:.1f}] s, "
                  f"{plan.num_visual_tokens} tokens, {c.decode_ms:.0f} ms")
            print(f"     at {pts} s")
        sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    """Run ``eva-fast ask``; returns the exit code (0 when the run ended with an answer or a normal
    stop, 1 on an exception stop)."""
    cfg = AgentConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        frame_options=frame_options_from_flags(args),
        decode_device=args.decode_device,
    )
    if args.backend == "transformers":
        if not args.model:
            raise ValueError("--model PATH (a Qwen2.5-VL checkpoint folder) is required for the transformers backend")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        backend = get_backend("transformers", model_path=args.model, device=device, dtype=args.dtype)
    elif args.backend == "openai":
        backend = get_backend("openai", base_url=args.base_url, model=args.model, api_key=args.api_key,
                              image_format=args.image_format, media_root=args.media_root)
    else:
        backend = get_backend(args.backend, **({"model_path": args.model} if args.model else {}))
    if args.first_turn is not None:
        backend = get_backend("scripted", replies=[args.first_turn], then=backend)

    loop = AgentLoop(backend, cfg)
    traj = loop.run_sync(args.video, args.question, args.system, on_event=None if args.quiet else _print_event)
    if args.quiet:
        print(traj.answer)
    else:
        t = traj.timings_ms()
        print(f"══ answer: {traj.answer or '(none)'}   stop: {traj.stop_reason}")
        print(f"   rounds {traj.num_rounds}, total tokens {traj.total_tokens}, visual tokens {traj.visual_tokens} "
              f"(estimated {traj.estimated_visual_tokens}); time {traj.wall_ms / 1e3:.2f} s: "
              + ", ".join(f"{k} {v / 1e3:.2f} s" for k, v in t.items()))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(traj.to_dict(), f, indent=1)
        if not args.quiet:
            print(f"   trajectory -> {args.json_path}")
    if args.viz:
        plot_timeline(traj, args.viz)
        if not args.quiet:
            print(f"   timeline   -> {args.viz}")
    return 1 if traj.stop_reason.startswith(STOP_EXCEPTION) else 0
