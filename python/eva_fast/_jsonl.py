"""The one jsonl reader: every jsonl file eva_fast reads (benchmark annotations, eval caches and
results, training records, RL sets, data-command inputs) goes through :func:`json_lines`, with
``file:line`` in every error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class JsonlFormatError(ValueError):
    """A jsonl line that is not JSON, or not a JSON value of the expected shape. The message is
    ``"{path}:{lineno}: {reason}"``.

    Attributes:
        path, lineno: the file and the 1-based line.
        reason: what is wrong.
        detail: for a line that does not parse, the parser's message and column (else ``""``).
    """

    def __init__(self, path: str | os.PathLike, lineno: int, reason: str, detail: str = ""):
        self.path = str(path)
        self.lineno = lineno
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}:{lineno}: {reason}")

    @property
    def where(self) -> str:
        """``"file:line"``."""
        return f"{self.path}:{self.lineno}"


def json_lines(path: str | os.PathLike, *, what: str = "file", skip_blank: bool = True,
               single_object: bool = False) -> Iterator[tuple[int, Any]]:
    """``(lineno, value)`` for every line of a jsonl file, in order (1-based line numbers); a line
    that does not parse yields a :class:`JsonlFormatError` as its value (not raised: the caller
    decides whether to stop or skip).

    Args:
        path: the file (read as bytes, so any line's encoding error is that line's error).
        what: what the file is, for the missing-file message.
        skip_blank: skip blank lines (False: a blank line is a line that does not parse).
        single_object: a file that is one pretty-printed JSON object (``eva-fast ask --json``: its
            first line is ``{``) yields that object once, as line 1.

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if skip_blank and not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if single_object and lineno == 1 and raw.strip() == b"{":
                    try:
                        yield lineno, json.loads(path.read_bytes())
                        return
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        pass
                detail = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
                text = raw[:80].decode("utf-8", "replace").rstrip("\n")
                yield lineno, JsonlFormatError(path, lineno, f"not valid JSON ({detail}): {text!r}", detail)


def read_jsonl(path: str | os.PathLike, *, what: str = "file") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(lineno, object)`` for every line of a jsonl file of JSON objects (blank lines included:
    they are errors).

    Raises:
        FileNotFoundError: no such file.
        JsonlFormatError: a line that is not valid JSON or not a JSON object (names file and line).
    """
    for lineno, obj in json_lines(path, what=what, skip_blank=False):
        if isinstance(obj, JsonlFormatError):
            raise obj
        if not isinstance(obj, dict):
            raise JsonlFormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def parse_lines(path: str | os.PathLike, parse: Callable[[Any, str], T], error: type[ValueError], *,
                what: str = "file", skip_bad: bool = False, errors: list[str] | None = None) -> Iterator[T]:
    """``parse(obj, "file:line")`` for every non-blank line of a jsonl file (a format with its own
    error class: training records, RL sets).

    Args:
        parse: turns one parsed line into a value; raises ``error`` for a bad one.
        error: the format's error class; a line that is not JSON raises it too
            (``"file:line: not JSON (...)"``).
        skip_bad: skip bad lines instead of raising; their messages go to ``errors``.

    Raises:
        FileNotFoundError: no such file; ``error``: a bad line (``skip_bad=False``).
    """
    for lineno, obj in json_lines(path, what=what):
        try:
            if isinstance(obj, JsonlFormatError):
                raise error(f"{obj.where}: not JSON ({obj.detail})")
            yield parse(obj, f"{Path(path)}:{lineno}")
        except error as e:
            if not skip_bad:
                raise
            if errors is not None:
                errors.append(str(e))
