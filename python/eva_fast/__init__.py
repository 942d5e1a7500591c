"""eva_fast: the fast frame tool, Qwen2.5-VL packing and agent loop for the EVA video agent.

EVA ("EVA: Efficient Reinforcement Learning for End-to-End Video Agent", CVPR 2026) plans
before it perceives: it asks for frames with one tool, ``frame_select(start_time, end_time,
nframes, resize)``. eva_fast decodes, seeks and resizes those frames in a native extension
(``eva_fast._C``, FFmpeg on CPU) straight into arrays.

Public entry points::

    from eva_fast.video import VideoReader, select_frames, FrameBatch
    eva_fast.build_info()
"""

from __future__ import annotations

from eva_fast._logging import set_log_level
from eva_fast._version import __version__

__all__ = ["__version__", "build_info", "set_log_level"]


def build_info() -> dict:
    """Describe this build of eva_fast.

    Returns:
        dict with ``version``, ``ffmpeg_version`` and the libav* library idents the extension
        was compiled against, ``compiler``, ``cuda`` (bool: CUDA code compiled in),
        ``cuda_archs`` and ``hardware_threads``.
    """
    from eva_fast import _C  # the native module (FFmpeg's libraries): `import eva_fast` stays light

    return dict(_C.build_info())
