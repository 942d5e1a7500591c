"""The training record format: what the loop sent is what is stored; one converter for trajectories,
``ask --json`` and eval records; malformed lines fail with file:line; the ``data convert`` CLI."""

from __future__ import annotations

import json

import pytest
import torch

from eva_fast.agent import ImagePart, Trajectory
from eva_fast.train import (
    RecordError,
    TrajectoryRecord,
    load_records,
    record_from_image_conversation,
    record_from_trajectory,
    write_records,
)
from tests.train.conftest import EPISODES, run_episode


def test_conversation_is_what_the_loop_sent():
    """Trajectory.conversation() equals the messages the (scripted) model received, frames as refs."""
    from eva_fast.agent import get_backend

    video, question, _, replies = EPISODES[0]
    backend = get_backend("scripted", replies=replies)
    traj = run_episode(video, question, replies, backend=backend)
    sent = backend.requests[-1]  # the last request holds the whole conversation before the answer
    conv = traj.conversation()
    assert len(conv) == len(sent) + 1 and conv[-1] == {"role": "assistant", "content": replies[-1]}
    for want, got in zip(sent, conv):
        assert got["role"] == want.role
        if isinstance(want.content, str):
            assert got["content"] == want.content
            continue
        calls_of_turn = {}
        for part, ref in zip(want.content, got["content"]):
            if isinstance(part, ImagePart):
                assert ref["type"] == "frame"
                calls_of_turn.setdefault(ref["call"], part.batch)
                assert calls_of_turn[ref["call"]] is part.batch and ref["index"] == part.index
            else:
                assert ref == {"type": "text", "text": part.text}


def test_round_trip_and_file(eva_records, tmp_path):
    path = tmp_path / "r.jsonl"
    assert write_records(path, eva_records) == 4
    back = load_records(path)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in eva_records]
    assert back[1].where == f"{path}:2"
    d = eva_records[0].to_dict()
    assert d["format"] == "eva_fast.trajectory" and d["version"] == 2
    tool = d["messages"][3]
    assert tool["role"] == "tool" and tool["calls"][0]["arguments"] == {"start_time": 0, "end_time": 12, "nframes": 3, "resize": 0.2}
    # round(270 * 0.2 / 28) * 28 = 56, round(480 * 0.2 / 28) * 28 = 84
    assert tool["calls"][0]["frames"]["size"] == [56, 84] and len(tool["calls"][0]["frames"]["frame_indices"]) == 3
    assert not any("pixel" in json.dumps(m) for m in d["messages"])  # references, never pixels


def test_one_converter_for_trajectory_ask_json_and_eval_records(eva_trajectories):
    traj, gt = eva_trajectories[1]
    a = record_from_trajectory(traj, gt=gt).to_dict()
    b = record_from_trajectory(json.loads(json.dumps(traj.to_dict())), gt=gt).to_dict()  # eva-fast ask --json
    eval_rec = {"index": 7, "gt": gt, "answer": traj.answer, "trajectory": traj.to_dict()}
    c = record_from_trajectory(eval_rec).to_dict()
    assert a == b
    assert c.pop("source") == "eval#7" and c == a
    assert a["answer"] == "B" and a["gt"] == "B"
    assert a["frame_options"] == {"max_visual_tokens": 12000, "maxp": 720, "resample": "cubic", "policy": "parity",
                                  "smart_resize_by": "processor", "min_pixels": 3136, "max_pixels": 12845056,
                                  "snap_tolerance_s": 2.0, "snap_fraction": 0.25}
    assert a["timestamp_fmt"] == "mmss"


def test_max_turns_episode_drops_the_trailing_tool_turn():
    from tests.train.conftest import call

    traj = run_episode("nasa_13013.mp4", "Q? A. x B. y", [call(0, 5, 2, 0.1)] * 6)
    assert traj.stop_reason == "max_turns_exceeded"
    rec = record_from_trajectory(traj)
    assert rec.messages[-1]["role"] == "assistant" and rec.num_turns == 6 and len(rec.calls) == 5


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(messages=d["messages"][:2]), "at least 3 messages"),
    (lambda d: d["messages"].__setitem__(1, {"role": "assistant", "content": "x"}), "expected role 'user'"),
    (lambda d: d["messages"][3]["content"].append({"type": "frame", "call": 0, "index": 9}), "has no recorded frame"),
    (lambda d: d["messages"][3].pop("calls"), "need the tool turn's 'calls'"),
    (lambda d: d["messages"][3]["calls"][0]["frames"].__setitem__("size", [50, 112]), "multiples of 28"),
    (lambda d: d.update(label="yes"), "'label' must be true, false"),
    (lambda d: d["frame_options"].update(speed=2), "unknown frame options"),
    (lambda d: d["frame_options"].update(policy="nope"), "policy must be one of"),
    (lambda d: d.update(messages=d["messages"][:4]), "must end with an assistant turn"),
    (lambda d: d["messages"][3]["content"].append({"type": "video"}), "part"),
    (lambda d: d.update(version=3), "unsupported version 3"),
])
def test_malformed_records_name_file_and_line(eva_records, tmp_path, mutate, match):
    good = eva_records[0].to_dict()
    bad = json.loads(json.dumps(good))
    mutate(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(RecordError, match=match) as e:
        load_records(path)
    assert f"{path}:3" in str(e.value)
    errors: list[str] = []
    assert len(load_records(path, skip_bad=True, errors=errors)) == 1 and errors and f"{path}:3" in errors[0]


def _as_version_1(d: dict, **frame_config) -> dict:
    """A record as format version 1 wrote it: frame settings and label format in ``frame_config``
    under the old names (before FrameOptions, issue #25)."""
    v1 = json.loads(json.dumps(d))
    fo = v1.pop("frame_options")
    v1["frame_config"] = {"max_visual_tokens": fo["max_visual_tokens"], "maxp": fo["maxp"], "resample": fo["resample"],
                          "frame_policy": fo["policy"], "smart_resize_by": fo["smart_resize_by"],
                          "timestamp_fmt": v1.pop("timestamp_fmt"), **frame_config}
    v1["version"] = 1
    return v1


def test_version_1_records_still_load_and_decode(eva_records, tmp_path):
    from eva_fast.train import ReaderCache, record_frames
    from tests.conftest import DATA

    rec = eva_records[0]
    path = tmp_path / "v1.jsonl"
    path.write_text(json.dumps(_as_version_1(rec.to_dict())) + "\n"
                    + json.dumps(_as_version_1(rec.to_dict(), maxp=360, frame_policy="keyframe_snap")) + "\n")
    same, other = load_records(path)
    assert same.frame_options == rec.frame_options and same.timestamp_fmt == "mmss"
    assert (other.frame_options.maxp, other.frame_options.policy) == (360, "keyframe_snap")
    assert same.to_dict() == {**rec.to_dict(), "source": rec.source}  # written back as version 2
    ref = record_frames(rec, ReaderCache(), DATA)
    got = record_frames(same, ReaderCache(), DATA)
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref))
    bad = _as_version_1(rec.to_dict(), speed=2)
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(RecordError, match="unknown frame_config keys"):
        load_records(path)


def test_not_json_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("{nope\n")
    with pytest.raises(RecordError, match=r"x.jsonl:1: not JSON"):
        load_records(path)
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing.jsonl")


def test_image_conversation_converter(tmp_path):
    conv = {
        "video": "v.mp4", "question": "Q", "gt": "A",
        "messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "u"},
            {"role": "assistant", "content": "look"},
            {"role": "tool", "content": [{"type": "text", "text": "<tool_response>"},
                                         {"type": "image", "image": "f0.png"},
                                         {"type": "image_url", "image_url": {"url": "file:///abs/f1.png"}}]},
            {"role": "assistant", "content": "<answer>A</answer>"},
        ],
    }
    rec = record_from_image_conversation(conv, base_dir=tmp_path)
    assert [p for _, p in rec.image_parts()] == [{"type": "image", "path": "f0.png"}, {"type": "image", "path": "/abs/f1.png"}]
    assert rec.gt == "A" and rec.base_dir == str(tmp_path)
    with pytest.raises(RecordError, match="file://"):
        conv["messages"][3]["content"][2]["image_url"]["url"] = "http://x/y.png"
        record_from_image_conversation(conv)


def test_data_convert_cli(eva_trajectories, tmp_path, capsys):
    from eva_fast.cli import main

    ask = tmp_path / "ask.json"
    ask.write_text(json.dumps(eva_trajectories[0][0].to_dict(), indent=2))  # eva-fast ask --json output
    results = tmp_path / "results.jsonl"
    wrong = eva_trajectories[2][0].to_dict()
    results.write_text(
        json.dumps({"index": 0, "gt": "B", "answer": "B", "trajectory": eva_trajectories[1][0].to_dict()}) + "\n"
        + json.dumps({"index": 1, "gt": "B", "answer": "A", "trajectory": wrong}) + "\n"
    )
    out = tmp_path / "records.jsonl"
    assert main(["data", "convert", str(ask), str(results), "--out", str(out), "--label", "auto"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["records"] == 3 and summary["labels"] == {"chosen": 1, "rejected": 1}
    recs = load_records(out)
    assert [r.label for r in recs] == [None, True, False]
    assert main(["data", "convert", str(results), "--out", str(out), "--only-correct"]) == 0
    assert [r.source for r in load_records(out)] == ["eval#0"]
    assert main(["data", "convert", str(tmp_path / "nope.json"), "--out", str(out)]) == 2


def test_trajectory_tokens_are_not_written_by_default(eva_trajectories):
    traj, _ = eva_trajectories[0]
    assert traj.tokens is None  # the scripted backend works on text, not ids
    d = traj.to_dict()
    assert d["tokens"] is None and Trajectory.from_dict(d).tokens is None
    assert isinstance(TrajectoryRecord.from_dict(record_from_trajectory(traj).to_dict()), TrajectoryRecord)
