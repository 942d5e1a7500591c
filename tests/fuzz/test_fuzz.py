"""The fuzz harness in CI: its mutators hit the structures they name, its classification catches
crashes and hangs, every stored finding replays as documented, and a short seeded run (well under
two minutes) ends with 0 undocumented exceptions, 0 hangs and 0 signals. Longer runs:
``python -m tests.fuzz --minutes 20``."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.fuzz import harness, mutate

REGRESSIONS = Path(__file__).with_name("regressions.json")
REPO = Path(__file__).resolve().parents[2]


def _box(data: bytes, path: str):
    return next(b for b in mutate.mp4_boxes(data) if b.path == path)


def test_mp4_mutations_land_in_the_named_box_fields():
    seed = (mutate.DATA / "cockatoo.mp4").read_bytes()
    stco = "moov/trak/mdia/minf/stbl/stco"
    out = mutate.apply({"seed": "cockatoo.mp4", "ops": [{"op": "mp4", "box": stco, "nth": 0, "field": "count", "value": 0}]})
    b = _box(out, stco)
    assert struct.unpack(">I", out[b.offset + 12:b.offset + 16])[0] == 0 and len(out) == len(seed)
    assert struct.unpack(">I", seed[b.offset + 12:b.offset + 16])[0] > 0
    stsz = "moov/trak/mdia/minf/stbl/stsz"
    out = mutate.apply({"seed": "cockatoo.mp4", "ops": [{"op": "mp4", "box": stsz, "nth": 0, "field": "entry", "value": [3, 7]}]})
    b = _box(out, stsz)
    assert struct.unpack(">I", out[b.offset + 20 + 12:b.offset + 20 + 16])[0] == 7
    diff = [i for i in range(len(seed)) if seed[i] != out[i]]
    assert diff and all(b.offset + 32 <= i < b.offset + 36 for i in diff)
    assert len(mutate.apply({"seed": "cockatoo.mp4", "ops": [{"op": "truncate", "length": 1234}]})) == 1234
    paths = {x.path.rsplit("/", 1)[-1] for x in mutate.mp4_boxes(seed)}
    assert {"stco", "stsz", "stss", "stts", "ctts", "elst", "mdhd"} <= paths


def test_matroska_size_mutation_rewrites_one_element_size():
    seed = (mutate.DATA / "cockatoo_vp9.webm").read_bytes()
    elements = mutate.mkv_elements(seed)
    cluster = next(e for e in elements if e.id == 0x1F43B675)  # a Cluster
    out = mutate.apply({"seed": "cockatoo_vp9.webm",
                        "ops": [{"op": "mkv", "at": cluster.size_at, "len": cluster.size_len, "value": "unknown"}]})
    again = next(e for e in mutate.mkv_elements(out) if e.offset == cluster.offset)
    assert again.size is None and cluster.size is not None and len(out) == len(seed)
    assert {0x1A45DFA3, 0x18538067, 0x1654AE6B, 0x1F43B675} <= {e.id for e in elements}


def test_draw_is_deterministic_and_structure_aware():
    assert mutate.draw(random.Random(7)) == mutate.draw(random.Random(7))
    ops = [op["op"] for r in itertools.islice(harness.recipes(3), 200) for op in r["ops"]]
    assert {"flip", "truncate", "mp4", "mkv"} <= set(ops)


def _probe_ok(recipe):
    return [["step", "ok"]]


def _probe_documented(recipe):
    return [["step", "ok"], ["survey", "CorruptVideoError: truncated"]]


def _probe_undocumented(recipe):
    return [["survey", "IndexError: index 0 is out of bounds"]]


def _probe_hang(recipe):
    time.sleep(600)


def _probe_crash(recipe):
    os.kill(os.getpid(), signal.SIGSEGV)


def _probe_raises(recipe):
    raise OverflowError("int too large")


def test_the_harness_tells_every_outcome_apart():
    cases = [(_probe_ok, "ok"), (_probe_documented, "documented"), (_probe_undocumented, "undocumented"),
             (_probe_hang, "hang"), (_probe_crash, "signal"), (_probe_raises, "undocumented")]
    threads = torch.get_num_threads()
    for probe, expected in cases:
        res = harness.run_cases([{"seed": "nasa_13013.mp4", "ops": []}], jobs=1, timeout_s=3, probe=probe)
        assert [r.outcome for r in res] == [expected], (probe.__name__, res)
        # the parent forks single-threaded, then gets its thread count back (later tests sample with it)
        assert torch.get_num_threads() == threads
    assert harness.classify([("a", "ValueError: x"), ("b", "ZeroDivisionError: y")])[0] == "undocumented"


def _run_harness(tmp_path, *args) -> tuple[dict, list[dict]]:
    """``python -m tests.fuzz`` in a fresh process (the parent that forks the cases must not carry
    this test session's threads: idle decoder and GOP-pool threads from other tests)."""
    out = tmp_path / "fuzz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz", *args, "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert (out / "summary.json").exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return summary, results


def test_stored_findings_replay_as_documented(tmp_path):
    """Every input a run ever found (crash, hang, undocumented error) is stored as its recipe and
    must now end ok or with a documented error (the expected one where recorded)."""
    entries = json.loads(REGRESSIONS.read_text())
    _, results = _run_harness(tmp_path, "--recipes", str(REGRESSIONS))
    assert len(results) == len(entries)
    for e, r in zip(entries, results):
        assert r["outcome"] in ("ok", "documented"), (e["note"], r)
        if e.get("expect"):
            assert e["expect"] in r["detail"], (e["note"], r["detail"])


def test_seeded_fuzz_run_has_no_undocumented_error_hang_or_crash(tmp_path):
    summary, results = _run_harness(tmp_path, "--cases", "80", "--seed", "0", "--max-seconds", "90")
    bad = [r for r in results if r["outcome"] not in ("ok", "documented")]
    assert not bad, bad[:5]
    assert summary["execs"] >= 30, summary
    assert summary["outcomes"]["ok"] > 0 and summary["outcomes"]["documented"] > 0, summary
