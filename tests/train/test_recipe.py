"""``eva-fast recipe``: EVA's whole training recipe (paper §3.2-§4.1) end to end on CPU: the tiny
Qwen2.5-VL, a scripted teacher / judge / question writer behind a real OpenAI-compatible HTTP server
process, the three public datasets' fixture annotations (``tests/data/datasets``) over real test
videos; every stage for a step or two. The run is killed twice (in the teacher stage, and in SFT
after a checkpoint) and resumed: nothing finished is done again, nothing is lost; a last run skips
every stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import DATA
from tests.train.conftest import tool_call
from tests.train.test_data_sources import CGBENCH, HDVILA, LLAVA_FILES, make_roots

REPO = DATA.parent.parent


def structured(action: str, reflection: bool = False) -> str:
    head = "<reflection>The frames answer it.</reflection>" if reflection else ""
    return f"{head}<summary>I know the question.</summary><planning>Look at the video.</planning>{action}"


def _episode(call: str, answer: str, note: str = "", delay_s: float = 0.0) -> list:
    return [{"text": structured(call), "delay_s": delay_s},
            {"text": structured(f"{note}<answer>{answer}</answer>", True), "delay_s": delay_s}]


CALL = tool_call(0, 1, 2, 0.25)
#: The teacher's scripted episodes on the teacher side of the split (LLaVA-Video's bunny video, both
#: CG-Bench items; the NASA video's four questions are the RL pool): three right, three wrong; two of
#: the wrong ones are guesses ("I guess"), one looked and was wrong.
TEACHER = [
    ("Which animal appears in the video?", _episode(CALL, "B", delay_s=0.25)),
    ("What animal is the main character?", _episode(CALL, "a large white rabbit", delay_s=0.25)),
    ("What kind of animal is shown in the video?\nA. A fish", _episode(CALL, "A", "I guess a fish. ", 0.25)),
    ("What kind of animal is shown in the video?", _episode(CALL, "a fish", "The frames show a fish. ", 0.25)),
    ("What color dominates the picture?\nA. red", _episode(CALL, "C", delay_s=0.25)),
    ("What color dominates the picture?", _episode(CALL, "red", "I guess red. ", 0.25)),
]
QA_WRITER = {  # data enhancement: two new questions per unseen HD-VILA video (by the length the prompt gives)
    12: [{"question": "What is seen through the clouds?", "answer": "the earth", "category": "objects"},
         {"question": "Where was the camera when this was filmed?", "answer": "in orbit", "category": "scene"}],
    14: [{"question": "What kind of animal is on screen?", "answer": "a cockatoo", "category": "objects"},
         {"question": "What color are its feathers?", "answer": "white", "category": "attributes"}],
}


def _script() -> dict:
    routes = [
        {"match": "I guess", "replies": ['{"verdict": "guessing", "reason": "it says it guesses"}']},
        {"match": "You review how a video agent", "replies": ['{"verdict": "grounded"}']},
        *({"match": f"its length is {n} seconds", "replies": [json.dumps(qa)]} for n, qa in QA_WRITER.items()),
        *({"match": q, "replies": eps} for q, eps in TEACHER),
    ]
    return {"replies": ["no script"], "routes": routes}


def _recipe(tmp_path, srv, tiny_qwen_dir) -> dict:
    roots = make_roots(tmp_path / "videos")
    cpu = {"use_cpu": True, "bf16": False, "gradient_checkpointing": False, "report_to": "none", "disable_tqdm": True,
           "logging_steps": 1, "dataloader_num_workers": 0, "seed": 0, "dtype": "float32"}
    return {
        "name": "eva-cpu-test",
        "out_dir": str(tmp_path / "recipe"),
        "roots": roots,
        "datasets": {"llava_video": LLAVA_FILES, "cgbench": CGBENCH, "hdvila": HDVILA},
        "models": {"teacher": {"backend": "openai", "base_url": srv.base_url}},
        "stages": {
            "teacher": {"concurrency": 1},
            "sft": {"config": str(REPO / "configs/train/sft.yaml"), "overrides": {
                **cpu, "model_name_or_path": str(tiny_qwen_dir), "attn_implementation": "sdpa", "max_steps": 3,
                "per_device_train_batch_size": 1, "learning_rate": 0.01, "lr_scheduler_type": "constant",
                "warmup_steps": 0, "save_strategy": "steps", "save_steps": 1}},
            "resample": {"samples_per_question": 2, "concurrency": 4},
            "kto_labels": {},
            "kto": {"config": str(REPO / "configs/train/kto.yaml"), "overrides": {
                **cpu, "attn_implementation": "sdpa", "max_steps": 1, "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1, "warmup_steps": 0, "save_strategy": "no"}},
            "rl_set": {"backend_args": {"device": "cpu"}, "max_turns": 2, "max_new_tokens": 8, "concurrency": 4},
            "grpo": {"config": str(REPO / "configs/train/grpo.yaml"), "overrides": {
                **cpu, "attn_implementation": "sdpa", "max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2,
                "generation_batch_size": 2, "judge": "none", "use_vllm": False, "decode_device": "cpu",
                "max_turns": 2, "max_new_tokens": 8, "save_strategy": "no", "dump_every_steps": 1, "dump_num": 0}},
            "enhance": {"questions_per_video": 2, "frames": 2, "resize": 0.25, "self_check": False, "concurrency": 1},
            "grpo_enhanced": {"config": str(REPO / "configs/train/grpo.yaml"), "overrides": {
                **cpu, "attn_implementation": "sdpa", "max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2,
                "generation_batch_size": 2, "judge": "none", "use_vllm": False, "decode_device": "cpu",
                "max_turns": 2, "max_new_tokens": 8, "save_strategy": "no", "dump_every_steps": 1, "dump_num": 0}},
        },
    }


def _start(cfg_path, *extra) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "eva_fast.cli", "recipe", "run", "--config", str(cfg_path), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout_s: float = 600, group: bool = True) -> None:
    """SIGKILL the run once ``ready()``: its whole process group, or (``group=False``) the recipe
    process alone (its training child must then die with it)."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if ready():
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended before {what}: {proc.communicate()[1][-4000:]}")
            time.sleep(0.05)
        else:
            pytest.fail(f"no {what} within {timeout_s} s")
    finally:
        if proc.poll() is None:
            (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait(60)


def _pids_running(needle: str) -> list[int]:
    """Processes whose command line contains ``needle`` (Linux ``/proc``)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if needle.encode() in f.read():
                        out.append(int(d))
            except OSError:
                continue
    return out


def _finish(proc: subprocess.Popen, timeout_s: float = 900) -> str:
    try:
        _, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-6000:]
    return err


def _prov(out, stage):
    from eva_fast.train._recipe import STAGES

    return json.loads((out / f"{STAGES.index(stage) + 1:02d}_{stage}" / "provenance.json").read_text())


def _lines(path) -> int:
    return sum(1 for line in open(path, "rb") if line.strip())


def _first_turns(srv, temperature):
    """The question of every first-turn request the teacher got at ``temperature``."""
    out = []
    for r in srv.requests():
        m = r["body"]["messages"]
        if len(m) == 2 and m[0]["role"] == "system" and r["body"].get("temperature", 0) == temperature:
            out.append(m[1]["content"])
    return out


def test_dry_run_lists_the_ten_stages(capsys, monkeypatch):
    from eva_fast.cli import main
    from eva_fast.train._recipe import STAGES

    monkeypatch.chdir(REPO)
    assert main(["recipe", "run", "--config", str(REPO / "configs/recipe/eva.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    heads = [line.split()[:2] for line in out.splitlines() if line[:2].strip().isdigit()]
    assert heads == [[str(k + 1), s] for k, s in enumerate(STAGES)]
    assert "nothing is run" in out and "train kto --config" in out
    # the shipped recipe: paper values where the paper gives them
    from eva_fast.train._recipe import Recipe

    r = Recipe.load(REPO / "configs/recipe/eva.yaml")
    assert r.stages["kto_labels"]["chosen_fraction"] == 0.63 and r.stages["rl_set"]["mcq_ratio"] == 0.1
    assert r.stages["kto_labels"]["extra_rejections"] == [] and r.stages["resample"]["from"] == "teacher"
    assert r.train_config("kto")["learning_rate"] == r.train_config("sft")["learning_rate"]  # paper §3.2


#: recipe keys that are paths, servers or bookkeeping, not settings of the method
NOT_SETTINGS = {"name", "out_dir", "max_questions", "max_videos", "backend", "base_url", "model", "backend_args",
                "judge", "launcher", "experiences", "limit", "agent_args", "concurrency", "config", "overrides",
                "prompt_dir"}


def test_every_recipe_setting_says_where_it_comes_from():
    """Each setting of configs/recipe/eva.yaml (a key with a value on its line; paths, servers and
    bookkeeping excepted) says "paper (...)" or "chosen here (...)", as configs/train does."""
    import re

    lines = (REPO / "configs/recipe/eva.yaml").read_text().splitlines()
    section, checked = None, []
    for line in lines:
        m = re.match(r"^(\s*)([a-z_0-9]+):(.*)$", line)
        if not m:
            continue
        if not m.group(1):
            section = m.group(2)
        value = m.group(3).partition(" #")[0].strip()
        if not value or m.group(2) in NOT_SETTINGS or section == "roots":
            continue
        comment = line.partition(" # ")[2].strip()
        assert re.match(r"(paper|chosen here) \(.+\)", comment), f"{line!r} does not say where its value comes from"
        checked.append(m.group(2))
    assert {"chosen_fraction", "mcq_ratio", "extra_rejections", "from", "rl_pool_fraction", "samples_per_question",
            "temperature", "require_structure", "keep_below", "questions_per_video"} <= set(checked)


def test_config_errors(tmp_path, capsys, monkeypatch):
    from eva_fast.cli import main
    from eva_fast.train._recipe import Recipe, RecipeError, parse_set

    monkeypatch.chdir(REPO)  # the default stage configs are configs/train/*.yaml, relative to the working directory
    base = {"roots": {"cgbench": str(tmp_path)}, "datasets": {"cgbench": CGBENCH},
            "models": {"teacher": {"base_url": "http://127.0.0.1:9/v1"}}}
    Recipe.from_mapping(base)
    with pytest.raises(RecipeError, match=r"recipe.stages.kto_labels: unknown keys \['chosen'\]"):
        Recipe.from_mapping({**base, "stages": {"kto_labels": {"chosen": 0.5}}})
    with pytest.raises(RecipeError, match="roots has no 'llava_video' entry"):
        Recipe.from_mapping({**base, "datasets": {"llava_video": LLAVA_FILES}})
    with pytest.raises(RecipeError, match="stages.kto.config 'nope.yaml' does not exist"):
        Recipe.from_mapping({**base, "stages": {"kto": {"config": "nope.yaml"}}})
    with pytest.raises(RecipeError, match="dump_every_steps > 0"):
        Recipe.from_mapping({**base, "stages": {"grpo": {"overrides": {"dump_every_steps": 0}}}})
    with pytest.raises(RecipeError, match="stages.rl_set.base_url is required with the openai backend"):
        Recipe.from_mapping({**base, "stages": {"rl_set": {"backend": "openai"}}})
    with pytest.raises(RecipeError, match="extra_rejections \\['strict'\\] unknown"):
        Recipe.from_mapping({**base, "stages": {"kto_labels": {"extra_rejections": ["strict"]}}})
    with pytest.raises(RecipeError, match=r"datasets.cgbench_form must be one of \('mcq', 'open', 'both'\), got 'mc'"):
        Recipe.from_mapping({**base, "datasets": {"cgbench": CGBENCH, "cgbench_form": "mc"}})
    with pytest.raises(RecipeError, match=r"--set 'stages.sft.a=2': stages.sft was set to a value by an earlier --set"):
        parse_set(["stages.sft=1", "stages.sft.a=2"])
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(base))
    assert main(["recipe", "run", "--config", str(cfg), "--set", "stages.resample.from=student", "--dry-run"]) == 2
    assert "stages.resample.from must be 'teacher' or 'sft'" in capsys.readouterr().err


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


@pytest.mark.parametrize("die_with_parent", [True, False])
def test_training_child_dies_with_the_recipe_process(die_with_parent):
    """A training stage's process is started with ``_die_with_parent`` (PR_SET_PDEATHSIG): when the
    recipe process is killed, it is killed too (without it, it would go on writing the stage folder)."""
    code = ("import subprocess, sys, time\n"
            "from eva_fast.train._recipe import _die_with_parent\n"
            "kw = {'preexec_fn': _die_with_parent} if sys.argv[1] == '1' else {}\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], **kw)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code, "1" if die_with_parent else "0"], stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = _alive(child)
    if survived:
        os.kill(child, signal.SIGKILL)
    assert survived is not die_with_parent


@pytest.mark.slow
def test_recipe_end_to_end_survives_kills(scripted_server, tiny_qwen_dir, tmp_path, capsys):
    from eva_fast.train import load_records, load_rl_set
    from eva_fast.train._recipe import STAGES, Recipe, plan

    srv = scripted_server(_script())
    cfg_path = tmp_path / "recipe.yaml"
    cfg_path.write_text(yaml.safe_dump(_recipe(tmp_path, srv, tiny_qwen_dir)))
    out = tmp_path / "recipe"
    teacher_cache = out / "01_teacher" / "teacher.cache.jsonl"

    # run 1: killed in the teacher stage after two of its six episodes
    _kill_when(_start(cfg_path), lambda: teacher_cache.exists() and _lines(teacher_cache) >= 2, "teacher episodes")
    done_before_kill = _lines(teacher_cache)
    assert 2 <= done_before_kill < 6
    done_indices = {json.loads(line)["index"] for line in open(teacher_cache) if line.strip()}
    questions = {json.loads(line)["index"]: json.loads(line)["prompt"][1]["content"]
                 for line in open(out / "01_teacher" / "teacher.questions.jsonl")}
    assert _prov(out, "teacher")["status"] == "running"
    assert [p.state for p in plan(Recipe.load(cfg_path))][:2] == ["partial", "blocked"]

    # run 2: the teacher resumes; the recipe process is killed in SFT once a checkpoint is written,
    # and its training child dies with it
    ckpt = out / "03_sft" / "checkpoint-1" / "trainer_state.json"
    _kill_when(_start(cfg_path), ckpt.exists, "SFT checkpoint", group=False)
    trainer = str(out / "03_sft" / "train.yaml")
    deadline = time.monotonic() + 10
    while _pids_running(trainer) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _pids_running(trainer)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "the SFT process outlived the recipe process"
    teacher = _prov(out, "teacher")
    assert teacher["status"] == "complete" and teacher["attempts"] == 2
    assert teacher["summary"]["from_cache"] == done_before_kill and teacher["summary"]["ran_now"] == 6 - done_before_kill, teacher
    # nothing the first run finished was asked again (only the episode in flight at the kill runs twice)
    asked = _first_turns(srv, 0.0)
    def times_asked(q):
        return sum(a.endswith(". " + q) for a in asked)

    assert all(times_asked(questions[i]) == 1 for i in done_indices), asked
    assert all(times_asked(q) >= 1 for q in questions.values()) and len(asked) <= 6 + 1  # concurrency 1: one in flight
    run_ids = {s: _prov(out, s)["run_id"] for s in ("teacher", "sft_data")}
    assert _prov(out, "sft")["status"] == "running"

    # run 3: SFT resumes from its checkpoint; every stage after it runs
    err = _finish(_start(cfg_path))
    assert "1/10 teacher: skip" in err and "2/10 sft_data: skip" in err and "3/10 sft: resume" in err
    assert {s: _prov(out, s)["run_id"] for s in run_ids} == run_ids  # done stages were not redone
    sft = _prov(out, "sft")
    assert sft["attempts"] == 2 and sft["summary"]["resumed_from"].startswith("checkpoint-")
    assert sft["summary"]["steps"] == 3
    state = json.loads((out / "03_sft" / "checkpoint-3" / "trainer_state.json").read_text())
    first = json.loads(ckpt.read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]  # nothing lost
    assert state["log_history"][0]["loss"] == first["log_history"][0]["loss"]  # the same step 1, not retrained

    plans = plan(Recipe.load(cfg_path))
    assert [(p.stage, p.state) for p in plans] == [(s, "done") for s in STAGES]

    # what each stage made (fixture counts)
    imp = _prov(out, "teacher")["summary"]["import"]
    assert (imp["llava_video"]["questions"], imp["llava_video"]["missing_videos"]) == (6, 2)
    assert (imp["cgbench"]["questions"], imp["hdvila"]["videos"]) == (4, 2)
    assert (imp["llava_video"]["teacher_qa"] + imp["cgbench"]["teacher_qa"],
            imp["llava_video"]["rl_pool"] + imp["cgbench"]["rl_pool"]) == (6, 4)
    assert _prov(out, "sft_data")["summary"]["kept"] == 3
    assert _prov(out, "resample")["summary"]["kept"] == 6  # 3 right questions x 2 samples
    labels = _prov(out, "kto_labels")["summary"]
    # paper: the 2 guessing wrong trajectories rejected, the grounded wrong one unused, 63/37 -> 3 chosen
    assert (labels["chosen"], labels["rejected"], labels["judged"]) == (3, 2, 3)
    assert labels["judge_verdicts"] == {"rejected:grounded": 1, "rejected:guessing": 2}
    kto = load_records(out / "05_kto_labels" / "kto.jsonl")
    assert sorted(r.label for r in kto) == [False, False, True, True, True]
    lab = [json.loads(line) for line in open(out / "05_kto_labels" / "kto.labels.jsonl")]
    assert sum(1 for x in lab if x["judge_prompt"] and "You review how a video agent" in x["judge_prompt"]) == 3
    rl = load_rl_set(out / "07_rl_set" / "rl.jsonl")
    pool = load_rl_set(out / "01_teacher" / "data" / "rl_pool.jsonl")
    assert len(pool) == 4 and [s.type for s in rl].count("mcq") == 1 and len(rl) == 3  # the tiny model fails all 4
    assert all(s.provenance["rl_set"]["model"]["model"] == str(out / "06_kto") for s in rl)
    dumps = sorted((out / "08_grpo" / "rollouts").glob("step-*.jsonl"))
    assert dumps and _lines(dumps[0]) == 2  # 1 question x 2 episodes
    enh = _prov(out, "enhance")["summary"]
    assert enh["questions"]["appended_to_rl_set"] == 4 and enh["rl_set_lines"] == 7
    for s in ("sft", "kto", "grpo", "grpo_enhanced"):
        d = out / f"{STAGES.index(s) + 1:02d}_{s}"
        assert (d / "model.safetensors").is_file() and _prov(out, s)["summary"]["steps"] >= 1
    for s in STAGES:  # provenance: stage, config hash, inputs (with the stage and run they come from), outputs
        p = _prov(out, s)
        assert p["stage"] == s and p["config_hash"] and p["outputs"] and all(o["digest"] for o in p["outputs"])
        assert all(x["run_id"] == _prov(out, x["from_stage"])["run_id"] for x in p["inputs"] if x.get("from_stage"))

    # run 4: everything done: skipped, no request, no training
    n, logs = len(srv.requests()), {s: (out / f"{STAGES.index(s) + 1:02d}_{s}" / "train.log").read_text()
                                      for s in ("sft", "kto", "grpo", "grpo_enhanced")}
    err = _finish(_start(cfg_path))
    assert err.count(": skip") == 10 and len(srv.requests()) == n
    assert all((out / f"{STAGES.index(s) + 1:02d}_{s}" / "train.log").read_text() == v for s, v in logs.items())

    # status: every stage done, with its counts
    from eva_fast.cli import main

    assert main(["recipe", "status", "--config", str(cfg_path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["stage"], r["state"]) for r in rows] == [(s, "done") for s in STAGES]
    assert rows[4]["summary"]["chosen"] == 3 and rows[0]["attempts"] == 2

    # a changed setting makes that stage stale: the run stops and names it; status shows it
    changed = yaml.safe_load(cfg_path.read_text())
    changed["stages"]["enhance"]["questions_per_video"] = 3
    cfg2 = tmp_path / "changed.yaml"
    cfg2.write_text(yaml.safe_dump(changed))
    proc = _start(cfg2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "stage 9 enhance is stale" in err and "--redo-stale" in err
    states = [p.state for p in plan(Recipe.load(cfg2))]
    assert states[:8] == ["done"] * 8 and states[8] == "stale"


def test_a_failed_stage_is_recorded_and_named(tmp_path, capsys, monkeypatch):
    """A stage that fails keeps its provenance as 'failed' with the error (status shows it, the stage
    is partial and would resume); a later config change to it asks for --redo-stale."""
    from eva_fast.cli import main
    from eva_fast.train._recipe import Recipe, plan

    monkeypatch.chdir(REPO)
    roots = make_roots(tmp_path / "videos")
    cfg = {"out_dir": str(tmp_path / "r"), "roots": roots, "datasets": {"cgbench": CGBENCH, "rl_pool_fraction": 1.0},
           "models": {"teacher": {"base_url": "http://127.0.0.1:9/v1"}}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["recipe", "run", "--config", str(path)]) == 2
    assert "stage teacher: no teacher questions after the import" in capsys.readouterr().err
    prov = json.loads((tmp_path / "r" / "01_teacher" / "provenance.json").read_text())
    assert prov["status"] == "failed" and "no teacher questions" in prov["error"] and prov["attempts"] == 1
    p = plan(Recipe.load(path))[0]
    assert p.state == "partial" and "it failed: RecipeError" in p.reason
    assert main(["recipe", "status", "--config", str(path)]) == 0
    assert "partial" in capsys.readouterr().out
    cfg["datasets"]["rl_pool_fraction"] = 0.5
    path.write_text(yaml.safe_dump(cfg))
    assert main(["recipe", "run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "stage 1 teacher is stale" in err and "did not finish" in err and "--redo-stale" in err


def test_a_stage_without_its_outputs_fails(tmp_path, monkeypatch):
    """A stage that returns without writing its outputs is recorded as failed (not left 'running'),
    and the error names the missing files."""
    from eva_fast.train import _recipe
    from eva_fast.train._recipe import Recipe, RecipeError, plan, run

    monkeypatch.chdir(REPO)
    monkeypatch.setitem(_recipe._DATA_STAGES, "teacher", lambda r, s, d, data: {})  # writes nothing
    roots = make_roots(tmp_path / "videos")
    r = Recipe.from_mapping({"out_dir": str(tmp_path / "r"), "roots": roots, "datasets": {"cgbench": CGBENCH},
                             "models": {"teacher": {"base_url": "http://127.0.0.1:9/v1"}}})
    with pytest.raises(RecipeError, match=r"stage teacher finished without its outputs \[.*teacher_qa.jsonl"):
        run(r)
    prov = json.loads((tmp_path / "r" / "01_teacher" / "provenance.json").read_text())
    assert prov["status"] == "failed" and "without its outputs" in prov["error"]
    assert plan(r)[0].state == "partial"
