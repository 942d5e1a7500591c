"""Small file readers shared by the CLIs and trainers."""

from __future__ import annotations

import json
import os
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
