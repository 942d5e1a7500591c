"""``FrameOptions``: every setting of the frame tool, with its default, unit and validation, in one
place. ``plan_frames`` / ``select_frames`` take one (``options=``), ``AgentConfig.frame_options``
holds one, trajectories and training records store :meth:`FrameOptions.to_dict`, the GRPO config
embeds one, and the CLI flags are made from its fields (:func:`add_frame_option_flags`).

Defaults are the published EVA evaluation's (``shared/design/qwen25vl-layout.md`` §5,
wangruohui/EfficientVideoAgent ``select_frame_fallback.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eva_fast._checks import check_choice, is_number, positive_int, positive_number
from eva_fast.video._policy import (
    DEFAULT_MAX_VISUAL_TOKENS,
    DEFAULT_MAXP,
    POLICIES,
    RESAMPLES,
    SMART_RESIZE_BY,
    Policy,
    Resample,
    SmartResizeBy,
)
from eva_fast.vision._smart_resize import MAX_PIXELS, MIN_PIXELS


@dataclass(frozen=True)
class FrameOptions:
    """The settings that decide which frames, at which size and with which filter, one
    ``frame_select(start_time, end_time, nframes, resize)`` request resolves to (see
    :func:`eva_fast.video.plan_frames`). Same request + same video + same options = same
    :class:`FramePlan`, so a stored ``to_dict()`` is enough to decode a recorded call again.

    Not here, because they do not change the plan: the decoding device (``select_frames(device=)``,
    ``AgentConfig.decode_device``), and the public API's caps on a request (``plan_frames(max_nframes=,
    max_resize=)``; the agent has none).

    Attributes:
        max_visual_tokens: per-call budget on the reference's token estimate, tokens (reference
            12 000); None disables the budget.
        maxp: resolution cap of the budget's first fallback step, pixels of the short side
            (reference 720).
        resample: decoder resize filter: ``"cubic"`` (OpenCV ``INTER_CUBIC``, EVA parity) or
            ``"antialias"`` (Pillow-style antialiased bicubic).
        policy: frame-choice policy: ``"parity"`` (EVA's) or ``"keyframe_snap"``.
        smart_resize_by: who resamples frames that smart_resize changes: ``"processor"`` (parity:
            made at the reference's 28-aligned size, then resampled as the model's processor does)
            or ``"decoder"`` (one direct resize).
        min_pixels, max_pixels: Qwen2.5-VL smart_resize bounds on ``H * W``, pixels (the released
            checkpoint's 3136 and 12 845 056); ``1 <= max_pixels``, ``0 <= min_pixels <= max_pixels``.
        snap_tolerance_s: ``"keyframe_snap"``: largest move of a sample time, seconds (> 0).
        snap_fraction: ``"keyframe_snap"``: largest move as a fraction of the sample spacing, in
            ``(0, 0.5)``.

    Raises:
        ValueError: a value outside the range above (the message names the field and the value).
    """

    max_visual_tokens: int | None = field(
        default=DEFAULT_MAX_VISUAL_TOKENS,
        metadata={"help": "per-call visual-token budget (reference 12000); <= 0 on the command line disables it",
                  "unit": "tokens"})
    maxp: int = field(default=DEFAULT_MAXP, metadata={"help": "resolution cap of the budget fallback", "unit": "pixels"})
    resample: Resample = field(default="cubic", metadata={"help": "resize filter", "choices": RESAMPLES})
    policy: Policy = field(default="parity", metadata={"help": "frame-choice policy", "choices": POLICIES})
    smart_resize_by: SmartResizeBy = field(
        default="processor",
        metadata={"help": "who resamples frames smart_resize changes (processor: as the model's processor)",
                  "choices": SMART_RESIZE_BY})
    min_pixels: int = field(default=MIN_PIXELS, metadata={"help": "smart_resize lower bound on H*W", "unit": "pixels"})
    max_pixels: int = field(default=MAX_PIXELS, metadata={"help": "smart_resize upper bound on H*W", "unit": "pixels"})
    snap_tolerance_s: float = field(
        default=2.0, metadata={"help": "keyframe_snap: largest move of a sample time", "unit": "seconds"})
    snap_fraction: float = field(
        default=0.25, metadata={"help": "keyframe_snap: largest move as a fraction of the sample spacing, in (0, 0.5)",
                                "unit": "fraction"})

    def __post_init__(self) -> None:
        for name in ("max_visual_tokens", "maxp"):  # NumPy ints become ints
            v = getattr(self, name)
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                object.__setattr__(self, name, int(v))
        positive_int("FrameOptions.max_visual_tokens", self.max_visual_tokens, allow_none=True)
        positive_int("FrameOptions.maxp", self.maxp)
        check_choice("FrameOptions.resample", self.resample, RESAMPLES)
        check_choice("FrameOptions.policy", self.policy, POLICIES)
        check_choice("FrameOptions.smart_resize_by", self.smart_resize_by, SMART_RESIZE_BY)
        for name in ("min_pixels", "max_pixels"):
            v = getattr(self, name)
            if not is_number(v) or not math.isfinite(v) or v < 0:
                raise ValueError(f"FrameOptions.{name} must be a finite number >= 0 (pixels), got {v!r}")
        if self.max_pixels < 1 or self.min_pixels > self.max_pixels:
            raise ValueError(
                f"FrameOptions: need 1 <= max_pixels and min_pixels <= max_pixels, got min_pixels={self.min_pixels!r}, "
                f"max_pixels={self.max_pixels!r}")
        positive_number("FrameOptions.snap_tolerance_s", self.snap_tolerance_s, what="finite number of seconds")
        if not (is_number(self.snap_fraction) and 0 < self.snap_fraction < 0.5):
            raise ValueError(f"FrameOptions.snap_fraction must be in (0, 0.5), got {self.snap_fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        """``{field: value}``, JSON-ready (what trajectories and training records store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FrameOptions:
        """Options from :meth:`to_dict`'s output; missing fields take their defaults.

        Raises:
            ValueError: not a mapping, an unknown key (named, with the allowed ones), or a bad value.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"frame options must be a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown frame options {unknown}; allowed: {list(FIELDS)}")
        return cls(**d)

    @classmethod
    def build(cls, options: FrameOptions | None = None, **settings: Any) -> FrameOptions:
        """``options`` (default ``FrameOptions()``) with ``settings`` (field names) replaced: what
        the keyword-argument convenience of ``plan_frames`` / ``select_frames`` calls.

        Raises:
            TypeError: ``options`` is not a FrameOptions, or a setting is not a field.
            ValueError: a bad value.
        """
        if options is None:
            options = _DEFAULT if cls is FrameOptions else cls()
        elif not isinstance(options, FrameOptions):
            raise TypeError(f"options must be a FrameOptions, got {type(options).__name__}")
        unknown = sorted(set(settings) - set(FIELDS))
        if unknown:
            raise TypeError(f"unknown frame settings {unknown}; FrameOptions has {list(FIELDS)}")
        return dataclasses.replace(options, **settings) if settings else options

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.to_dict().items() if v != FIELDS[k].default}
        return f"FrameOptions({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


#: ``FrameOptions``' fields by name, in order.
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(FrameOptions)}
#: ``FrameOptions()`` (frozen, so one instance serves every call that gives no options).
_DEFAULT = FrameOptions()


def add_frame_option_flags(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """Add one flag per :class:`FrameOptions` field (``--max-visual-tokens``, ``--maxp``,
    ``--resample``, ``--policy``, ...), help, unit, choices and default from the field.

    Args:
        parser: the (sub)command's parser.
        defaults: give each flag its field's default; False leaves them None, so
            :func:`frame_options_from_flags` changes only what was given (``eval run``, whose
            settings may also come from ``--agent-arg``).
    """
    group = parser.add_argument_group("frame options (eva_fast.video.FrameOptions)")
    for name, f in FIELDS.items():
        meta = f.metadata
        kind = int if name in ("max_visual_tokens", "maxp", "min_pixels", "max_pixels") else float
        unit = f", {meta['unit']}" if "unit" in meta else ""
        kwargs: dict[str, Any] = {"dest": name, "default": f.default if defaults else None,
                                  "help": f"{meta['help']} (default {f.default}{unit})"}
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        else:
            kwargs["type"] = kind
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def frame_options_from_flags(args: argparse.Namespace, base: FrameOptions | None = None) -> FrameOptions:
    """The :class:`FrameOptions` of the flags :func:`add_frame_option_flags` added: ``base`` with
    every given flag replaced (``--max-visual-tokens`` <= 0 means None: no budget).

    Raises:
        ValueError: a bad value.
    """
    given = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    if "max_visual_tokens" in given and given["max_visual_tokens"] <= 0:
        given["max_visual_tokens"] = None
    return FrameOptions.build(base, **given)
