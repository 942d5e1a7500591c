"""``eva-fast data kto-label`` on real-video trajectories of the agent loop, with the guessing judge
behind a real OpenAI-compatible HTTP server process (scripted replies): the failure rules, the judge's
exact prompt, a malformed judge reply, unusable inputs, the target mix, the report, resume from the
judge cache, and the output loading in the KTO collator."""

from __future__ import annotations

import json
import string

import pytest

from eva_fast.train import load_records, record_from_trajectory
from eva_fast.train.data import FailureRules, balance_labels, failure_flags
from eva_fast.train.data._label import LabelDecision
from tests.train.conftest import Q, run_scripted, tool_call

# (name, replies): all right answers ("A") except "wrong"
CASES = [
    ("ok", [tool_call(0, 12, 4, 0.25), "<answer>A</answer>"]),
    ("dense", [tool_call(4, 6, 8, 0.25), "<answer>A</answer>"]),            # 8 frames in 2 s: 4 fps
    ("sparse", [tool_call(0, 12, 2, 0.25), "<answer>A</answer>"]),          # 12 s window, 6 s apart
    ("no_frames", ["<answer>A</answer>"]),
    ("wrong", [tool_call(0, 12, 4, 0.25), "<answer>B</answer>"]),
    ("guess", [tool_call(0, 12, 4, 0.25), "I am not sure. <answer>A</answer>"]),
    ("unparsed", [tool_call(0, 12, 4, 0.25), "Probably <answer>A</answer>"]),
]
RULES = ["--dense-max-fps", "2", "--dense-min-frames", "8", "--sparse-min-window-s", "10", "--sparse-max-spacing-s", "5"]
#: The project's earlier labelling (every wrong answer, the rules, the judge on right answers), now opt-in.
STRICT = ["--extra-rejections", "wrong_answer,no_visual_evidence,dense_short_window,sparse_long_window,judge_correct"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Records (no label, gt "A") of the cases, plus an eval result file (one normal record, one
    infrastructure error) and a GRPO-style dump (reward field; one line with nothing to score)."""
    from eva_fast.eval import Sample
    from eva_fast.eval import record_from_trajectory as eval_record

    d = tmp_path_factory.mktemp("label_inputs")
    trajs = {name: run_scripted(replies)[0] for name, replies in CASES}
    with open(d / "records.jsonl", "w") as f:
        for name, _ in CASES:
            if name != "wrong":
                f.write(record_from_trajectory(trajs[name], gt="A", source=f"teacher:qa#{name}").to_json() + "\n")
    with open(d / "eval.jsonl", "w") as f:
        f.write(json.dumps(eval_record(Sample(3, "v.mp4", Q, None, "A", ("objects",)), "bench", trajs["wrong"], 0.1)) + "\n")
        broken = trajs["ok"].to_dict()
        f.write(json.dumps({"index": 4, "gt": "A", "answer": "", "stop_reason": "exception: RuntimeError: boom",
                            "error": "RuntimeError: boom", "trajectory": broken}) + "\n")
    with open(d / "rollouts.jsonl", "w") as f:
        f.write(json.dumps({**trajs["ok"].to_dict(), "rewards": {"accuracy": 1.0, "format": 0.0}}) + "\n")
        f.write(json.dumps(trajs["ok"].to_dict()) + "\n")
    return d, trajs


def test_failure_rules(inputs):
    _, trajs = inputs
    rules = FailureRules(dense_max_fps=2, dense_min_frames=8, sparse_min_window_s=10, sparse_max_spacing_s=5)
    flags = {name: failure_flags(record_from_trajectory(t, gt="A"), rules) for name, t in trajs.items()}
    assert flags == {"ok": [], "dense": ["dense_short_window"], "sparse": ["sparse_long_window"],
                     "no_frames": ["no_visual_evidence"], "wrong": [], "guess": [], "unparsed": []}
    # the defaults are for real videos: nothing of a 13 s video is sparse, 8 frames in 2 s is dense
    default = {name: failure_flags(record_from_trajectory(t, gt="A"), FailureRules()) for name, t in trajs.items()}
    assert default["sparse"] == [] and default["dense"] == ["dense_short_window"]
    with pytest.raises(ValueError, match="dense_max_fps"):
        FailureRules(dense_max_fps=0)


def test_balance_to_the_target_fraction():
    ds = [LabelDecision(str(i), i < 8) for i in range(10)]  # 8 chosen, 2 rejected
    balance_labels(ds, 0.63, seed=1)
    kept = [d for d in ds if d.kept]
    assert sum(d.label for d in kept) == 3 and sum(not d.label for d in kept) == 2  # round(0.63 / 0.37 * 2) = 3
    assert all("dropped_for_ratio" in d.reasons for d in ds if not d.kept)
    with pytest.raises(ValueError, match="chosen fraction"):
        balance_labels(ds, 1.0)


def test_kto_label_end_to_end(inputs, scripted_server, tmp_path, capsys):
    from eva_fast.cli import main
    from eva_fast.train.data import PROMPT_DIR

    d, trajs = inputs
    srv = scripted_server({"replies": ['{"verdict": "grounded"}'], "routes": [
        {"match": "I am not sure", "replies": ['Verdict: {"verdict": "guessing", "reason": "says it is unsure"}']},
        {"match": "Probably", "replies": ["looks fine to me"]},
    ]})
    out = tmp_path / "kto.jsonl"
    args = ["data", "kto-label", str(d / "records.jsonl"), str(d / "eval.jsonl"), str(d / "rollouts.jsonl"),
            "--out", str(out), "--judge-base-url", srv.base_url, "--no-progress", *RULES, *STRICT]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["inputs"], summary["unusable"], summary["chosen"], summary["rejected"]) == (10, 2, 3, 2)

    # the judge saw only the right answers that pass the rules (ok, guess, unparsed, the rollout line)
    prompts = [r["body"]["messages"][0]["content"] for r in srv.requests()]
    assert len(prompts) == 4 and all(len(r["body"]["messages"]) == 1 for r in srv.requests())
    transcript = ("Round 1, the agent wrote:\n" + CASES[0][1][0] + "\n  The tool returned 4 frames (112x56 pixels) at "
                  "[00:00], [00:04], [00:08], [00:12].\nRound 2, the agent wrote:\n<answer>A</answer>")
    expected = string.Template((PROMPT_DIR / "judge_guessing.txt").read_text()).substitute(
        question=Q, duration_s=13, transcript=transcript, answer="A")
    assert prompts.count(expected) == 2  # the "ok" record and the rollout line are the same episode

    labels = [json.loads(line) for line in open(tmp_path / "kto.labels.jsonl")]
    by = {(lab["where"].split("/")[-1]): lab for lab in labels}
    assert by["records.jsonl:1"]["label"] is True and by["records.jsonl:1"]["judge"] == "grounded"
    assert by["records.jsonl:2"]["reasons"][0] == "dense_short_window"
    assert by["records.jsonl:3"]["reasons"][0] == "sparse_long_window"
    assert by["records.jsonl:4"]["reasons"][0] == "no_visual_evidence"
    assert (by["records.jsonl:5"]["label"], by["records.jsonl:5"]["reasons"][0], by["records.jsonl:5"]["judge_reason"]) == \
        (False, "judge_guessing", "says it is unsure")
    assert (by["records.jsonl:6"]["label"], by["records.jsonl:6"]["judge"]) == (True, "unparsed")
    assert by["eval.jsonl:1"]["reasons"][0] == "wrong_answer"
    assert by["eval.jsonl:2"]["label"] is None and "exception" in by["eval.jsonl:2"]["reasons"][0]
    assert by["rollouts.jsonl:1"]["label"] is True and by["rollouts.jsonl:2"]["label"] is None

    report = json.loads((tmp_path / "kto.report.json").read_text())
    assert report["label_mix"]["before_balancing"] == {"chosen": 3, "rejected": 5, "chosen_fraction": 0.375}
    assert report["label_mix"]["written"] == {"chosen": 3, "rejected": 2, "chosen_fraction": 0.6}
    assert report["rejected_by_reason"] == {"dense_short_window": 1, "judge_guessing": 1, "no_visual_evidence": 1,
                                            "sparse_long_window": 1, "wrong_answer": 1}
    assert report["judge_verdicts"] == {"chosen:grounded": 2, "chosen:guessing": 1, "chosen:unparsed": 1}
    assert report["unusable"] == {"no_ground_truth": 1, "not_finished": 1}
    assert report["recommended_kto_weights"] == {"desirable_weight": 1.0, "undesirable_weight": 1.5}
    written = load_records(out)
    assert [r.label for r in written].count(True) == 3 and all(r.label is not None for r in written)

    # rerun: every verdict comes from the judge cache, the same output
    n, before = len(srv.requests()), out.read_text()
    assert main(args) == 0
    assert len(srv.requests()) == n and out.read_text() == before

    # the output loads in the KTO collator
    from transformers import AutoTokenizer

    from eva_fast.agent import ChatRenderer
    from eva_fast.train import EvaKTOCollator
    from tests._tiny_qwen import QWEN25VL_CHAT_TEMPLATE, qwen_tokenizer_dir

    renderer = ChatRenderer(AutoTokenizer.from_pretrained(qwen_tokenizer_dir()), QWEN25VL_CHAT_TEMPLATE)
    batch = EvaKTOCollator(renderer)(written)
    assert batch["label"].tolist() == [r.label for r in written] and batch["completion_mask"].sum() > 0


def test_no_judge_and_no_balance(inputs, tmp_path, capsys):
    from eva_fast.cli import main

    d, _ = inputs
    out = tmp_path / "kto.jsonl"
    assert main(["data", "kto-label", str(d / "records.jsonl"), "--out", str(out), "--no-judge", "--no-balance",
                 "--type", "mcq", "--extra-rejections", "wrong_answer,no_visual_evidence,dense_short_window,"
                 "sparse_long_window"]) == 0
    report = json.loads((tmp_path / "kto.report.json").read_text())
    # default rules: "dense" and "no_frames" are rejected; without a judge "guess" stays chosen
    assert report["label_mix"]["written"] == {"chosen": 4, "rejected": 2, "chosen_fraction": 0.6667}
    assert report["judge_verdicts"] == {}
    assert main(["data", "kto-label", str(d / "records.jsonl"), "--out", str(out)]) == 2
    assert "--judge-base-url URL, or pass --no-judge" in capsys.readouterr().err
    # the paper's rejected samples come from the judge: without one, only the opt-in rule can reject
    assert main(["data", "kto-label", str(d / "records.jsonl"), "--out", str(out), "--no-judge"]) == 2
    assert "extra rejection 'wrong_answer'" in capsys.readouterr().err
    assert main(["data", "kto-label", str(d / "records.jsonl"), "--out", str(out), "--no-judge",
                 "--extra-rejections", "wrong_answer,too_many"]) == 2
    assert "unknown extra rejection ['too_many']" in capsys.readouterr().err


def test_paper_labels_by_default(scripted_server, tmp_path, capsys):
    """Paper §3.2: rejected = the teacher's wrong trajectories the judge calls guessing (the judge reads
    only those; its prompt, reply and verdict are stored per sample); chosen = the right trajectories of
    a resampling run (the threshold rules do not reject them unless asked); 63/37; records trained
    with the student's system turn."""
    from eva_fast.agent import SYSTEM_PROMPT
    from eva_fast.cli import main

    teacher_runs = {  # the SFT-data construction run: wrong ones are the rejected candidates (gt "A")
        "w_unsure": [tool_call(0, 12, 4, 0.25), "I am not sure, maybe B. <answer>B</answer>"],
        "w_blind": ["Probably B. <answer>B</answer>"],
        "w_looked": [tool_call(0, 12, 4, 0.25), "The frames show B. <answer>B</answer>"],
        "r_teacher": [tool_call(0, 12, 4, 0.25), "<answer>A</answer>"],
    }
    resample_runs = {  # the resampling run: its right ones are chosen
        "c_ok": [tool_call(0, 12, 4, 0.25), "<answer>A</answer>"],
        "c_dense": [tool_call(4, 6, 8, 0.25), "<answer>A</answer>"],
        "c_blind": ["<answer>A</answer>"],
        "c_zoom": [tool_call(0, 12, 2, 0.25), tool_call(6, 8, 2, 0.5), "<answer>A</answer>"],
        "c_wrong": [tool_call(0, 12, 4, 0.25), "<answer>B</answer>"],
    }

    def write(path, runs, system=None):
        with open(path, "w") as f:
            for name, replies in runs.items():
                rec = record_from_trajectory(run_scripted(replies)[0], gt="A", source=f"x:{name}")
                if system:
                    rec.messages[0] = {"role": "system", "content": system}
                f.write(rec.to_json() + "\n")
        return path

    rejected_from = write(tmp_path / "teacher.trajectories.jsonl", teacher_runs, system="TEACHER PROMPT")
    chosen_from = write(tmp_path / "resample.sft.jsonl", resample_runs)
    srv = scripted_server({"replies": ['{"verdict": "grounded"}'], "routes": [
        {"match": "I am not sure", "replies": ['{"verdict": "guessing", "reason": "unsure"}']},
        {"match": "Probably B", "replies": ['{"verdict": "guessing", "reason": "no frames"}']},
    ]})
    out = tmp_path / "kto.jsonl"
    args = ["data", "kto-label", "--rejected-from", str(rejected_from), "--chosen-from", str(chosen_from),
            "--out", str(out), "--judge-base-url", srv.base_url, "--no-progress", *RULES]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["chosen"], summary["rejected"], summary["judged"], summary["unused"]) == (3, 2, 3, 3)

    # the judge read exactly the three wrong teacher trajectories
    prompts = [r["body"]["messages"][0]["content"] for r in srv.requests()]
    assert len(prompts) == 3 and sorted(p.rsplit("Final answer: ", 1)[1][0] for p in prompts) == ["B", "B", "B"]
    labels = {json.loads(line)["source"].split(":")[1]: json.loads(line) for line in open(tmp_path / "kto.labels.jsonl")}
    for name in ("w_unsure", "w_blind", "w_looked"):
        lab = labels[name]
        assert lab["judge_for"] == "rejected" and lab["judge_prompt"] in prompts  # the prompt it got, stored
        assert lab["judge_reply"] and lab["role"] == "rejected"
    assert (labels["w_unsure"]["label"], labels["w_unsure"]["judge"], labels["w_unsure"]["judge_reason"]) == \
        (False, "guessing", "unsure")
    assert labels["w_blind"]["reasons"] == ["judge_guessing"]
    assert (labels["w_looked"]["label"], labels["w_looked"]["reasons"]) == (None, ["unused: wrong_not_guessing"])
    assert labels["r_teacher"]["label"] is None and labels["r_teacher"]["judge"] is None  # SFT data, not KTO's
    assert labels["c_wrong"]["label"] is None and labels["c_wrong"]["judge"] is None
    # the threshold rules are reported but reject nothing by default
    assert labels["c_dense"]["flags"] == ["dense_short_window"] and labels["c_dense"]["label"] is True
    assert labels["c_blind"]["flags"] == ["no_visual_evidence"] and labels["c_blind"]["label"] is True

    report = json.loads((tmp_path / "kto.report.json").read_text())
    assert report["label_mix"]["before_balancing"] == {"chosen": 4, "rejected": 2, "chosen_fraction": 0.6667}
    # round(0.63 / 0.37 * 2) = 3 chosen kept next to the 2 rejected
    assert report["label_mix"]["written"] == {"chosen": 3, "rejected": 2, "chosen_fraction": 0.6}
    assert report["judge_verdicts"] == {"rejected:grounded": 1, "rejected:guessing": 2}
    assert report["unused"] == {"right_in_rejected_input": 1, "wrong_in_chosen_input": 1, "wrong_not_guessing": 1}
    assert report["run"]["labelling"] == "paper"
    written = load_records(out)
    assert sorted(r.label for r in written) == [False, False, True, True, True]
    assert all(r.messages[0]["content"] == SYSTEM_PROMPT for r in written)  # the teacher prompt replaced
    kto_lines = {lab["kto_line"] for lab in labels.values() if lab["kept"]}
    assert kto_lines == {1, 2, 3, 4, 5}

    # --record-system keep leaves the teacher prompt; the verdicts come from the cache
    n = len(srv.requests())
    assert main([*args, "--record-system", "keep"]) == 0
    assert len(srv.requests()) == n
    assert {r.messages[0]["content"] for r in load_records(out) if r.label is False} == {"TEACHER PROMPT"}
