"""``eva-fast data teacher`` against a real OpenAI-compatible HTTP server process on localhost
(``tests/agent/_openai_server.py``) with scripted teacher replies: the exact prompts sent, which
trajectories are kept, malformed output, the files (loading in the SFT collator), the report, the
prompt families, resume after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from eva_fast.agent import SYSTEM_PROMPT
from eva_fast.train import EvaCollator, load_records, load_rl_set
from eva_fast.train.data import PROMPT_DIR, TeacherPrompt, experience_summary, structure_problems
from tests.conftest import DATA
from tests.train.conftest import tool_call

REPO = DATA.parent.parent


def structured(action: str, reflection: bool = False) -> str:
    head = "<reflection>The frames show the answer.</reflection>" if reflection else ""
    return f"{head}<summary>I know the question.</summary><planning>Look at the whole video.</planning>{action}"


QA = [  # (question fields, replies)
    ({"video": "nasa_13013.mp4", "question": "What planet is shown?", "options": ["Earth", "Mars"], "answer": "A",
      "category": "objects"},
     [structured(tool_call(0, 12, 2, 0.25)), structured("<answer>A</answer>", True)]),
    ({"video": "nasa_13013.mp4", "question": "Is it night?", "options": ["A. yes", "B. no"], "answer": "B",
      "category": "scene"},
     [structured(tool_call(2, 6, 1, 0.25)), structured("<answer>A</answer>", True)]),
    ({"video": "nasa_13013.mp4", "question": "What is in the sky?", "answer": "the planet earth", "category": "objects"},
     [structured(tool_call(0, 12, 1, 0.25)), structured("<answer>planet earth</answer>", True)]),
    ({"video": "nasa_13013.mp4", "question": "Is the camera moving?", "options": ["yes", "no"], "answer": "A",
      "category": "motion"},
     [structured('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, oops}}</tool_call>')]),
    ({"video": "nasa_13013.mp4", "question": "How many planets are visible?", "answer": "one", "category": "counting"},
     [tool_call(0, 12, 1, 0.25), "<answer>one</answer>"]),
]


def _write_qa(path, items):
    path.write_text("".join(json.dumps(q) + "\n" for q in items))
    return path


def _routes(qa):
    return [{"match": q["question"], "replies": replies} for q, replies in qa]


def _cli(*args, check=True):
    from eva_fast.cli import main

    rc = main(["data", *map(str, args)])
    assert not check or rc == 0
    return rc


def test_structure_rule():
    assert structure_problems([structured(tool_call(0, 1, 1, 1)), structured("<answer>A</answer>", True)]) == []
    assert structure_problems(["<planning>p</planning><summary>s</summary><answer>A</answer>"]) == [
        "reply 1: tags out of order (want summary -> planning)"]
    assert structure_problems([structured(tool_call(0, 1, 1, 1)), structured("<answer>A</answer>")]) == [
        "reply 2: no <reflection>...</reflection>"]
    assert structure_problems(["<summary>s</summary><answer>A</answer><planning>p</planning>"])[-1] == \
        "reply 1: the action comes before the planning"


def test_teacher_prompts_filtering_and_files(scripted_server, tmp_path, capsys):
    srv = scripted_server({"replies": ["no script"], "routes": _routes(QA)})
    qa = _write_qa(tmp_path / "qa.jsonl", [q for q, _ in QA])
    out = tmp_path / "out"
    _cli("teacher", qa, "--video-root", DATA, "--out", out, "--base-url", srv.base_url, "--concurrency", "2",
         "--no-progress")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["trajectories"], summary["right"], summary["kept"]) == (5, 3, 2)

    # the exact prompts: the templates' own text, families in order; the agent's first user turn
    families = (PROMPT_DIR / "family_workflow.txt").read_text() + (PROMPT_DIR / "family_reflective.txt").read_text()
    system = (PROMPT_DIR / "teacher_system.txt").read_text().replace("$families", families)
    reqs = [r["body"]["messages"] for r in srv.requests()]
    first = {m[1]["content"]: m for m in reqs if len(m) == 2}
    assert len(first) == 5 and all(m[0] == {"role": "system", "content": system} for m in first.values())
    assert "Video Length: 12 seconds. Original video resolution: 270p. What planet is shown?\nA. Earth\nB. Mars" in first
    assert "Video Length: 12 seconds. Original video resolution: 270p. Is it night?\nA. yes\nB. no" in first
    assert "Video Length: 12 seconds. Original video resolution: 270p. What is in the sky?" in first
    second = [m for m in reqs if len(m) == 4 and "What planet" in m[1]["content"]][0]
    assert second[2] == {"role": "assistant", "content": QA[0][1][0]}
    assert sum(p["type"] == "image_url" for p in second[3]["content"]) == 2  # the tool turn's two frames

    # kept: the right, well-structured ones; the SFT records get the student's system turn
    sft = load_records(out / "teacher.sft.jsonl")
    assert [r.question for r in sft] == ["What planet is shown?\nA. Earth\nB. Mars", "What is in the sky?"]
    assert all(r.messages[0]["content"] == SYSTEM_PROMPT and r.video == "nasa_13013.mp4" for r in sft)
    assert [r.source for r in sft] == ["teacher:qa#0/0", "teacher:qa#2/0"]
    assert sft[0].rewards == {"accuracy": 1.0} and sft[1].rewards["rouge"] > 0.5
    assert sft[0].messages[2]["content"] == QA[0][1][0] and sft[0].num_turns == 2
    # they load in the SFT collator: frames decode to the recorded ones, assistant tokens trained
    from eva_fast.agent import ChatRenderer
    from tests._tiny_qwen import QWEN25VL_CHAT_TEMPLATE, qwen_tokenizer_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    batch = EvaCollator(ChatRenderer(tok, QWEN25VL_CHAT_TEMPLATE), video_root=DATA)(sft)
    assert batch["pixel_values"].shape[0] > 0 and (batch["labels"] != -100).sum() > 0

    # every trajectory the teacher finished, labelled by correctness (input of kto-label)
    trajs = load_records(out / "teacher.trajectories.jsonl")
    assert [(r.question.split("\n")[0], r.label) for r in trajs] == [
        ("What planet is shown?", True), ("Is it night?", False), ("What is in the sky?", True),
        ("Is the camera moving?", False), ("How many planets are visible?", True)]
    assert trajs[0].messages[0]["content"] == system  # the teacher's own prompt is kept here

    report = json.loads((out / "teacher.report.json").read_text())
    assert report["counts"] == {"trajectories": 5, "finished": 5, "right": 3, "kept": 2, "accept_rate": 0.4,
                                "missing_videos": 0}
    assert report["rejected"] == {"missing_structure": 1, "stop:arguments_not_json": 1, "wrong_answer": 1}
    assert report["by_type"]["mcq"]["kept"] == 1 and report["by_type"]["open"]["kept"] == 1
    assert report["by_category"]["objects"] == {"trajectories": 2, "finished": 2, "right": 2, "kept": 2, "accept_rate": 1.0}
    assert report["by_source"] == {"qa": {"trajectories": 5, "finished": 5, "right": 3, "kept": 2, "accept_rate": 0.4}}
    assert "| objects |" in (out / "teacher.report.md").read_text()

    # a second run with everything cached asks nothing; --limit selects questions, same run identity
    n = len(srv.requests())
    _cli("teacher", qa, "--video-root", DATA, "--out", out, "--base-url", srv.base_url, "--no-progress", "--limit", 2)
    assert len(srv.requests()) == n
    assert json.loads((out / "teacher.report.json").read_text())["counts"]["trajectories"] == 2
    assert len(load_records(out / "teacher.sft.jsonl")) == 1


def test_experience_family_and_editable_templates(tmp_path):
    from eva_fast.train import record_from_trajectory
    from tests.train.conftest import run_scripted

    traj, _ = run_scripted([tool_call(0, 12, 4, 0.25), tool_call(4, 6, 2, 0.5), "<answer>A</answer>"])
    rec = record_from_trajectory(traj, gt="A", label=True)
    s = experience_summary(rec)
    assert s == ('Question: Is it Earth? A. yes B. no (video 13 s). Steps: 1) 4 frames of 00:00-00:12 at resize 0.25; '
                 '2) 2 frames of 00:04-00:06 at resize 0.5. Answered "A" after 3 rounds.')
    exps = tuple(f"experience {i}" for i in range(6))
    p = TeacherPrompt(("experience", "reflective"), experiences=exps, num_experiences=2, seed=3)
    text = p.system(7)
    assert text == p.system(7) and sum(e in text for e in exps) == 2  # deterministic per question
    assert "Past success experiences" in text and text.index("Past success") < text.index("Reflective thinking")
    # an edited copy of one template replaces the packaged one
    edited = tmp_path / "prompts"
    edited.mkdir()
    (edited / "family_reflective.txt").write_text("\nThink twice, $$5 a frame.\n")
    assert "Think twice, $5 a frame." in TeacherPrompt(("reflective",), str(edited)).system(0)
    (edited / "family_workflow.txt").write_text("\nuse $undefined\n")
    with pytest.raises(ValueError, match=r"uses \$undefined"):
        TeacherPrompt(("workflow",), str(edited)).system(0)
    assert TeacherPrompt((), student=True).system(5) == SYSTEM_PROMPT  # resampling the student
    with pytest.raises(ValueError, match="takes no prompt families"):
        TeacherPrompt(("workflow",), student=True)
    with pytest.raises(ValueError, match="needs past success experiences"):
        TeacherPrompt(("experience",))
    with pytest.raises(ValueError, match="unknown prompt family 'hints'"):
        TeacherPrompt(("hints",))


def test_bad_qa_set_is_named(tmp_path, capsys):
    qa = _write_qa(tmp_path / "qa.jsonl", [{"video": "v.mp4", "question": "q?", "answer": "E", "options": ["a", "b"]}])
    assert _cli("teacher", qa, "--out", tmp_path / "o", "--base-url", "http://127.0.0.1:9/v1", check=False) == 2
    assert "qa.jsonl:1: answer 'E' is not one of the option letters ['A', 'B']" in capsys.readouterr().err
    rl = load_rl_set(_write_qa(tmp_path / "ok.jsonl", [{"video": "v.mp4", "question": "q?", "answer": "x"}]),
                     infer_type=True)
    assert rl[0].type == "open"


def test_teacher_shards_cover_the_run_once(scripted_server, tmp_path, capsys):
    items = [({"video": "nasa_13013.mp4", "question": f"Shard question {i}?", "answer": "it is earth"},
              [structured(tool_call(0, 12, 1, 0.25)), structured("<answer>earth</answer>", True)]) for i in range(3)]
    srv = scripted_server({"replies": ["no script"], "routes": _routes(items)})
    qa = _write_qa(tmp_path / "qa.jsonl", [q for q, _ in items])
    out = tmp_path / "out"
    for i in range(2):  # 3 questions x 2 samples, round-robin over 2 shards
        _cli("teacher", qa, "--video-root", DATA, "--out", out, "--base-url", srv.base_url, "--shard", f"{i}/2",
             "--samples-per-question", 2, "--rouge-threshold", 0.3, "--no-progress")
    capsys.readouterr()
    recs = [load_records(out / f"teacher.shard-{i}-of-2.sft.jsonl") for i in range(2)]
    assert [[r.source for r in rs] for rs in recs] == [[f"teacher:qa#{q}/0" for q in range(3)],
                                                       [f"teacher:qa#{q}/1" for q in range(3)]]
    assert len(srv.requests()) == 12  # 6 trajectories x 2 turns, none twice
    # ROUGE("earth", "it is earth") = mean(F1 rouge1 0.5, rouge2 0, rougeL 0.5) = 1/3: right at threshold 0.3
    assert all(r.rewards["rouge"] == pytest.approx(1 / 3) for rs in recs for r in rs)
    _cli("teacher", qa, "--video-root", DATA, "--out", tmp_path / "strict", "--base-url", srv.base_url,
         "--rouge-threshold", 0.4, "--no-progress")
    rep = json.loads((tmp_path / "strict" / "teacher.report.json").read_text())
    assert rep["counts"]["kept"] == 0 and rep["rejected"] == {"low_rouge": 3}


def test_teacher_resumes_after_sigkill(scripted_server, tmp_path):
    items = [({"video": "nasa_13013.mp4", "question": f"Question number {i}?", "options": ["yes", "no"], "answer": "A"},
              [{"text": structured(tool_call(0, 12, 1, 0.25)), "delay_s": 0.3},
               {"text": structured("<answer>A</answer>", True), "delay_s": 0.3}]) for i in range(6)]
    srv = scripted_server({"replies": ["no script"], "routes": _routes(items)})
    qa = _write_qa(tmp_path / "qa.jsonl", [q for q, _ in items])
    out = tmp_path / "out"
    cache = out / "teacher.cache.jsonl"
    args = ["-m", "eva_fast.cli", "data", "teacher", str(qa), "--video-root", str(DATA), "--out", str(out),
            "--base-url", srv.base_url, "--concurrency", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if cache.exists() and cache.read_bytes().count(b"\n") >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.communicate()}")
            time.sleep(0.02)
        else:
            pytest.fail("no trajectory finished within 120 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done_before = {json.loads(line)["index"] for line in cache.read_bytes().split(b"\n")[:-1]}
    assert 2 <= len(done_before) < 6, "the kill must land mid-run"
    asked_before = len(srv.requests())
    res = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{len(done_before)} trajectory(ies) already done, {6 - len(done_before)} to run" in res.stderr
    first_turns = [r["body"]["messages"][1]["content"] for r in srv.requests()[asked_before:]
                   if len(r["body"]["messages"]) == 2]
    assert not any(f"Question number {i}?" in t for i in done_before for t in first_turns)  # nothing done twice
    sft = load_records(out / "teacher.sft.jsonl")
    assert sorted(r.source for r in sft) == [f"teacher:qa#{i}/0" for i in range(6)]
    assert json.loads((out / "teacher.report.json").read_text())["run"]["from_cache"] == len(done_before)
