"""Model backends: a registry of classes that turn chat messages (with frames) into a reply.

Each backend is one class registered by name (``@register_backend("name")``); heavy libraries
(transformers, openai) are imported inside the backend. A backend opens one :class:`Session` per
trajectory (``backend.session()``) so that per-trajectory state (encoded images, packed frames,
a KV cache) lives and dies with the trajectory.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from eva_fast._logging import get_logger
from eva_fast.agent._types import Generation, Message, TokenTrace

logger = get_logger("agent")

_REGISTRY: dict[str, type[ModelBackend]] = {}
#: Built-in backends and the module that registers each (imported on first use).
_BUILTIN = {
    "transformers": "eva_fast.agent._transformers",
    "openai": "eva_fast.agent._openai",
    "scripted": "eva_fast.agent._scripted",
}


class BackendBadRequest(RuntimeError):
    """The model server refused the request (HTTP 400: e.g. prompt longer than the context)."""


class Session(abc.ABC):
    """Per-trajectory handle on a backend. Use as ``async with backend.session() as s``."""

    @abc.abstractmethod
    async def generate(self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float) -> Generation:
        """Generate the next assistant turn for ``messages`` (the whole conversation so far).

        Raises:
            BackendBadRequest: the server refused the request (the loop stops with
                ``openai_bad_request``). Any other exception stops the loop with ``exception``.
        """

    async def aclose(self) -> None:
        """Free per-trajectory resources (default: nothing)."""

    def token_trace(self) -> TokenTrace | None:
        """The episode so far as token ids (:class:`TokenTrace`), for backends that work on ids;
        None (the default) for those that do not (servers that re-render the chat)."""
        return None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class ModelBackend(abc.ABC):
    """A model that answers chat turns. Subclasses register with :func:`register_backend`.

    Attributes:
        name: registry name.
        model_name: what to record as the trajectory's model.
    """

    name: str = ""
    model_name: str = ""

    @abc.abstractmethod
    def session(self) -> Session:
        """A new per-trajectory session."""

    async def aclose(self) -> None:
        """Release the backend (connections, model memory). Default: nothing."""


def register_backend(name: str) -> Callable[[type[ModelBackend]], type[ModelBackend]]:
    """Class decorator: register a :class:`ModelBackend` subclass under ``name``.

    Raises:
        ValueError: ``name`` already registered to another class.
    """

    def deco(cls: type[ModelBackend]) -> type[ModelBackend]:
        old = _REGISTRY.get(name)
        if old is not None and old is not cls:
            raise ValueError(f"backend name {name!r} is already registered to {old.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_backends() -> list[str]:
    """Names :func:`get_backend` accepts."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def get_backend(name: str, **kwargs: Any) -> ModelBackend:
    """Build a backend by registry name (``"transformers"``, ``"openai"``, ``"scripted"``) or by a
    dotted path ``"package.module:Class"``.

    Args:
        name: registry name or dotted path.
        **kwargs: the backend class's constructor arguments (e.g. ``model_path=``, ``device=``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        ImportError: the backend's library is missing (the message gives the pip command).
    """
    if name in _BUILTIN and name not in _REGISTRY:
        importlib.import_module(_BUILTIN[name])
    cls = _REGISTRY.get(name)
    if cls is None and ":" in name:
        mod, _, attr = name.partition(":")
        cls = getattr(importlib.import_module(mod), attr)
        if not (isinstance(cls, type) and issubclass(cls, ModelBackend)):
            raise ValueError(f"{name!r} is not a ModelBackend subclass")
    if cls is None:
        raise ValueError(f"unknown backend {name!r}; known: {list_backends()} or 'package.module:Class'")
    return cls(**kwargs)
