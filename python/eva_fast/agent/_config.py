"""``AgentConfig``: the agent loop's settings (frozen, validated)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from eva_fast.agent._protocol import SYSTEM_PROMPT, TIMESTAMP_FORMATS
from eva_fast.video import (
    DEFAULT_MAX_VISUAL_TOKENS,
    DEFAULT_MAXP,
    POLICIES,
    RESAMPLES,
    SMART_RESIZE_BY,
    Policy,
    Resample,
    SmartResizeBy,
)

TOOL_CALL_BLOCKS = ("first", "all")


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one EVA agent loop. Defaults are the published evaluation's.

    Protocol:
        max_turns: model turns before stopping with ``max_turns_exceeded`` (reference 6 in the
            issue spec; positive int).
        max_new_tokens: tokens per model turn (reference 2048).
        temperature: sampling temperature, ``0`` = greedy (reference 0).
        system_prompt: system turn used when the caller gives none (the trained one, verbatim).
        tool_call_blocks: ``"first"``: only the first ``<tool_call>`` block of a reply is executed
            (what the published evaluation does); ``"all"``: every block, in order.
        timestamp_fmt: frame labels of the tool turn: ``"mmss"`` (trained), ``"seconds"``, ``"none"``.

    Frame tool (``eva_fast.video.plan_frames`` + ``decode_plan``):
        max_visual_tokens: per-call visual-token budget (reference 12 000); None disables it.
        maxp: resolution cap of the budget's first fallback step (reference 720).
        resample: ``"cubic"`` (parity) or ``"antialias"``.
        frame_policy: ``"parity"`` or ``"keyframe_snap"``.
        smart_resize_by: ``"processor"`` (parity: frames smart_resize enlarges, e.g. 28 px tall at
            small ``resize``, are made at the reference's 28-aligned size and resampled as the model's
            processor does) or ``"decoder"`` (one direct resize; see ``plan_frames``).
        device: where frames are decoded (``"cpu"``; ``"cuda"`` once the NVDEC decoder lands, until
            then the frame tool refuses it and the run stops with an ``exception`` reason).
    """

    max_turns: int = field(default=6, metadata={"help": "model turns before max_turns_exceeded"})
    max_new_tokens: int = field(default=2048, metadata={"help": "tokens generated per model turn"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature; 0 = greedy"})
    max_visual_tokens: int | None = field(
        default=DEFAULT_MAX_VISUAL_TOKENS, metadata={"help": "per-call visual-token budget; None disables"}
    )
    maxp: int = field(default=DEFAULT_MAXP, metadata={"help": "resolution cap of the budget fallback"})
    device: str = field(default="cpu", metadata={"help": "frame decoding device"})
    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={"help": "system turn when none is given"})
    tool_call_blocks: str = field(default="first", metadata={"help": "'first' (parity) or 'all' blocks"})
    timestamp_fmt: str = field(default="mmss", metadata={"help": "frame label format"})
    resample: Resample = field(default="cubic", metadata={"help": "frame resize filter"})
    frame_policy: Policy = field(default="parity", metadata={"help": "frame-choice policy"})
    smart_resize_by: SmartResizeBy = field(
        default="processor", metadata={"help": "who resamples frames smart_resize changes"}
    )

    def __post_init__(self) -> None:
        def _pos_int(name: str, v: object) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"AgentConfig.{name} must be a positive int, got {v!r}")

        _pos_int("max_turns", self.max_turns)
        _pos_int("max_new_tokens", self.max_new_tokens)
        _pos_int("maxp", self.maxp)
        if self.max_visual_tokens is not None:
            _pos_int("max_visual_tokens", self.max_visual_tokens)
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"AgentConfig.temperature must be a finite number >= 0, got {t!r}")
        if self.tool_call_blocks not in TOOL_CALL_BLOCKS:
            raise ValueError(f"AgentConfig.tool_call_blocks must be one of {TOOL_CALL_BLOCKS}, got {self.tool_call_blocks!r}")
        if self.timestamp_fmt not in TIMESTAMP_FORMATS:
            raise ValueError(f"AgentConfig.timestamp_fmt must be one of {TIMESTAMP_FORMATS}, got {self.timestamp_fmt!r}")
        if self.resample not in RESAMPLES:
            raise ValueError(f"AgentConfig.resample must be one of {RESAMPLES}, got {self.resample!r}")
        if self.frame_policy not in POLICIES:
            raise ValueError(f"AgentConfig.frame_policy must be one of {POLICIES}, got {self.frame_policy!r}")
        if self.smart_resize_by not in SMART_RESIZE_BY:
            raise ValueError(f"AgentConfig.smart_resize_by must be one of {SMART_RESIZE_BY}, got {self.smart_resize_by!r}")
        if not isinstance(self.system_prompt, str):
            raise ValueError(f"AgentConfig.system_prompt must be a str, got {type(self.system_prompt).__name__}")
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"AgentConfig.device must be 'cpu' or 'cuda[:N]', got {self.device!r}")

    def to_dict(self) -> dict:
        """Plain dict of the settings."""
        return asdict(self)
