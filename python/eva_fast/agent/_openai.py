"""``openai`` backend: any OpenAI-compatible chat server (vLLM is the intended one).

Serve the released checkpoint as the published evaluation does::

    vllm serve WRHC/EfficientVideoAgent --limit-mm-per-prompt '{"image": 9999, "video": 0}'

Frames travel inline as lossless PNG data URLs by default (the reference's frame tool writes PNG),
optionally JPEG, or as ``file://`` URLs of PNGs written under a media root the server may read
(vLLM ``--allowed-local-media-path``). Requests are async (the official ``openai`` client on
httpx), with bounded concurrency per backend, a timeout per request and retries with backoff
on connection errors, 408/409/429 and 5xx (the client's policy).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eva_fast._logging import get_logger
from eva_fast.agent._backend import BackendBadRequest, ModelBackend, Session, register_backend
from eva_fast.agent._types import Generation, ImagePart, Message, TextPart

logger = get_logger("agent")

IMAGE_FORMATS = ("png", "jpeg", "file")


def encode_frame(part: ImagePart, image_format: str = "png", jpeg_quality: int = 95) -> bytes:
    """One frame as PNG (lossless, default compression) or JPEG bytes.

    Raises:
        ValueError: unknown format.
    """
    from PIL import Image

    arr = part.batch.frames[part.index]
    img = Image.fromarray(arr.cpu().numpy())
    buf = io.BytesIO()
    if image_format in ("png", "file"):
        img.save(buf, format="PNG")
    elif image_format == "jpeg":
        img.save(buf, format="JPEG", quality=jpeg_quality)
    else:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    return buf.getvalue()


class _OpenAISession(Session):
    def __init__(self, backend: OpenAIBackend) -> None:
        self._b = backend
        self._urls: dict[tuple[int, int], tuple[ImagePart, str]] = {}
        self._dir: Path | None = None
        self._files = 0

    def _url(self, part: ImagePart) -> tuple[str, float]:
        key = (id(part.batch), part.index)
        hit = self._urls.get(key)
        if hit is not None and hit[0].batch is part.batch:
            return hit[1], 0.0
        b = self._b
        t0 = time.perf_counter()
        data = encode_frame(part, b.image_format, b.jpeg_quality)
        if b.image_format == "file":
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="eva_fast_frames_", dir=b.media_root))
            path = self._dir / f"frame_{self._files:04d}.png"
            self._files += 1
            path.write_bytes(data)
            url = path.resolve().as_uri()
        else:
            mime = "image/png" if b.image_format == "png" else "image/jpeg"
            url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        self._urls[key] = (part, url)
        return url, (time.perf_counter() - t0) * 1e3

    def build_messages(self, messages: Sequence[Message]) -> tuple[list[dict[str, Any]], float]:
        """OpenAI chat messages: strings stay strings; tool turns become ``text`` and
        ``image_url`` parts in order. Returns the list and the encoding time (ms)."""
        out: list[dict[str, Any]] = []
        encode_ms = 0.0
        for m in messages:
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
                continue
            parts: list[dict[str, Any]] = []
            for p in m.content:
                if isinstance(p, TextPart):
                    parts.append({"type": "text", "text": p.text})
                else:
                    url, ms = self._url(p)
                    encode_ms += ms
                    parts.append({"type": "image_url", "image_url": {"url": url}})
            out.append({"role": m.role, "content": parts})
        return out, encode_ms

    async def generate(self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float) -> Generation:
        import openai

        b = self._b
        payload, encode_ms = await asyncio.to_thread(self.build_messages, list(messages))
        model = await b.resolve_model()
        async with b.semaphore:
            t0 = time.perf_counter()
            try:
                resp = await b.client.chat.completions.create(
                    model=model,
                    messages=payload,
                    temperature=float(temperature),
                    max_tokens=int(max_new_tokens),
                    **b.extra_body_kwargs(),
                )
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
        if self._dir is not None and not self._b.keep_files:
            shutil.rmtree(self._dir, ignore_errors=True)


@register_backend("openai")
class OpenAIBackend(ModelBackend):
    """An OpenAI-compatible chat-completions server.

    Args:
        base_url: server URL including ``/v1`` (e.g. ``http://localhost:8000/v1``).
        model: model name; None asks the server (first entry of ``/v1/models``, as the reference does).
        api_key: API key (vLLM without ``--api-key`` accepts anything).
        image_format: ``"png"`` (lossless, default), ``"jpeg"`` or ``"file"`` (``file://`` URLs of PNGs
            written under ``media_root``, removed when the trajectory ends unless ``keep_files``).
        media_root: folder the server may read (vLLM ``--allowed-local-media-path``); required for
            ``"file"``.
        jpeg_quality: JPEG quality in [1, 100].
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
        jpeg_quality: int = 95,
        max_concurrency: int = 32,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        extra_body: dict[str, Any] | None = None,
        keep_files: bool = False,
    ) -> None:
        try:
            import openai
        except ImportError as e:
            raise ImportError("the openai backend needs the OpenAI client: pip install 'openai>=1.40'") from e
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        if image_format == "file":
            if media_root is None or not Path(media_root).is_dir():
                raise ValueError(f"image_format='file' needs an existing media_root folder, got {media_root!r}")
        if not (isinstance(jpeg_quality, int) and 1 <= jpeg_quality <= 100):
            raise ValueError(f"jpeg_quality must be an int in [1, 100], got {jpeg_quality!r}")
        if not (isinstance(max_concurrency, int) and max_concurrency >= 1):
            raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.base_url = base_url
        self.image_format = image_format
        self.media_root = None if media_root is None else str(Path(media_root).resolve())
        self.jpeg_quality = jpeg_quality
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

    def extra_body_kwargs(self) -> dict[str, Any]:
        return {"extra_body": self.extra_body} if self.extra_body else {}

    def session(self) -> Session:
        return _OpenAISession(self)

    async def aclose(self) -> None:
        if self._client is not None and self._sem_loop is asyncio.get_running_loop():
            await self._client.close()
        self._client, self._sem_loop = None, None
