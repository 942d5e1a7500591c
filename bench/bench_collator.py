"""Benchmark: eva_fast's training collator against the pipeline a user would otherwise write.

Both turn the same EVA training records (multi-turn trajectories whose tool turns reference frames
of real videos) into ``Qwen2_5_VLForConditionalGeneration`` inputs:

* ``eva_fast``: :class:`eva_fast.train.EvaCollator` — eva_fast's decoder (seek to the recorded
  frames, decode, resize once in the decoder), the packer, the shared chat renderer;
* ``decord+pil+hf``: decord's ``VideoReader.get_batch`` at the recorded frame indices, Pillow
  bicubic to the recorded size, then transformers' ``Qwen2VLImageProcessorPil`` + tokenizer
  through the chat template (what ``qwen-vl-utils``-style SFT code does), a new reader per record
  as a dataset ``__getitem__`` opens it.

Before timing, each record's outputs are compared: equal ``input_ids``, ``image_grid_thw`` and
frame count; pixels differ only by the resize filter (OpenCV cubic vs Pillow bicubic), reported as
mean absolute difference of ``pixel_values``. Both run in one process, alternating, median of
``--reps``; rows (trajectories/s, frames/s, CPU ms per trajectory, ratio) go to
``bench/results/collator.jsonl`` under the working directory.

Usage::

    python bench/bench_collator.py --reps 3            # records built on tests/data and a long video
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = Path("bench") / "results" / "collator.jsonl"


def _call(start, end, n, resize):
    args = {"start_time": start, "end_time": end, "nframes": n, "resize": resize}
    return "<tool_call>" + json.dumps({"tool": "frame_select", "arguments": args}) + "</tool_call>"


def build_records(long_video: str | None) -> list:
    """EVA-style episodes (survey -> zoom -> answer) run by the agent loop with scripted replies on
    real videos, converted to training records."""
    from eva_fast.agent import AgentConfig, AgentLoop, get_backend
    from eva_fast.train import record_from_trajectory

    data = Path("tests") / "data"
    specs = [
        (data / "nasa_13013.mp4", [(0, 13, 16, 0.5), (4, 8, 8, 1.0)]),
        (data / "bigbuckbunny.mp4", [(0, 5, 16, 0.25), (1, 3, 8, 0.5)]),
        (data / "cockatoo_vp9.webm", [(0, 14, 32, 0.25), (6, 9, 8, 0.5)]),
    ]
    if long_video:
        specs.append((Path(long_video), [(0, 600, 64, 0.1), (200, 260, 16, 0.5), (231, 233, 4, 1.0)]))
    recs = []
    for video, calls in specs:
        replies = [f"Summary and plan {k}. " + _call(*c) for k, c in enumerate(calls)] + ["<answer>A</answer>"]
        traj = AgentLoop(get_backend("scripted", replies=replies), AgentConfig(max_turns=len(replies))).run_sync(
            str(video), "What happens? A. x B. y")
        assert traj.stop_reason == "answer_found", traj
        recs.append(record_from_trajectory(traj, gt="A"))
    return recs


class HFPipeline:
    """decord + Pillow + transformers' PIL processor, as a user's dataset would do it."""

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from eva_fast.agent import ChatRenderer, load_chat_template

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.template = load_chat_template(model_dir, self.tok)
        self.proc = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12_845_056)
        self.renderer = ChatRenderer(self.tok, self.template)  # only for the image-pad expansion rule

    def __call__(self, record) -> dict:
        import decord
        from PIL import Image

        images = []
        vr = decord.VideoReader(record.video)
        for k, m in enumerate(record.messages):
            for c in record.calls.get(k, []):
                arr = vr.get_batch(list(c.frame_indices)).asnumpy()
                h, w = c.size
                images += [np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC)) for a in arr]
        out = self.proc(images=images, return_tensors="pt")
        text = self.tok.apply_chat_template(record.template_messages(), chat_template=self.template, tokenize=False)
        ids = torch.tensor(self.tok(text, add_special_tokens=False)["input_ids"])
        merge = 4
        tokens = (out["image_grid_thw"].prod(-1) // merge).tolist()
        from eva_fast.agent import expand_image_tokens

        ids = expand_image_tokens(ids, self.renderer.image_token_id, tokens)
        return {"input_ids": ids, "pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    # the tiny test model's builder (tests/_tiny_qwen.py) is in the repository, not the package: run
    # from the repository root (or a checkout next to this file)
    sys.path[:0] = [str(Path.cwd()), str(ROOT)]
    from eva_fast.bench._harness import environment
    from eva_fast.train import EvaCollator
    from eva_fast.agent import ChatRenderer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--long-video", help="a long video (default: build the bench's 10-minute 720p one)")
    p.add_argument("--no-long", action="store_true", help="only the short test clips")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)

    from tests._tiny_qwen import build_tiny_qwen25vl

    tmp = Path(tempfile.mkdtemp(prefix="eva_fast_bench_collator_"))
    model_dir = str(build_tiny_qwen25vl(tmp / "tiny"))  # tokenizer + chat template (weights unused)
    long_video = None
    if not a.no_long:
        if a.long_video:
            long_video = a.long_video
        else:
            from eva_fast.bench._videos import find_media_dir, make_long_video

            media = find_media_dir()
            if media is None:
                print("no ../shared/media: the long video is skipped (--long-video PATH to give one)")
            else:
                long_video = make_long_video(720, 10, media).path
    records = build_records(long_video)
    ours = EvaCollator(ChatRenderer.from_pretrained(model_dir))
    theirs = HFPipeline(model_dir)

    # correctness before timing
    checks = []
    for r in records:
        x, y = ours.encode(r), theirs(r)
        assert torch.equal(x.input_ids, y["input_ids"]), f"{r.video}: input_ids differ"
        assert torch.equal(x.image_grid_thw, y["image_grid_thw"]), f"{r.video}: grids differ"
        diff = (x.pixel_values - y["pixel_values"]).abs()
        checks.append({"video": Path(r.video).name, "frames": int(x.image_grid_thw.shape[0]),
                       "pixel_values_mean_abs_diff": round(float(diff.mean()), 5)})
    env = environment()
    rows = []
    for r, chk in zip(records, checks):
        t_ours, t_theirs, c_ours, c_theirs = [], [], [], []
        for _ in range(a.reps):
            ours.readers = type(ours.readers)()  # a fresh worker: the video is opened once per sample here too
            c0, t0 = _cpu(), time.perf_counter()
            ours.encode(r)
            t_ours.append(time.perf_counter() - t0)
            c_ours.append(_cpu() - c0)
            c0, t0 = _cpu(), time.perf_counter()
            theirs(r)
            t_theirs.append(time.perf_counter() - t0)
            c_theirs.append(_cpu() - c0)
        mo, mt = float(np.median(t_ours)), float(np.median(t_theirs))
        row = {"run_id": env["run_id"], "timestamp": env["timestamp"], "commit": env["commit"], "machine": env["machine"],
               "versions": env["versions"], "suite": "collator", "video": chk["video"], "frames": chk["frames"],
               "check": chk, "eva_fast_ms": round(mo * 1e3, 2), "baseline_ms": round(mt * 1e3, 2),
               "eva_fast_cpu_ms": round(float(np.median(c_ours)) * 1e3, 2),
               "baseline_cpu_ms": round(float(np.median(c_theirs)) * 1e3, 2),
               "eva_fast_frames_per_s": round(chk["frames"] / mo, 1), "baseline_frames_per_s": round(chk["frames"] / mt, 1),
               "ratio": round(mt / mo, 2), "baseline": "decord+pil+hf", "reps": a.reps}
        rows.append(row)
        print(f"{chk['video']:>24}  {chk['frames']:4d} frames  eva_fast {row['eva_fast_ms']:8.1f} ms  "
              f"decord+PIL+HF {row['baseline_ms']:8.1f} ms  ratio {row['ratio']:5.2f}  "
              f"(pixels mean |diff| {chk['pixel_values_mean_abs_diff']})")
    tot_o = sum(r["eva_fast_ms"] for r in rows)
    tot_t = sum(r["baseline_ms"] for r in rows)
    print(f"{'all':>24}  trajectories/s eva_fast {len(rows) / tot_o * 1e3:.2f}  baseline {len(rows) / tot_t * 1e3:.2f}  "
          f"ratio {tot_t / tot_o:.2f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
