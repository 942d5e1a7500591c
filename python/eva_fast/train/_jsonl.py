"""Reading jsonl data files line by line, with ``file:line`` in every error (training records, RL
sets, teacher inputs)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class NotJSON(ValueError):
    """A line that is not JSON; the message names ``file:line`` and where parsing failed."""


def json_lines(path: str | os.PathLike, *, what: str = "file", single_object: bool = False
               ) -> Iterator[tuple[str, Any]]:
    """``(where, obj)`` for every non-blank line of a jsonl file, in order; ``where`` is ``"file:line"``
    and ``obj`` the parsed value, or a :class:`NotJSON` for a line that does not parse.

    Args:
        path: the file.
        what: what the file is, for the missing-file message.
        single_object: a file that is one pretty-printed JSON object (``eva-fast ask --json``)
            yields that object once.

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                if single_object and n == 1 and line.strip() == "{":
                    try:
                        yield where, json.loads(path.read_text(encoding="utf-8"))
                        return
                    except json.JSONDecodeError:
                        pass
                yield where, NotJSON(f"{where}: not JSON ({e.msg} at column {e.colno})")


def parse_lines(path: str | os.PathLike, parse: Callable[[Any, str], T], error: type[ValueError], *,
                what: str = "file", skip_bad: bool = False, errors: list[str] | None = None) -> Iterator[T]:
    """``parse(obj, where)`` for every line of a jsonl file (see :func:`json_lines`).

    Args:
        parse: turns one parsed line into a value; raises ``error`` for a bad one.
        error: the format's error class (a line that is not JSON raises it too).
        skip_bad: skip bad lines instead of raising; their messages go to ``errors``.

    Raises:
        FileNotFoundError: no such file; ``error``: a bad line (``skip_bad=False``).
    """
    for where, obj in json_lines(path, what=what):
        try:
            if isinstance(obj, NotJSON):
                raise error(str(obj))
            yield parse(obj, where)
        except error as e:
            if not skip_bad:
                raise
            if errors is not None:
                errors.append(str(e))
