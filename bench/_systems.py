"""The systems the bench compares, all on the same plans (bench/_workloads.py).

Every system implements ``run(video, plans) -> Output``: open the video once, execute the plans in
order (one plan per call; the trajectory passes three), return the frames (uint8 ``[T, H, W, 3]`` RGB
at the plan's size) and, where the library tells, the frame index of each returned frame.

Peers without a resize of their own (decord, PyAV, OpenCV) resize with OpenCV ``INTER_CUBIC``
(EVA's filter). PyAV and OpenCV are handed the keyframe table (computed outside the timer) so their
seek-or-decode-forward choice is optimal: the comparison measures decoding and conversion, not a
naive seek plan.

torchcodec runs in a Python environment of its own (its PyPI wheel needs a torch that is not the
project's pinned CPU torch; ``scripts/peer_env.sh torchcodec`` makes one), in a worker process
(``_peer_worker.py``) that receives the planned indices and sizes and returns the frames and its own
per-run times: what a user calling torchcodec in process would pay, without the protocol. Two resizes:
torchvision bicubic without antialias after decoding (Keys a = -0.75 in float, close to EVA's cubic:
pixels checked) and torchcodec's decoder-side ``Resize`` transform (bilinear with antialiasing:
pixels reported, not checked).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eva_fast.video import FramePlan

from ._workloads import Workload

REFERENCE_TOOL = Path(__file__).resolve().parent / "_eva_reference_tool.py"
PEER_WORKER = Path(__file__).resolve().parent / "_peer_worker.py"
#: Where ``scripts/peer_env.sh NAME`` creates a peer's environment (``DIR/NAME/bin/python``).
DEFAULT_PEER_ENVS = Path(os.environ.get("EVA_FAST_PEER_ENVS", "~/.cache/eva_fast/peer_envs")).expanduser()


@dataclass
class VideoContext:
    """What systems may use besides the path (computed once, outside the timer)."""

    path: str
    stream_index: int
    fps: float
    start_pts_s: float  # absolute pts of the first frame (seconds)
    keyframe_indices: np.ndarray  # sorted presentation indices of keyframes

    def gop_start(self, i: int) -> int:
        j = int(np.searchsorted(self.keyframe_indices, i, side="right")) - 1
        return int(self.keyframe_indices[max(j, 0)]) if len(self.keyframe_indices) else 0


@dataclass
class Output:
    """A system's answer to a workload: frames and reported indices per call."""

    frames: list[np.ndarray]
    indices: list[list[int] | None]
    decoded_frames: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _cubic(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if rgb.shape[0] == h and rgb.shape[1] == w:
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)


def _import_error(mod: str) -> str | None:
    try:
        __import__(mod)
    except Exception as e:  # noqa: BLE001 - any import failure is a skip reason
        msgs = []
        while e is not None and len(msgs) < 3:
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            msgs.append(f"{type(e).__name__}: {text}")
            e = e.__cause__ or e.__context__
        return f"import {mod} failed: " + " <- ".join(msgs)
    return None


class System:
    """Base class. ``name`` labels rows; ``resize`` names the filter; ``exact`` = returns plan frames;
    ``filter_close``: its filter is a cubic close to EVA's, so pixels must match eva_fast's within
    the cubic tolerance; other filters get only a loose bound that catches wrong frames."""

    name = ""
    description = ""
    resize = "cubic (OpenCV INTER_CUBIC)"
    filter_close = True
    exact = True
    in_process = True

    def unavailable(self) -> str | None:
        return None

    def setup(self) -> None:
        """Untimed one-time preparation (imports, processors)."""

    def run(self, ctx: VideoContext, workload: Workload, plans: list[FramePlan]) -> Output:
        raise NotImplementedError

    def after_run(self) -> None:
        """Untimed clean-up after each timed run."""


class EvaFast(System):
    name = "eva_fast"
    description = "eva_fast select_frames, parity policy (native FFmpeg decoder, fused convert+cubic resize)"

    policy = "parity"

    def setup(self) -> None:
        from eva_fast.video import VideoReader, select_frames

        self._reader_cls, self._select = VideoReader, select_frames

    def run(self, ctx, workload, plans):
        r = self._reader_cls(ctx.path)
        frames, indices, decoded, snap = [], [], 0, []
        for call in workload.calls:
            b = self._select(r, call.start_time, call.end_time, call.nframes, call.resize, policy=self.policy)
            frames.append(b.frames.numpy())
            indices.append(list(b.plan.frame_indices))
            decoded += b.stats.decoded_frames
            snap.extend(b.plan.snap_error_s)
        return Output(frames, indices, decoded, {"snap_error_s": snap})


class EvaFastSnap(EvaFast):
    name = "eva_fast_snap"
    description = "eva_fast select_frames, policy='keyframe_snap' (not parity: frames move to keyframes)"
    policy = "keyframe_snap"
    exact = False


class EvaFastPack(EvaFast):
    name = "eva_fast+pack"
    description = "eva_fast parity frames + eva_fast.vision.pack_qwen25vl (the reference pipeline's counterpart)"

    def unavailable(self):
        try:
            from eva_fast.vision import pack_qwen25vl  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return f"eva_fast.vision.pack_qwen25vl not importable ({type(e).__name__}); the reference is compared with decode-only eva_fast"
        return None

    def setup(self):
        super().setup()
        from eva_fast.vision import pack_qwen25vl

        self._pack = pack_qwen25vl

    def run(self, ctx, workload, plans):
        out = super().run(ctx, workload, plans)
        import torch

        out.extra["packed"] = [self._pack(torch.from_numpy(f)) is not None for f in out.frames]
        return out


class Decord(System):
    name = "decord"
    description = "decord VideoReader.get_batch + cv2 INTER_CUBIC"

    def unavailable(self):
        return _import_error("decord")

    def setup(self):
        import decord

        self._decord = decord

    def run(self, ctx, workload, plans):
        vr = self._decord.VideoReader(ctx.path, ctx=self._decord.cpu(0), num_threads=0)
        frames = []
        for p in plans:
            batch = vr.get_batch(list(p.frame_indices)).asnumpy()
            frames.append(np.stack([_cubic(f, p.size) for f in batch]))
        return Output(frames, [None] * len(plans))


class PyAV(System):
    name = "pyav"
    description = "PyAV (threaded decode, keyframe-aware seek plan) + to_ndarray(rgb24) + cv2 INTER_CUBIC"

    def unavailable(self):
        return _import_error("av")

    def setup(self):
        import av

        self._av = av

    def run(self, ctx, workload, plans):
        container = self._av.open(ctx.path)
        try:
            st = next(s for s in container.streams.video if s.index == ctx.stream_index)
            st.thread_type = "AUTO"
            tb = float(st.time_base)
            frames, indices, decoded = [], [], 0
            for p in plans:
                got: dict[int, tuple[int, np.ndarray]] = {}
                it, pos = None, -1
                for i in sorted(set(p.frame_indices)):
                    g = ctx.gop_start(i)
                    if it is None or g > pos or i <= pos:
                        container.seek(int(round((ctx.start_pts_s + g / ctx.fps) / tb)), stream=st, backward=True)
                        it, pos = container.decode(st), -1
                    frame = None
                    for frame in it:
                        decoded += 1
                        pos = round((frame.time - ctx.start_pts_s) * ctx.fps)
                        if pos >= i:
                            break
                    if frame is None:
                        raise RuntimeError(f"PyAV: no frame for index {i}")
                    got[i] = (pos, _cubic(frame.to_ndarray(format="rgb24"), p.size))
                frames.append(np.stack([got[i][1] for i in p.frame_indices]))
                indices.append([got[i][0] for i in p.frame_indices])
            return Output(frames, indices, decoded)
        finally:
            container.close()


class OpenCV(System):
    name = "opencv"
    description = "OpenCV VideoCapture (FFmpeg backend; POS_FRAMES seek or grab forward) + cv2 INTER_CUBIC"

    def unavailable(self):
        return _import_error("cv2")

    def setup(self):
        import cv2

        self._cv2 = cv2

    def run(self, ctx, workload, plans):
        cv2 = self._cv2
        cap = cv2.VideoCapture(ctx.path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise RuntimeError(f"OpenCV could not open {ctx.path}")
        try:
            frames, indices, read = [], [], 0
            pos = -1  # index of the last frame read
            for p in plans:
                got: dict[int, tuple[int, np.ndarray]] = {}
                for i in sorted(set(p.frame_indices)):
                    if ctx.gop_start(i) > pos or i <= pos:
                        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                    else:
                        for _ in range(i - pos - 1):
                            cap.grab()
                            read += 1
                    ok, bgr = cap.read()
                    read += 1
                    if not ok:
                        raise RuntimeError(f"OpenCV: read failed at frame {i}")
                    pos = int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) - 1
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    got[i] = (pos, _cubic(rgb, p.size))
                frames.append(np.stack([got[i][1] for i in p.frame_indices]))
                indices.append([got[i][0] for i in p.frame_indices])
            # reads after POS_FRAMES seeks hide the decoder's internal work: not a decode count
            return Output(frames, indices, None, {"frames_read": read})
        finally:
            cap.release()


# --------------------------------------------------------------------------- peers in their own environment

#: ``--peer-env NAME=PYTHON`` choices (bench/run.py); otherwise DEFAULT_PEER_ENVS/NAME/bin/python.
_peer_pythons: dict[str, str] = {}
_workers: dict[str, "PeerWorker"] = {}


def set_peer_python(name: str, python: str) -> None:
    """Use ``python`` (a peer environment's interpreter) for peer ``name``."""
    _peer_pythons[name] = python


def peer_python(name: str) -> tuple[str | None, str]:
    """The interpreter of peer ``name``'s environment, or None and why there is none."""
    if name in _peer_pythons:
        py = Path(_peer_pythons[name]).expanduser()
        if not (py.is_file() and os.access(py, os.X_OK)):
            return None, f"--peer-env {name}={py}: not an executable file"
        return str(py), f"--peer-env {name}={py}"
    py = DEFAULT_PEER_ENVS / name / "bin" / "python"
    if py.is_file() and os.access(py, os.X_OK):
        return str(py), f"default location {py}"
    return None, (f"no Python environment for {name}: create it with `bash scripts/peer_env.sh {name}` "
                  f"(-> {py}) or pass --peer-env {name}=PATH/bin/python")


class PeerWorker:
    """One long-lived ``_peer_worker.py`` process in a peer's environment; JSON lines both ways."""

    def __init__(self, name: str, python: str):
        self.name, self.python = name, python
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([python, str(PEER_WORKER), name], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        self.hello = self.request({"op": "hello"})

    def request(self, req: dict) -> dict:
        """Send one request and wait for its reply; a dead worker raises with its stderr tail."""
        try:
            self._proc.stdin.write(json.dumps(req) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self._proc.wait(timeout=10)
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{self.name} worker ({self.python}) exited with {self._proc.returncode}: "
                               + " | ".join(tail))
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"{self.name} worker: {reply.get('error')}")
        return reply

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()


def peer_worker(name: str) -> PeerWorker:
    """The running worker of peer ``name`` (started on first use, shared by its systems)."""
    if name not in _workers:
        py, how = peer_python(name)
        if py is None:
            raise RuntimeError(how)
        _workers[name] = PeerWorker(name, py)
    return _workers[name]


@atexit.register
def close_peer_workers() -> None:
    for w in _workers.values():
        w.close()
    _workers.clear()


class PeerSystem(System):
    """A system executed by a peer worker: the run's times are the worker's own (``Output.extra``:
    ``wall_s``, ``cpu_s``, ``call_s``, ``peak_rss_mb``), frames come back only for the first run of a
    request (the untimed correctness check), via ``np.save`` files in a temporary folder."""

    in_process = False
    peer = ""

    def variant(self) -> dict:
        raise NotImplementedError

    def unavailable(self):
        try:
            w = peer_worker(self.peer)
        except RuntimeError as e:  # no environment, or a worker that does not start: skip with why
            return str(e)
        except (OSError, ValueError) as e:
            return f"{self.peer} worker did not start: {type(e).__name__}: {e}"
        self.versions = w.hello.get("versions", {})
        self.python = w.python
        return None

    def setup(self):
        self._worker = peer_worker(self.peer)
        self._checked: set = set()

    def run(self, ctx, workload, plans):
        key = (ctx.path, workload.name, tuple(p.frame_indices for p in plans), tuple(p.size for p in plans))
        out_dir = None
        if key not in self._checked:
            out_dir = tempfile.mkdtemp(prefix=f"eva_peer_{self.peer}_")
        try:
            reply = self._worker.request({
                "op": "run", "variant": self.variant(),
                "video": {"path": ctx.path, "stream_index": ctx.stream_index, "fps": ctx.fps,
                          "start_pts_s": ctx.start_pts_s},
                "plans": [{"indices": list(p.frame_indices), "size": list(p.size)} for p in plans],
                "calls": [{"start_time": c.start_time, "end_time": c.end_time, "nframes": c.nframes,
                           "resize": c.resize} for c in workload.calls],
                "out_dir": out_dir})
            frames = [np.load(f) for f in reply["frames"]] if reply["frames"] else []
        finally:
            if out_dir is not None:
                shutil.rmtree(out_dir, ignore_errors=True)
        self._checked.add(key)
        extra = {"timing": "worker", "wall_s": reply["wall_s"], "cpu_s": reply["cpu_s"], "call_s": reply["call_s"],
                 "peak_rss_mb": reply["peak_rss_mb"]}
        return Output(frames, reply["indices"], None, extra)


class TorchCodec(PeerSystem):
    """torchcodec ``VideoDecoder`` (CPU, all FFmpeg threads, ``get_frames_at``) in its own environment."""

    peer = "torchcodec"

    def __init__(self, seek_mode: str, resize: str):
        self.seek_mode, self.resize_kind = seek_mode, resize
        if resize == "torchvision":
            self.name = f"torchcodec_{seek_mode}"
            self.resize = "torchvision bicubic (Keys a=-0.75, float, no antialias): close to cubic"
            how = "get_frames_at + torchvision resize(BICUBIC, antialias=False)"
        else:
            self.name = f"torchcodec_{seek_mode}+Resize"
            self.resize = "torchcodec Resize transform (bilinear, antialias): differs from cubic by design"
            self.filter_close = False
            how = "transforms=[Resize(size)] (decoder-side), get_frames_at"
        self.description = (f"torchcodec VideoDecoder(seek_mode={seek_mode!r}, CPU, num_ffmpeg_threads=0) {how}; "
                            f"own Python environment, worker process (its own timings)")

    def variant(self):
        return {"seek_mode": self.seek_mode, "resize": self.resize_kind}


class EvaFastBaseline(PeerSystem):
    """eva_fast from another build, for old-vs-new comparisons in one run (``--baseline PYTHON``)."""

    name = "eva_fast_baseline"
    peer = "eva_fast_baseline"
    description = ("eva_fast select_frames, parity policy, from the --baseline interpreter's eva_fast build "
                   "(another commit); worker process (its own timings)")

    def variant(self):
        return {"policy": "parity"}


class EvaReference(System):
    name = "eva_reference"
    description = ("EVA reference tool per call: fresh python process (decord get_batch, cv2 INTER_CUBIC, "
                   "PNG files), PNGs read back in the parent and run through transformers' Qwen2-VL image "
                   "processor (PIL backend)")
    in_process = False

    def unavailable(self):
        for mod in ("decord", "cv2", "transformers"):
            if (reason := _import_error(mod)) is not None:
                return reason
        return None

    def setup(self):
        import transformers
        from PIL import Image

        cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
        # No hub access: built from kwargs with Qwen2.5-VL-7B's pixel bounds.
        self._proc = cls(min_pixels=3136, max_pixels=12845056)
        self._image = Image
        self._dirs: list[str] = []
        self.child_rusage: list[Any] = []

    def run(self, ctx, workload, plans):
        frames, tool_ms = [], []
        for p in plans:
            d = tempfile.mkdtemp(prefix="eva_ref_")
            self._dirs.append(d)
            args = json.dumps({"video": ctx.path, "indices": list(p.frame_indices), "size": list(p.size), "out_dir": d})
            proc = subprocess.Popen([sys.executable, str(REFERENCE_TOOL), args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            out, err = proc.stdout.read(), proc.stderr.read()
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.child_rusage.append(ru)
            if proc.returncode != 0:
                raise RuntimeError(f"reference tool failed ({proc.returncode}): {err.decode()[-800:]}")
            info = json.loads(out.decode().strip().splitlines()[-1])
            tool_ms.append(info)
            images = []
            for path in info["paths"]:
                with self._image.open(path) as im:
                    images.append(im.convert("RGB"))
            packed = self._proc(images=images, return_tensors="pt")
            assert packed["pixel_values"].shape[0] > 0
            frames.append(np.stack([np.asarray(im) for im in images]))
        return Output(frames, [None] * len(plans), None, {"tool": tool_ms})

    def after_run(self):
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._dirs.clear()


def _cuda_unavailable() -> str | None:
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return f"torch not importable ({type(e).__name__})"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch (torch.cuda.is_available() is False)"
    return None


def _torch_cubic(frames, size: tuple[int, int]):
    """uint8 [T, H, W, 3] CUDA frames -> size with torch bicubic (a = -0.75, no antialias: OpenCV's
    INTER_CUBIC kernel in float, the closest torch resize to EVA's)."""
    import torch
    import torch.nn.functional as F

    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class _CudaSystem(System):
    """GPU systems keep frames on the device inside the timed run (synchronised at the end); the
    untimed ``after_run`` moves the last output to the host for the pixel check."""

    _last: Output | None = None

    def unavailable(self):
        return _cuda_unavailable()

    def _finish(self, out: Output) -> Output:
        import torch

        torch.cuda.synchronize()
        self._last = out
        return out

    def after_run(self) -> None:
        if self._last is not None:
            self._last.frames[:] = [f.cpu().numpy() if hasattr(f, "cpu") else f for f in self._last.frames]
            self._last = None


class EvaFastCuda(_CudaSystem):
    name = "eva_fast_cuda"
    description = "eva_fast select_frames(device='cuda'): NVDEC decode + CUDA convert/cubic resize, DLPack tensors"

    def unavailable(self):
        reason = _cuda_unavailable()
        if reason:
            return reason
        from eva_fast import build_info

        if not build_info()["cuda"]:
            return "eva_fast built without CUDA (rebuild with EVA_FAST_CUDA=ON)"
        return None

    def setup(self):
        from eva_fast.video import VideoReader, select_frames

        self._reader_cls, self._select = VideoReader, select_frames

    def run(self, ctx, workload, plans):
        r = self._reader_cls(ctx.path, device="cuda")
        frames, indices, decoded = [], [], 0
        for call in workload.calls:
            b = self._select(r, call.start_time, call.end_time, call.nframes, call.resize, device="cuda")
            frames.append(b.frames)
            indices.append(list(b.plan.frame_indices))
            decoded += b.stats.decoded_frames
        return self._finish(Output(frames, indices, decoded, {"backend": r.backend, "fallback_reason": r.fallback_reason}))


class PyNvVideoCodecSimple(_CudaSystem):
    name = "pynvvideocodec"
    description = "PyNvVideoCodec SimpleDecoder (RGB, device memory) get_batch_frames_by_index + torch bicubic resize"
    resize = "torch bicubic (a=-0.75, float, no antialias): close to cubic"

    def unavailable(self):
        return _cuda_unavailable() or _import_error("PyNvVideoCodec")

    def setup(self):
        import PyNvVideoCodec as nvc

        self._nvc = nvc

    def run(self, ctx, workload, plans):
        import torch

        nvc = self._nvc
        dec = nvc.SimpleDecoder(ctx.path, gpu_id=0, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.RGB)
        frames = []
        for p in plans:
            got = dec.get_batch_frames_by_index(list(p.frame_indices))
            t = torch.stack([torch.from_dlpack(f) for f in got])  # [T, H, W, 3] uint8 (interleaved RGB)
            frames.append(_torch_cubic(t, p.size))
        return self._finish(Output(frames, [list(p.frame_indices) for p in plans]))


class TorchCodecCuda(_CudaSystem):
    name = "torchcodec_cuda"
    description = "torchcodec VideoDecoder(device='cuda', seek_mode='exact') get_frames_at + torch bicubic resize"
    resize = "torch bicubic (a=-0.75, float, no antialias): close to cubic"

    def unavailable(self):
        return _cuda_unavailable() or _import_error("torchcodec.decoders")

    def setup(self):
        from torchcodec.decoders import VideoDecoder

        self._dec = VideoDecoder

    def run(self, ctx, workload, plans):
        dec = self._dec(ctx.path, stream_index=ctx.stream_index, dimension_order="NHWC", device="cuda",
                        seek_mode="exact")
        frames, indices = [], []
        for p in plans:
            fb = dec.get_frames_at(list(p.frame_indices))
            frames.append(_torch_cubic(fb.data, p.size))
            indices.append([round((float(t) - ctx.start_pts_s) * ctx.fps) for t in fb.pts_seconds])
        return self._finish(Output(frames, indices))


def all_systems() -> dict[str, System]:
    """Registry in run order (eva_fast first: the others are compared with it). GPU systems report
    themselves unavailable (a skipped row with the reason) where torch sees no CUDA device."""
    systems: list[System] = [EvaFast(), EvaFastSnap(), EvaFastPack(), Decord(), PyAV(),
                             TorchCodec("exact", "torchvision"), TorchCodec("approximate", "torchvision"),
                             TorchCodec("exact", "decoder"), TorchCodec("approximate", "decoder"),
                             OpenCV(), EvaReference(), EvaFastCuda(), PyNvVideoCodecSimple(), TorchCodecCuda(),
                             EvaFastBaseline()]
    return {s.name: s for s in systems}


#: Every system but the baseline build (asked for with ``--baseline``).
DEFAULT_SYSTEMS = tuple(n for n in all_systems() if n != "eva_fast_baseline")
