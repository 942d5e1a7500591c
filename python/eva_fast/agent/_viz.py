"""Timeline plot of what the agent watched: one row per round, the window of each tool call, a tick
per frame at its pts, coloured by the frame's resolution (short side, pixels)."""

from __future__ import annotations

import os

from eva_fast.agent._types import Trajectory


def plot_timeline(traj: Trajectory, path: str | os.PathLike, *, dpi: int = 120) -> str:
    """Draw ``traj``'s timeline to an image file (format from the extension, e.g. ``.png``).

    x: video time in seconds ``[0, duration_s]``; y: round (top = first). Each successful call is a
    translucent bar over its clamped window; each returned frame is a marker at its pts, coloured
    by the frame's short side in pixels (colour bar), with the call's ``nframes x HxW`` written
    next to the bar. Failed calls are listed in the row label.

    Returns:
        the path written.

    Raises:
        ImportError: matplotlib missing (``pip install matplotlib``).
    """
    try:  # matplotlib is optional (the agent/eval extras)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import cm, colors
    except ImportError as e:
        raise ImportError("the timeline plot needs matplotlib: pip install 'matplotlib>=3.7'") from e

    rows = max(1, traj.num_rounds)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.6 * rows))
    # the record layout (FramesReturned.to_dict): also what a plan-less old record holds
    sides = [min(c.frames.to_dict()["size"]) for c in traj.tool_calls if c.frames is not None]
    norm = colors.Normalize(vmin=min(sides, default=0), vmax=max(max(sides, default=1), min(sides, default=0) + 1))
    cmap = matplotlib.colormaps["viridis"]
    labels = []
    for turn in traj.turns:
        y = turn.index
        failed = [c.error for c in turn.tool_calls if c.error]
        label = f"round {turn.index + 1}"
        if failed:
            label += f" ({len(failed)} failed)"
        labels.append(label)
        calls = [c for c in turn.tool_calls if c.frames is not None]
        for k, c in enumerate(calls):
            fr = c.frames.to_dict()
            off = (k - (len(calls) - 1) / 2) * 0.25 if len(calls) > 1 else 0.0
            start, end = fr["window_s"]
            size = fr["size"]
            ax.barh(y + off, end - start, left=start, height=0.22, color=cmap(norm(min(size))), alpha=0.3)
            ax.scatter(fr["pts_s"], [y + off] * len(fr["pts_s"]), c=[min(size)] * len(fr["pts_s"]),
                       cmap=cmap, norm=norm, s=18, marker="|", linewidths=2, zorder=3)
            ax.text(end, y + off, f" {len(fr['pts_s'])}x{size[0]}x{size[1]}", va="center", fontsize=7)
    ax.set_xlim(0, max(traj.duration_s, 1e-3))
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("video time (s)")
    title = traj.question.strip().splitlines()[0] if traj.question.strip() else ""
    if len(title) > 90:
        title = title[:87] + "..."
    ax.set_title(f"{title}\nanswer: {traj.answer or '-'}   stop: {traj.stop_reason[:60]}   "
                 f"rounds: {traj.num_rounds}   visual tokens: {traj.visual_tokens}", fontsize=9)
    if sides:
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="frame short side (px)", pad=0.08)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return os.fspath(path)
