"""``openai`` backend: any OpenAI-compatible chat server (vLLM is the intended one).

Serve the released checkpoint as the published evaluation does::

    vllm serve WRHC/EfficientVideoAgent --limit-mm-per-prompt '{"image": 9999, "video": 0}'

Frames travel inline as data URLs: lossless PNG by default (the reference's frame tool writes PNG;
here every row "Up"-filtered and deflated at zlib level 1 with the RLE strategy: the same pixels,
5-9 % more bytes than Pillow's default PNG, 6-10x less CPU), uncompressed binary PPM for a server on
the same machine or LAN (``image_format="ppm"``: ~1 ms a frame with base64, 1.6-4.7x the PNG
bytes), or lossy JPEG (opt-in); or as ``file://`` URLs of files written under a media root the
server may read (vLLM ``--allowed-local-media-path``; ``file_format="ppm"`` is the cheapest path for
a server on the same machine). Measured per format: ``bench/bench_eval_client.py``. vLLM opens
every image with Pillow whatever the data URL's media type says, so PNG and PPM reach the model as
the same pixels.

Each frame is encoded once per trajectory: the session keeps every frame's URL, keyed by what the
frame is (the same video frame at the same size, compared pixel for pixel), and later turns resend
the stored URL. Encoding runs on a thread pool shared by the backend's sessions (one thread per
usable core by default), off the event loop, so other trajectories' requests stay in flight
meanwhile. Requests are async (the official ``openai`` client), with bounded concurrency per
backend, a timeout per request and retries with backoff on connection errors, 408/409/429 and 5xx
(the client's policy).
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from eva_fast._checks import positive_int
from eva_fast._logging import get_logger
from eva_fast.agent._backend import BackendBadRequest, ModelBackend, Session, register_backend
from eva_fast.agent._types import Generation, ImagePart, Message, TextPart

logger = get_logger("agent")

#: ``image_format`` values: inline data URLs (``png``, ``ppm``, ``jpeg``) or ``file://`` URLs.
IMAGE_FORMATS = ("png", "ppm", "jpeg", "file")
#: Encodings of the files written in ``"file"`` mode.
FILE_FORMATS = ("png", "ppm")
#: Media type of each encoding in a data URL.
MIME_TYPES = {"png": "image/png", "ppm": "image/x-portable-pixmap", "jpeg": "image/jpeg"}
#: Default zlib level of PNG frames (with the RLE strategy, higher levels gain little).
DEFAULT_PNG_COMPRESS_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _pixels(frame: ImagePart | Any) -> np.ndarray:
    """The uint8 ``[H, W, 3]`` array of an image part or of a frame (NumPy array or torch tensor)."""
    arr = frame.batch.frames[frame.index] if isinstance(frame, ImagePart) else frame
    if hasattr(arr, "cpu"):  # torch tensor, possibly on CUDA
        arr = arr.cpu().numpy()
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"a frame must be uint8 [H, W, 3] RGB, got {arr.dtype} {list(arr.shape)}")
    return arr


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(frame: np.ndarray, compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL) -> bytes:
    """A uint8 ``[H, W, 3]`` RGB frame as a PNG file: 8-bit truecolour, no interlace, every row
    filtered with filter type 2 ("Up": the byte minus the byte above), deflated by zlib at
    ``compress_level`` with the ``Z_RLE`` strategy.

    Source: W3C PNG Specification (2nd ed.) §5 (signature, chunks, CRC-32), §11.2.2 (IHDR), §9
    (filter type 2), §10 (zlib datastream). Why not Pillow's encoder: it tries four filters on
    every row, which costs as much as the compression itself (Pillow at level 1: 8.2 ms a frame on
    Big Buck Bunny's EVA-like workload; this: 3.8 ms, 5 % more bytes; both exact).

    Raises:
        ValueError: ``frame`` is not a uint8 ``[H, W, 3]`` array.
    """
    arr = _pixels(frame)
    h, w, _ = arr.shape
    flat = arr.reshape(h, w * 3)
    rows = np.empty((h, w * 3 + 1), np.uint8)
    rows[:, 0] = 2
    rows[0, 1:] = flat[0]  # the row above the first is zeros
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's
    z = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = z.compress(rows) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # bit depth 8, colour type 2 (RGB)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def encode_frame(frame: ImagePart | Any, image_format: str = "png", jpeg_quality: int = 95,
                 png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL) -> bytes:
    """One frame as image file bytes: PNG by :func:`encode_png`, PPM and JPEG by Pillow.

    Args:
        frame: an :class:`ImagePart`, or a uint8 ``[H, W, 3]`` RGB array/tensor in ``[0, 255]``.
        image_format: ``"png"`` (lossless; ``"file"`` means the same), ``"ppm"`` (lossless binary
            PPM, P6: a short text header, then the raw RGB bytes) or ``"jpeg"`` (lossy).
        jpeg_quality: JPEG quality in [1, 100].
        png_compress_level: zlib level in [0, 9] for PNG. Every level decodes to the same pixels.

    Returns:
        The encoded file.

    Raises:
        ValueError: unknown format, a frame that is not uint8 ``[H, W, 3]``.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if image_format in ("png", "file"):
        return encode_png(_pixels(frame), png_compress_level)
    img = Image.fromarray(_pixels(frame))
    buf = io.BytesIO()
    if image_format == "ppm":
        img.save(buf, format="PPM")
    else:
        img.save(buf, format="JPEG", quality=jpeg_quality)
    return buf.getvalue()


@dataclass(frozen=True)
class EncodedFrame:
    """A frame as sent: its URL, the encoded file's size and the CPU time it took.

    Attributes:
        url: ``data:<type>;base64,...`` or ``file://...``.
        nbytes: encoded file size, bytes (before base64).
        cpu_ms: CPU time of encoding it (and writing the file in ``"file"`` mode), milliseconds.
    """

    url: str
    nbytes: int
    cpu_ms: float


class _OpenAISession(Session):
    """One trajectory: its frames' URLs (each encoded once), then the requests."""

    def __init__(self, backend: OpenAIBackend) -> None:
        self._b = backend
        # (frame index, H, W) -> [(part, future of EncodedFrame)]: a part is the same frame as a
        # stored one when it is the very same batch slot or has the same pixels
        self._frames: dict[tuple[int, int, int], list[tuple[ImagePart, asyncio.Future]]] = {}
        self._dir: Path | None = None
        self._files = itertools.count()
        self.encoded = 0
        """Frames encoded so far (each distinct frame once)."""

    @staticmethod
    def _key(part: ImagePart) -> tuple[int, int, int]:
        h, w = part.size
        return int(part.batch.plan.frame_indices[part.index]), int(h), int(w)

    @staticmethod
    def _same_frame(a: ImagePart, b: ImagePart) -> bool:
        if a.batch is b.batch and a.index == b.index:
            return True

        x, y = torch.as_tensor(a.batch.frames[a.index]), torch.as_tensor(b.batch.frames[b.index])
        return x.device == y.device and x.shape == y.shape and bool(torch.equal(x, y))

    def _encode_job(self, part: ImagePart, path: Path | None) -> EncodedFrame:
        b = self._b
        t0 = time.thread_time()
        fmt = b.file_format if path is not None else b.image_format
        data = encode_frame(part, fmt, b.jpeg_quality, b.png_compress_level)
        if path is not None:
            path.write_bytes(data)
            url = path.resolve().as_uri()
        else:
            url = f"data:{MIME_TYPES[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
        return EncodedFrame(url, len(data), (time.thread_time() - t0) * 1e3)

    def _future(self, part: ImagePart, new: list[asyncio.Future]) -> asyncio.Future:
        """The stored future of this frame, or a new encode job on the backend's pool."""
        entries = self._frames.setdefault(self._key(part), [])
        for other, fut in entries:
            if self._same_frame(other, part):
                return fut
        b = self._b
        path = None
        if b.image_format == "file":
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="eva_fast_frames_", dir=b.media_root))
            path = self._dir / f"frame_{next(self._files):04d}.{b.file_format}"
        fut = asyncio.get_running_loop().run_in_executor(b.encode_pool, self._encode_job, part, path)
        entries.append((part, fut))
        new.append(fut)
        self.encoded += 1
        return fut

    async def encode(self, messages: Sequence[Message]) -> tuple[list[list[EncodedFrame]], float]:
        """Encode the frames of ``messages`` not seen before (in parallel on the backend's pool).

        Returns:
            Per message, its frames as sent (in order), and the CPU time of the frames encoded by
            this call, milliseconds (0 when every frame was already encoded).
        """
        new: list[asyncio.Future] = []
        futs = [[self._future(p, new) for p in m.images()] for m in messages]
        if new:
            await asyncio.gather(*new)
        frames = [[f.result() for f in fs] for fs in futs]
        return frames, sum(f.result().cpu_ms for f in new)

    @staticmethod
    def build_messages(messages: Sequence[Message], frames: Sequence[Sequence[EncodedFrame]]) -> list[dict[str, Any]]:
        """OpenAI chat messages: strings stay strings; tool turns become ``text`` and ``image_url``
        parts in order (``frames[i]``: the encoded images of ``messages[i]``, in order)."""
        out: list[dict[str, Any]] = []
        for m, fs in zip(messages, frames):
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
                continue
            it = iter(fs)
            parts: list[dict[str, Any]] = []
            for p in m.content:
                if isinstance(p, TextPart):
                    parts.append({"type": "text", "text": p.text})
                else:
                    parts.append({"type": "image_url", "image_url": {"url": next(it).url}})
            out.append({"role": m.role, "content": parts})
        return out

    async def generate(self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float) -> Generation:
        import openai  # optional (the agent extra); checked with its install hint in __init__
        from openai.types.chat import ChatCompletion  # likewise

        b = self._b
        messages = list(messages)
        frames, encode_ms = await self.encode(messages)
        body = {
            "model": await b.resolve_model(),
            "messages": self.build_messages(messages, frames),
            "temperature": float(temperature),
            "max_tokens": int(max_new_tokens),
            **b.extra_body,
        }
        async with b.semaphore:
            t0 = time.perf_counter()
            try:
                # The client's raw POST (its retries, timeout and errors) rather than the typed
                # ``chat.completions.create``, which walks every content part against its TypedDicts
                # first: ~22 ms of CPU per request for a 100-frame tool turn (measured), more than
                # sending the request.
                resp = await b.client.post("/chat/completions", cast_to=ChatCompletion, body=body)
            except openai.BadRequestError as e:
                raise BackendBadRequest(str(e)) from e
            gen_ms = (time.perf_counter() - t0) * 1e3
        if not resp.choices:
            raise RuntimeError("the server returned no choices")
        choice = resp.choices[0]
        text = choice.message.content or ""
        usage = resp.usage
        return Generation(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=str(choice.finish_reason or ""),
            timings_ms={"generate": gen_ms, "encode": encode_ms},
        )

    async def aclose(self) -> None:
        pending = [f for entries in self._frames.values() for _, f in entries if not f.done()]
        if pending:  # a cancelled run: let its encode jobs finish before their files are removed
            await asyncio.gather(*pending, return_exceptions=True)
        if self._dir is not None and not self._b.keep_files:
            shutil.rmtree(self._dir, ignore_errors=True)


@register_backend("openai")
class OpenAIBackend(ModelBackend):
    """An OpenAI-compatible chat-completions server.

    Args:
        base_url: server URL including ``/v1`` (e.g. ``http://localhost:8000/v1``).
        model: model name; None asks the server (first entry of ``/v1/models``, as the reference does).
        api_key: API key (vLLM without ``--api-key`` accepts anything).
        image_format: how frames travel (see the module doc): ``"png"`` (lossless, default),
            ``"ppm"`` (lossless and uncompressed: for a server on the same machine or LAN; vLLM and
            any server that opens images with Pillow accept it, OpenAI's own API does not),
            ``"jpeg"`` (lossy) or ``"file"`` (``file://`` URLs of ``file_format`` files written
            under ``media_root``, removed when the trajectory ends unless ``keep_files``).
        media_root: folder the server may read (vLLM ``--allowed-local-media-path``); required for
            ``"file"``.
        file_format: encoding of the ``"file"`` frames: ``"png"`` (default) or ``"ppm"``.
        png_compress_level: zlib level of PNG frames in [0, 9] (default 1; every level gives the
            same pixels).
        jpeg_quality: JPEG quality in [1, 100].
        encode_workers: threads encoding frames, shared by all trajectories of this backend
            (default: the usable cores).
        max_concurrency: requests in flight at once from this backend (all trajectories together).
        timeout_s: per-request timeout, seconds.
        max_retries: retries on connection errors, 408/409/429 and 5xx, with exponential backoff.
        extra_body: extra JSON fields for every request (e.g. ``{"top_k": 1}`` for vLLM).
        keep_files: keep ``"file"`` frames after the trajectory.

    Raises:
        ImportError: the ``openai`` package is missing.
        ValueError: bad format, missing/nonexistent media root, bad numbers.
    """

    def __init__(
        self,
        base_url: str = "http://localhost:8000/v1",
        model: str | None = None,
        api_key: str | None = None,
        image_format: str = "png",
        media_root: str | os.PathLike | None = None,
        file_format: str = "png",
        png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL,
        jpeg_quality: int = 95,
        encode_workers: int | None = None,
        max_concurrency: int = 32,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        extra_body: dict[str, Any] | None = None,
        keep_files: bool = False,
    ) -> None:
        try:  # the OpenAI client is optional (the agent extra)
            import openai
        except ImportError as e:
            raise ImportError("the openai backend needs the OpenAI client: pip install 'openai>=1.40'") from e
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        if image_format == "file":
            if media_root is None or not Path(media_root).is_dir():
                raise ValueError(f"image_format='file' needs an existing media_root folder, got {media_root!r}")
        if file_format not in FILE_FORMATS:
            raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}")
        if not (isinstance(png_compress_level, int) and 0 <= png_compress_level <= 9):
            raise ValueError(f"png_compress_level must be an int in [0, 9], got {png_compress_level!r}")
        if encode_workers is None:
            encode_workers = usable_cores()
        positive_int("encode_workers", encode_workers, allow_none=True)
        if not (isinstance(jpeg_quality, int) and 1 <= jpeg_quality <= 100):
            raise ValueError(f"jpeg_quality must be an int in [1, 100], got {jpeg_quality!r}")
        positive_int("max_concurrency", max_concurrency)
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.base_url = base_url
        self.image_format = image_format
        self.media_root = None if media_root is None else str(Path(media_root).resolve())
        self.file_format = file_format
        self.png_compress_level = png_compress_level
        self.jpeg_quality = jpeg_quality
        self.encode_workers = encode_workers
        self._pool: ThreadPoolExecutor | None = None
        self.max_concurrency = max_concurrency
        self.extra_body = dict(extra_body or {})
        self.keep_files = keep_files
        self._client_kwargs = dict(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=float(timeout_s),
            max_retries=max_retries,
        )
        self._openai = openai
        self._client: Any = None
        self._model = model
        self.model_name = model or ""
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._model_lock: asyncio.Lock | None = None

    def _bind_loop(self) -> None:
        # asyncio primitives and httpx connection pools belong to one event loop: rebuild them when
        # the backend is used from a new one (e.g. successive ``run_sync`` calls)
        loop = asyncio.get_running_loop()
        if self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.max_concurrency), loop
            self._model_lock = asyncio.Lock()
            self._client = self._openai.AsyncOpenAI(**self._client_kwargs)

    @property
    def encode_pool(self) -> ThreadPoolExecutor:
        """The frame-encoding threads (``encode_workers`` of them, made on first use)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.encode_workers, thread_name_prefix="eva_fast_encode")
        return self._pool

    @property
    def semaphore(self) -> asyncio.Semaphore:
        """The concurrency bound (one per event loop)."""
        self._bind_loop()
        return self._sem

    @property
    def client(self) -> Any:
        """The ``openai.AsyncOpenAI`` client of the running event loop."""
        self._bind_loop()
        return self._client

    async def resolve_model(self) -> str:
        """The model name to send (asks the server once when none was given)."""
        if self._model:
            return self._model
        self._bind_loop()
        async with self._model_lock:
            if not self._model:
                models = await self.client.models.list()
                if not models.data:
                    raise RuntimeError(f"the server at {self.base_url} lists no models")
                self._model = models.data[0].id
                self.model_name = self._model
        return self._model

    def session(self) -> Session:
        return _OpenAISession(self)

    async def aclose(self) -> None:
        if self._client is not None and self._sem_loop is asyncio.get_running_loop():
            await self._client.close()
        self._client, self._sem_loop = None, None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
