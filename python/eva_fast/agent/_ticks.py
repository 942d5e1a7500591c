"""Turn-synchronous batching: the model turns of many concurrent episodes served by one model call
per *tick*, with every process of a distributed run making the same number of calls.

An episode (an :class:`~eva_fast.agent.AgentLoop` run) alternates model turns and tool work. With
many episodes in flight (GRPO's ``num_generations`` per question, a judge's prompts of a step), a
:class:`TurnBatcher` collects their next turns and, once every live episode of this process is
waiting for its turn, runs them as one batched call (``run_tick``); then the episodes do their tool
work (frames from the group cache) and submit again. Episodes that ended simply stop submitting.

Distributed runs: under DeepSpeed ZeRO-3 or FSDP, transformers' ``generate`` is a collective
(``synced_gpus``: each process's call runs until every process's call is done, and a sharded
forward gathers parameters module by module), and TRL's vLLM server mode gathers prompts to rank
0 — so every process must make the same number of calls, with the same modules run. Before each
tick the processes agree (``sync``: an element-wise max over processes of a few integers): whether
any episode anywhere is still live — if not, the round ends everywhere at once — plus what the
calls need to look alike (``flags``: e.g. whether any process's batch carries images, the longest
turn). A process with nothing to serve still runs the tick, with an empty batch (the backend makes
a minimal call). The vLLM dispatcher of TRL-based trainers and verl's agent loop face the same
constraint; this module is eva_fast's one implementation of it, shared by the in-process
transformers backend, the GRPO vLLM backend and the CSV judge.

Protocol (what :class:`eva_fast.train.RolloutEngine` calls on a backend that has it):
``expect(episodes, max_concurrency)`` starts a round, ``episode_done()`` after each episode
(however it ended), ``drain()`` after this process's episodes are all done (keeps joining ticks
until every process's are).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eva_fast._logging import get_logger

logger = get_logger("agent")

#: ``sync(values) -> values``: element-wise max over every process (identity in one process).
SyncFn = Callable[[list[int]], list[int]]


@dataclass
class TickStats:
    """What one tick served and how full its batch was.

    Attributes:
        episodes: model turns served (0: this process joined with an empty batch).
        rows: rows of the batched call (episodes, plus a dummy row where the call needed one).
        prompt_tokens: real prompt tokens over the rows served.
        prompt_slots: prompt positions computed (rows x the padded prompt length; equal to
            ``prompt_tokens`` for unpadded backends).
        generated_tokens: tokens kept (each row up to its end of turn or its own limit).
        decode_slots: decoding positions computed (rows x decoding steps).
        generate_ms: wall time of the call, milliseconds.
        prefill_ms: of which the first forward (prompt + vision tower), milliseconds (0 when the
            backend does not measure it).
    """

    episodes: int
    rows: int
    prompt_tokens: int = 0
    prompt_slots: int = 0
    generated_tokens: int = 0
    decode_slots: int = 0
    generate_ms: float = 0.0
    prefill_ms: float = 0.0

    @property
    def padding_waste(self) -> float:
        """Fraction of computed positions that were padding or finished rows (0 = none)."""
        slots = self.prompt_slots + self.decode_slots
        return 1.0 - (self.prompt_tokens + self.generated_tokens) / slots if slots else 0.0


@dataclass
class TickSummary:
    """The ticks of a round, summed (:func:`summarize_ticks`).

    Attributes:
        ticks: ticks run (dummy ticks included).
        empty_ticks: ticks this process joined with nothing to serve.
        turns: model turns served.
        concurrency: mean turns per non-empty tick.
        padding_waste: padding and finished-row positions over all computed positions.
        generate_ms: summed wall time of the calls (the model's share of the round's wall time).
        prefill_ms: of which first forwards.
        used_slots, computed_slots: real token positions and computed ones (``padding_waste`` is
            ``1 - used / computed``; sums over processes give the run's).
    """

    ticks: int = 0
    empty_ticks: int = 0
    turns: int = 0
    concurrency: float = 0.0
    padding_waste: float = 0.0
    generate_ms: float = 0.0
    prefill_ms: float = 0.0
    used_slots: int = 0
    computed_slots: int = 0


def summarize_ticks(ticks: Sequence[TickStats]) -> TickSummary:
    """Totals of a round's :class:`TickStats`."""
    busy = [t for t in ticks if t.episodes]
    real = sum(t.prompt_tokens + t.generated_tokens for t in ticks)
    slots = sum(t.prompt_slots + t.decode_slots for t in ticks)
    return TickSummary(
        ticks=len(ticks), empty_ticks=len(ticks) - len(busy), turns=sum(t.episodes for t in ticks),
        concurrency=sum(t.episodes for t in busy) / len(busy) if busy else 0.0,
        padding_waste=1.0 - real / slots if slots else 0.0,
        generate_ms=sum(t.generate_ms for t in ticks), prefill_ms=sum(t.prefill_ms for t in ticks),
        used_slots=real, computed_slots=slots,
    )


@dataclass
class TurnRequest:
    """One episode's next model turn, waiting for a tick.

    Attributes:
        session: the episode's backend session (the runner reads its token ids and frames).
        max_new_tokens: the turn's token limit.
        temperature: sampling temperature (0 = greedy); equal for all requests of a tick.
        order: where the turn goes in its tick's batch (ascending; sessions pass their creation
            number), so a tick's rows — and the random numbers each row samples with — do not
            depend on which episode's tool work finished first.
    """

    session: Any
    max_new_tokens: int
    temperature: float
    order: int = 0


#: ``run_tick(requests, agreed) -> (results, stats)``: one batched call for ``requests`` (possibly
#: empty: join the collective with a minimal call) given the values every process agreed on
#: (``agreed[0]`` = some episode is live, ``agreed[1:]`` = the flags); one result per request.
#: Runs in a worker thread. Raising fails every request of the tick (each episode then stops).
RunTick = Callable[[list[TurnRequest], list[int]], "tuple[list[Any], TickStats]"]


class TurnBatcher:
    """Collects the model turns of a round of episodes into ticks (see the module docstring).

    Args:
        run_tick: the batched call (:data:`RunTick`).
        sync: element-wise max of a list of ints over all processes (:data:`SyncFn`); None for a
            single process.
        flags: ``flags(requests) -> list[int]``: values this process's calls must agree on with
            the other processes' (max over processes), passed to ``run_tick`` after the liveness
            value; None: none.
    """

    def __init__(self, run_tick: RunTick, sync: SyncFn | None = None,
                 flags: Callable[[list[TurnRequest]], list[int]] | None = None) -> None:
        self.run_tick = run_tick
        self.sync = sync
        self.flags = flags
        self.ticks: list[TickStats] = []
        self._pending: list[tuple[TurnRequest, asyncio.Future]] = []
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._remaining = 0
        self._concurrency = 1
        self._all_done = True

    @property
    def active(self) -> bool:
        """Whether a round is open (between :meth:`expect` and the round's end)."""
        return not self._all_done

    def expect(self, episodes: int, max_concurrency: int | None = None) -> None:
        """Open a round of ``episodes`` episodes, at most ``max_concurrency`` in flight (None: all).
        Call from the event loop that runs the episodes.

        Raises:
            RuntimeError: a round is still open.
            ValueError: ``episodes`` < 0 or ``max_concurrency`` < 1.
        """
        if self._task is not None and not self._task.done():
            raise RuntimeError("TurnBatcher.expect: the previous round is still running (call drain() first)")
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 0:
            raise ValueError(f"episodes must be an int >= 0, got {episodes!r}")
        if max_concurrency is not None and (isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int)
                                            or max_concurrency < 1):
            raise ValueError(f"max_concurrency must be a positive int or None, got {max_concurrency!r}")
        self._remaining = episodes
        self._concurrency = max_concurrency or max(1, episodes)
        self._pending = []
        self._event = asyncio.Event()
        self._task = None
        self._all_done = False
        self.ticks = []

    def episode_done(self) -> None:
        """One episode of the round ended (however it ended)."""
        self._remaining -= 1
        self._wake()

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def submit(self, request: TurnRequest) -> Any:
        """Queue one episode's turn; returns its result once a tick served it.

        Raises:
            RuntimeError: no round is open; or whatever the tick raised.
        """
        if not self.active:
            raise RuntimeError("TurnBatcher.submit outside a round (call expect() first)")
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut))
        self._start()
        self._wake()
        return await fut

    async def _dispatch(self) -> None:
        try:
            while True:
                # wait until every episode of this process that can run waits for its turn (episodes
                # still opening their video or running tools count), or until none remains
                while self._remaining > 0 and len(self._pending) < min(self._remaining, self._concurrency):
                    self._event.clear()
                    await self._event.wait()
                batch, self._pending = sorted(self._pending, key=lambda p: p[0].order), []
                requests = [r for r, _ in batch]
                local = [int(self._remaining > 0 or bool(batch)), *(self.flags(requests) if self.flags else [])]
                agreed = list(self.sync(local)) if self.sync is not None else local
                if not agreed[0]:
                    break
                try:
                    results, stats = await asyncio.to_thread(self.run_tick, requests, agreed)
                except Exception as e:  # every request of the tick fails; the episodes stop, the round goes on
                    logger.warning("a batched model call of %d turn(s) failed: %s", len(batch), e)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                self.ticks.append(stats)
                for (_, fut), res in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
        finally:
            self._all_done = True
            for _, fut in self._pending:  # only after an internal error: never leave an episode waiting
                if not fut.done():
                    fut.set_exception(RuntimeError("the turn batcher stopped"))
            self._pending = []

    async def drain(self) -> None:
        """Keep joining ticks until every process's episodes are done (call after this process's
        episodes finished). Each pass agrees on liveness first, then runs the tick with an empty
        batch here, exactly as the processes that still run episodes do."""
        if self._all_done:
            return
        self._start()
        self._wake()
        task = self._task
        try:
            await task
        finally:
            self._task = None
