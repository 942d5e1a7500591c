"""EVA-style workloads and the exact plan every system must execute.

A workload is a list of ``frame_select`` calls on one video (one call for survey/zoom/detail; three
calls on one open video for the trajectory). The *plan* of a call (frames after the token budget,
frame indices, output size) is eva_fast's :class:`~eva_fast.video.FramePlan` from
:func:`~eva_fast.video.plan_frames`, so every system is handed the very same request: peers only
decode and resize.
"""

from __future__ import annotations

from dataclasses import dataclass

from eva_fast.video import FrameOptions, FramePlan, VideoMetadata, VideoReader, plan_frames


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


def plan_call(call: Call, reader: VideoReader, options: FrameOptions | None = None) -> FramePlan:
    """Resolve a call with eva_fast's parity policy (:func:`~eva_fast.video.plan_frames` with
    ``options``, default EVA's; constant frame rate videos only, so peers can address frames by index)."""
    if reader.metadata.is_vfr:
        raise ValueError(f"{reader.path}: the bench plans constant-frame-rate videos only")
    return plan_frames(reader, call.start_time, call.end_time, call.nframes, call.resize, options=options)
