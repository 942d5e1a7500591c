"""One named logger, ``eva_fast``, silent by default (NullHandler); one switch for Python and FFmpeg."""

from __future__ import annotations

import logging

logger = logging.getLogger("eva_fast")
logger.addHandler(logging.NullHandler())

# Python logging level -> FFmpeg AV_LOG_* level printed by the native module.
_FFMPEG_LEVELS = {
    logging.DEBUG: 40,  # AV_LOG_VERBOSE
    logging.INFO: 32,  # AV_LOG_INFO
    logging.WARNING: 24,  # AV_LOG_WARNING
    logging.ERROR: 16,  # AV_LOG_ERROR
    logging.CRITICAL: 8,  # AV_LOG_FATAL
}


def get_logger(name: str) -> logging.Logger:
    """Child logger ``eva_fast.<name>``."""
    return logger.getChild(name)


def set_log_level(level: int | str) -> None:
    """Set the ``eva_fast`` logger level and FFmpeg's printed level together.

    Args:
        level: a ``logging`` level (``logging.INFO`` or ``"INFO"``). FFmpeg messages at the
            matching AV_LOG level go to stderr; above ``CRITICAL`` FFmpeg is silent.

    Raises:
        ValueError: unknown level name.
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        level = resolved
    logger.setLevel(level)
    if not any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    from eva_fast import _C  # native module; every module imports _logging, _C may not be loaded yet

    ffmpeg_level = -8  # AV_LOG_QUIET
    for py_level in sorted(_FFMPEG_LEVELS):
        if level <= py_level:
            ffmpeg_level = _FFMPEG_LEVELS[py_level]
            break
    _C.set_ffmpeg_log_level(ffmpeg_level)
