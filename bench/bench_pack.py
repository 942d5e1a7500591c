"""Benchmark: eva_fast's Qwen2.5-VL packer against transformers' image processors.

CPU: eva_fast (torch reference) vs ``Qwen2VLImageProcessorPil`` and the torchvision ``Qwen2VLImageProcessor``
(when importable) on T frames of H x W: frames/s and the ratio to eva_fast.
GPU (only with CUDA): the Triton kernel's achieved GB/s (bytes moved = uint8 frames read + packed output
written) against a device-to-device ``torch`` copy that moves the same bytes (half read, half written,
random data, measured in the same run), and against the torch reference and transformers' processor
with ``device="cuda"``. The Triton output is checked equal to the torch reference before timing; a
mismatch is a ``failed_check`` row, not a timing.

CPU configurations are checked against transformers first, then timed. Rows are appended, one at a
time as they are measured, to ``bench/results/pack.jsonl`` (or ``--out``).

Usage::

    python bench/bench_pack.py --frames 32 256 --sizes 364x644 728x1288 --reps 3
    python -m eva_fast.bench.bench_pack --skip-cpu --out DIR/pack.jsonl     # the GPU check's step
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.benchmark as tb
import transformers

from eva_fast.kernels.reference import pack_qwen25vl_reference
from eva_fast.vision import pack_qwen25vl

RESULTS = Path("bench") / "results" / "pack.jsonl"  # under the working directory


def _sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time(fn, reps: int, cuda: bool = False) -> tuple[float, float]:
    """Median and p90 wall time in ms over ``reps`` single calls (after one warm-up)."""
    fn()
    if cuda:
        import triton.testing

        times = triton.testing.do_bench(fn, return_mode="all", warmup=5, rep=max(20, reps * 10))
        return float(np.median(times)), float(np.percentile(times, 90))
    timer = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    times = [timer.timeit(1).median * 1e3 for _ in range(reps)]
    return float(np.median(times)), float(np.percentile(times, 90))


def _hf_processors():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    procs = {"hf-pil": Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12_845_056)}
    if importlib.util.find_spec("torchvision") is not None:
        try:
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

            procs["hf-torchvision"] = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12_845_056)
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"# hf-torchvision unavailable: {e}")
    else:
        print("# hf-torchvision skipped: torchvision not importable with this torch build")
    return procs


def run_cpu(frames_list, sizes, reps, meta, sink):
    procs = _hf_processors()
    print(f"\n{'T':>4} {'HxW':>10} {'backend':>15} {'median ms':>10} {'p90 ms':>9} {'frames/s':>10} {'vs eva':>8}")
    for t in frames_list:
        for h, w in sizes:
            frames = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8)
            images = [f.numpy() for f in frames]
            ours, _ = pack_qwen25vl_reference(frames[:2])
            for name, p in procs.items():  # correctness gate
                ref = p(images[:2] if name == "hf-pil" else list(frames[:2].permute(0, 3, 1, 2)), return_tensors="pt")
                assert (ours - ref["pixel_values"]).abs().max() <= 2.5e-7, name
            cases = {"eva-torch": lambda: pack_qwen25vl(frames, backend="torch")}
            for name, p in procs.items():
                if name == "hf-pil":
                    cases[name] = lambda p=p: p(images, return_tensors="pt")
                else:
                    chw = list(frames.permute(0, 3, 1, 2))
                    cases[name] = lambda p=p, chw=chw: p(chw, return_tensors="pt")
            base = None
            for name, fn in cases.items():
                med, p90 = _time(fn, reps if name.startswith("eva") or t * h * w < 64 * 728 * 1288 else 1)
                fps = t / (med / 1e3)
                base = base or med
                print(f"{t:>4} {f'{h}x{w}':>10} {name:>15} {med:>10.1f} {p90:>9.1f} {fps:>10.1f} {med / base:>7.1f}x")
                sink({**meta, "device": "cpu", "frames": t, "height": h, "width": w, "backend": name,
                             "dtype": "float32", "median_ms": med, "p90_ms": p90, "frames_per_s": fps,
                             "slowdown_vs_eva": med / base})
            del frames, images


def run_gpu(frames_list, sizes, reps, meta, sink):
    if not torch.cuda.is_available():
        print("\n# GPU section skipped: CUDA not available")
        return
    from eva_fast.kernels.pack_qwen25vl import pack_qwen25vl_triton

    meta = {**meta, "gpu": torch.cuda.get_device_name(), "triton": __import__("triton").__version__,
            "torch_cuda": torch.version.cuda}
    procs = {}
    if importlib.util.find_spec("torchvision") is not None:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

        procs["hf-torchvision-cuda"] = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12_845_056)
    print(f"\n{'T':>4} {'HxW':>10} {'dtype':>9} {'backend':>20} {'median ms':>10} {'GB/s':>8} {'vs copy':>8}")
    for t in frames_list:
        for h, w in sizes:
            frames = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, device="cuda")
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                dname = str(dtype)[6:]
                case = {**meta, "device": "cuda", "frames": t, "height": h, "width": w, "dtype": dname}
                out, _ = pack_qwen25vl_triton(frames, dtype=dtype)
                ref, _ = pack_qwen25vl_reference(frames, dtype=dtype)
                if not torch.equal(out, ref):
                    err = (out.float() - ref.float()).abs().max().item() if out.shape == ref.shape else None
                    print(f"{t:>4} {f'{h}x{w}':>10} {dname:>9} {'eva-triton':>20} FAILED CHECK (max |diff| {err})")
                    sink({**case, "backend": "eva-triton", "status": "failed_check",
                          "check": {"equal_to_reference": False, "max_abs_diff": err}})
                    continue
                nbytes = frames.numel() + out.numel() * out.element_size()  # read + written by the packer
                src = torch.randint(0, 256, (nbytes // 2,), dtype=torch.uint8, device="cuda")
                dst = torch.empty_like(src)
                copy_ms, _ = _time(lambda: dst.copy_(src), reps, cuda=True)
                copy_gbs = 2 * src.numel() / copy_ms / 1e6
                del src, dst
                cases = {
                    "eva-triton": lambda: pack_qwen25vl_triton(frames, dtype=dtype, out=out),
                    "eva-torch-cuda": lambda: pack_qwen25vl_reference(frames, dtype=dtype),
                }
                if dtype == torch.float32:
                    for name, p in procs.items():
                        chw = list(frames.permute(0, 3, 1, 2))
                        cases[name] = lambda p=p, chw=chw: p(chw, return_tensors="pt", device="cuda")
                print(f"{t:>4} {f'{h}x{w}':>10} {dname:>9} {'d2d-copy':>20} {copy_ms:>10.3f} {copy_gbs:>8.0f}")
                sink({**case, "backend": "d2d-copy", "status": "ok", "median_ms": copy_ms,
                      "bytes_moved": 2 * (nbytes // 2), "gb_per_s": copy_gbs})
                for name, fn in cases.items():
                    med, p90 = _time(fn, reps, cuda=True)
                    gbs = nbytes / med / 1e6
                    print(f"{t:>4} {f'{h}x{w}':>10} {dname:>9} {name:>20} {med:>10.3f} {gbs:>8.0f} "
                          f"{gbs / copy_gbs:>7.0%}")
                    sink({**case, "backend": name, "status": "ok", "median_ms": med, "p90_ms": p90,
                          "frames_per_s": t / (med / 1e3), "bytes_moved": nbytes, "gb_per_s": gbs,
                          "copy_gb_per_s": copy_gbs, "fraction_of_copy": gbs / copy_gbs,
                          "check": {"equal_to_reference": True} if name == "eva-triton" else None})
                del out, ref
            del frames
            torch.cuda.empty_cache()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--sizes", nargs="+", default=["364x644", "728x1288"], help="HxW, multiples of 28")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per case (the largest HF cases run once)")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"jsonl file rows are appended to (default {RESULTS})")
    ap.add_argument("--no-save", action="store_true", help="do not append rows anywhere")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    meta = {"bench": "pack_qwen25vl", "commit": _sha(), "cpu": _cpu_model(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "time": time.time()}
    print(f"# {meta['cpu']} x{meta['threads']} threads, torch {meta['torch']}, transformers {meta['transformers']}, "
          f"commit {meta['commit'][:10]}")
    written = []

    def sink(row: dict) -> None:
        """Append one row as soon as it is measured (a killed run keeps what it finished)."""
        written.append(row)
        if args.no_save:
            return
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    if not args.skip_cpu:
        run_cpu(args.frames, sizes, args.reps, meta, sink)
    if not args.skip_gpu:
        run_gpu(args.frames, sizes, args.reps, meta, sink)
    if written and not args.no_save:
        print(f"\n# appended {len(written)} rows to {args.out}")


if __name__ == "__main__":
    main()
