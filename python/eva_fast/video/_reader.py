"""VideoReader: an open video, its metadata, and frame access by time."""

from __future__ import annotations

import math
import numbers
import os
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from eva_fast import _C
from eva_fast._checks import check_choice, int_in_range, is_int, positive_int
from eva_fast._logging import get_logger
from eva_fast.video._policy import DEFAULT_MAX_OUTPUT_BYTES, RESAMPLES, Resample

log = get_logger("video")

#: Errors raised by the native decoder (all subclasses of RuntimeError).
VideoError = _C.VideoError
UnsupportedCodecError = _C.UnsupportedCodecError
CorruptVideoError = _C.CorruptVideoError
NotAVideoError = _C.NotAVideoError
NoVideoStreamError = _C.NoVideoStreamError

#: Largest output side, pixels: the native decoder's limit, defined once in C++ (csrc/decoder.h).
MAX_SIDE: int = _C.MAX_SIDE


@dataclass(frozen=True)
class VideoMetadata:
    """What opening a video tells without decoding it (container header and index only).

    Attributes:
        path: the file.
        stream_index: the video stream used (FFmpeg's best by default).
        video_stream_indices: every video stream in the file.
        container: FFmpeg demuxer name.
        codec: codec name (``h264``, ``hevc``, ``vp9``, ``av1``, ...); ``profile`` its profile.
        pixel_format: decoder output format (``yuv420p``, ``yuv420p10le``, ``yuv444p``, ...).
        bit_depth: bits per sample (8 or 10 usually); output frames are always 8-bit RGB.
        width, height: frame size as displayed, i.e. after applying ``rotation_deg``.
        coded_width, coded_height: frame size as stored.
        rotation_deg: clockwise rotation applied so frames come out upright (0/90/180/270).
        duration_s: stream duration from the container, seconds.
        average_fps: average frame rate (frames/s).
        num_frames: frame count from the container, or ``round(duration_s * average_fps)`` when
            ``num_frames_estimated``.
        is_vfr: variable frame rate (frame durations are not constant).
        start_pts_s: pts of the first frame, seconds (non-zero for some files). All other
            times in eva_fast are seconds from this first frame.
        keyframe_pts_s: keyframe times from the container index (seconds from the first
            frame); empty when the container has no index.
        color_space, color_range: the stream's colour metadata (FFmpeg names).
    """

    path: str
    stream_index: int
    video_stream_indices: tuple[int, ...]
    container: str
    codec: str
    profile: str
    pixel_format: str
    bit_depth: int
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation_deg: int
    duration_s: float
    average_fps: float
    num_frames: int
    num_frames_estimated: bool
    is_vfr: bool
    start_pts_s: float
    keyframe_pts_s: tuple[float, ...]
    color_space: str
    color_range: str

    @property
    def end_s(self) -> float:
        """Stream end from the header, seconds from the first frame: last frame's pts + 1/fps
        (``num_frames / average_fps``) at constant frame rate, the container duration at variable
        frame rate, where the data may run past it (``VideoReader.stream_end_s`` scans for the
        real end)."""
        if self.is_vfr:
            return self.duration_s
        return self.num_frames / self.average_fps

    def __repr__(self) -> str:
        return (
            f"VideoMetadata({os.path.basename(self.path)!r}, {self.codec} {self.pixel_format} "
            f"{self.width}x{self.height}, {self.average_fps:.3f} fps{' VFR' if self.is_vfr else ''}, "
            f"{self.num_frames}{'~' if self.num_frames_estimated else ''} frames, {self.duration_s:.3f} s, "
            f"rotation {self.rotation_deg}, stream {self.stream_index})"
        )


@dataclass(frozen=True)
class DecodeStats:
    """Work done by one decode call.

    Attributes:
        decoded_frames: frames the decoder produced (the cost to minimise).
        packets_sent: compressed packets fed to the decoder.
        seeks: seeks performed.
        decode_errors: damaged packets/frames reported by the decoder.
        skip_nonref_packets: CPU: packets sent with non-reference skipping allowed (an upper bound
            on the frames the decoder dropped without reconstructing them); NVDEC: packets of
            non-reference pictures left out (H.264 / HEVC).
        keyframe_backoffs: restarts from an earlier keyframe because decoding from the planned one
            concealed frames of its GOP (a keyframe that is not a clean start; see ``VideoReader``).
        decode_ms: demux + decode wall time, milliseconds.
        convert_ms: colour conversion + resize + rotation wall time, milliseconds (NVDEC backend: the
            time to enqueue the CUDA kernels; they finish asynchronously on the call's stream).
        backend: ``"cpu"`` (libavcodec + swscale + CPU resize) or ``"nvdec"`` (NVDEC + CUDA kernel).
        gop_workers: decoders that shared the call (GOP-parallel decoding, CPU or NVDEC; 1 = the
            main decoder alone; in ``VideoReader.total_stats``: decoders open). With several,
            ``decode_ms``/``convert_ms`` are summed over them (host-side work, not wall time).
        worker_failures: GOP runs whose decoder failed (e.g. no NVDEC session could be had) and that
            the main decoder decoded again, so the frames are the serial decode's.
        fallback_reason: why a ``device="cuda"`` reader decodes on the CPU (then moves the frames to
            the GPU); empty when no fallback happened.
    """

    decoded_frames: int = 0
    packets_sent: int = 0
    seeks: int = 0
    decode_errors: int = 0
    skip_nonref_packets: int = 0
    keyframe_backoffs: int = 0
    decode_ms: float = 0.0
    convert_ms: float = 0.0
    backend: str = "cpu"
    fallback_reason: str = ""
    gop_workers: int = 1
    worker_failures: int = 0

    @classmethod
    def from_native(cls, native: "_C.DecodeStats", **extra) -> "DecodeStats":
        """From the native decoder's counters (``_C.DecodeStats``) plus the Python-side fields."""
        return cls(**{k: getattr(native, k) for k in _NATIVE_STATS}, **extra)


#: Fields the native decoder reports (``_C.DecodeStats`` attributes).
_NATIVE_STATS = ("decoded_frames", "packets_sent", "seeks", "decode_errors", "skip_nonref_packets",
                 "keyframe_backoffs", "decode_ms", "convert_ms", "gop_workers", "worker_failures")


@dataclass(frozen=True)
class DecodedFrames:
    """Frames decoded for a list of times.

    Attributes:
        frames: uint8 ``[N, H, W, 3]`` RGB in ``[0, 255]``, contiguous, on the reader's device (for
            CUDA: written on the CUDA stream that was current when the call was made; see ``VideoReader``).
        pts_s: float64 ``[N]``, each frame's pts in seconds from the first frame.
        corrupt: bool ``[N]``; True where the frame comes from a damaged part of the stream
            (FFmpeg's error concealment filled it in). See ``VideoReader`` for the policy.
        keyframe: bool ``[N]``; True for keyframes.
        stats: decode work for this call.
    """

    frames: torch.Tensor
    pts_s: torch.Tensor
    corrupt: torch.Tensor
    keyframe: torch.Tensor
    stats: DecodeStats = field(default_factory=DecodeStats)

    def __repr__(self) -> str:
        return f"DecodedFrames(frames={tuple(self.frames.shape)} {self.frames.dtype}, pts_s={self.pts_s.tolist()})"


def normalize_device(device: str | torch.device) -> str:
    """``"cpu"`` or ``"cuda:N"`` for a device spec (``"cuda"`` means torch's current CUDA device).

    Raises:
        ValueError: anything but a CPU or CUDA device.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.index is None:
        return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cuda:0"
    return f"cuda:{dev.index}"


def _check_cuda_usable(device: str) -> int:
    """Device index for a ``"cuda:N"`` reader; a clear RuntimeError when this build or machine cannot."""
    if not _C.build_info()["cuda"]:
        raise RuntimeError(
            f"device={device!r}: eva_fast was built without CUDA; rebuild with EVA_FAST_CUDA=ON "
            "(needs nvcc): EVA_FAST_CUDA=ON pip install --no-build-isolation -e ."
        )
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r}: torch sees no usable CUDA device (torch.cuda.is_available() is False: "
            "no GPU, no NVIDIA driver, or a CPU-only torch build)"
        )
    index = int(device.split(":")[1])
    if index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return index


class VideoReader:
    """An open video file, decoded by ``eva_fast._C``: FFmpeg on the CPU, or NVDEC on a GPU.

    Opening reads the container header and index only (never the whole file). Frames come out
    RGB uint8 ``[N, H, W, 3]``, upright (display rotation applied), 8-bit even for 10-bit video.

    Corrupt data: a packet the decoder rejects, or a frame it reports as concealed, marks that
    frame and every following frame up to the next clean keyframe as ``corrupt`` (FFmpeg's
    concealed picture is returned in its place and a warning is logged); pass
    ``on_corrupt="error"`` to raise :class:`CorruptVideoError` instead. Truncated files raise
    :class:`CorruptVideoError` when a requested time lies beyond the decodable data.

    Keyframes that are not clean starts: when decoding from the keyframe a seek chose conceals a
    frame of its GOP, the decoder restarts from the keyframe before it (up to 8 times per
    requested frame); if the requested frame then comes out clean, the abandoned keyframe is
    remembered for the file (every reader of it in this process, GOP workers included) and never
    sought to again. So a seek never returns a concealed frame that decoding from an earlier
    keyframe (a serial decode) would reconstruct; ``stats.keyframe_backoffs`` counts the restarts.
    Example: ``cockatoo.mp4`` (H.264 4:4:4) decodes cleanly only from its first keyframe.

    GPU decoding (``device="cuda"`` / ``"cuda:N"``): FFmpeg demuxes on the host, NVDEC decodes, and
    a CUDA kernel converts NV12/P016 to RGB and resizes (same filters and fixed-point weights as the
    CPU path) straight into one CUDA uint8 ``[N, H, W, 3]`` tensor, handed over with DLPack; the seek
    plan and frame choice are the CPU decoder's. Stream contract: the decoder's device work runs on
    a stream of its own (it never waits for work queued on yours); at the end of a call
    ``torch.cuda.current_stream(device)`` is made to wait for the output on the device, so the
    returned tensor is ready in that stream's order (use it on that stream, or call
    ``torch.cuda.current_stream().synchronize()`` / record an event before using it on another
    stream); its memory is freed stream-ordered on that same stream, which must outlive the tensor
    (torch's default and pooled streams always do).
    Streams NVDEC cannot decode (e.g. H.264 4:4:4, AV1 on GPUs without AV1 NVDEC, or no
    libnvcuvid) fall back to CPU decoding plus a host-to-device copy; ``backend`` and
    ``fallback_reason`` (also in every call's :class:`DecodeStats`) say so and a warning is logged.

    GOP-parallel decoding: a request whose times span several GOPs is split into contiguous runs of
    GOPs of about equal decode work (frames from each GOP's keyframe to its last requested frame),
    decoded at the same time by extra decoders, each writing its frames into its slots of the one
    output. Each time is still decoded from its own keyframe, so frames, pts and flags are identical
    to one decoder's (bit for bit, NVDEC as well as CPU). On the CPU the extra decoders are
    single-threaded libavcodec decoders (``gop_workers``); with NVDEC each is an NVDEC session (from
    a per-GPU pool of idle sessions, created once: creation costs tens of ms) on a CUDA stream of its
    own (``gpu_workers``); streams that fall back to the CPU use ``gop_workers``. Requests in one
    GOP or with under ~24 frames of work stay on one decoder. Requests of all readers of the process
    share each device fairly: alone, a request gets the decoders it asks for; with ``k`` requests in
    flight on the device, at most its budget (CPU: hardware threads; GPU: ``default_gpu_workers``)
    divided by ``k`` and what the others leave, and always at least its own decoder. A run whose
    extra decoder fails (e.g. no NVDEC session can be created) is decoded again by the reader's own
    decoder (``DecodeStats.worker_failures``), so the result is the serial one.

    Args:
        path: video file path.
        device: ``"cpu"``, ``"cuda"`` (torch's current device) or ``"cuda:N"``.
        stream_index: video stream to use; default FFmpeg's best video stream.
        threads: decoder threads; 0 = FFmpeg's choice (all cores).
        on_corrupt: ``"flag"`` (default) or ``"error"``.
        skip_nonref: let the decoder drop non-reference frames that lie more than two frame
            durations from every requested time (FFmpeg's ``AVDISCARD_NONREF``: H.264
            ``nal_ref_idc`` 0, HEVC sub-layer non-reference pictures, VP9 frames that refresh no
            reference). Nothing else depends on those frames, so the returned frames are identical;
            only the work shrinks. NVDEC: the same H.264 / HEVC packets (those libavcodec drops
            with ``-skip_frame noref``, read from NAL headers) are not sent to the decoder; VP9 and
            AV1 are decoded in full. Always off at variable frame rate. Default True.
        gop_workers: CPU decoding (also a CUDA reader's CPU fallback): at most this many
            single-threaded decoders share one request (GOP-parallel, above; opened on first use,
            kept for the reader's life). 1 = never; default (None) = the machine's hardware threads
            (``eva_fast._C.default_gop_workers()``). 1..64.
        gpu_workers: NVDEC decoding: at most this many NVDEC decoders share one request (sessions
            taken from the GPU's pool per request and returned after it). 1 = never; default
            (None) = the GPU's NVDEC engines by model (``eva_fast._C.default_gpu_workers(i)``:
            7 on H100/H200/B200, 5 on A100, 4 on L4/A30, 3 on L40S, 2 on A10/T4 and unknown GPUs).
            1..64; ignored on the CPU.

        max_output_bytes: largest output one call may produce, ``T * H * W * 3`` bytes, checked
            before anything is allocated (default ``DEFAULT_MAX_OUTPUT_BYTES``, 4 GiB).

    Raises:
        FileNotFoundError: the path does not exist.
        NotAVideoError: FFmpeg cannot read the file as media.
        NoVideoStreamError: the file has no video stream.
        UnsupportedCodecError: this FFmpeg build cannot decode the codec.
        CorruptVideoError: the container opens but its index is unusable (e.g. no frames).
        ValueError: bad ``device``, ``stream_index``, ``threads``, ``on_corrupt``, ``skip_nonref``,
            ``gop_workers``, ``gpu_workers`` or ``max_output_bytes``.
        RuntimeError: ``device="cuda"`` with a build without CUDA (rebuild with ``EVA_FAST_CUDA=ON``)
            or without a usable GPU.

    The reader is safe to share between threads (calls are serialised); use one reader per
    thread for parallel decoding. :meth:`close` (or ``with VideoReader(...) as r:``) releases the
    decoders (GOP-run decoders included) at once instead of at garbage collection; metadata stays
    readable, decoding afterwards raises ``ValueError``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        *,
        stream_index: int | None = None,
        threads: int = 0,
        on_corrupt: str = "flag",
        skip_nonref: bool = True,
        gop_workers: int | None = None,
        gpu_workers: int | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        device = normalize_device(device)
        cuda_index = _check_cuda_usable(device) if device != "cpu" else -1
        if on_corrupt not in ("flag", "error"):
            raise ValueError(f"on_corrupt must be 'flag' or 'error', got {on_corrupt!r}")
        if stream_index is not None and not is_int(stream_index):
            raise ValueError(f"stream_index must be an int or None, got {stream_index!r}")
        int_in_range("threads", threads, 0, 256, note=" (0 = FFmpeg's choice)")
        positive_int("max_output_bytes", max_output_bytes)
        self.path = os.fspath(path)
        self.device = device
        self.on_corrupt = on_corrupt
        #: Largest output of one call, bytes (``T * H * W * 3``); checked before allocating.
        self.max_output_bytes = max_output_bytes
        if not isinstance(skip_nonref, bool):
            raise ValueError(f"skip_nonref must be a bool, got {skip_nonref!r}")
        for name, value in (("gop_workers", gop_workers), ("gpu_workers", gpu_workers)):
            if value is not None:
                int_in_range(name, value, 1, 64, note=" or None (auto)")
        #: Most CPU decoders that share one request (GOP-parallel decoding).
        self.gop_workers: int = _C.default_gop_workers() if gop_workers is None else gop_workers
        #: Most NVDEC decoders that share one request (1 for a CPU reader).
        self.gpu_workers: int = 1
        if cuda_index >= 0:
            self.gpu_workers = _C.default_gpu_workers(cuda_index) if gpu_workers is None else gpu_workers
        self._cuda_index = cuda_index
        self._lock = threading.Lock()
        self._frame_table: tuple[np.ndarray, np.ndarray] | None = None
        self._dec = _C.VideoDecoder(self.path, -1 if stream_index is None else stream_index, threads, cuda_index)
        self._dec.skip_nonref = skip_nonref
        #: ``"nvdec"`` or ``"cpu"``: what decodes this reader's frames.
        self.backend: str = self._dec.backend
        self._dec.workers = self.gpu_workers if self.backend == "nvdec" else self.gop_workers
        #: why a CUDA reader decodes on the CPU ("" when it does not).
        self.fallback_reason: str = self._dec.fallback_reason
        if cuda_index >= 0 and self.backend != "nvdec":
            log.warning(
                "%s: NVDEC cannot decode this stream (%s); decoding on the CPU and copying frames to %s",
                self.path, self.fallback_reason, device,
            )
        info = self._dec.info
        self.metadata = VideoMetadata(
            path=self.path,
            stream_index=info.stream_index,
            video_stream_indices=tuple(info.video_stream_indices),
            container=info.container,
            codec=info.codec,
            profile=info.profile,
            pixel_format=info.pixel_format,
            bit_depth=info.bit_depth,
            width=info.width,
            height=info.height,
            coded_width=info.coded_width,
            coded_height=info.coded_height,
            rotation_deg=info.rotation_deg,
            duration_s=info.duration_s,
            average_fps=info.average_fps,
            num_frames=info.num_frames,
            num_frames_estimated=info.num_frames_estimated,
            is_vfr=info.is_vfr,
            start_pts_s=info.start_pts_s,
            keyframe_pts_s=tuple(info.keyframe_pts_s),
            color_space=info.color_space,
            color_range=info.color_range,
        )

    def __repr__(self) -> str:
        return f"VideoReader({self.metadata!r}{', closed' if self.closed else ''})"

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._dec is None

    def close(self) -> None:
        """Release the native decoders (FFmpeg contexts, GOP-run decoders, NVDEC sessions back to
        their pool). Idempotent; waits for a call in progress to finish."""
        with self._lock:
            self._dec = None

    def _native(self) -> _C.VideoDecoder:
        if self._dec is None:
            raise ValueError(f"{self.path}: I/O operation on a closed VideoReader")
        return self._dec

    def frame_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Every frame's pts (float64 seconds from the first frame, sorted) and keyframe flag (bool).

        Built once per reader by a demux-only scan (reads the file's packets, decodes nothing);
        used for variable-frame-rate frame indices and for decode-work metrics.

        Raises:
            ValueError: the reader is closed.
        """
        with self._lock:
            if self._frame_table is None:
                pts, key = self._native().scan_frames()
                self._frame_table = (np.asarray(pts, dtype=np.float64), np.asarray(key, dtype=bool))
            return self._frame_table

    @property
    def stream_end_s(self) -> float:
        """End of the stream, seconds from the first frame: the last frame's pts + ``1 / average_fps``
        (the reference tool's stream end). Constant frame rate: ``metadata.end_s``. Variable frame
        rate: from the frame table (a demux-only scan, once per reader), never before
        ``metadata.end_s`` (some files' last pts lies after their declared duration)."""
        meta = self.metadata
        if not meta.is_vfr:
            return meta.end_s
        pts, _ = self.frame_table()
        if len(pts) == 0:
            return meta.end_s
        return max(meta.end_s, float(pts[-1]) + 1.0 / meta.average_fps)

    def check_output_bytes(self, num_frames: int, size: tuple[int, int]) -> int:
        """Bytes of ``num_frames`` RGB frames of ``size`` ``(height, width)``; ValueError above
        ``max_output_bytes`` (nothing is allocated)."""
        nbytes = int(num_frames) * int(size[0]) * int(size[1]) * 3
        if nbytes > self.max_output_bytes:
            raise ValueError(
                f"{num_frames} frames of {size[0]}x{size[1]} (height x width) need {nbytes} bytes, above this "
                f"reader's max_output_bytes={self.max_output_bytes}; ask for fewer or smaller frames (or raise "
                "VideoReader(max_output_bytes=...))"
            )
        return nbytes

    def _decode(
        self, times_s: Sequence[float], mode: str, size: tuple[int, int] | None, resample: Resample
    ) -> DecodedFrames:
        check_choice("resample", resample, RESAMPLES)
        times = [_time_arg(t, i) for i, t in enumerate(_as_sequence(times_s))]
        if mode == "played_at" and times:
            self._check_played_range(times)
        if size is None:
            h, w = self.metadata.height, self.metadata.width
        else:
            h, w = _size_arg(size)
        self.check_output_bytes(len(times), (h, w))
        stream = 0
        if self.backend == "nvdec":
            stream = torch.cuda.current_stream(self._cuda_index).cuda_stream
        with self._lock:
            out = self._native().decode(times, mode, height=h, width=w, filter=resample, cuda_stream=stream)
        corrupt = np.asarray(out.corrupt, dtype=bool)
        if corrupt.any():
            bad = [round(float(t), 3) for t, c in zip(out.pts_s, corrupt) if c]
            msg = f"{self.path}: {int(corrupt.sum())} frame(s) come from damaged stream data (pts_s {bad})"
            if self.on_corrupt == "error":
                raise CorruptVideoError(msg)
            log.warning("%s; returned FFmpeg's concealed frames, flagged in .corrupt", msg)
        if self.backend == "nvdec":
            frames = torch.from_dlpack(out.frames)
        elif self._cuda_index >= 0:
            frames = torch.from_numpy(out.frames).to(self.device)
        else:
            frames = torch.from_numpy(out.frames)
        return DecodedFrames(
            frames=frames,
            pts_s=torch.from_numpy(np.asarray(out.pts_s, dtype=np.float64)),
            corrupt=torch.from_numpy(corrupt),
            keyframe=torch.from_numpy(np.asarray(out.keyframe, dtype=bool)),
            stats=DecodeStats.from_native(out.stats, backend=self.backend, fallback_reason=self.fallback_reason),
        )

    def _check_played_range(self, times: list[float]) -> None:
        """torchcodec's rule for played-at times: each must lie in ``[0, stream end)``."""
        lo, hi = min(times), max(times)
        end = self.metadata.end_s
        if hi >= end and self.metadata.is_vfr:
            end = self.stream_end_s
        if lo < 0 or hi >= end:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{self.path}: no frame is played at t={bad!r} s: played-at times must be >= 0 and < {end!r} s "
                "(the end of the last frame; seconds from the first frame). get_frames_nearest clamps instead."
            )

    def get_frames_played_at(
        self, times_s: Sequence[float], *, size: tuple[int, int] | None = None, resample: Resample = "cubic"
    ) -> DecodedFrames:
        """The frame displayed at each time (last frame with pts <= t; the first frame before it).

        Same semantics as torchcodec's ``VideoDecoder.get_frames_played_at``, except that times are
        seconds from the first frame (torchcodec uses the stream's absolute pts): a time before the
        first frame or at/after the end of the last one (:attr:`stream_end_s`) is an error naming
        the time and the valid range. A time is compared with the frames' pts in the stream's time
        base; one that lies before a pts by more than a millionth of a tick is before that frame.

        Args:
            times_s: times in seconds from the first frame, any order, duplicates allowed.
            size: optional output ``(height, width)`` as displayed; default the native size.
            resample: ``"cubic"`` (OpenCV INTER_CUBIC, EVA parity) or ``"antialias"``.

        Returns:
            DecodedFrames with ``frames`` uint8 ``[len(times_s), H, W, 3]`` in the order given.

        Raises:
            ValueError: non-finite, non-numeric or out-of-range times, a bad size/filter, an output
                above ``max_output_bytes``, or the reader is closed.
            CorruptVideoError: data ends before a requested time, or ``on_corrupt="error"``.
        """
        return self._decode(times_s, "played_at", size, resample)

    def get_frames_nearest(
        self, times_s: Sequence[float], *, size: tuple[int, int] | None = None, resample: Resample = "cubic"
    ) -> DecodedFrames:
        """The frame whose pts is nearest each time (ties go to the earlier frame); times before the
        first frame give the first frame and times past the end the last one (any finite time, up
        to the largest floats, is safe). Args, returns and errors as :meth:`get_frames_played_at`,
        without the range rule."""
        return self._decode(times_s, "nearest", size, resample)

    @property
    def total_stats(self) -> DecodeStats:
        """Decode work summed over every call on this reader (its GOP-run decoders included;
        ``gop_workers``: decoders open)."""
        with self._lock:
            return DecodeStats.from_native(self._native().total_stats, backend=self.backend,
                                           fallback_reason=self.fallback_reason)


def _as_sequence(times_s: object) -> Sequence:
    if isinstance(times_s, (str, bytes)) or not hasattr(times_s, "__len__"):
        raise ValueError(f"times_s must be a sequence of seconds, got {type(times_s).__name__}")
    if isinstance(times_s, (np.ndarray, torch.Tensor)):
        return times_s.reshape(-1).tolist()
    return times_s


def _time_arg(t: object, i: int) -> float:
    """One time argument as float seconds; ValueError for non-numbers and non-finite values."""
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real):
        raise ValueError(f"times must be finite seconds, got {t!r} ({type(t).__name__}) at position {i}")
    try:
        out = float(t)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise ValueError(f"times must be finite seconds, got {t!r} at position {i}")
    return out


def _size_arg(size: object) -> tuple[int, int]:
    try:
        h, w = size  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (h, w)) or not (
        1 <= int(h) <= MAX_SIDE and 1 <= int(w) <= MAX_SIDE
    ):
        raise ValueError(f"size must be (height, width) with ints in 1..{MAX_SIDE}, got {size!r}")
    return int(h), int(w)
