"""``eva_fast._files.write_atomic``, the one atomic file writer (recipe provenance, eval run and
result files, teacher question files): the file holds the old content or the new, never part of
one, and no temporary file is left behind."""

from __future__ import annotations

import pytest

from eva_fast._files import write_atomic


def test_write_atomic_replaces_whole_and_cleans_up(tmp_path):
    path = tmp_path / "sub" / "provenance.json"
    assert write_atomic(path, "é first\n") == path  # the folder is created; str is written as UTF-8
    assert path.read_bytes() == "é first\n".encode()
    write_atomic(path, b"second\n")
    assert path.read_text() == "second\n"

    with pytest.raises(TypeError):
        write_atomic(path, 12345)  # not str/bytes: nothing written
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["provenance.json"]  # no temporary file left
