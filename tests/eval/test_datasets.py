"""Benchmark annotations: the six shipped files, path resolution (MLVU's absolute paths), shards,
the preflight, and errors for malformed lines."""

from __future__ import annotations

import ast
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from eva_fast.eval import (
    BENCHMARKS,
    JsonlFormatError,
    get_benchmark,
    load_samples,
    parse_shard,
    preflight,
    resolve_video,
    select_samples,
)
from tests.conftest import DATA
from tests.eval.conftest import MINI, run_cli

# Counts from the issue / shared/data/benchmarks/SOURCES.md (EVA's repository).
EXPECTED = {"videomme": 2700, "longvideobench": 1337, "mlvu": 2174, "lsdbench": 1304, "videoholmes": 1837,
            "lvbench": 1549}


def _raw_lines(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_benchmarks_load(name):
    spec = get_benchmark(name)
    samples = load_samples(spec)
    raw = _raw_lines(spec.annotation)
    assert len(samples) == len(raw) == EXPECTED[name]
    assert [s.index for s in samples] == [r["index"] for r in raw]
    assert [s.gt for s in samples] == [r["reward_model"]["ground_truth"] for r in raw]
    assert [s.video for s in samples] == [r["videos"][0] for r in raw]
    assert all(s.question == r["prompt"][0]["content"] for s, r in zip(samples, raw))


def test_shipped_data_matches_shared_copy():
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "benchmarks"  # beside the checkout
    if not shared.is_dir():
        pytest.skip(f"no shared annotation folder beside the checkout ({shared})")
    for spec in BENCHMARKS.values():
        assert spec.annotation.read_bytes() == (shared / spec.annotation.name).read_bytes()


def test_categories_from_annotations():
    holmes = load_samples("videoholmes")
    raw = _raw_lines(get_benchmark("videoholmes").annotation)
    assert Counter(c for s in holmes for c in s.categories) == Counter(r["Question_Type"] for r in raw)
    lvb = load_samples("lvbench")
    raw = _raw_lines(get_benchmark("lvbench").annotation)
    for s, r in zip(lvb, raw):  # a Python-literal list in a string, multi-label
        assert list(s.categories) == ast.literal_eval(r["question_type"])
    mlvu = load_samples("mlvu")
    assert Counter(s.categories[0] for s in mlvu) == Counter(
        r["videos"][0].split("/video/")[1].split("/")[0] for r in _raw_lines(get_benchmark("mlvu").annotation))
    assert all(s.categories == () for s in load_samples("videomme"))


def test_mlvu_absolute_path_resolves_by_tail(tmp_path):
    name = load_samples("mlvu")[0].video  # /mnt/afs/.../MLVU/video/1_plotQA/movie101_66.mp4
    assert name.startswith("/mnt/afs/") and name.endswith("video/1_plotQA/movie101_66.mp4")
    for layout in ("video/1_plotQA", "1_plotQA"):  # root = MLVU/ or MLVU/video/
        root = tmp_path / layout.replace("/", "_")
        (root / layout).mkdir(parents=True)
        target = root / layout / "movie101_66.mp4"
        target.write_bytes(b"x")
        assert resolve_video(name, root) == target
    # a relative name is simply joined
    assert resolve_video("a/b.mp4", tmp_path) == tmp_path / "a" / "b.mp4"
    # an absolute path with no tail under the root is used as written (question sets made here)
    elsewhere = tmp_path / "elsewhere" / "clip.mp4"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"x")
    assert resolve_video(str(elsewhere), tmp_path / "1_plotQA") == elsewhere


def test_mini_bench_preflight_ok():
    samples = load_samples(MINI)
    assert len(samples) == 8 and samples[3].video.startswith("/mnt/")
    report = preflight(samples, DATA)
    assert report.ok, report.summary()
    assert report.num_samples == 8 and report.num_videos == 7
    assert report.resolved[samples[3].video] == str(DATA / "cockatoo.mp4")


def test_preflight_counts_missing_and_unreadable(tmp_path):
    samples = load_samples(MINI)
    root = tmp_path / "videos"
    root.mkdir()
    for name in ("bigbuckbunny.mp4", "cockatoo.mp4", "av1_video.mkv"):
        os.symlink(DATA / name, root / name)
    (root / "nasa_13013.mp4").write_bytes(b"this is not a video")  # exists, unreadable
    report = preflight(samples, root)
    assert set(report.missing) == {"h265_video.mp4", "test_non_zero_start.mp4"}
    assert set(report.unreadable) == {"nasa_13013.mp4"}
    assert report.affected_samples == 3 and not report.ok
    # existence only: the fake file passes
    assert preflight(samples, root, open_videos=False).unreadable == {}
    # the CLI prints the counts and exits 1
    res = run_cli("eval", "preflight", str(MINI), "--video-root", str(root))
    assert res.returncode == 1, res.stderr
    assert "2 missing, 1 unreadable (3 questions affected)" in res.stdout


def test_run_refuses_before_any_model_call_when_videos_missing(tmp_path):
    from eva_fast.eval import PreflightError, run_benchmark

    class NeverCalled:
        async def run(self, *a, **k):  # pragma: no cover - must not be reached
            raise AssertionError("the agent ran although the preflight failed")

    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(PreflightError, match="7 missing"):
        run_benchmark(NeverCalled(), MINI, root, tmp_path / "out")
    assert not (tmp_path / "out" / "mini_bench.cache.jsonl").exists()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_malformed_line_names_file_and_line(tmp_path):
    good = MINI.read_text().splitlines()
    bad = _write(tmp_path / "bad.jsonl", good[:2] + ['{"videos": ["x.mp4"], "prompt": [{"role": "user"'] + good[3:])
    with pytest.raises(JsonlFormatError) as e:
        load_samples(bad)
    assert e.value.lineno == 3 and e.value.path == str(bad)
    assert f"{bad}:3:" in str(e.value)
    res = run_cli("eval", "preflight", str(bad), "--video-root", str(DATA))
    assert res.returncode == 2 and f"{bad}:3:" in res.stderr
    # well-formed JSON, wrong shape: also named
    item = json.loads(good[0])
    del item["reward_model"]
    bad2 = _write(tmp_path / "bad2.jsonl", [good[1], json.dumps(item)])
    with pytest.raises(JsonlFormatError, match=r"bad2.jsonl:2: missing 'reward_model.ground_truth'"):
        load_samples(bad2)
    dup = _write(tmp_path / "dup.jsonl", [good[0], good[0]])
    with pytest.raises(JsonlFormatError, match="dup.jsonl:2: index 0 already used on line 1"):
        load_samples(dup)


def test_shards_partition_the_limited_run():
    samples = load_samples("videomme")
    limited = select_samples(samples, limit=101)
    assert [s.index for s in limited] == list(range(101))
    shards = [select_samples(samples, limit=101, shard=(i, 4)) for i in range(4)]
    got = sorted(s.index for sh in shards for s in sh)
    assert got == list(range(101))  # disjoint and complete
    assert [len(sh) for sh in shards] == [26, 25, 25, 25]
    assert [s.index for s in shards[1]][:3] == [1, 5, 9]  # round-robin: deterministic
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="limit"):
        select_samples(samples, limit=0)


def test_unknown_benchmark():
    with pytest.raises(ValueError, match="unknown benchmark 'nope'.*videomme"):
        get_benchmark("nope")


def test_roots_file(tmp_path):
    roots = tmp_path / "roots.yaml"
    roots.write_text(f"mini_bench: {DATA}\nvideomme: /nonexistent\n")
    res = run_cli("eval", "preflight", str(MINI), "--roots", str(roots))
    assert res.returncode == 0, res.stderr
    assert "0 missing, 0 unreadable" in res.stdout
    res = run_cli("eval", "preflight", str(MINI), "videomme", "--video-root", str(DATA))
    assert res.returncode == 2 and "--video-root is for one benchmark" in res.stderr


def test_annotations_are_package_data():
    """The jsonl files live inside the package folder, so the wheel (scikit-build-core packs every
    file under python/eva_fast) and importlib.resources carry them."""
    import importlib.resources

    data = importlib.resources.files("eva_fast.eval") / "data"
    for spec in BENCHMARKS.values():
        assert (data / spec.annotation.name).is_file()
    assert (data / "SOURCES.md").is_file()
