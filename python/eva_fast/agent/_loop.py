"""``AgentLoop``: EVA's planning-before-perception loop as an explicit state machine.

    PENDING ──► GENERATING ──► PARSING ──► PROCESSING_TOOLS ──► GENERATING ...
                    │             │                │
                    └─────────────┴────────────────┴──► TERMINATED (stop_reason set)

Protocol: ``eva_fast.agent._protocol`` (parity with the published EVA evaluation). Frames come from
``eva_fast.video.select_frames`` on one ``VideoReader`` per trajectory, reused across turns.
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
import time
from collections.abc import Callable
from typing import Any

from eva_fast import _asyncio
from eva_fast._logging import get_logger
from eva_fast.agent._backend import BackendBadRequest, ModelBackend, Session
from eva_fast.agent._config import AgentConfig
from eva_fast.agent._protocol import (
    ERR_TOOL_FAILED,
    STOP_ANSWER,
    STOP_BAD_REQUEST,
    STOP_EXCEPTION,
    STOP_MAX_TURNS,
    STOP_NO_TOOL_CALL,
    STOP_NO_VALID_TOOL_CALL,
    ParsedCall,
    ReferenceToolCall,
    extract_answer,
    first_user_text,
    label_seconds,
    parse_tool_calls,
    reference_tool_call,
    tool_turn_layout,
)
from eva_fast.agent._types import FramesReturned, ImagePart, Message, TextPart, ToolCall, Trajectory, Turn
from eva_fast.video import FrameBatch, FrameOptions, FramePlan, VideoReader, clamp_window, plan_frames, select_frames

logger = get_logger("agent")

#: ``on_event(event, trajectory, turn)`` callback; events: ``"generated"`` (a model turn is in),
#: ``"tools"`` (its tool calls ran), ``"stopped"`` (the run ended; ``turn`` is the last or None).
EventCallback = Callable[[str, Trajectory, "Turn | None"], None]


class AgentState(enum.Enum):
    """States of :class:`AgentLoop`."""

    PENDING = "pending"
    """Open the video, build the system and first user turns."""
    GENERATING = "generating"
    """Ask the model for the next turn (or stop at ``max_turns``)."""
    PARSING = "parsing"
    """Look for an answer, then for tool calls."""
    PROCESSING_TOOLS = "processing_tools"
    """Run the frame tool for each call and build the tool turn."""
    TERMINATED = "terminated"
    """Done; ``Trajectory.stop_reason`` is set."""


class AgentLoop:
    """Runs EVA's agent loop for one question at a time (many concurrently with asyncio).

    Args:
        backend: the model (see :func:`eva_fast.agent.get_backend`).
        config: settings (default :class:`AgentConfig()`, the published evaluation's).
        frame_tool: what serves ``frame_select``: a callable with :func:`eva_fast.video.select_frames`'s
            signature returning a ``FrameBatch``, called as ``frame_tool(reader, start, end, nframes,
            resize, options=config.frame_options, device=config.decode_device, budget=...,
            max_nframes=None, max_resize=None)`` (default ``select_frames``; GRPO rollouts pass one
            that shares decoded frames among the episodes of a question).

    Example::

        loop = AgentLoop(get_backend("transformers", model_path="hf_model"), AgentConfig())
        traj = loop.run_sync("video.mp4", "What happens first? A. ... B. ...")
        traj.answer, traj.stop_reason
    """

    def __init__(self, backend: ModelBackend, config: AgentConfig | None = None,
                 frame_tool: Callable[..., Any] | None = None) -> None:
        if not isinstance(backend, ModelBackend):
            raise TypeError(f"backend must be a ModelBackend (see get_backend), got {type(backend).__name__}")
        config = AgentConfig() if config is None else config
        if not isinstance(config, AgentConfig):
            raise TypeError(f"config must be an AgentConfig, got {type(config).__name__}")
        self.backend = backend
        self.config = config
        self.frame_tool = select_frames if frame_tool is None else frame_tool

    def run_sync(self, video_path: str | os.PathLike, question: str, system: str | None = None,
                 *, on_event: EventCallback | None = None) -> Trajectory:
        """:meth:`run` from synchronous code (runs its own event loop; in a thread if one is running)."""
        return _asyncio.run_sync(self.run(video_path, question, system, on_event=on_event))

    async def run(self, video_path: str | os.PathLike, question: str, system: str | None = None,
                  *, on_event: EventCallback | None = None, reader: VideoReader | None = None) -> Trajectory:
        """Answer ``question`` about the video at ``video_path``.

        Args:
            video_path: a video file eva_fast can decode.
            question: the question (with its options), as the benchmark gives it.
            system: system turn; None uses ``config.system_prompt`` (the trained one).
            on_event: optional progress callback (see ``EventCallback``); exceptions it raises end
                the run with an ``exception`` stop reason.
            reader: an open reader of ``video_path`` to use (shared by concurrent runs on the same
                video; left open); default: the run opens its own and closes it at the end.

        Returns:
            The trajectory. Model and tool problems (bad calls, an unreadable video, a server error)
            never raise: they end the run with a stop reason.

        Raises:
            TypeError: ``question`` or ``system`` is not a str (caller errors).
        """
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}")
        if system is not None and not isinstance(system, str):
            raise TypeError(f"system must be a str or None, got {type(system).__name__}")
        cfg = self.config
        t_start = time.perf_counter()
        traj = Trajectory(
            video_path=os.fspath(video_path),
            question=question,
            system=cfg.system_prompt if system is None else system,
            backend=self.backend.name,
            model=self.backend.model_name,
            config=cfg.conversation_config(),
        )
        state = AgentState.PENDING
        owned: VideoReader | None = None
        session: Session | None = None
        messages: list[Message] = []
        pending: list[ParsedCall] = []
        turn: Turn | None = None

        def stop(reason: str) -> AgentState:
            traj.stop_reason = reason
            return AgentState.TERMINATED

        source = "video"  # what the code running now counts as, for Trajectory.error_source
        try:
            while state is not AgentState.TERMINATED:
                if state is AgentState.PENDING:
                    if reader is None:
                        reader = owned = await asyncio.to_thread(VideoReader, traj.video_path, device=cfg.decode_device)
                    source = "backend"
                    meta = reader.metadata
                    traj.duration_s, traj.width, traj.height = meta.duration_s, meta.width, meta.height
                    messages = [
                        Message("system", traj.system),
                        Message("user", first_user_text(question, duration_s=meta.duration_s, height=meta.height,
                                                        width=meta.width)),
                    ]
                    session = self.backend.session()
                    state = AgentState.GENERATING

                elif state is AgentState.GENERATING:
                    if traj.num_rounds >= cfg.max_turns:
                        state = stop(STOP_MAX_TURNS)
                        continue
                    source = "backend"
                    gen = await session.generate(
                        messages, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature
                    )
                    traj.num_rounds += 1
                    # The reference records the last round: the server caches earlier rounds.
                    traj.total_tokens = gen.prompt_tokens + gen.completion_tokens
                    traj.visual_tokens = sum(p.num_tokens for m in messages for p in m.images())
                    prev = traj.turns[-1] if traj.turns else None
                    for k in ("pack", "encode"):
                        if k in gen.timings_ms and prev is not None:
                            prev.timings_ms[k] = prev.timings_ms.get(k, 0.0) + gen.timings_ms[k]
                    turn = Turn(
                        index=len(traj.turns),
                        text=gen.text,
                        prompt_tokens=gen.prompt_tokens,
                        completion_tokens=gen.completion_tokens,
                        finish_reason=gen.finish_reason,
                        timings_ms={"generate": gen.timings_ms.get("generate", 0.0)},
                        cached_prompt_tokens=gen.cached_prompt_tokens,
                        completion_token_ids=gen.completion_token_ids,
                    )
                    traj.turns.append(turn)
                    messages.append(Message("assistant", gen.text))
                    if on_event:
                        source = "callback"
                        on_event("generated", traj, turn)
                    state = AgentState.PARSING

                elif state is AgentState.PARSING:
                    source = "model_output"
                    answer = extract_answer(turn.text)
                    if answer:
                        traj.answer = answer
                        state = stop(STOP_ANSWER)
                        continue
                    has_block, pending = parse_tool_calls(turn.text, cfg.tool_call_blocks)
                    if not has_block:
                        state = stop(STOP_NO_TOOL_CALL)
                    elif not pending:
                        state = stop(STOP_NO_VALID_TOOL_CALL)
                    else:
                        state = AgentState.PROCESSING_TOOLS

                elif state is AgentState.PROCESSING_TOOLS:
                    source = "model_output"  # the reference's arithmetic on the model's arguments may raise
                    try:
                        parts, errors = await self._run_tools(reader, pending, turn, question)
                    finally:  # the reference adds each call's estimate before running it: a call
                        # that then raises (string start_time) is still counted
                        traj.estimated_visual_tokens += sum(c.estimated_visual_tokens for c in turn.tool_calls)
                    if on_event:
                        source = "callback"
                        on_event("tools", traj, turn)
                    if errors and len(errors) == len(pending):
                        state = stop("; ".join(errors))
                    else:
                        messages.append(Message("tool", tuple(parts)))
                        state = AgentState.GENERATING
        except BackendBadRequest as e:
            traj.stop_reason = STOP_BAD_REQUEST
            traj.error = f"{type(e).__name__}: {e}"
        except Exception as e:
            logger.warning("agent run on %s stopped by an exception", traj.video_path, exc_info=True)
            traj.error = f"{type(e).__name__}: {e}"
            traj.error_source = source
            traj.stop_reason = STOP_EXCEPTION  # the reference's record: stop_reason "exception" + "error"
        finally:
            if session is not None:
                try:
                    traj.tokens = session.token_trace()
                except Exception:  # pragma: no cover - the trace is extra; never lose the result
                    logger.warning("reading the backend's token trace failed", exc_info=True)
                try:
                    await session.aclose()
                except Exception:  # pragma: no cover - closing must not hide the result
                    logger.warning("closing the backend session failed", exc_info=True)
            if owned is not None:
                owned.close()
            traj.wall_ms = (time.perf_counter() - t_start) * 1e3
            traj.model = self.backend.model_name or traj.model  # a server backend learns it on first use
        if on_event:
            on_event("stopped", traj, traj.turns[-1] if traj.turns else None)
        return traj

    def _frames(self, reader: VideoReader, ref: ReferenceToolCall) -> FrameBatch:
        """The frames of a call the reference's tool serves, from ``self.frame_tool`` (see
        :func:`tool_call_request`)."""
        cfg = self.config
        args, kwargs = tool_call_request(reader, ref)
        return self.frame_tool(*args, options=cfg.frame_options, device=cfg.decode_device, **kwargs)

    async def _run_tools(self, reader: VideoReader, calls: list[ParsedCall], turn: Turn, question: str
                         ) -> tuple[list[TextPart | ImagePart], list[str]]:
        """Run every parsed call; return the tool turn's content parts and the per-call errors."""
        cfg = self.config
        ok: list[tuple[Any, list[int]]] = []  # (FrameBatch, label_seconds) of the successful calls
        errors: list[str] = []
        frame_no = 0
        decode_ms = 0.0
        for pc in calls:
            call = ToolCall(raw=pc.raw, arguments=pc.arguments, error=pc.error)
            turn.tool_calls.append(call)
            if pc.error is not None:
                errors.append(pc.error)
                continue
            args = pc.tool_arguments()
            t0 = time.perf_counter()
            # The reference's outcome for these raw arguments: its budget arithmetic may raise
            # (that ends the episode with stop reason "exception", as there), its tool process may
            # refuse them (a call error); the estimate counts either way.
            meta = reader.metadata
            ref = reference_tool_call(args, cfg.frame_options, height=meta.height, width=meta.width)
            call.estimated_visual_tokens = ref.estimated_visual_tokens
            try:
                if ref.refusal is not None:
                    raise ValueError(ref.refusal)
                batch = await asyncio.to_thread(self._frames, reader, ref)
            except Exception as e:  # the model's arguments are untrusted: any refusal is a call error
                call.error = ERR_TOOL_FAILED
                call.error_detail = f"{type(e).__name__}: {e}"
                call.decode_ms = (time.perf_counter() - t0) * 1e3
                decode_ms += call.decode_ms
                errors.append(ERR_TOOL_FAILED)
                logger.info("frame_select refused %r: %s", pc.raw[:200], call.error_detail)
                continue
            call.decode_ms = (time.perf_counter() - t0) * 1e3
            decode_ms += call.decode_ms
            # the reference labels with its own expression on the raw arguments; where that raises
            # (a string time, an infinite one) its episode ends with "exception": so does this one
            plan = batch.plan
            labels = label_seconds(args["start_time"], args["end_time"], plan.nframes)
            call.frames = FramesReturned(plan=plan, pts_s=list(batch.pts_s), label_s=labels, first_frame=frame_no)
            turn.visual_tokens += plan.num_visual_tokens
            ok.append((batch, labels))
            frame_no += plan.nframes
        turn.timings_ms["decode"] = decode_ms
        layout = tool_turn_layout([(b.plan.nframes, labels) for b, labels in ok], question, cfg.timestamp_fmt)
        parts = [TextPart(p) if isinstance(p, str) else ImagePart(ok[p[0]][0], p[1]) for p in layout]
        return parts, errors


def tool_call_request(reader: VideoReader, ref: ReferenceToolCall) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` for :func:`eva_fast.video.plan_frames` / ``select_frames`` (add
    ``options=``) that serve a call the reference's tool serves: its window (infinite ends clamped
    as its tool clamps them, an empty end = the stream end), the budget outcome already computed on
    the raw arguments (``budget=``), no frame or resize cap (the budget bounds tokens,
    ``reader.max_output_bytes`` the decoded bytes)."""
    start, end = ref.start_time, ref.end_time
    if end is None or not (math.isfinite(start) and math.isfinite(end)):
        start, end = clamp_window(start, reader.stream_end_s if end is None else end, reader.stream_end_s)
    args = (reader, start, end, ref.request_nframes, ref.request_resize)
    return args, {"budget": ref.budget, "max_nframes": None, "max_resize": None}


def plan_tool_call(reader: VideoReader, arguments: dict[str, Any], options: FrameOptions) -> FramePlan:
    """The :class:`~eva_fast.video.FramePlan` the agent decodes for a call with these raw arguments
    (the four tool keys; ``resize`` missing or None = 1.0) under ``options``:
    :func:`reference_tool_call`, then :func:`tool_call_request` into
    :func:`~eva_fast.video.plan_frames`. What training uses to plan recorded calls again exactly as
    the loop planned them.

    Raises:
        ValueError: the reference's tool would refuse the call (``call_frame_select_failed``), or
            the plan does not fit the reader.
        TypeError, ValueError, OverflowError: where the reference's own arithmetic raises.
    """
    meta = reader.metadata
    args = {**arguments, "resize": 1.0 if arguments.get("resize") is None else arguments["resize"]}
    ref = reference_tool_call(args, options, height=meta.height, width=meta.width)
    if ref.refusal is not None:
        raise ValueError(ref.refusal)
    pargs, kwargs = tool_call_request(reader, ref)
    return plan_frames(*pargs, options=options, **kwargs)
