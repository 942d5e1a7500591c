"""GRPO rollouts: ``num_generations`` EVA episodes per question through the agent loop, all at once,
with the frames of a question's episodes shared.

Each rollout is a whole episode of :class:`eva_fast.agent.AgentLoop` — the prompts, parsing, budget,
stop reasons and max turns of ``eva-fast ask``/``eval`` — on a backend that works on token ids
(the live policy in process, or vLLM), so every finished :class:`Trajectory` carries its
:class:`TokenTrace` (prompt ids, response ids, mask, sampling logprobs, frames).

Frames shared across the group: the episodes of one question share one open reader and one
:class:`GroupFrameCache` keyed by (frame index, output size, aligned size, resize path, filter):
a call whose frames another episode already decoded is served from the cache; a call that
overlaps decodes only the missing frames (its :class:`FramePlan` restricted to them). Frames stay
tensors end to end (decoder -> cache -> packer -> model), on the GPU when decoding there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from eva_fast import _asyncio
from eva_fast._logging import get_logger
from eva_fast.agent import AgentConfig, AgentLoop, SyncFn, TickStats, TickSummary, summarize_ticks
from eva_fast.video import DecodeStats, FrameBatch, FramePlan, VideoReader, decode_plan, plan_frames

logger = get_logger("train")


def cross_process_max(accelerator: Any) -> SyncFn | None:
    """The :data:`~eva_fast.agent._ticks.SyncFn` of a training run: an element-wise max over all
    processes of a list of ints (one ``all_reduce`` on the accelerator's device, so NCCL and gloo
    alike); None for a single process."""
    if accelerator is None or accelerator.num_processes == 1:
        return None

    def sync(values: list[int]) -> list[int]:
        t = torch.tensor(values, dtype=torch.long, device=accelerator.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    return sync


@dataclass
class CacheStats:
    """Frame-cache counters of a rollout batch.

    Attributes:
        frames_requested: frames asked for by all calls.
        frames_decoded: frames actually decoded (cache misses).
        calls: tool calls served.
        calls_fully_cached: calls served without decoding anything.
        decode_ms: time spent decoding misses, milliseconds.
    """

    frames_requested: int = 0
    frames_decoded: int = 0
    calls: int = 0
    calls_fully_cached: int = 0
    decode_ms: float = 0.0

    @property
    def hit_rate(self) -> float:
        """Fraction of requested frames served from the cache."""
        return 1.0 - self.frames_decoded / self.frames_requested if self.frames_requested else 0.0

    @property
    def frames_saved(self) -> int:
        return self.frames_requested - self.frames_decoded

    def add(self, other: CacheStats) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class GroupFrameCache:
    """Decoded frames of one video, shared by the episodes of a question (thread-safe).

    A ``frame_select`` call is planned (:func:`eva_fast.video.plan_frames`, the agent's own
    settings); frames already in the cache are reused, the rest are decoded together with
    :func:`eva_fast.video.decode_plan` on the plan restricted to them, so the result is exactly
    what ``select_frames`` returns.

    Args:
        reader: the open video (shared; its calls are serialised).
        max_frames: frames kept (oldest dropped first); None keeps all (a group's episodes rarely
            ask for more than a few hundred).
    """

    def __init__(self, reader: Any, max_frames: int | None = None) -> None:
        self.reader = reader
        self.max_frames = max_frames
        self.stats = CacheStats()
        self._frames: dict[tuple, tuple[torch.Tensor, float, bool]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(plan: FramePlan, i: int) -> tuple:
        return (plan.frame_indices[i], plan.size, plan.aligned_size, plan.smart_resize_by, plan.resample)

    def select_frames(self, reader: Any, start_time: float, end_time: float, nframes: int, resize: float = 1.0,
                      **kwargs: Any) -> FrameBatch:
        """Drop-in for :func:`eva_fast.video.select_frames` (same arguments and result) that serves
        frames from the cache. ``reader`` must be this cache's reader."""
        if reader is not self.reader:
            raise ValueError("GroupFrameCache.select_frames: the reader is not the cache's reader")
        kwargs.pop("device", None)
        t0 = time.perf_counter()
        return self.serve(plan_frames(reader, start_time, end_time, nframes, resize, **kwargs), t0)

    def serve(self, plan: FramePlan, t_start: float | None = None) -> FrameBatch:
        """The ``FrameBatch`` of a :class:`FramePlan` of this video: cached frames reused, the rest
        decoded together (:func:`eva_fast.video.decode_plan` on the plan restricted to them)."""
        t0 = time.perf_counter() if t_start is None else t_start
        reader = self.reader
        with self._lock:
            keys = [self._key(plan, i) for i in range(plan.nframes)]
            missing = sorted({i for i, k in enumerate(keys) if k not in self._frames}, key=lambda i: keys[i][0])
            # one decode per distinct missing frame
            first: dict[tuple, int] = {}
            for i in missing:
                first.setdefault(keys[i], i)
            todo = list(first.values())
            stats = DecodeStats()
            if todo:
                sub = dataclasses.replace(
                    plan,
                    timestamps_s=tuple(plan.timestamps_s[i] for i in todo),
                    frame_indices=tuple(plan.frame_indices[i] for i in todo),
                    target_pts_s=tuple(plan.target_pts_s[i] for i in todo),
                    snap_error_s=tuple(plan.snap_error_s[i] for i in todo),
                    nframes=len(todo),
                )
                td = time.perf_counter()
                got = decode_plan(reader, sub)
                self.stats.decode_ms += (time.perf_counter() - td) * 1e3
                stats = got.stats
                for j, i in enumerate(todo):
                    self._frames[keys[i]] = (got.frames[j], got.pts_s[j], got.corrupt[j])
            self.stats.frames_requested += plan.nframes
            self.stats.frames_decoded += len(todo)
            self.stats.calls += 1
            self.stats.calls_fully_cached += int(not todo)
            entries = [self._frames[k] for k in keys]
            if self.max_frames is not None and len(self._frames) > self.max_frames:
                for k in list(self._frames)[: len(self._frames) - self.max_frames]:
                    if k not in keys:
                        del self._frames[k]
        frames = torch.stack([e[0] for e in entries])
        return FrameBatch(
            frames=frames, pts_s=tuple(e[1] for e in entries), corrupt=tuple(e[2] for e in entries), plan=plan,
            stats=stats, total_ms=(time.perf_counter() - t0) * 1e3, video=reader.metadata,
        )

    __call__ = select_frames


@dataclass
class RolloutBatch:
    """The episodes of one rollout batch, in input order.

    Attributes:
        trajectories: one per input row (``num_generations`` consecutive episodes per question).
        cache: frame-cache counters summed over the groups.
        timings_ms: wall time per stage over the batch: ``rollout`` (all episodes), and summed over
            episodes ``generate``, ``decode``, ``pack``.
        groups: number of distinct (video, question) groups.
        caches: the groups' frame caches by video path (open readers) when the run kept them open
            (``keep_open=True``: the CSV judge reuses them); :meth:`close` closes them.
        decoder_frames: frames the decoders reconstructed for the batch (GOP work included: the
            decode work, which the group cache shrinks).
        decoder_ms: the decoders' own time (demux + decode + convert/resize, CPU-side, summed over
            GOP workers), milliseconds; unlike the episodes' ``decode`` stage it excludes waiting.
        ticks: the batched model calls of the round (:class:`~eva_fast.agent._ticks.TickStats`, one
            per tick; empty when the backend generated turn by turn): concurrency, padding waste,
            the model's wall time (an episode's ``generate`` stage is the whole tick it waited in,
            so ``timings_ms["generate"]`` sums a tick once per episode in it).
    """

    trajectories: list[Any]
    cache: CacheStats = field(default_factory=CacheStats)
    timings_ms: dict[str, float] = field(default_factory=dict)
    groups: int = 0
    caches: dict[str, GroupFrameCache] = field(default_factory=dict)
    decoder_frames: int = 0
    decoder_ms: float = 0.0
    ticks: list[TickStats] = field(default_factory=list)

    @property
    def tick_summary(self) -> TickSummary:
        """:attr:`ticks` summed (:func:`~eva_fast.agent._ticks.summarize_ticks`)."""
        return summarize_ticks(self.ticks)

    @property
    def model_ms(self) -> float:
        """Wall time the model spent generating for the batch, milliseconds: the ticks' summed
        time, or (turn by turn, one call at a time) the episodes' summed ``generate`` stage."""
        return self.tick_summary.generate_ms if self.ticks else self.timings_ms.get("generate", 0.0)

    def close(self) -> None:
        """Close the kept readers."""
        for c in self.caches.values():
            c.reader.close()
        self.caches = {}


def group_rows(keys: Sequence[Any]) -> list[list[int]]:
    """Indices of equal keys grouped, in order of first appearance (TRL repeats each question
    ``num_generations`` times, consecutively or not)."""
    groups: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return list(groups.values())


class RolloutEngine:
    """Runs EVA episodes for a batch of questions concurrently (one asyncio task per episode).

    Args:
        backend: an agent backend that works on token ids (``TransformersBackend`` on the policy,
            or the vLLM rollout backend) so trajectories carry a :class:`TokenTrace`. A backend
            with the round protocol of :mod:`eva_fast.agent._ticks` (``expect``, ``episode_done``,
            ``drain``) serves the episodes' turns turn-synchronously, one batched call per tick.
        config: the agent settings (:class:`eva_fast.agent.AgentConfig`); ``temperature`` is the
            sampling temperature of the rollouts.
        share_frames: share decoded frames within a question's group (:class:`GroupFrameCache`).
        max_concurrency: episodes in flight at once (None: all).
    """

    def __init__(self, backend: Any, config: AgentConfig, *, share_frames: bool = True,
                 max_concurrency: int | None = None) -> None:
        if not isinstance(config, AgentConfig):
            raise TypeError(f"config must be an AgentConfig, got {type(config).__name__}")
        self.backend = backend
        self.config = config
        self.share_frames = share_frames
        self.max_concurrency = max_concurrency

    async def run(self, videos: Sequence[str | os.PathLike], questions: Sequence[str], *, keep_open: bool = False
                  ) -> RolloutBatch:
        """One episode per ``(videos[i], questions[i])``; equal pairs form a group that shares a
        reader and a frame cache. Never raises for model or video problems: a failed episode has
        its stop reason (``exception: ...`` for an unreadable video).

        Args:
            keep_open: keep the groups' readers and caches open in ``RolloutBatch.caches`` (the
                caller closes them with :meth:`RolloutBatch.close`)."""
        if len(videos) != len(questions):
            raise ValueError(f"{len(videos)} videos for {len(questions)} questions")
        t0 = time.perf_counter()
        out: list[Any] = [None] * len(videos)
        sem = asyncio.Semaphore(self.max_concurrency or max(1, len(videos)))
        caches: list[GroupFrameCache] = []
        work = [0, 0.0]  # decoder frames, decoder ms
        groups = group_rows([(os.fspath(v), q) for v, q in zip(videos, questions)])

        done_one = getattr(self.backend, "episode_done", None)

        async def episode(i: int, loop: AgentLoop, reader: Any) -> None:
            try:
                async with sem:
                    out[i] = await loop.run(videos[i], questions[i], reader=reader)
            finally:
                if done_one is not None:
                    done_one()

        async def open_reader(idx: list[int]) -> Any:
            video = os.fspath(videos[idx[0]])
            try:
                return await asyncio.to_thread(VideoReader, video, device=self.config.decode_device)
            except Exception as e:  # the episodes report it (each opens the video and stops with the reason)
                logger.warning("rollout group on %s: %s", video, e)
                return None

        # every group's reader first, then the episodes in input order: sessions are made (and turns
        # batched, see TurnRequest.order) in that order whichever video opened first
        readers = await asyncio.gather(*(open_reader(g) for g in groups))
        loops = []
        for reader in readers:
            if reader is not None and self.share_frames:
                cache = GroupFrameCache(reader)
                caches.append(cache)
                loops.append(AgentLoop(self.backend, self.config, frame_tool=cache))
            else:
                loops.append(AgentLoop(self.backend, self.config))
        group_of = {i: k for k, g in enumerate(groups) for i in g}
        expect = getattr(self.backend, "expect", None)
        if expect is not None:
            expect(len(videos), self.max_concurrency)
        try:
            await asyncio.gather(*(episode(i, loops[group_of[i]], readers[group_of[i]]) for i in range(len(videos))))
        finally:
            for reader in readers:
                if reader is not None:
                    st = reader.total_stats
                    work[0] += st.decoded_frames
                    work[1] += st.decode_ms + st.convert_ms
                    if not (keep_open and self.share_frames):
                        reader.close()
        drain = getattr(self.backend, "drain", None)
        if drain is not None:  # batched backends (vLLM): finish the ticks other processes still run
            await drain()
        batch = RolloutBatch(out, groups=len(groups), decoder_frames=work[0], decoder_ms=work[1],
                             ticks=list(getattr(self.backend, "tick_stats", None) or []))
        for c in caches:
            batch.cache.add(c.stats)
            if keep_open:
                batch.caches[c.reader.path] = c
        timings: dict[str, float] = {"rollout": (time.perf_counter() - t0) * 1e3}
        for t in out:
            for k, v in t.timings_ms().items():
                timings[k] = timings.get(k, 0.0) + v
        batch.timings_ms = timings
        return batch

    def run_sync(self, videos: Sequence[str | os.PathLike], questions: Sequence[str], *, keep_open: bool = False
                 ) -> RolloutBatch:
        """:meth:`run` from synchronous code (in a fresh event loop, or a thread when one is running)."""
        return _asyncio.run_sync(self.run(videos, questions, keep_open=keep_open))
