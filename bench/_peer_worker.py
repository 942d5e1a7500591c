"""Bench peer worker: runs a peer library in its own Python environment (bench/_systems.py PeerWorker).

    PATH/bin/python bench/_peer_worker.py torchcodec

The peer's environment holds only the peer and what it needs (for torchcodec: torch, torchvision,
numpy), not eva_fast, so this file imports nothing else (the eva_fast_baseline peer imports the
eva_fast of its own interpreter: the other build). Protocol: one JSON object per line on
stdin, one JSON reply per line on stdout (the library's own prints go to stderr).

    {"op": "hello"}
        -> {"ok": true, "versions": {...}, "pid": N}
    {"op": "run", "variant": {...}, "video": {...}, "plans": [{"indices": [...], "size": [h, w]}, ...],
     "calls": [{"start_time": s, "end_time": s, "nframes": n, "resize": r}, ...], "out_dir": PATH or null}
        -> {"ok": true, "wall_s": ..., "cpu_s": ..., "call_s": [...], "peak_rss_mb": ..., "indices": [[...]],
            "frames": [PATH.npy, ...] or null}
    {"op": "quit"}

A run is one workload as a user would write it in process: open the video, one
``get_frames_at(indices)`` per call, resize to the planned size. ``wall_s`` (``time.perf_counter``),
``cpu_s`` (this process's CPU time) and ``peak_rss_mb`` (VmHWM, reset before the run) cover exactly
that, nothing of the protocol. Frames (uint8 [T, H, W, 3] RGB per call) are written with ``np.save``
only when ``out_dir`` is given (the untimed correctness run), after the timer stops. Errors come
back as {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


# The harness's peak-RSS helpers (_harness.py), restated: this file runs where eva_fast is not installed.
def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class TorchCodecPeer:
    """torchcodec ``VideoDecoder`` on the CPU (all FFmpeg threads). ``variant``: ``seek_mode``
    ("exact" or "approximate") and ``resize``: "torchvision" (decode at the native size, then
    ``torchvision.transforms.v2.functional.resize`` bicubic without antialias: Keys a = -0.75, EVA's
    filter in float) or "decoder" (torchcodec's ``Resize`` transform inside the decoder)."""

    def __init__(self) -> None:
        import numpy as np
        import torch
        import torchcodec
        import torchvision
        from torchcodec.decoders import VideoDecoder  # loads the native libraries
        from torchcodec.transforms import Resize
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        self.np, self.torch = np, torch
        self.VideoDecoder, self.Resize = VideoDecoder, Resize
        self.F, self.bicubic = F, InterpolationMode.BICUBIC
        self.versions = {"python": sys.version.split()[0], "torchcodec": torchcodec.__version__,
                         "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__,
                         "torch_threads": torch.get_num_threads()}

    def run(self, variant: dict, video: dict, plans: list[dict]):
        seek_mode, resize = variant["seek_mode"], variant["resize"]
        decoders = {}  # the decoder-side Resize is fixed per decoder: one decoder per output size
        frames, pts, call_s = [], [], []
        for p in plans:
            t0 = time.perf_counter()
            size = tuple(p["size"])
            key = size if resize == "decoder" else None
            dec = decoders.get(key)
            if dec is None:
                # NHWC is the decoder's own layout; torchvision resizes NCHW tensors.
                order = "NHWC" if resize == "decoder" else "NCHW"
                dec = self.VideoDecoder(video["path"], stream_index=video["stream_index"], dimension_order=order,
                                        num_ffmpeg_threads=0, device="cpu", seek_mode=seek_mode,
                                        transforms=[self.Resize(size)] if resize == "decoder" else None)
                decoders[key] = dec
            fb = dec.get_frames_at(list(p["indices"]))
            data = fb.data
            if resize == "torchvision":
                if tuple(data.shape[-2:]) != size:
                    data = self.F.resize(data, list(size), interpolation=self.bicubic, antialias=False)
                data = data.permute(0, 2, 3, 1).contiguous()  # [T, H, W, 3] like every system's output
            frames.append(data)
            pts.append(fb.pts_seconds.tolist())
            call_s.append(time.perf_counter() - t0)
        return frames, pts, call_s


class EvaFastPeer:
    """eva_fast from another build (``eva-fast bench --baseline PYTHON``): the in-process ``eva_fast``
    system's work (one ``VideoReader``, ``select_frames`` per call, parity policy), run by an
    interpreter whose ``eva_fast`` is the build to compare with, so old and new builds are measured in
    one run. ``variant``: ``policy``."""

    def __init__(self) -> None:
        import numpy as np
        import torch

        import eva_fast
        from eva_fast.video import VideoReader, select_frames

        self.np, self.torch = np, torch
        self.VideoReader, self.select_frames = VideoReader, select_frames
        info = eva_fast.build_info()
        self.versions = {"python": sys.version.split()[0], "eva_fast": info.get("version"),
                         "eva_fast_path": os.path.dirname(eva_fast.__file__), "ffmpeg": info.get("ffmpeg_version"),
                         "torch": torch.__version__, "numpy": np.__version__}

    def run(self, variant: dict, video: dict, plans: list[dict], calls: list[dict]):
        reader = self.VideoReader(video["path"], stream_index=video["stream_index"])
        frames, indices, call_s = [], [], []
        for c in calls:
            t0 = time.perf_counter()
            b = self.select_frames(reader, c["start_time"], c["end_time"], c["nframes"], c["resize"],
                                   policy=variant["policy"])
            frames.append(b.frames)
            indices.append(list(b.plan.frame_indices))  # FrameBatch.plan: every build since the plan existed
            call_s.append(time.perf_counter() - t0)
        return frames, None, call_s, indices


PEERS = {"torchcodec": TorchCodecPeer, "eva_fast_baseline": EvaFastPeer}


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the libraries print stays off the protocol channel
    peer = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "quit":
                break
            if peer is None:
                if name not in PEERS:
                    raise ValueError(f"unknown peer {name!r}; known: {sorted(PEERS)}")
                peer = PEERS[name]()
            if op == "hello":
                reply = {"ok": True, "versions": peer.versions, "pid": os.getpid()}
            elif op == "run":
                _reset_peak_rss()
                c0, t0 = time.process_time(), time.perf_counter()
                if isinstance(peer, EvaFastPeer):  # plans its own calls, reports frame indices
                    frames, _, call_s, indices = peer.run(req["variant"], req["video"], req["plans"], req["calls"])
                else:
                    frames, pts, call_s = peer.run(req["variant"], req["video"], req["plans"])
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                reply = {"ok": True, "wall_s": wall, "cpu_s": cpu, "call_s": call_s, "peak_rss_mb": _peak_rss_mb()}
                v = req["video"]
                if not isinstance(peer, EvaFastPeer):
                    indices = [[round((t - v["start_pts_s"]) * v["fps"]) for t in p] for p in pts]
                reply["indices"] = indices
                reply["frames"] = None
                if req.get("out_dir"):
                    paths = []
                    for i, f in enumerate(frames):
                        path = os.path.join(req["out_dir"], f"call{i}.npy")
                        peer.np.save(path, f.numpy())
                        paths.append(path)
                    reply["frames"] = paths
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:  # noqa: BLE001 - every failure is a reply, the worker stays up
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
