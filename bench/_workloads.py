"""EVA-style workloads and the exact plan every system must execute.

A workload is a list of ``frame_select`` calls on one video (one call for survey/zoom/detail; three
calls on one open video for the trajectory). The *plan* of a call (frames after the token budget,
frame indices, output size) comes from eva_fast's policy functions, so every system is handed the
very same request: peers only decode and resize.
"""

from __future__ import annotations

from dataclasses import dataclass

from eva_fast.video._policy import (
    DEFAULT_MAX_VISUAL_TOKENS,
    DEFAULT_MAXP,
    apply_token_budget,
    clamp_window,
    frame_index_for_time,
    output_size,
    sample_timestamps,
)
from eva_fast.video._reader import VideoMetadata


@dataclass(frozen=True)
class Call:
    """One ``frame_select(start_time, end_time, nframes, resize)`` call as the agent makes it."""

    start_time: float
    end_time: float
    nframes: int
    resize: float

    def as_dict(self) -> dict:
        return {"start_time": round(self.start_time, 6), "end_time": round(self.end_time, 6),
                "nframes": self.nframes, "resize": self.resize}


@dataclass(frozen=True)
class Plan:
    """A call resolved by eva_fast's parity policy: what every system must return."""

    call: Call
    nframes: int
    resize: float
    timestamps_s: tuple[float, ...]
    indices: tuple[int, ...]
    size: tuple[int, int]  # (h, w)


@dataclass(frozen=True)
class Workload:
    """A named sequence of calls on one open video (``per_call_open``: systems reopen per call)."""

    name: str
    calls: tuple[Call, ...]
    one_open: bool = False  # trajectory: all calls on one open video


#: Workload names in suite order.
WORKLOADS = ("survey", "zoom", "detail", "trajectory")
FULL_EXTRA = ("survey256",)


def make_workloads(meta: VideoMetadata, names: tuple[str, ...], quick: bool = False) -> list[Workload]:
    """The suite's calls for a video of ``meta.end_s`` seconds.

    survey: whole video, 64 frames at 0.25 (``survey256``: 256 frames at 0.1, the paper's survey);
    zoom: a window of min(30 s, whole video) at 35 % of the video, 32 frames at 0.5;
    detail: 2 frames at 1.0 in a 1 s window at 60 % of the video;
    trajectory: survey -> zoom -> detail on one open video.
    ``quick`` shrinks frame counts (smoke runs only).
    """
    end = meta.end_s
    n_survey, n_zoom = (16, 8) if quick else (64, 32)
    survey = Call(0.0, end, n_survey, 0.25)
    survey256 = Call(0.0, end, 256, 0.1)
    win = min(30.0, end)
    z0 = 0.35 * (end - win)
    zoom = Call(z0, z0 + win, n_zoom, 0.5)
    d0 = 0.6 * end
    detail = Call(d0, min(d0 + 1.0, end), 2, 1.0)
    table = {
        "survey": Workload("survey", (survey,)),
        "survey256": Workload("survey256", (survey256,)),
        "zoom": Workload("zoom", (zoom,)),
        "detail": Workload("detail", (detail,)),
        "trajectory": Workload("trajectory", (survey, zoom, detail), one_open=True),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from {sorted(table)}")
    return [table[n] for n in names]


def plan_call(call: Call, meta: VideoMetadata,
              max_visual_tokens: int | None = DEFAULT_MAX_VISUAL_TOKENS, maxp: int = DEFAULT_MAXP) -> Plan:
    """Resolve a call with eva_fast's parity policy (constant frame rate videos)."""
    if meta.is_vfr:
        raise ValueError(f"{meta.path}: the bench plans constant-frame-rate videos only")
    budget = apply_token_budget(call.nframes, call.resize, meta.width, meta.height, max_visual_tokens, maxp)
    s, e = clamp_window(call.start_time, call.end_time, meta.end_s)
    ts = sample_timestamps(s, e, budget.nframes)
    idx = tuple(frame_index_for_time(t, meta.average_fps, meta.num_frames) for t in ts)
    size = output_size(meta.width, meta.height, budget.resize)
    return Plan(call, budget.nframes, budget.resize, tuple(ts), idx, size)
