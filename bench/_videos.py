"""Benchmark videos: the real clips in ``shared/media`` and long videos made from them at bench time.

Long videos are built with the ffmpeg command line (never downloaded): one 60 s segment is encoded
from two real clips (cockatoo + Big Buck Bunny, looped and concatenated, scaled to 1280x720 or
1920x1080, 25 fps, libx264 ``-preset veryfast``, fixed GOP ``-g GOP -keyint_min GOP -sc_threshold 0``,
``-bf 3``), then stream-copied ``-stream_loop`` times to the target length. They are cached in
``bench/.cache/`` under the working directory (git-ignored in the repository) and checked with eva_fast's metadata: continuous timestamps and a
keyframe every GOP frames.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
#: Generated videos are cached under the working directory (never inside an installed package).
DEFAULT_CACHE_DIR = Path("bench") / ".cache"
#: ``shared/media`` sits beside the repository checkout.
DEFAULT_MEDIA_DIR = BENCH_DIR.parent.parent / "shared" / "media"

#: Real clips used by the suites (constant frame rate, H.264, the common EVA case; cockatoo.mp4 is
#: the original H.264 High 4:4:4 clip, the costliest to decode and convert).
REAL_VIDEOS = ("cockatoo_yuv420.mp4", "cockatoo_1080p_h264.mp4", "cockatoo.mp4", "bigbuckbunny.mp4")
DEFAULT_REAL_VIDEOS = REAL_VIDEOS[:3]
QUICK_REAL_VIDEOS = ("cockatoo_yuv420.mp4",)
#: Row labels of clips whose file name does not say what they are.
VIDEO_LABELS = {"cockatoo.mp4": "cockatoo_h264_444"}

LONG_FPS = 25
#: Default GOP of the generated long videos, frames (2 s at 25 fps; see bench/README.md for why).
DEFAULT_LONG_GOP = 50
SEGMENT_S = 60


@dataclass(frozen=True)
class BenchVideo:
    """A video of the suite: ``name`` (short label), ``path``, and how it was made."""

    name: str
    path: str
    kind: str  # "real" or "long"
    recipe: str = ""


def find_media_dir(media_dir: str | os.PathLike | None = None) -> Path | None:
    """The real-clip folder: the given one, else ``shared/media`` beside the checkout."""
    for cand in ([Path(media_dir)] if media_dir else []) + [DEFAULT_MEDIA_DIR, Path.cwd().parent / "shared" / "media"]:
        if cand.is_dir():
            return cand
    return None


def real_videos(names: tuple[str, ...], media_dir: Path | None) -> tuple[list[BenchVideo], list[str]]:
    """The real clips found, and a reason for each one missing."""
    found, missing = [], []
    for n in names:
        p = media_dir / n if media_dir else None
        if p is not None and p.is_file():
            found.append(BenchVideo(VIDEO_LABELS.get(n, Path(n).stem), str(p), "real"))
        else:
            missing.append(f"{n}: not found in {media_dir}")
    return found, missing


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("the ffmpeg command line is needed to make the long benchmark videos (apt-get install ffmpeg)")
    return exe


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")


def make_long_video(
    height: int,
    minutes: float,
    media_dir: Path,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    gop: int = DEFAULT_LONG_GOP,
    log=print,
) -> BenchVideo:
    """Build (or reuse from the cache) a ``minutes``-long ``height``p H.264 video; see module doc."""
    width = {720: 1280, 1080: 1920}.get(height, round(height * 16 / 9 / 2) * 2)
    cache_dir.mkdir(parents=True, exist_ok=True)
    seg = cache_dir / f"seg_{height}p_g{gop}.mp4"
    loops = max(1, int(np.ceil(minutes * 60 / SEGMENT_S)))
    out = cache_dir / f"long_{height}p_{loops * SEGMENT_S // 60}min_g{gop}.mp4"
    recipe = (
        f"cockatoo_yuv420+bigbuckbunny looped/concatenated, {width}x{height} {LONG_FPS} fps, libx264 veryfast "
        f"-g {gop} -keyint_min {gop} -sc_threshold 0 -bf 3, {SEGMENT_S} s segment x{loops} (-stream_loop, -c copy)"
    )
    name = out.stem
    if out.is_file() and _check_long(out, gop):
        return BenchVideo(name, str(out), "long", recipe)
    ff = _ffmpeg()
    a, b = media_dir / "cockatoo_yuv420.mp4", media_dir / "bigbuckbunny.mp4"
    for p in (a, b):
        if not p.is_file():
            raise FileNotFoundError(f"long videos are made from {p}, which is missing")
    if not seg.is_file():
        log(f"[bench] encoding {SEGMENT_S} s {width}x{height} segment (one-time, cached in {cache_dir}) ...")
        t0 = time.perf_counter()
        vf = f"scale={width}:{height}:flags=bicubic,fps={LONG_FPS},setsar=1,format=yuv420p"
        tmp = seg.with_suffix(".tmp.mp4")
        _run([
            ff, "-hide_banner", "-loglevel", "error", "-y",
            "-stream_loop", "4", "-i", str(a), "-stream_loop", "12", "-i", str(b),
            "-filter_complex", f"[0:v]{vf}[a];[1:v]{vf}[b];[a][b]concat=n=2:v=1:a=0[v]",
            "-map", "[v]", "-t", str(SEGMENT_S), "-c:v", "libx264", "-preset", "veryfast",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "3", "-an", str(tmp),
        ])
        tmp.rename(seg)
        log(f"[bench]   segment done in {time.perf_counter() - t0:.1f} s")
    log(f"[bench] looping segment x{loops} -> {out.name} ...")
    tmp = out.with_suffix(".tmp.mp4")
    _run([ff, "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(seg),
          "-c", "copy", "-an", str(tmp)])
    tmp.rename(out)
    if not _check_long(out, gop):
        raise RuntimeError(f"{out}: generated long video failed its timestamp/keyframe check")
    return BenchVideo(name, str(out), "long", recipe)


def _check_long(path: Path, gop: int) -> bool:
    """Continuous timestamps at LONG_FPS and a keyframe every ``gop`` frames (eva_fast's metadata)."""
    from eva_fast.video import VideoReader

    try:
        r = VideoReader(path)
        pts, key = r.frame_table()
    except Exception:  # noqa: BLE001 - a broken cache file is rebuilt
        return False
    m = r.metadata
    if m.is_vfr or abs(m.average_fps - LONG_FPS) > 1e-6 or len(pts) != m.num_frames:
        return False
    d = np.diff(pts)
    if len(d) == 0 or np.abs(d - 1.0 / LONG_FPS).max() > 1e-3:
        return False
    kidx = np.flatnonzero(key)
    return bool(len(kidx) > 1 and np.all(np.diff(kidx) == gop) and kidx[0] == 0)
