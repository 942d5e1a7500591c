"""A model backend for the eval tests: answers after a delay, and logs every question it sees.

Used by the SIGKILL/resume test through ``--backend tests.eval._slow_backend:SlowBackend`` (the
agent's ``get_backend`` accepts ``package.module:Class``), so the kill lands while questions are
in flight.
"""

from __future__ import annotations

import asyncio
import os
import re

from eva_fast.agent import Generation, ModelBackend, Session

_ANSWER_FOR = {"animal": "A", "bird": "C", "written": "C", "digit": "B", "colour": "A", "place": "B"}


class _SlowSession(Session):
    def __init__(self, backend: "SlowBackend") -> None:
        self._b = backend

    async def generate(self, messages, *, max_new_tokens, temperature):
        text = messages[-1].content if isinstance(messages[-1].content, str) else ""
        question = text.split("p. ", 1)[-1].splitlines()[0]
        if self._b.log_path:
            with open(self._b.log_path, "a") as f:
                f.write(question + "\n")
                f.flush()
                os.fsync(f.fileno())
        await asyncio.sleep(self._b.delay_s)
        if self._b.fail_on and self._b.fail_on in question:
            raise RuntimeError(f"scripted failure for {question!r}")
        letter = next((v for k, v in _ANSWER_FOR.items() if re.search(rf"\b{k}\b", question)), "D")
        return Generation(text=f"<answer>{letter}</answer>", prompt_tokens=100, completion_tokens=5)


class SlowBackend(ModelBackend):
    """Replies ``<answer>X</answer>`` after ``delay_s`` seconds (X from keywords of the question);
    raises instead when the question contains ``fail_on``."""

    def __init__(self, delay_s: float = 0.5, log_path: str | None = None, fail_on: str | None = None) -> None:
        self.delay_s = float(delay_s)
        self.log_path = log_path
        self.fail_on = fail_on
        self.model_name = "slow-test"

    def session(self) -> Session:
        return _SlowSession(self)
