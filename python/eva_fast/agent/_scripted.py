"""``scripted`` backend: replays given replies, then optionally hands over to a real backend.

Uses: protocol tests (every stop reason from known model turns), and forcing the first turn(s) of
a real model (``ScriptedBackend(replies=[tool_call_text], then=transformers_backend)``) so that a
random-weight test model still goes through frames -> packer -> generate with images in context.
"""

from __future__ import annotations

from collections.abc import Sequence

from eva_fast.agent._backend import ModelBackend, Session, register_backend
from eva_fast.agent._types import Generation, ImagePart, Message


def _approx_tokens(messages: Sequence[Message]) -> int:
    """Rough prompt size for scripted turns: 1 token per 4 characters + exact image tokens."""
    n = 0
    for m in messages:
        if isinstance(m.content, str):
            n += len(m.content) // 4 + 4
        else:
            for p in m.content:
                n += p.num_tokens + 2 if isinstance(p, ImagePart) else len(p.text) // 4
    return n


class _ScriptedSession(Session):
    def __init__(self, backend: ScriptedBackend) -> None:
        self._backend = backend
        self._turn = 0
        self._inner: Session | None = None

    async def generate(self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float) -> Generation:
        b = self._backend
        b.requests.append(list(messages))
        if self._turn < len(b.replies):
            reply = b.replies[self._turn]
            self._turn += 1
            if isinstance(reply, BaseException):
                raise reply
            return Generation(
                text=reply,
                prompt_tokens=_approx_tokens(messages),
                completion_tokens=max(1, len(reply) // 4),
                finish_reason="stop",
                timings_ms={"generate": 0.0},
            )
        if b.then is None:
            raise RuntimeError(f"scripted backend ran out of replies after {len(b.replies)} turn(s)")
        if self._inner is None:
            self._inner = b.then.session()
        return await self._inner.generate(messages, max_new_tokens=max_new_tokens, temperature=temperature)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()

    def token_trace(self):
        """The handed-over backend's trace (its prompt then holds the scripted turns), else None."""
        return None if self._inner is None else self._inner.token_trace()


@register_backend("scripted")
class ScriptedBackend(ModelBackend):
    """Replies with ``replies[k]`` on turn ``k`` of every trajectory, then defers to ``then``.

    Args:
        replies: reply texts, in turn order (an exception instance is raised at that turn instead).
        then: backend for the turns after the script (None: running out raises RuntimeError, which
            the loop turns into an ``exception`` stop).

    Attributes:
        requests: every message list received (for tests), in call order.
    """

    def __init__(self, replies: Sequence[str | BaseException] = (), then: ModelBackend | None = None) -> None:
        for r in replies:
            if not isinstance(r, (str, BaseException)):
                raise TypeError(f"replies must be str or exception instances, got {type(r).__name__}")
        self.replies = list(replies)
        self.then = then
        self.model_name = "scripted" + (f"+{then.model_name}" if then is not None else "")
        self.requests: list[list[Message]] = []

    def session(self) -> Session:
        return _ScriptedSession(self)

    # the round protocol of eva_fast.agent._ticks, handed to ``then`` (its turns are the model's)
    def expect(self, episodes: int, max_concurrency: int | None = None) -> None:
        if hasattr(self.then, "expect"):
            self.then.expect(episodes, max_concurrency)

    def episode_done(self) -> None:
        if hasattr(self.then, "episode_done"):
            self.then.episode_done()

    async def drain(self) -> None:
        if hasattr(self.then, "drain"):
            await self.then.drain()

    @property
    def tick_stats(self) -> list:
        return list(getattr(self.then, "tick_stats", None) or [])

    async def aclose(self) -> None:
        if self.then is not None:
            await self.then.aclose()


__all__ = ["ScriptedBackend"]
