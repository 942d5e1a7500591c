"""The mini benchmark end to end through the command line with the tiny random-weight Qwen2.5-VL
and the transformers backend: run -> results in the reference format -> score -> report."""

from __future__ import annotations

import json

from PIL import Image

from eva_fast.agent import AgentConfig, AgentLoop, get_backend
from eva_fast.eval import load_records, load_samples, run_benchmark, score_file
from tests.conftest import DATA
from tests.eval.conftest import MINI, run_cli

REFERENCE_FIELDS = ("index", "videos", "gt", "answer", "stop_reason", "num_rounds", "total_tokens",
                    "estimated_visual_tokens")


def test_cli_run_score_report_with_tiny_model(tiny_qwen_dir, tmp_path):
    out = tmp_path / "eval"
    res = run_cli("eval", "run", str(MINI), "--video-root", str(DATA), "--out", str(out), "--backend", "transformers",
                  "--model", str(tiny_qwen_dir), "--max-new-tokens", "8", "--max-turns", "2", "--concurrency", "2",
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "0 question(s) already done, 8 to run" in res.stderr
    recs = load_records(out / "mini_bench.jsonl")
    samples = load_samples(MINI)
    assert [r["index"] for r in recs] == [s.index for s in samples]
    for r, s in zip(recs, samples):
        assert all(k in r for k in REFERENCE_FIELDS)
        assert r["gt"] == s.gt and r["videos"] == [s.video] and r["categories"] == list(s.categories)
        assert 1 <= r["num_rounds"] <= 2 and r["total_tokens"] > 0
        assert not r.get("error"), r.get("error")
        assert r["trajectory"]["backend"] == "transformers" and r["trajectory"]["num_rounds"] == r["num_rounds"]
        assert r["timings"]["wall_s"] > 0 and r["timings"]["generate_ms"] > 0
    summary = json.loads((out / "mini_bench.summary.json").read_text())
    assert summary["total"] == 8 and summary["correct"] == score_file(out / "mini_bench.jsonl").correct
    # the same command again has nothing to do
    res2 = run_cli("eval", "run", str(MINI), "--video-root", str(DATA), "--out", str(out), "--backend",
                   "transformers", "--model", str(tiny_qwen_dir), "--max-new-tokens", "8", "--max-turns", "2",
                   "--no-progress")
    assert res2.returncode == 0 and "8 question(s) already done, 0 to run" in res2.stderr
    assert len(load_records(out / "mini_bench.cache.jsonl")) == 8


def test_frames_reach_the_tiny_model_and_report(tiny_qwen_dir, tmp_path):
    """A scripted first turn makes the random model see real frames in its second turn."""
    tool_call = ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 4, '
                 '"nframes": 2, "resize": 0.2}}</tool_call>')
    model = get_backend("transformers", model_path=tiny_qwen_dir)
    loop = AgentLoop(get_backend("scripted", replies=[tool_call], then=model), AgentConfig(max_turns=2,
                                                                                            max_new_tokens=8))
    result = run_benchmark(loop, MINI, DATA, tmp_path / "eval", limit=3, concurrency=1)
    assert result.summary.total == 3
    for r in result.records:
        t0, t1 = r["trajectory"]["turns"][:2]
        assert r["visual_tokens"] == t0["visual_tokens"] > 0
        assert t1["prompt_tokens"] > t0["prompt_tokens"] + r["visual_tokens"]  # images are in the 2nd prompt
    res = run_cli("eval", "report", str(result.results_path), "--out", str(tmp_path / "report"), "--timelines", "2")
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    for png in ("accuracy_per_benchmark.png", "accuracy_vs_tokens.png", "rounds_histogram.png",
                "categories_mini_bench.png", "timelines/mini_bench_0.png", "timelines/mini_bench_1.png"):
        assert f"({png})" in md
        with Image.open(tmp_path / "report" / png) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    assert "| mini_bench | 3 |" in md
