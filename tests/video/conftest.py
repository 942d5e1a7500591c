"""Videos generated for the decoder tests (with the ffmpeg command line, like the references)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gop_clip(tmp_path_factory, ffmpeg) -> Path:
    """24 s of 320x180 H.264 at 25 fps, a keyframe every second, 3 B-frames (non-reference ones
    among them): 24 GOPs, enough for every GOP-run split."""
    path = tmp_path_factory.mktemp("gop") / "gop24_h264.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "24",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
                    "-bf", "3", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def gop_clip_hevc(tmp_path_factory, ffmpeg) -> Path:
    """The same as HEVC (libx265, 3 B-frames, a keyframe every second); skipped where the ffmpeg
    command line has no libx265 (the GPU machine's carried build)."""
    encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    if " libx265 " not in encoders:
        pytest.skip("this ffmpeg has no libx265 encoder")
    path = tmp_path_factory.mktemp("gop") / "gop24_hevc.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "24",
                    "-c:v", "libx265", "-x265-params", "log-level=error:keyint=25:min-keyint=25:scenecut=0:bframes=3",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def gop_clip_444(tmp_path_factory, ffmpeg) -> Path:
    """The H.264 clip in 4:4:4 (High 4:4:4 Predictive: NVDEC cannot decode it, a CUDA reader falls
    back to the CPU)."""
    path = tmp_path_factory.mktemp("gop") / "gop24_h264_444.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "24",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
                    "-bf", "3", "-pix_fmt", "yuv444p", str(path)], check=True)
    return path
