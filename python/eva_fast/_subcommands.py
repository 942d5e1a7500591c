"""One dispatcher for the ``eva-fast train|data|recipe <command> ...`` command lines."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping


def run_subcommand(prog: str, usage: str, commands: Mapping[str, Callable[[list[str]], int]], argv: list[str] | None,
                   errors: tuple[type[BaseException], ...], noun: str = "command") -> int:
    """Run ``commands[argv[0]](argv[1:])`` and return its exit status.

    No argument prints ``usage`` and returns 2; ``-h``/``--help`` prints it and returns 0. An unknown
    ``noun`` is named with the choices (exit 2), and an exception of a type in ``errors`` (the
    commands' documented user errors: bad values, missing files) is printed as
    ``"<prog> <command>: error: ..."`` with exit 2 instead of a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    if argv[0] not in commands:
        print(f"{prog}: unknown {noun} {argv[0]!r}; choose from {sorted(commands)}\n\n{usage}", file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except errors as e:
        print(f"{prog} {argv[0]}: error: {e}", file=sys.stderr)
        return 2
