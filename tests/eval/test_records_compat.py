"""Records written before the ``_s`` renames (issue #12 item 7) still load and resume: an eval cache
with ``pts_seconds`` / ``label_seconds`` and no ``plan``, and a ``run.json`` without the agent
settings added since, resumes without rerunning anything and reports (timelines included)."""

from __future__ import annotations

import json
from dataclasses import asdict

from eva_fast.agent import AgentConfig, AgentLoop, Trajectory, get_backend
from eva_fast.eval import load_records, run_benchmark, write_report
from eva_fast.video import FrameOptions
from tests.conftest import DATA
from tests.eval.conftest import MINI

CALL = ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 4, "nframes": 3, '
        '"resize": 0.25}}</tool_call>')


def _loop() -> AgentLoop:
    return AgentLoop(get_backend("scripted", replies=[CALL, "<answer>A</answer>"]), AgentConfig(max_turns=3))


def _to_old_format(record: dict) -> dict:
    rec = json.loads(json.dumps(record))
    for turn in rec["trajectory"]["turns"]:
        for call in turn["tool_calls"]:
            fr = call.get("frames")
            if fr:
                fr["pts_seconds"] = fr.pop("pts_s")
                fr["label_seconds"] = fr.pop("label_s")
                fr.pop("plan")
    return rec


def test_old_trajectory_keys_load():
    traj = _loop().run_sync(DATA / "nasa_13013.mp4", "What is shown? A. a B. b")
    new = traj.to_dict()
    old = _to_old_format({"trajectory": new})["trajectory"]
    assert "pts_seconds" in old["turns"][0]["tool_calls"][0]["frames"]
    back = Trajectory.from_dict(old)
    fr, ref = back.turns[0].tool_calls[0].frames, traj.turns[0].tool_calls[0].frames
    assert fr.pts_s == ref.pts_s and fr.label_s == ref.label_s and fr.plan is None
    assert Trajectory.from_dict(new).turns[0].tool_calls[0].frames.plan == ref.plan


def test_old_eval_cache_resumes_and_reports(tmp_path):
    out = tmp_path / "out"
    run_info = {"backend": "scripted", "model": "", "agent_config": asdict(AgentConfig(max_turns=3))}
    first = run_benchmark(_loop(), MINI, DATA, out, limit=3, run_info=run_info)
    assert first.ran == 3
    cache = out / "mini_bench.cache.jsonl"
    cache.write_text("".join(json.dumps(_to_old_format(r)) + "\n" for r in load_records(cache)))
    meta_path = out / "mini_bench.run.json"
    meta = json.loads(meta_path.read_text())
    del meta["identity"]["agent_config"]["frame_options"]["smart_resize_by"]  # a setting older versions did not record
    meta_path.write_text(json.dumps(meta))

    second = run_benchmark(_loop(), MINI, DATA, out, limit=4, run_info=run_info)
    assert (second.ran, second.skipped_cached) == (1, 3)
    recs = load_records(out / "mini_bench.jsonl")
    assert [r["index"] for r in recs] == [0, 1, 2, 3]
    assert "pts_seconds" in recs[0]["trajectory"]["turns"][0]["tool_calls"][0]["frames"]  # kept as written
    assert "pts_s" in recs[3]["trajectory"]["turns"][0]["tool_calls"][0]["frames"]
    report = write_report([out / "mini_bench.jsonl"], tmp_path / "report", timelines=4)
    assert report.exists() and len(list((tmp_path / "report" / "timelines").glob("*.png"))) >= 1

    # a real change of settings is still refused
    other = {**run_info, "agent_config": asdict(AgentConfig(max_turns=3, frame_options=FrameOptions(maxp=360)))}
    try:
        run_benchmark(_loop(), MINI, DATA, out, limit=4, run_info=other)
    except ValueError as e:
        assert "records a different run" in str(e)
    else:
        raise AssertionError("a changed agent setting must be refused")


def _flat_agent_config(cfg: AgentConfig) -> dict:
    """``asdict(AgentConfig)`` as eva_fast wrote it before FrameOptions (issue #25): frame settings
    flat, ``frame_policy`` for ``policy``, ``device`` for ``decode_device``."""
    d = asdict(cfg)
    fo = d.pop("frame_options")
    d.update(max_visual_tokens=fo["max_visual_tokens"], maxp=fo["maxp"], resample=fo["resample"],
             frame_policy=fo["policy"], smart_resize_by=fo["smart_resize_by"], device=d.pop("decode_device"))
    return d


def test_run_recorded_with_the_flat_agent_config_resumes(tmp_path):
    """A run.json and trajectories written with the flat settings layout resume (the layout is not a
    change of settings); a real change of a frame setting under its old name is still refused."""
    out = tmp_path / "out"
    flat = {"backend": "scripted", "model": "", "agent_config": _flat_agent_config(AgentConfig(max_turns=3))}
    first = run_benchmark(_loop(), MINI, DATA, out, limit=2, run_info=flat)
    assert first.ran == 2
    cache = out / "mini_bench.cache.jsonl"
    old = []
    for r in load_records(cache):  # trajectories' config in the flat layout, as written then
        cfg = r["trajectory"]["config"]
        fo = cfg.pop("frame_options")
        cfg.update(max_visual_tokens=fo["max_visual_tokens"], maxp=fo["maxp"], resample=fo["resample"],
                   frame_policy=fo["policy"], smart_resize_by=fo["smart_resize_by"])
        old.append(r)
    cache.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert Trajectory.from_dict(old[0]["trajectory"]).frame_options() == AgentConfig().frame_options

    snap = {**flat, "agent_config": asdict(AgentConfig(max_turns=3, frame_options=FrameOptions(policy="keyframe_snap")))}
    try:  # against the flat run.json: frame_policy "parity" there, policy "keyframe_snap" here
        run_benchmark(_loop(), MINI, DATA, out, limit=3, run_info=snap)
    except ValueError as e:
        assert "records a different run" in str(e)
    else:
        raise AssertionError("a changed frame setting must be refused")
    now = {**flat, "agent_config": asdict(AgentConfig(max_turns=3))}
    second = run_benchmark(_loop(), MINI, DATA, out, limit=3, run_info=now)
    assert (second.ran, second.skipped_cached) == (1, 2)
