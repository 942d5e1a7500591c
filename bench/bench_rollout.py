"""Benchmark: a GRPO step's rollouts — batched turn-synchronous generation against batch-1, time per
stage, and the frame work the group cache saves.

A rollout batch is ``--questions`` questions x ``--generations`` episodes of EVA's agent loop
(:class:`eva_fast.train.RolloutEngine`) on a Qwen2.5-VL model in process. The replies are forced
token by token (a logits processor leaves only the next token of a scripted EVA reply, per row of
a batched call), so the model does its real work per token — prefill with the frames, one forward
per generated token — while the episodes follow the shape EVA's rollouts have: a survey of the
whole video that every episode of a question makes alike, a zoom that differs per episode, then
the answer.

Modes (``--modes``, run alternately, ``--reps`` times):

* ``batched``: the trainer's path — one left-padded ``generate`` per tick over every live episode;
* ``batch1``: one ``generate`` per episode turn (what the trainer did before; ``--batch1-generations``
  runs it on fewer episodes per question where a full batch would not fit the time budget);
* ``batched-static``: batched with transformers' static KV cache (eager);
* ``batched-compiled``: batched with the static cache and transformers' compiled decoding step
  (CUDA only; the first tick compiles);
* ``batched-nocache``: batched with the group frame cache off (the decoder work it saves).

Correctness before timing: each mode's episodes are checked against the first mode's (same token
ids — the replies are forced — and recorded sampling logprobs within ``--logprob-atol``; the
static/compiled modes must match the dynamic cache's). Reported per mode: wall time, episodes/s
and the ratio to batch-1's (also per CPU second of the process: on a shared machine other load
inflates wall time, not CPU time), the model's wall time (the ticks' summed ``generate``, or the
episodes' summed ``generate`` at batch 1), generated tokens/s, decoding step ms, ticks,
concurrency, padding waste, the prefill share of the model time (what keeping the KV cache across
turns could save at most), the frame-work share ((decoder work + pack) / (that + model time)) and
frames requested vs decoded. Rows go to ``bench/results/rollout.jsonl`` (under the working
directory), appended as each finishes.

CPU (default): the tiny random-weight test model (``tests/_tiny_qwen.py``) on test clips and the
bench's 10-minute 720p video. GPU check: ``--device cuda --model-size 7b`` builds a random model
with Qwen2.5-VL-7B's shapes in bf16 (no download) and decodes with NVDEC (``--decode-device``).

Usage::

    python bench/bench_rollout.py                        # CPU, tiny model: batched vs batch-1
    python bench/bench_rollout.py --device cuda --model-size 7b --decode-device cuda \\
        --modes batched,batch1,batched-static,batched-compiled --batch1-generations 1 --max-s 80
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # --max-s counts from here (before torch's import)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = Path("bench") / "results" / "rollout.jsonl"
MODES = ("batched", "batch1", "batched-static", "batched-compiled", "batched-nocache")


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


def forced_backend(model, tokenizer, scripts: dict[str, list[list[str]]], mode: str):
    """A transformers backend on ``model`` whose sessions say scripted replies (one script per
    episode, picked by the question of its first prompt, in episode order), generated through the
    model's own forward passes, batched or not as ``mode`` says. ``backend.calls`` collects the
    :class:`TickStats` of every ``generate`` call (batch-1 calls too)."""
    from eva_fast.agent._forcing import ForceTokens
    from eva_fast.agent._transformers import TransformersBackend, _TransformersSession

    scripts = {q: list(s) for q, s in scripts.items()}
    eot = None

    class Session(_TransformersSession):
        script: list[str] | None = None
        turn = 0

        async def generate(self, messages, **kw):
            if self.script is None:
                q = next(q for q in scripts if q in messages[1].content)
                self.script = scripts[q].pop(0)
            return await super().generate(messages, **kw)

        def next_forced(self) -> list[int]:
            ids = tokenizer(self.script[self.turn], add_special_tokens=False)["input_ids"] + [eot]
            self.turn += 1
            return ids

    class Forced(TransformersBackend):
        def session(self):
            return Session(self)

        def generate_turns(self, requests, agreed=None):
            rows = [r.session.next_forced() for r in requests]
            original = self.model.generate

            def generate(**kw):
                kw["logits_processor"] = [*kw.get("logits_processor", []), ForceTokens(rows, kw["input_ids"].shape[1])]
                kw["max_new_tokens"] = max(len(r) for r in rows)
                return original(**kw)

            self.model.generate = generate
            try:
                results, stats = super().generate_turns(requests, agreed)
            finally:
                del self.model.generate  # the instance attribute: back to the class's method
            self.calls.append(stats)
            return results, stats

    kw = {"generation_kwargs": {"top_k": 0, "top_p": 1.0}, "batch_turns": mode != "batch1"}
    if mode in ("batched-static", "batched-compiled"):
        kw["cache_implementation"] = "static"
        kw["compile_decoding"] = mode == "batched-compiled"
    backend = Forced(model=model, tokenizer=tokenizer, **kw)
    eot = backend.renderer.end_of_turn_id
    backend.calls = []
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


def _check(batch, ref, atol: float) -> dict:
    """This mode's episodes against the reference mode's (the first ``len(batch)`` episodes per
    question are the same scripts): token ids equal, recorded logprobs within ``atol``."""
    by_q: dict[str, list] = {}
    for t in ref.trajectories:
        by_q.setdefault(t.question, []).append(t)
    seen: dict[str, int] = {}
    equal, diff, n = True, 0.0, 0
    for t in batch.trajectories:
        k = seen.get(t.question, 0)
        seen[t.question] = k + 1
        r = by_q[t.question][k]
        a, b = t.tokens, r.tokens
        if a.prompt_ids != b.prompt_ids or a.response_ids != b.response_ids or a.response_mask != b.response_mask:
            equal = False
            continue
        for x, y, m in zip(a.response_logprobs, b.response_logprobs, a.response_mask):
            if m:
                diff = max(diff, abs(x - y))
                n += 1
    return {"tokens_equal": equal, "max_logprob_diff": round(diff, 6), "tokens_checked": n, "ok": equal and diff <= atol}


def run_mode(mode, model, tokenizer, agent_cfg, videos, questions, durations, generations, rep):
    from eva_fast.train import RolloutEngine

    # one generator per question: the first k episodes of a question have the same scripts whatever
    # the number of episodes (batch1 may run fewer)
    scripts = {q: [episode_replies(d, k, rng) for k in range(generations)]
               for i, (q, d) in enumerate(zip(questions, durations)) for rng in [random.Random(f"{rep}-{i}")]}
    backend = forced_backend(model, tokenizer, scripts, mode)
    vids = [v for v in videos for _ in range(generations)]
    qs = [q for q in questions for _ in range(generations)]
    engine = RolloutEngine(backend, agent_cfg, share_frames=mode != "batched-nocache")
    t0, c0 = time.perf_counter(), time.process_time()
    batch = engine.run_sync(vids, qs)
    backend.cpu_s = time.process_time() - c0  # all threads of the process: robust to other load on a shared machine
    return batch, time.perf_counter() - t0, backend


def _guess_s(mode: str, spent: dict[str, float], warm_s: float, episodes: int) -> float:
    """Seconds ``mode`` is expected to take for ``episodes`` episodes: its own last run; else from
    the batched run (static cache: 1.5x it; compiled: that plus a minute of compiling); batch 1
    from the warm-up's one episode (cold, so at least a warm episode's time) times the episodes;
    the first batched run from the warm-up too (a tick's rows cost about one episode's steps: 2x)."""
    if mode in spent:
        return spent[mode]
    if mode == "batch1":
        return warm_s * episodes
    base = spent.get("batched", 2.0 * warm_s)
    if mode == "batched":
        return base
    return 1.5 * base + (60.0 if mode == "batched-compiled" else 0.0)


def main(argv: list[str] | None = None) -> int:
    # the tiny test model's builder (tests/_tiny_qwen.py) is in the repository, not the package: run
    # from the repository root (or a checkout next to this file)
    sys.path[:0] = [str(Path.cwd()), str(ROOT)]
    from eva_fast.agent import AgentConfig
    from eva_fast.agent._ticks import summarize_ticks
    from eva_fast.bench._harness import environment
    from eva_fast.video import VideoReader

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=2)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--batch1-generations", type=int, default=None,
                   help="episodes per question in batch1 mode (default --generations)")
    p.add_argument("--reps", type=int, default=2, help="batches per mode (modes alternate)")
    p.add_argument("--modes", default="batched,batch1", help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--decode-device", default="cpu")
    p.add_argument("--model-size", choices=["tiny", "7b"], default="tiny")
    p.add_argument("--videos", nargs="*", help="videos (default: a test clip and the bench's 10-minute 720p video)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--logprob-atol", type=float, default=None,
                   help="check tolerance (default 1e-4 on CPU float32, 0.1 on CUDA bf16)")
    p.add_argument("--max-s", type=float, default=None,
                   help="seconds from start: a mode expected not to finish in what is left is skipped, and at "
                        "--max-s the run stops (rows already written stay; exit 0 if batched and batch1 both "
                        "finished, else 3)")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        p.error(f"--modes: unknown {bad}; choose from {MODES}")
    # as a script, from the process start (what a step timeout counts); called in process, from now
    t_start = T0 if __name__ == "__main__" else time.perf_counter()
    rows: list[dict] = []
    rows_lock = threading.Lock()  # the deadline never cuts a row in half
    in_flight = ["setup"]
    timer = None
    if a.max_s is not None:
        def deadline() -> None:
            with rows_lock:
                done = {r["mode"] for r in rows}
                print(f"--max-s {a.max_s:.0f} s reached during {in_flight[0]}: stopped; rows written for "
                      f"{sorted(done) or 'no mode'}", flush=True)
                sys.stderr.flush()
                os._exit(0 if {"batched", "batch1"} <= done else 3)

        timer = threading.Timer(max(0.0, a.max_s - (time.perf_counter() - t_start)), deadline)
        timer.daemon = True
        timer.start()
    try:
        from tests._tiny_qwen import build_tiny_qwen25vl
        from transformers import AutoTokenizer

        tmp = Path(tempfile.mkdtemp(prefix="eva_fast_bench_rollout_"))
        model_dir = str(build_tiny_qwen25vl(tmp / "tiny"))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
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

        if a.model_size == "7b":
            model = random_7b(a.device)
        else:
            from transformers import Qwen2_5_VLForConditionalGeneration

            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).to(a.device).eval()
        atol = a.logprob_atol if a.logprob_atol is not None else (1e-4 if model.dtype == torch.float32 else 0.1)
        agent_cfg = AgentConfig(max_turns=4, max_new_tokens=a.max_new_tokens, temperature=1.0, decode_device=a.decode_device)
        env = environment()
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # warm-up (CUDA context, kernels, the packer): one episode, not recorded; its time (one episode
        # at batch 1, cold) is what the first modes' time guesses start from
        in_flight[0] = "warm-up"
        t_warm = time.perf_counter()
        run_mode("batched", model, tokenizer, agent_cfg, videos[:1], questions[:1], durations[:1], 1, 0)
        warm_s = time.perf_counter() - t_warm
        reference = {}
        per_episode_s: dict[str, list[float]] = {}
        per_episode_cpu_s: dict[str, list[float]] = {}
        spent: dict[str, float] = {}
        for rep in range(a.reps):
            for mode in modes:
                gens = (a.batch1_generations or a.generations) if mode == "batch1" else a.generations
                if a.max_s is not None:
                    left = a.max_s - (time.perf_counter() - t_start)
                    guess = _guess_s(mode, spent, warm_s, a.questions * gens)
                    if guess > left:
                        print(f"rep {rep} {mode:17} skipped: ~{guess:.0f} s expected, {left:.0f} s left of --max-s")
                        continue
                torch.manual_seed(rep)
                in_flight[0] = f"rep {rep} {mode}"
                batch, wall, backend = run_mode(mode, model, tokenizer, agent_cfg, videos, questions, durations, gens, rep)
                spent[mode] = wall
                assert all(t.stop_reason == "answer_found" for t in batch.trajectories), [
                    (t.stop_reason, t.error) for t in batch.trajectories]
                ref_mode = "batched-dynamic" if mode in ("batched-static", "batched-compiled") else "first"
                key = (rep, ref_mode)
                if key not in reference:
                    reference[key] = batch
                check = _check(batch, reference[key], atol)
                if mode == "batched":
                    reference.setdefault((rep, "batched-dynamic"), batch)
                calls = summarize_ticks(backend.calls)
                stages = {k: round(v, 1) for k, v in batch.timings_ms.items()}
                stages["decoder_work"] = round(batch.decoder_ms, 1)  # the decoders' own time, no waiting
                model_ms = calls.generate_ms
                frame_ms = stages["decoder_work"] + stages.get("pack", 0.0)
                steps = sum(c.decode_slots // max(1, c.rows) for c in backend.calls)
                gen_tokens = sum(c.generated_tokens for c in backend.calls)
                frames = sum(c.frames.nframes for t in batch.trajectories for c in t.tool_calls if c.frames)
                share = mode != "batched-nocache"
                per_episode_s.setdefault(mode, []).append(wall / len(batch.trajectories))
                per_episode_cpu_s.setdefault(mode, []).append(backend.cpu_s / len(batch.trajectories))
                row = {"run_id": env["run_id"], "timestamp": env["timestamp"], "commit": env["commit"],
                       "machine": env["machine"], "versions": env["versions"], "suite": "rollout", "rep": rep,
                       "mode": mode, "model": a.model_size, "device": a.device, "decode_device": a.decode_device,
                       "dtype": str(model.dtype).replace("torch.", ""), "questions": a.questions, "generations": gens,
                       "episodes": len(batch.trajectories), "share_frames": share,
                       "videos": [Path(v).name for v in videos], "wall_ms": round(wall * 1e3, 1),
                       "episodes_per_s": round(len(batch.trajectories) / wall, 4),
                       "cpu_ms_per_episode": round(backend.cpu_s * 1e3 / len(batch.trajectories), 1), "stages_ms": stages,
                       "model_ms": round(model_ms, 1), "generate_calls": len(backend.calls),
                       "generated_tokens": gen_tokens, "tokens_per_s": round(gen_tokens / (model_ms / 1e3), 1) if model_ms else None,
                       "decode_step_ms": round((model_ms - calls.prefill_ms) / steps, 2) if steps else None,
                       "prefill_share": round(calls.prefill_ms / model_ms, 4) if model_ms else None,
                       "concurrency": round(calls.concurrency, 2), "padding_waste": round(calls.padding_waste, 4),
                       "frame_work_share": round(frame_ms / (frame_ms + model_ms), 4) if model_ms else None,
                       "frames_requested": frames, "frames_decoded": batch.cache.frames_decoded if share else frames,
                       "decoder_frames": batch.decoder_frames,
                       "cache_hit_rate": round(batch.cache.hit_rate, 4) if share else 0.0, "check": check,
                       "pack_warmup_ms": round(backend.pack_warmup_ms, 1), "pack_kernel_variants": _pack_variants()}
                with rows_lock, open(out, "a") as f:  # appended as measured: a run cut short keeps what it finished
                    f.write(json.dumps(row) + "\n")
                    rows.append(row)
                print(f"rep {rep} {mode:17} wall {wall:7.2f} s  {row['episodes_per_s']:6.3f} episodes/s  model "
                      f"{model_ms / 1e3:7.2f} s  {row['tokens_per_s']} tok/s  step {row['decode_step_ms']} ms  "
                      f"prefill {row['prefill_share']}  concurrency {row['concurrency']}  padding {row['padding_waste']}  "
                      f"frame-work share {row['frame_work_share']}  check {'ok' if check['ok'] else 'FAILED'} "
                      f"(max logprob diff {check['max_logprob_diff']})")
        # ratios from the rows' own medians (same run): episodes per second against batch 1, by wall time
        # and by the process's CPU time (what a shared machine's other load does not inflate)
        med = {m: sorted(v)[len(v) // 2] for m, v in per_episode_s.items()}
        cpu = {m: sorted(v)[len(v) // 2] for m, v in per_episode_cpu_s.items()}
        if "batch1" in med:
            for m in med:
                print(f"{m:17} {med['batch1'] / med[m]:6.2f}x batch-1's episodes/s, {cpu['batch1'] / cpu[m]:6.2f}x per CPU "
                      f"second (medians of {len(per_episode_s[m])})")
        failed = [r["mode"] for r in rows if not r["check"]["ok"]]
        if failed:
            print(f"CHECK FAILED for {failed}: results differ from the reference mode", file=sys.stderr)
            return 1
        return 0
    finally:  # main() may run in a caller's process (tests): never leave the deadline armed
        if timer is not None:
            timer.cancel()


if __name__ == "__main__":
    sys.exit(main())
