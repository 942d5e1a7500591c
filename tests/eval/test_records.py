"""The result cache: durable appends, torn-tail repair, corruption errors, the single-writer lock,
and shard merging."""

from __future__ import annotations

import json

import pytest

from eva_fast.eval import CacheLockedError, JsonlFormatError, ResultCache, load_records, merge_result_files


def _rec(i: int, answer: str = "A") -> dict:
    return {"index": i, "gt": "A", "answer": answer, "stop_reason": "answer_found", "num_rounds": 1,
            "total_tokens": 10}


def test_append_and_reload(tmp_path):
    path = tmp_path / "c.jsonl"
    with ResultCache(path) as c:
        for i in range(3):
            c.append(_rec(i))
    assert [r["index"] for r in load_records(path)] == [0, 1, 2]
    with ResultCache(path) as c:
        assert sorted(c.records) == [0, 1, 2] and c.repaired_bytes == 0
        c.append(_rec(1, "B"))  # a later line supersedes
        assert c.records[1]["answer"] == "B"
    with ResultCache(path) as c:
        assert c.records[1]["answer"] == "B"


@pytest.mark.parametrize("tail", [b'{"index": 3, "gt": "A", "ans', b"\x00\x00\x00\x00", b'{"index": 3}garbage\n'])
def test_torn_last_line_is_cut(tmp_path, tail):
    path = tmp_path / "c.jsonl"
    good = b"".join(json.dumps(_rec(i)).encode() + b"\n" for i in range(2))
    path.write_bytes(good + tail)
    with ResultCache(path) as c:
        assert sorted(c.records) == [0, 1]
        assert c.repaired_bytes == len(tail)
        c.append(_rec(2))
    assert path.read_bytes() == good + json.dumps(_rec(2), ensure_ascii=False).encode() + b"\n"


def test_only_line_torn(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"index": 0, "gt"')
    with ResultCache(path) as c:
        assert c.records == {}
    assert path.read_bytes() == b""


def test_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(_rec(0)) + "\nnot json\n" + json.dumps(_rec(2)) + "\n")
    with pytest.raises(JsonlFormatError, match=r"c.jsonl:2: not valid JSON"):
        ResultCache(path)
    path.write_text(json.dumps(_rec(0)) + "\n" + json.dumps({"gt": "A"}) + "\n" + json.dumps(_rec(2)) + "\n")
    with pytest.raises(JsonlFormatError, match=r"c.jsonl:2: record has no integer 'index'"):
        ResultCache(path)


def test_single_writer_lock(tmp_path):
    path = tmp_path / "c.jsonl"
    with ResultCache(path):
        with pytest.raises(CacheLockedError, match="in use"):
            ResultCache(path)
    ResultCache(path).close()  # released on close


def test_drop_keeps_the_rest_and_the_lock(tmp_path):
    path = tmp_path / "c.jsonl"
    with ResultCache(path) as c:
        for i in range(4):
            c.append(_rec(i))
        assert c.drop([1, 3, 9]) == 2
        assert sorted(c.records) == [0, 2]
        with pytest.raises(CacheLockedError):
            ResultCache(path)
        c.append(_rec(1))
    assert [r["index"] for r in load_records(path)] == [0, 2, 1]


def test_non_json_values_are_refused(tmp_path):
    with ResultCache(tmp_path / "c.jsonl") as c:
        with pytest.raises(ValueError, match="not JSON-serialisable"):
            c.append({**_rec(0), "total_tokens": float("nan")})
        with pytest.raises(ValueError, match="integer 'index'"):
            c.append({"gt": "A"})


def test_merge(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(_rec(i)) + "\n" for i in (0, 2)) + json.dumps(_rec(2, "C")) + "\n")
    b.write_text("".join(json.dumps(_rec(i)) + "\n" for i in (1, 3)))
    recs, missing = merge_result_files([a, b], expected_indices=range(5))
    assert [r["index"] for r in recs] == [0, 1, 2, 3] and missing == [4]
    assert recs[2]["answer"] == "C"  # last line wins within a file
    with pytest.raises(ValueError, match=r"index 0 is in both .*a.jsonl and .*a.jsonl"):
        merge_result_files([a, a])
