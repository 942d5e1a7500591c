"""Result records on disk: the append-only, crash-safe cache of a run, result files, and merging.

A run appends one JSON line per finished question to its cache and fsyncs it before moving on, so
a run killed at any moment (SIGKILL, power loss after the fsync) loses at most the line being
written. That torn last line is detected on the next open (no trailing newline, or not valid
JSON) and cut off; a bad line anywhere else is an error naming the file and line, never skipped.
Later lines for the same ``index`` supersede earlier ones (as in eva-eva.py's cache).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from eva_fast._checks import is_int
from eva_fast._files import fsync_dir, write_atomic
from eva_fast._jsonl import JsonlFormatError, read_jsonl
from eva_fast._logging import get_logger

log = get_logger("eval")

#: Stop reasons of a finished question (eval-eva.py's ``is_normal_stop_reason``); any other stop
#: reason, or an ``error`` field, marks a record that ``--retry-errors`` runs again.
NORMAL_STOP_REASONS = frozenset({"answer_found", "max_turns_exceeded", "no_answer_no_tool_call", "no_valid_tool_call"})


def should_retry(record: Mapping[str, Any]) -> bool:
    """True for a record that ``--retry-errors`` runs again: it has an ``error`` or its stop reason
    is not one of :data:`NORMAL_STOP_REASONS` (the rule of eval-eva.py's
    ``should_retry_cached_record``; tool-argument errors count, as there)."""
    if record.get("error"):
        return True
    return record.get("stop_reason") not in NORMAL_STOP_REASONS


def _record_index(path: str | os.PathLike, lineno: int, record: Mapping[str, Any]) -> int:
    index = record.get("index")
    if not is_int(index):
        raise JsonlFormatError(path, lineno, f"record has no integer 'index' (got {index!r})")
    return index


def dumps_record(record: Mapping[str, Any]) -> bytes:
    """One record as a JSON line (UTF-8, ``ensure_ascii=False`` as the reference writes it).

    Raises:
        ValueError: the record contains NaN/inf (not JSON) or a non-serialisable value.
    """
    try:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"record {record.get('index')!r} is not JSON-serialisable: {e}") from None
    return (text + "\n").encode("utf-8")


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every line of a result/cache jsonl as a dict, in file order (no de-duplication).

    Raises:
        JsonlFormatError: a line that is not a JSON object or has no integer ``index`` (names the
            file and line).
    """
    out = []
    for lineno, rec in read_jsonl(path):
        _record_index(path, lineno, rec)
        out.append(rec)
    return out


def latest_by_index(records: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """index -> the last record for it (later lines supersede earlier ones)."""
    out: dict[int, dict[str, Any]] = {}
    for r in records:
        out[int(r["index"])] = dict(r)
    return out


def write_records_atomic(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write records sorted by ``index`` to ``path`` through a temporary file + rename, so the
    file is either the old or the new content, never half of one."""
    recs = sorted(records, key=lambda r: int(r["index"]))
    return write_atomic(path, b"".join(dumps_record(r) for r in recs))


class CacheLockedError(RuntimeError):
    """Another live process holds the cache (two runs must not append to one file)."""


class ResultCache:
    """The append-only record cache of one run (one benchmark, one shard).

    Opening it takes an exclusive ``flock`` on the file (released by the OS if the process dies),
    repairs a torn last line, and loads the records. :meth:`append` writes one line with a single
    ``write`` on an ``O_APPEND`` descriptor and ``fsync``s before returning.

    Args:
        path: the cache file (created with its folder if missing).

    Raises:
        CacheLockedError: another process has the cache open.
        JsonlFormatError: a bad line that is not the last one (names file and line).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._lock()
            if created:
                fsync_dir(self.path.parent)
            self.repaired_bytes = self._repair_tail()
            self.records: dict[int, dict[str, Any]] = latest_by_index(load_records(self.path))
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    def _lock(self) -> None:
        try:  # POSIX only
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CacheLockedError(f"{self.path} is in use by another eva-fast eval process") from None
            raise

    def _repair_tail(self) -> int:
        """Cut a torn last line (no newline, or not valid JSON); return the bytes removed."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        with open(self.path, "rb") as f:
            data = f.read()
        end = len(data)
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1  # 0 when the only line is torn
        else:
            start = data.rfind(b"\n", 0, end - 1) + 1
            try:
                obj = json.loads(data[start:end])
                keep = end if isinstance(obj, dict) else start
            except (json.JSONDecodeError, UnicodeDecodeError):
                keep = start
        removed = end - keep
        if removed:
            log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", self.path, removed)
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
        return removed

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record durably (written and fsynced before returning)."""
        if self._fd < 0:
            raise ValueError(f"{self.path}: cache is closed")
        index = record.get("index")
        if not is_int(index):
            raise ValueError(f"record needs an integer 'index', got {index!r}")
        data = dumps_record(record)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)
        self.records[index] = dict(record)

    def drop(self, indices: Iterable[int]) -> int:
        """Remove the records of ``indices`` (rewrites the file atomically); returns how many."""
        drop = {i for i in indices if i in self.records}
        if not drop:
            return 0
        keep = [r for i, r in self.records.items() if i not in drop]
        # Rewrite through a temp file, then re-open on the new inode and keep the lock.
        write_records_atomic(self.path, keep)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self._lock()
        self.records = {int(r["index"]): r for r in keep}
        return len(drop)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge_result_files(paths: Sequence[str | os.PathLike], expected_indices: Iterable[int] | None = None,
                       ) -> tuple[list[dict[str, Any]], list[int]]:
    """Merge the results of shards into one list sorted by index.

    Within one file a later line supersedes an earlier one for the same index (cache semantics);
    across files an index may appear only once.

    Args:
        paths: result or cache files of the shards.
        expected_indices: the benchmark's indices, to report which are missing.

    Returns:
        ``(records sorted by index, missing indices)``.

    Raises:
        ValueError: no paths, or an index present in two files (names both).
        JsonlFormatError: a malformed line (names file and line).
    """
    if not paths:
        raise ValueError("merge needs at least one results file")
    owner: dict[int, str] = {}
    merged: dict[int, dict[str, Any]] = {}
    for p in paths:
        for index, rec in latest_by_index(load_records(p)).items():
            if index in owner:
                raise ValueError(f"index {index} is in both {owner[index]} and {p}: shards must not overlap")
            owner[index] = str(p)
            merged[index] = rec
    missing = sorted(set(expected_indices) - set(merged)) if expected_indices is not None else []
    return [merged[i] for i in sorted(merged)], missing
