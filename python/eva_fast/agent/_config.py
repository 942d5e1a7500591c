"""``AgentConfig``: the agent loop's settings (frozen, validated); its frame settings are one
:class:`eva_fast.video.FrameOptions`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eva_fast._checks import check_choice, is_number, positive_int
from eva_fast.agent._protocol import SYSTEM_PROMPT, TIMESTAMP_FORMATS
from eva_fast.video import FrameOptions

TOOL_CALL_BLOCKS = ("first", "all")
#: Keys of the flat layout that trajectories, training records (``frame_config``, format v1) and
#: eval ``run.json`` files used before ``FrameOptions`` -> today's ``frame_options`` field names.
_LEGACY_FRAME_KEYS = {"max_visual_tokens": "max_visual_tokens", "maxp": "maxp", "resample": "resample",
                      "frame_policy": "policy", "smart_resize_by": "smart_resize_by"}
#: Other renamed ``AgentConfig`` keys of that layout.
_LEGACY_AGENT_KEYS = {"device": "decode_device"}


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
        frame_options: the :class:`~eva_fast.video.FrameOptions` every call is planned with
            (budget, filter, policy, smart_resize path and bounds); the agent puts no cap on a
            call's ``nframes`` or ``resize`` (the budget bounds the tokens, the reader's
            ``max_output_bytes`` the decoded bytes), as the published evaluation's tool.
        decode_device: where frames are decoded (``"cpu"``, ``"cuda"`` or ``"cuda:N"``).

    Raises:
        ValueError: a bad value (named).
    """

    max_turns: int = field(default=6, metadata={"help": "model turns before max_turns_exceeded"})
    max_new_tokens: int = field(default=2048, metadata={"help": "tokens generated per model turn"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature; 0 = greedy"})
    frame_options: FrameOptions = field(default_factory=FrameOptions, metadata={"help": "frame tool settings"})
    decode_device: str = field(default="cpu", metadata={"help": "frame decoding device"})
    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={"help": "system turn when none is given"})
    tool_call_blocks: str = field(default="first", metadata={"help": "'first' (parity) or 'all' blocks"})
    timestamp_fmt: str = field(default="mmss", metadata={"help": "frame label format"})

    def __post_init__(self) -> None:
        positive_int("AgentConfig.max_turns", self.max_turns)
        positive_int("AgentConfig.max_new_tokens", self.max_new_tokens)
        t = self.temperature
        if not is_number(t) or not math.isfinite(t) or t < 0:
            raise ValueError(f"AgentConfig.temperature must be a finite number >= 0, got {t!r}")
        if not isinstance(self.frame_options, FrameOptions):
            raise ValueError(f"AgentConfig.frame_options must be a FrameOptions, got {type(self.frame_options).__name__}")
        check_choice("AgentConfig.tool_call_blocks", self.tool_call_blocks, TOOL_CALL_BLOCKS)
        check_choice("AgentConfig.timestamp_fmt", self.timestamp_fmt, TIMESTAMP_FORMATS)
        if not isinstance(self.system_prompt, str):
            raise ValueError(f"AgentConfig.system_prompt must be a str, got {type(self.system_prompt).__name__}")
        d = self.decode_device
        if not isinstance(d, str) or not (d == "cpu" or d.startswith("cuda")):
            raise ValueError(f"AgentConfig.decode_device must be 'cpu' or 'cuda[:N]', got {d!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (``frame_options`` as :meth:`FrameOptions.to_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AgentConfig:
        """Settings from :meth:`to_dict`'s output, or from the flat layout of earlier versions
        (``max_visual_tokens``, ``maxp``, ``resample``, ``frame_policy``, ``smart_resize_by``,
        ``device`` at the top level); missing keys take their defaults.

        Raises:
            ValueError: an unknown key (named, with the allowed ones) or a bad value.
        """
        kwargs: dict[str, Any] = {}
        frames: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for k, v in d.items():
            if k == "frame_options":
                frames.update(v.to_dict() if isinstance(v, FrameOptions) else dict(v))
            elif k in _LEGACY_FRAME_KEYS:
                frames[_LEGACY_FRAME_KEYS[k]] = v
            elif k in names or k in _LEGACY_AGENT_KEYS:
                kwargs[_LEGACY_AGENT_KEYS.get(k, k)] = v
            else:
                raise ValueError(f"unknown agent setting {k!r}; allowed: {sorted(names)}")
        return cls(**kwargs, frame_options=FrameOptions.from_dict(frames))

    @staticmethod
    def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
        """``AgentConfig.to_dict()`` (or an earlier flat layout) as one flat dict with today's names,
        frame settings as ``"frame_options.<name>"``: what comparing run identities across versions
        needs (a setting one side lacks is a setting added since, not a change)."""
        out: dict[str, Any] = {}
        for k, v in config.items():
            if k == "frame_options" and isinstance(v, Mapping):
                out.update({f"frame_options.{n}": x for n, x in v.items()})
            elif k in _LEGACY_FRAME_KEYS:
                out[f"frame_options.{_LEGACY_FRAME_KEYS[k]}"] = v
            else:
                out[_LEGACY_AGENT_KEYS.get(k, k)] = v
        return out

    def conversation_config(self) -> dict[str, Any]:
        """The settings recorded in every :class:`~eva_fast.agent.Trajectory` (``Trajectory.config``):
        what shapes the conversation text and the frames, so a stored trajectory can be rendered
        and its frames decoded again exactly (training)."""
        return {
            "timestamp_fmt": self.timestamp_fmt,
            "max_turns": self.max_turns,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "tool_call_blocks": self.tool_call_blocks,
            "frame_options": self.frame_options.to_dict(),
        }


def recorded_frame_options(config: Mapping[str, Any]) -> FrameOptions:
    """The :class:`~eva_fast.video.FrameOptions` a stored settings dict names: its
    ``frame_options`` (today's layout), else the flat keys of earlier records (``max_visual_tokens``,
    ``maxp``, ``resample``, ``frame_policy``, ``smart_resize_by``); settings a record does not have
    take their defaults (what the agent used before they existed). Other keys are ignored.

    Raises:
        ValueError: a bad value.
    """
    if "frame_options" in config:
        return FrameOptions.from_dict(config["frame_options"])
    return FrameOptions.from_dict({_LEGACY_FRAME_KEYS[k]: v for k, v in config.items() if k in _LEGACY_FRAME_KEYS})

