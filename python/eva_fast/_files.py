"""Small file readers and the one atomic file writer, shared by the CLIs, the eval runner and the
trainers."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def read_mapping(path: str | os.PathLike, what: str) -> dict[str, str]:
    """A ``name -> value`` mapping from a YAML (``.yaml``/``.yml``) or JSON file, keys and values as
    strings (e.g. ``--roots``: benchmark or source name -> video folder).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a mapping (the message says what was expected: ``what``).
    """
    p = Path(path)
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml  # optional (the eval/train extras); JSON files need nothing

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping {what}, got {type(data).__name__}")
    return {str(k): str(v) for k, v in data.items()}


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries to disk (a rename in it survives a power loss); a no-op where
    folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (``str``: as UTF-8) to ``path`` through a temporary file in the same folder,
    fsync and a rename, so a reader (or a run killed mid-write) sees the old content or the new,
    never part of one; the folder is created if needed. Returns the path.

    Raises:
        OSError: the folder cannot be created or written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path
