"""Benchmark: a GRPO step's rollouts — time per stage and the frame work the group cache saves.

A rollout batch is ``--questions`` questions x ``--generations`` episodes of EVA's agent loop
(:class:`eva_fast.train.RolloutEngine`) on a Qwen2.5-VL model in process. The replies are forced
token by token (a logits processor that leaves only the next token of a scripted EVA reply), so
the model does its real work per token — prefill with the frames, one forward per generated token
— while the episodes follow the shape EVA's rollouts have: a survey of the whole video that every
episode of a question makes alike, a zoom that differs per episode, then the answer.

Reported per configuration (group frame cache on / off, same batch, one run, alternating):
wall time of the batch, the summed stage times of the episodes (``generate`` = model time incl.
prefill, ``decode`` = frame tool, ``pack`` = frames -> pixel_values), the share of frame work in
the episodes' time, and frames requested vs decoded. Rows go to ``bench/results/rollout.jsonl``
(under the working directory).

CPU (default): the tiny random-weight test model (``tests/_tiny_qwen.py``) on test clips and the
bench's 10-minute 720p video. GPU check: ``--device cuda --model-size 7b`` builds a random model
with Qwen2.5-VL-7B's shapes in bf16 (no download) and decodes with NVDEC (``--decode-device``).

Usage::

    python bench/bench_rollout.py                        # CPU, tiny model
    python bench/bench_rollout.py --device cuda --model-size 7b --decode-device cuda --out DIR/rollout.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = Path("bench") / "results" / "rollout.jsonl"

_forced = threading.local()


def _call(start, end, n, resize):
    args = {"start_time": round(start, 2), "end_time": round(end, 2), "nframes": n, "resize": resize}
    return "<tool_call>" + json.dumps({"tool": "frame_select", "arguments": args}) + "</tool_call>"


def episode_replies(duration_s: float, k: int, rng: random.Random) -> list[str]:
    """Survey (alike in a group) -> zoom (episode-specific) -> answer."""
    span = max(1.0, duration_s * 0.1)
    start = rng.uniform(0, max(0.0, duration_s - span))
    return [
        "Summary: nothing seen yet. Plan: survey the whole video at low resolution. " + _call(0, duration_s, 16, 0.25),
        f"Reflection: the event seems to be around {start:.0f} s. Plan: zoom in. " + _call(start, start + span, 8, 0.5),
        f"The evidence is sufficient. <answer>{'AB'[k % 2]}</answer>",
    ]


def forced_backend(model_dir: str | None, device: str, scripts: dict[str, list[list[str]]], model=None, tokenizer=None):
    """A transformers backend whose sessions say scripted replies (one script per episode, picked by
    the question of its first prompt), generated through the model's own forward passes."""
    from eva_fast.agent._forcing import ForceTokens
    from eva_fast.agent._transformers import TransformersBackend, _TransformersSession

    if model is not None:
        backend = TransformersBackend(model=model, tokenizer=tokenizer, generation_kwargs={"top_k": 0, "top_p": 1.0})
    else:
        backend = TransformersBackend(model_dir, device=device)
    tok = backend.tokenizer
    eot = backend.renderer.end_of_turn_id
    lock = threading.Lock()
    original = backend.model.generate

    def generate(**kw):
        forced = _forced.ids
        kw["logits_processor"] = list(kw.get("logits_processor") or []) + [ForceTokens(forced, kw["input_ids"].shape[1])]
        kw["max_new_tokens"] = len(forced)
        return original(**kw)

    backend.model.generate = generate

    class Session(_TransformersSession):
        script: list[str] | None = None
        turn = 0

        def _generate_sync(self, messages, max_new_tokens, temperature):
            if self.script is None:
                q = next(q for q in scripts if q in messages[1].content)
                with lock:
                    self.script = scripts[q].pop(0)
            _forced.ids = tok(self.script[self.turn], add_special_tokens=False)["input_ids"] + [eot]
            self.turn += 1
            return super()._generate_sync(messages, max_new_tokens, temperature)

    backend.session = lambda: Session(backend)
    return backend


def random_7b(device: str):
    """Qwen2.5-VL-7B's shapes with random bf16 weights (for timing on a GPU; nothing downloaded)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        vision_config=dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        text_config=dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                         intermediate_size=18944, vocab_size=152064, max_position_embeddings=128000,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                         bos_token_id=151643, eos_token_id=151645),
    )
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.bfloat16).eval()
    return model


def _pack_variants() -> int | None:
    """Compiled variants of the Triton pack kernel in this process (None without Triton or CUDA)."""
    if not torch.cuda.is_available():
        return None
    try:
        from eva_fast.kernels.pack_qwen25vl import compiled_variants
    except ImportError:
        return None
    return compiled_variants()


def run_batch(backend, agent_cfg, videos, questions, share: bool):
    from eva_fast.train import RolloutEngine

    engine = RolloutEngine(backend, agent_cfg, share_frames=share)
    t0 = time.perf_counter()
    batch = engine.run_sync(videos, questions)
    wall = time.perf_counter() - t0
    return batch, wall


def main(argv: list[str] | None = None) -> int:
    # the tiny test model's builder (tests/_tiny_qwen.py) is in the repository, not the package: run
    # from the repository root (or a checkout next to this file)
    sys.path[:0] = [str(Path.cwd()), str(ROOT)]
    from eva_fast.bench._harness import environment
    from eva_fast.agent import AgentConfig
    from eva_fast.video import VideoReader

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=2)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--reps", type=int, default=2, help="batches per configuration (alternating)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--decode-device", default="cpu")
    p.add_argument("--model-size", choices=["tiny", "7b"], default="tiny")
    p.add_argument("--videos", nargs="*", help="videos (default: a test clip and the bench's 10-minute 720p video)")
    p.add_argument("--configs", choices=["both", "shared"], default="both",
                   help="both: group frame cache on and off; shared: on only (the GPU check)")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)

    from tests._tiny_qwen import build_tiny_qwen25vl

    tmp = Path(tempfile.mkdtemp(prefix="eva_fast_bench_rollout_"))
    model_dir = str(build_tiny_qwen25vl(tmp / "tiny"))
    videos = a.videos
    if not videos:
        videos = [str(Path("tests") / "data" / "bigbuckbunny.mp4")]
        from eva_fast.bench._videos import find_media_dir, make_long_video

        media = find_media_dir()
        if media is not None:
            videos.append(make_long_video(720, 10, media).path)
    videos = (videos * a.questions)[: a.questions]
    questions = [f"Question {i}: what happens? A. x B. y" for i in range(a.questions)]
    durations = [VideoReader(v).metadata.duration_s - 0.5 for v in videos]

    model = tokenizer = None
    if a.model_size == "7b":
        from transformers import AutoTokenizer

        model = random_7b(a.device)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    agent_cfg = AgentConfig(max_turns=4, max_new_tokens=256, temperature=0.0, device=a.decode_device)
    env = environment()
    rows = []
    for rep in range(a.reps):
        for share in ((True, False) if a.configs == "both" else (True,)):
            rng = random.Random(rep)
            scripts = {q: [episode_replies(d, k, rng) for k in range(a.generations)] for q, d in zip(questions, durations)}
            backend = forced_backend(model_dir, a.device, scripts, model=model, tokenizer=tokenizer)
            vids = [v for v in videos for _ in range(a.generations)]
            qs = [q for q in questions for _ in range(a.generations)]
            batch, wall = run_batch(backend, agent_cfg, vids, qs, share)
            assert all(t.stop_reason == "answer_found" for t in batch.trajectories), [t.stop_reason for t in batch.trajectories]
            stages = {k: round(v, 1) for k, v in batch.timings_ms.items()}
            stages["decoder_work"] = round(batch.decoder_ms, 1)  # the decoders' own time, no waiting
            # the episodes' "decode" stage includes waiting for the shared reader; the work is the decoders'
            episode_ms = sum(stages.get(k, 0.0) for k in ("generate", "decoder_work", "pack"))
            frames = sum(c.frames.nframes for t in batch.trajectories for c in t.tool_calls if c.frames)
            decoded = batch.cache.frames_decoded if share else frames
            row = {"run_id": env["run_id"], "timestamp": env["timestamp"], "commit": env["commit"],
                   "machine": env["machine"], "versions": env["versions"], "suite": "rollout", "rep": rep,
                   "model": a.model_size, "device": a.device, "decode_device": a.decode_device,
                   "questions": a.questions, "generations": a.generations, "share_frames": share,
                   "videos": [Path(v).name for v in videos], "wall_ms": round(wall * 1e3, 1), "stages_ms": stages,
                   "frame_work_share": round((stages["decoder_work"] + stages.get("pack", 0)) / episode_ms, 4)
                   if episode_ms else None,
                   "frames_requested": frames, "frames_decoded": decoded, "decoder_frames": batch.decoder_frames,
                   "cache_hit_rate": round(batch.cache.hit_rate, 4) if share else 0.0,
                   # the packer's one-time compile, done when the backend is made (outside "pack"), and
                   # the compiled variants of the pack kernel after the batch (1 per dtype expected)
                   "pack_warmup_ms": round(backend.pack_warmup_ms, 1), "pack_kernel_variants": _pack_variants()}
            rows.append(row)
            print(f"rep {rep} share_frames={share!s:5}  wall {row['wall_ms'] / 1e3:7.2f} s  generate "
                  f"{stages.get('generate', 0) / 1e3:7.2f} s  decoder {stages['decoder_work'] / 1e3:6.2f} s  pack "
                  f"{stages.get('pack', 0) / 1e3:5.2f} s  frame-work share {row['frame_work_share']:.3f}  frames "
                  f"{decoded}/{frames} decoded, decoder work {batch.decoder_frames} frames")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
