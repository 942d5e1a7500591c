"""``eva-fast data rl-set`` (paper §3.3: the initial RL set is the KTO model's failure cases; §4.1:
90 % open / 10 % multiple choice) with the model behind a real OpenAI-compatible HTTP server process
(scripted replies): which questions are failures, the mix, provenance per line, errors not scored,
resume, and shards + merge giving the unsharded set."""

from __future__ import annotations

import json

from eva_fast.train import load_rl_set
from tests.conftest import DATA

VIDEO = str(DATA / "nasa_13013.mp4")
#: (question fields, reply): 10 open questions (9 answered wrong), 2 multiple choice (both wrong),
#: 1 refused by the server (HTTP 400: an infrastructure error, not the model's failure).
POOL = ([({"video": VIDEO, "question": f"Open question {i}: what is shown?", "answer": "the planet earth",
           "type": "open", "source": f"pool#{i}", "id": f"o{i}"},
          "<answer>the planet earth</answer>" if i == 9 else "<answer>a red car</answer>") for i in range(10)]
        + [({"video": VIDEO, "question": f"Choice question {i}?", "options": ["yes", "no"], "answer": "A",
             "type": "mcq", "source": f"pool#m{i}", "id": f"m{i}"}, "<answer>B</answer>") for i in range(2)]
        + [({"video": VIDEO, "question": "Refused question?", "answer": "x", "type": "open", "id": "r"},
            {"text": "", "status": 400})])


def _pool(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q, _ in POOL))
    return path


def _cli(*args):
    from eva_fast.cli import main

    return main(["data", "rl-set", *map(str, args)])


def test_failures_mix_and_provenance(scripted_server, tmp_path, capsys):
    srv = scripted_server({"replies": ["no script"], "routes": [{"match": q["question"], "replies": [r]} for q, r in POOL]})
    pool = _pool(tmp_path)
    out = tmp_path / "rl"
    assert _cli(pool, "--out", out, "--base-url", srv.base_url, "--no-progress", "--concurrency", 4) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["questions_scored"], summary["questions_right"], summary["failure_cases"]) == (12, 1, 11)
    assert summary["episodes_with_errors"] == 1 and summary["written"] == 10

    failures = load_rl_set(out / "policy.failures.jsonl")
    assert [s.id for s in failures] == [f"o{i}" for i in range(9)] + ["m0", "m1"]
    rl = load_rl_set(out / "rl.jsonl")
    # 9 open failures and 2 mcq: round(9 * 0.1 / 0.9) = 1 mcq kept -> 90 % open / 10 % mcq
    assert [s.type for s in rl].count("open") == 9 and [s.type for s in rl].count("mcq") == 1
    assert {s.id for s in rl} <= {s.id for s in failures}
    prov = rl[0].provenance["rl_set"]
    assert (prov["episodes"], prov["right"], prov["answers"], prov["stop_reasons"]) == (1, 0, ["a red car"], ["answer_found"])
    assert prov["model"]["backend"] == "openai" and prov["mcq_ratio"] == 0.1 and prov["pool_index"] == 0
    assert rl[0].source == "pool#0" and rl[0].answer == "the planet earth"  # the pool's line, unchanged
    report = json.loads((out / "rl.report.json").read_text())
    assert report["rl_set"] == {"questions": 10, "mcq": 1, "open": 9, "mcq_fraction": 0.1}
    assert report["failure_cases"] == {"questions": 11, "mcq": 2, "open": 9, "mcq_fraction": 0.1818}

    # a rerun asks the server nothing and writes the same set
    n, before = len(srv.requests()), (out / "rl.jsonl").read_text()
    assert _cli(pool, "--out", out, "--base-url", srv.base_url, "--no-progress") == 0
    assert len(srv.requests()) == n and (out / "rl.jsonl").read_text() == before
    assert "13 episode(s) already done, 0 to run" in capsys.readouterr().err
    assert _cli(pool, "--out", out, "--base-url", srv.base_url, "--no-progress", "--retry-errors") == 0
    assert "12 episode(s) already done, 1 to run" in capsys.readouterr().err  # only the refused one again
    assert len(srv.requests()) == n + 1 and (out / "rl.jsonl").read_text() == before

    # two shards, then --merge: the same RL set as the unsharded run
    sharded = tmp_path / "sharded"
    for i in range(2):
        assert _cli(pool, "--out", sharded, "--base-url", srv.base_url, "--no-progress", "--shard", f"{i}/2") == 0
    assert not (sharded / "rl.jsonl").exists()
    assert _cli("--merge", *sorted(sharded.glob("policy.shard-*-of-2.failures.jsonl")), "--out", sharded) == 0
    assert (sharded / "rl.jsonl").read_text().replace(str(sharded), "X").count("\n") == 10
    strip = [{k: v for k, v in s.to_dict().items() if k != "provenance"} for s in load_rl_set(sharded / "rl.jsonl")]
    assert strip == [{k: v for k, v in s.to_dict().items() if k != "provenance"} for s in rl]

    # --no-mix keeps every failure; a mix the failures cannot make is a clear error
    assert _cli(pool, "--out", out, "--base-url", srv.base_url, "--no-progress", "--no-mix") == 0
    assert len(load_rl_set(out / "rl.jsonl")) == 11
    capsys.readouterr()
    assert _cli(pool, "--out", out, "--base-url", srv.base_url, "--no-progress", "--mcq-ratio", "1.0", "--limit", 3) == 2
    assert "0 multiple-choice and 3 open failure cases cannot make the mix mcq_ratio=1.0" in capsys.readouterr().err
