"""Type stub of ``eva_fast._C``, the native core (csrc/, pybind11): FFmpeg demux and decode (NVDEC in
CUDA builds), keyframe-aware seeking, colour conversion and resize into RGB24 buffers.

Sizes are ``(height, width)`` everywhere; times are seconds from the first frame of the stream
unless a name says otherwise (``pts``: stream time base units). Private to eva_fast: use
``eva_fast.video``.
"""

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

MAX_SIDE: int
"""Largest output side, pixels (16384): the decoder's size limit, defined once in C++ (``kMaxSide``)."""

class VideoError(RuntimeError):
    """Base of the decoder's errors."""

class UnsupportedCodecError(VideoError): ...
class CorruptVideoError(VideoError): ...
class NotAVideoError(VideoError): ...
class NoVideoStreamError(VideoError): ...

class VideoInfo:
    """Stream metadata from the container header and index (no decoding)."""

    @property
    def path(self) -> str: ...
    @property
    def container(self) -> str: ...
    @property
    def codec(self) -> str: ...
    @property
    def codec_long_name(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def pixel_format(self) -> str: ...
    @property
    def bit_depth(self) -> int: ...
    @property
    def color_space(self) -> str: ...
    @property
    def color_range(self) -> str: ...
    @property
    def stream_index(self) -> int: ...
    @property
    def video_stream_indices(self) -> list[int]: ...
    @property
    def width(self) -> int:
        """As displayed (after ``rotation_deg``)."""
    @property
    def height(self) -> int:
        """As displayed (after ``rotation_deg``)."""
    @property
    def coded_width(self) -> int: ...
    @property
    def coded_height(self) -> int: ...
    @property
    def rotation_deg(self) -> int:
        """Clockwise rotation applied to make frames upright: 0, 90, 180 or 270."""
    @property
    def duration_s(self) -> float: ...
    @property
    def average_fps(self) -> float: ...
    @property
    def r_fps(self) -> float:
        """FFmpeg's base-rate guess (``r_frame_rate``)."""
    @property
    def num_frames(self) -> int: ...
    @property
    def num_frames_estimated(self) -> bool: ...
    @property
    def is_vfr(self) -> bool: ...
    @property
    def start_pts_s(self) -> float:
        """pts of the first frame, seconds (absolute)."""
    @property
    def start_pts(self) -> int:
        """pts of the first frame, stream time base."""
    @property
    def time_base(self) -> tuple[int, int]:
        """``(num, den)`` of the stream time base."""
    @property
    def keyframe_pts_s(self) -> list[float]:
        """Keyframes from the container index, seconds from the first frame (empty without an index)."""
    @property
    def keyframes_from_index(self) -> bool: ...

class DecodeStats:
    """Decoder work of one call (``DecodeOutput.stats``) or since open (``VideoDecoder.total_stats``)."""

    @property
    def decoded_frames(self) -> int: ...
    @property
    def packets_sent(self) -> int: ...
    @property
    def seeks(self) -> int: ...
    @property
    def decode_errors(self) -> int: ...
    @property
    def skip_nonref_packets(self) -> int: ...
    @property
    def keyframe_backoffs(self) -> int:
        """Restarts from an earlier keyframe because the planned one concealed frames of its GOP."""
    @property
    def decode_ms(self) -> float: ...
    @property
    def convert_ms(self) -> float: ...
    @property
    def gop_workers(self) -> int:
        """Decoders that shared the call (1: one decoder); in ``total_stats``: decoders open."""
    @property
    def worker_failures(self) -> int:
        """GOP runs whose decoder failed and that the main decoder decoded again."""

class DecodeOutput:
    """Frames decoded for a list of times, in the order given (T = number of times)."""

    @property
    def frames(self) -> Any:
        """CPU backend: NumPy uint8 ``[T, H, W, 3]`` RGB (owns the decoder's buffer). NVDEC backend: a
        DLPack capsule of a CUDA uint8 ``[T, H, W, 3]`` tensor (``torch.from_dlpack``)."""
    @property
    def pts(self) -> npt.NDArray[np.int64]:
        """``[T]`` chosen frames' pts, stream time base."""
    @property
    def pts_s(self) -> npt.NDArray[np.float64]:
        """``[T]`` chosen frames' pts, seconds from the first frame."""
    @property
    def corrupt(self) -> npt.NDArray[np.bool_]:
        """``[T]`` True where the frame comes from damaged stream data."""
    @property
    def keyframe(self) -> npt.NDArray[np.bool_]:
        """``[T]`` True for keyframes."""
    @property
    def stats(self) -> DecodeStats: ...

class VideoDecoder:
    """One open video stream. Calls are serialised by an internal lock; the GIL is released while
    decoding."""

    def __init__(self, path: str, stream_index: int = -1, threads: int = 0, cuda_device: int = -1) -> None:
        """Open ``path`` (header and index only). ``stream_index < 0``: FFmpeg's best video stream.
        ``threads``: 0 = FFmpeg's choice. ``cuda_device >= 0``: NVDEC on that GPU, or the CPU with
        ``fallback_reason`` set.

        Raises:
            FileNotFoundError, NotAVideoError, NoVideoStreamError, UnsupportedCodecError,
            CorruptVideoError, ValueError (a stream index that is not a video stream).
        """
    @property
    def backend(self) -> Literal["cpu", "nvdec"]: ...
    @property
    def fallback_reason(self) -> str: ...
    @property
    def info(self) -> VideoInfo: ...
    def decode(
        self,
        times_s: list[float],
        mode: Literal["nearest", "played_at"] = "nearest",
        *,
        height: int = 0,
        width: int = 0,
        filter: Literal["cubic", "antialias"] = "cubic",
        cuda_stream: int = 0,
    ) -> DecodeOutput:
        """Decode the frame for each time. ``(height, width)``: output size as displayed, ``(0, 0)``
        = native, else 1..``MAX_SIDE`` each. ``cuda_stream``: CUstream handle the NVDEC backend enqueues on.

        Raises:
            ValueError: non-finite times, a bad size, mode or filter, or an output that cannot be
                allocated.
            CorruptVideoError: no frame can be decoded for a time (truncated or damaged data).
        """
    def decode_yuv(self, times_s: list[float], mode: Literal["nearest", "played_at"] = "nearest") -> list[bytes]:
        """Test hook: each chosen frame's decoded planes in FFmpeg's planar layout (what framemd5 hashes)."""
    def scan_frames(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Demux-only scan: every frame's pts (sorted, seconds from the first frame) and keyframe flag."""
    @property
    def total_stats(self) -> DecodeStats: ...
    @property
    def unclean_keyframes_s(self) -> list[float]:
        """Keyframes (seconds from the first frame, sorted) found not to be clean starts; shared by every
        decoder of the same file (path, size, mtime) and stream in the process."""
    skip_nonref: bool
    """Let the decoder drop non-reference frames far from every target (identical output)."""
    workers: int
    """Most decoders that share one request (GOP-parallel decoding, CPU or NVDEC; 1 = never split;
    1..64, else ValueError). GOP-run decoders: single-threaded libavcodec, or NVDEC sessions on the
    same GPU, each on its own CUDA stream; concurrent requests share each device's budget fairly."""

def resize_rgb(
    image: npt.NDArray[np.uint8], height: int, width: int, filter: Literal["cubic", "antialias"] = "cubic"
) -> npt.NDArray[np.uint8]:
    """Resize an RGB24 image ``[H, W, 3]`` uint8 to ``[height, width, 3]`` with the decoder's resampler."""

def _set_resize_simd(enabled: bool) -> bool: ...
def _resize_simd_available() -> bool: ...
def _set_yuv444_fast(enabled: bool) -> bool: ...
def _yuv444_fast_available(colorspace: int, full_range: bool) -> bool: ...
def _yuv444_mismatches_exhaustive(colorspace: int, full_range: bool) -> int: ...
def cuda_yuv420_to_rgb(
    y: int,
    uv: int,
    *,
    y_pitch: int,
    uv_pitch: int,
    height: int,
    width: int,
    bit_depth: int,
    bytes_per_sample: int,
    matrix_id: int,
    full_range: bool,
    out: int,
    out_h: int,
    out_w: int,
    filter: Literal["cubic", "antialias"] = "cubic",
    rotation_deg: int = 0,
    stream: int = 0,
) -> None:
    """CUDA builds: run the colour-convert + resize kernel on 4:2:0 planes in device memory (raw
    pointers); writes uint8 ``[out_h, out_w, 3]`` at ``out`` on ``stream``. Test/diagnostic entry."""
def cuda_kernel_emulate(
    y: npt.NDArray[Any],
    uv: npt.NDArray[Any],
    *,
    bit_depth: int,
    matrix_id: int,
    full_range: bool,
    out_h: int,
    out_w: int,
    filter: Literal["cubic", "antialias"] = "cubic",
    rotation_deg: int = 0,
) -> npt.NDArray[np.uint8]:
    """CUDA builds: the kernel's per-thread code run serially on the CPU (tests without a GPU)."""
def cuda_color_route(matrix_id: int, full_range: bool, bit_depth: int, height: int) -> Literal[
        "swscale_int", "float_nearest", "float_vinterp"]:
    """CUDA builds: the colour route the kernel takes for such pictures. ``"swscale_int"`` (8-bit 4:2:0,
    even height, once the loaded swscale is checked to give the same values): swscale's x86 unscaled
    converter reproduced exactly, so NVDEC frames equal the CPU path's; ``"float_vinterp"`` (> 8-bit
    or odd height): float32 matrix with chroma interpolated vertically as swscale's scaled route does;
    ``"float_nearest"``: 8-bit where the check failed. Raises ValueError for a bit depth outside
    8..16 or a height <= 0, RuntimeError in builds without CUDA."""
def nvdec_matrix_id(codec: str, container_matrix: int, signal_matrix: int) -> int:
    """The colour matrix (H.273 / AVColorSpace id, e.g. 1 = BT.709, 2 = unspecified) the NVDEC path
    converts with: ``container_matrix`` (libavcodec's reading of the stream) when specified, else NVDEC's
    ``video_signal_description.matrix_coefficients`` for codecs whose headers carry H.273 ids there
    (``"h264"``, ``"hevc"``, ``"mpeg2video"``), else unspecified (swscale's default, as on the CPU path).
    Raises ValueError for a codec name FFmpeg does not know. Any build."""
def device_free_errors() -> tuple[int, str]:
    """``(count, last message)`` of device frame buffers whose stream-ordered free failed since the
    process started (DLPack deleters cannot raise; each failure is also printed to stderr)."""
def _free_device_frames(data: int, device: int, stream: int = 0) -> str:
    """Test hook: free a raw device pointer as a frames buffer; ``""`` or the error it reported."""
def default_gop_workers() -> int:
    """Default GOP-run decoders of a CPU request: the machine's hardware threads."""
def default_gpu_workers(cuda_device: int) -> int:
    """Default NVDEC decoders of one request on that GPU: its NVDEC engines by model (1 without NVDEC)."""
def _gpu_workers_for_name(name: str) -> int:
    """The NVDEC-engine table behind ``default_gpu_workers``, by the driver's GPU name."""
def cuda_device_name(cuda_device: int) -> str:
    """The driver's name of a GPU (``""`` without a driver)."""
def open_decoders() -> int:
    """Stream decoders alive in the process (readers' main decoders and their GOP-run decoders)."""
def _fail_next_gop_runs(n: int) -> None:
    """Test hook: the next ``n`` GOP runs fail after half of their targets; each is redone by the
    request's main decoder."""
def _split_gop_runs(target_pts: list[int], keyframes: list[int], frame_dur: int, max_runs: int) -> list[list[int]]:
    """Test hook: the GOP runs a request would be split into (positions in ``target_pts`` per run,
    in pts order; ``[]`` = one decoder)."""

def _nonref_packets(path: str, stream_index: int = -1) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Test hook: every packet's pts (stream time base, demux order) and whether the NVDEC device may
    leave it out as a non-reference picture (H.264 / HEVC NAL headers, after the Annex B filter)."""

class _WorkerBudget:
    """Test hook: the fair-share rule of GOP-run decoders on one device."""

    def __init__(self, budget: int) -> None: ...
    def acquire(self, want: int) -> int: ...
    def release(self, granted: int) -> None: ...
    @property
    def budget(self) -> int: ...
    @property
    def in_use(self) -> int: ...
    @property
    def requests(self) -> int: ...

def nvdec_sessions() -> dict[str, int]:
    """``{"cached": idle sessions kept for reuse, "created": sessions ever created}``."""
def build_info() -> dict[str, Any]:
    """Version, FFmpeg libraries, compiler, CUDA (``cuda``, ``cuda_version``, ``cuda_archs``), threads."""
def set_ffmpeg_log_level(level: int) -> None:
    """Print FFmpeg messages at or below this AV_LOG_* level to stderr."""
