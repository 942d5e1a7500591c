"""The GPU check without a GPU: scripts/gpu_check.sh's runner (timeouts, failures, skips, budget,
partial results after a kill, the result-file limit) on stub steps, its dry run, and
scripts/gpu_results.py on a returned folder built here (synthetic numbers, in tmp_path only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
CARRY = ROOT / "gpu_carry"
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_probe  # noqa: E402
import gpu_results  # noqa: E402


def _env(**extra: str) -> dict:
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable}
    env.update(extra)
    return env


def _check(args: list[str], steps: str | None = None, tmp_path: Path | None = None, timeout: float = 120,
           **env: str) -> subprocess.CompletedProcess:
    if steps is not None:
        f = tmp_path / "steps.sh"
        f.write_text(steps)
        env["GPU_CHECK_STEPS_FILE"] = str(f)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(**env), cwd=ROOT)


def _steps(out: Path) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads((out / "machine.json").read_text())["steps"]}


STUBS = r"""
STEPS=(
  "first   20   -      one.jsonl"
  "fails   20   -      -"
  "after   20   fails  two.jsonl"
  "hangs   2    -      three.jsonl"
  "last    20   first  four.jsonl"
)
step_first() { echo '{"a": 1}' >> "$OUT/one.jsonl"; echo "first: mode $MODE, given ${STEP_TIMEOUT_S}s"; }
step_fails() { echo "about to fail"; return 3; }
step_after() { echo never > "$OUT/two.jsonl"; }
step_hangs() { echo '{"partial": 1}' >> "$OUT/three.jsonl"; sleep 60; echo '{"never": 1}' >> "$OUT/three.jsonl"; }
step_last() { echo '{"b": 2}' >> "$OUT/four.jsonl"; }
"""


def test_runner_records_ok_failed_skipped_and_timed_out_steps(tmp_path):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    res = _check(["--out", str(out), "--cpu"], STUBS, tmp_path)
    elapsed = time.perf_counter() - t0
    assert res.returncode == 1, res.stdout + res.stderr  # not every step ok
    # the hanging step's whole process group was killed at its 2 s timeout (else tee waits 60 s)
    assert elapsed < 30, elapsed
    st = _steps(out)
    assert st["first"]["status"] == "ok" and st["first"]["rc"] == 0 and st["first"]["files"] == ["one.jsonl"]
    assert st["fails"]["status"] == "failed" and st["fails"]["rc"] == 3
    assert "about to fail" in st["fails"]["log_tail"]
    assert st["after"]["status"] == "skipped" and st["after"]["reason"] == "needs fails, which failed"
    assert not (out / "two.jsonl").exists()
    assert st["hangs"]["status"] == "timeout" and st["hangs"]["rc"] in (124, 137)
    assert 1.5 <= st["hangs"]["wall_s"] < 15
    assert (out / "three.jsonl").read_text().splitlines() == ['{"partial": 1}']  # what it flushed survives
    assert st["last"]["status"] == "ok"
    log = (out / "log.txt").read_text()
    assert "first: mode cpu, given 20s" in log and "about to fail" in log
    assert "step hangs: timeout" in log
    assert sorted(p.name for p in out.iterdir()) == ["four.jsonl", "log.txt", "machine.json", "one.jsonl", "three.jsonl"]


def test_only_skip_and_bad_arguments(tmp_path):
    out = tmp_path / "out"
    res = _check(["--out", str(out), "--only", "first,last"], STUBS, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(_steps(out)) == {"first", "last"}
    res = _check(["--out", str(tmp_path / "o2"), "--skip", "fails,hangs,after"], STUBS, tmp_path)
    assert res.returncode == 0 and set(_steps(tmp_path / "o2")) == {"first", "last"}
    res = _check(["--only", "nosuch"], STUBS, tmp_path)
    assert res.returncode == 2 and "unknown step 'nosuch'" in res.stderr
    res = _check(["--frobnicate"])
    assert res.returncode == 2 and "unknown argument '--frobnicate'" in res.stderr
    res = _check(["--budget-s", "soon"])
    assert res.returncode == 2 and "--budget-s must be a whole number" in res.stderr
    res = _check(["--list"])
    assert res.returncode == 0
    assert [ln.split()[0] for ln in res.stdout.splitlines()[1:]] == ["machine", "build", "pytest", "bench", "rollout", "limits", "pack", "soak"]


def test_budget_caps_steps_and_skips_what_does_not_fit(tmp_path):
    steps = r"""
STEPS=("slow 30 - -" "next 30 - -")
step_slow() { sleep 3; }
step_next() { echo ran; }
"""
    out = tmp_path / "out"
    res = _check(["--out", str(out), "--budget-s", "12"], steps, tmp_path)
    st = _steps(out)
    assert st["slow"]["status"] == "ok" and st["slow"]["timeout_s"] == 12  # min(30, budget left)
    assert st["next"]["status"] == "skipped" and "no time left in the 12s budget" in st["next"]["reason"]
    assert res.returncode == 1


def test_result_file_limit_is_enforced(tmp_path):
    steps = r"""
STEPS=("many 20 - -")
step_many() { for i in 1 2 3 4 5 6 7; do echo x > "$OUT/f$i.txt"; done; }
"""
    out = tmp_path / "out"
    res = _check(["--out", str(out)], steps, tmp_path)
    assert res.returncode == 1
    assert "only 8 come back" in (out / "log.txt").read_text()


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (the runner and what it started, whatever group)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: session id
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_killed_run_keeps_what_finished(tmp_path):
    """The device tool kills a command that outlives its limit: machine.json and the rows written so
    far must still be there and readable."""
    steps = r"""
STEPS=("first 20 - one.jsonl" "long 60 - two.jsonl")
step_first() { echo '{"a": 1}' >> "$OUT/one.jsonl"; }
step_long() { echo '{"row": 1}' >> "$OUT/two.jsonl"; sleep 60; }
"""
    f = tmp_path / "steps.sh"
    f.write_text(steps)
    out = tmp_path / "out"
    proc = subprocess.Popen(["bash", str(SCRIPT), "--out", str(out)], cwd=ROOT, start_new_session=True,
                            env=_env(GPU_CHECK_STEPS_FILE=str(f)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not (out / "two.jsonl").exists():
            time.sleep(0.2)
        assert (out / "two.jsonl").exists()
    finally:
        _kill_session(proc.pid)
        proc.wait(timeout=10)
    st = _steps(out)  # valid JSON: rewritten atomically after each step
    assert st["first"]["status"] == "ok" and "long" not in st
    assert (out / "two.jsonl").read_text() == '{"row": 1}\n'
    assert "=== step long" in (out / "log.txt").read_text()


def test_real_machine_step_in_cpu_mode(tmp_path):
    """The real `machine` step, as the GPU run calls it: machine.json records this CPU machine."""
    out = tmp_path / "out"
    res = _check(["--out", str(out), "--cpu", "--only", "machine"])
    assert res.returncode == 0, res.stdout + res.stderr
    rec = json.loads((out / "machine.json").read_text())
    m = rec["machine"]
    assert m["cpu"]["cores"] >= 1 and m["python"]["executable"] == sys.executable
    assert set(m["libs"]) == {"libcuda.so.1", "libnvcuvid.so.1", "libnvidia-encode.so.1"}
    assert "torch" in m["packages"]
    assert rec["source"]["digest"] == gpu_probe.source_digest(ROOT)[0]
    assert [s["name"] for s in rec["steps"]] == ["machine"]


def test_limits_step_in_cpu_mode(tmp_path, repo):
    """The real `limits` step in its CPU form: the CPU limit (ffmpeg -threads N), eva_fast's four calls
    as fractions of it with their frames checked, and the rows rendered by gpu_results.py."""
    out = tmp_path / "out"
    res = _check(["--out", str(out), "--cpu", "--only", "limits"], timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [json.loads(x) for x in (out / "limits.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["env", "ffmpeg", "eva", "eva", "eva", "eva", "workers", "workers", "summary"]
    ff = rows[1]
    assert ff["label"] == "cpu_threads" and ff["ok"] and ff["threads"] == os.cpu_count()
    assert ff["frames"] == 390 and ff["fps"] == pytest.approx(390 / ff["s"], rel=0.01)  # nasa_13013 stream 3
    for r in rows[2:6]:
        assert r["check_ok"] and r["device"] == "cpu" and r["limit"] == "cpu_threads" and r["decoded"] > 0
        assert r["fraction_of_limit"] == pytest.approx(r["decoded_fps"] / ff["fps"], abs=2e-3)
    assert [r["call"] for r in rows[2:6]] == ["dense", "survey256", "survey256_snap", "survey64"]
    assert rows[-1]["checks_failed"] == 0 and rows[-1]["limits"]["cpu_threads"] == ff["fps"]
    # decoders per request (#24): survey256 with 1 and 2 CPU decoders, the same frames
    sweep = rows[6:8]
    assert [(r["call"], r["workers"], r["gop_workers_used"]) for r in sweep] == [("survey256", 1, 1), ("survey256", 2, 2)]
    assert all(r["frames_equal_first"] and r["device"] == "cpu" and r["decoded"] > 0 for r in sweep)
    gpu_results.convert(out, tmp_path / "results", repo, commit=_git(repo, "rev-parse", "HEAD"))
    text = gpu_results.render(tmp_path / "results")
    assert "Decode limits on nasa_13013.mp4 (480x270 h264" in text
    assert f"| `ffmpeg -threads {os.cpu_count()}` (CPU) |" in text
    assert "| eva_fast `cpu` (cpu), survey256 256 @ 0.1:" in text and "of cpu_threads |" in text
    assert "| eva_fast `cpu`, survey256 with 2 decoders per request (2 used)" in text


@pytest.fixture(scope="module")
def dry_run() -> subprocess.CompletedProcess:
    """One dry run for the tests below: with the carry checks where a gpu_carry/ exists."""
    return _check(["--dry-run"] + ([] if CARRY.is_dir() else ["--no-carry"]))


def test_dry_run_checks_every_step(dry_run, tmp_path):
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    for name in ("machine", "build", "pytest", "bench", "rollout", "limits", "pack", "soak"):
        assert f"[ok]   {name} " in dry_run.stdout
    assert "python entry points answer --help" in dry_run.stdout
    assert 'run(command="bash scripts/gpu_check.sh --out $OUT", carry=["gpu_carry"], timeout_s=540)' in dry_run.stdout
    broken = r"""
STEPS=("machine 30 - -" "ghost 30 - -" "late 30 later -")
step_late() { :; }
"""
    res = _check(["--dry-run", "--no-carry"], broken, tmp_path)
    assert res.returncode == 1
    assert "no function step_ghost" in res.stdout and "not an earlier step" in res.stdout


@pytest.mark.skipif(not CARRY.is_dir(), reason="no gpu_carry/ here (made by `bash scripts/gpu_carry.sh`: FFmpeg "
                    "build + downloads, minutes); the carry size/contents check runs where one exists")
def test_dry_run_checks_the_carry(dry_run):
    assert dry_run.returncode == 0, dry_run.stdout
    assert "[ok]   size" in dry_run.stdout and "(limit 56)" in dry_run.stdout
    assert "(none the image has)" in dry_run.stdout
    assert "carried ffmpeg runs here" in dry_run.stdout


def test_dry_run_rejects_a_bad_carry(tmp_path):
    """Too big, a wheel the image has, a stray folder, missing FFmpeg parts: each is a FAIL line."""
    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    (carry / "wheels" / "torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"x")
    (carry / ".work").mkdir()
    with open(carry / ".work" / "big", "wb") as f:
        f.truncate(60 << 20)  # sparse; du -b counts its apparent size, as the device tool would
    (carry / "env.sh").write_text("")
    res = _check(["--dry-run", "--carry", str(carry)])
    assert res.returncode == 1
    out = res.stdout
    assert "[FAIL] size 60.0 MiB > 56 MiB" in out
    assert "wheels for packages the image already has: torch" in out
    assert "unexpected entries in the carry (they would travel too): .work" in out
    assert "missing: ffmpeg/bin/ffmpeg" in out
    res = _check(["--dry-run", "--carry", str(tmp_path / "nothing")])
    assert res.returncode == 1 and "no carry at" in res.stdout


# ------------------------------------------------------------------------------ gpu_results.py
def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with two commits of a small source tree."""
    r = tmp_path / "repo"
    (r / "csrc").mkdir(parents=True)
    (r / "csrc" / "a.cpp").write_text("int a;\n")
    (r / "pyproject.toml").write_text("[project]\n")
    _git(r, "init", "-q")
    _git(r, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(r, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "one")
    (r / "csrc" / "a.cpp").write_text("int a = 2;\n")
    _git(r, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-am", "two")
    return r


def _returned_dir(tmp_path: Path, digest: str) -> Path:
    """A folder shaped like the GPU run's $OUT (numbers made up for the test)."""
    d = tmp_path / "returned"
    d.mkdir()
    steps = [{"name": n, "status": s, "rc": rc, "wall_s": w, "timeout_s": 100, "reason": None, "files": []}
             for n, s, rc, w in [("machine", "ok", 0, 3.0), ("build", "ok", 0, 40.0), ("pytest", "failed", 1, 80.0),
                                 ("bench", "ok", 0, 90.0), ("pack", "ok", 0, 30.0), ("soak", "timeout", 124, 100.0)]]
    (d / "machine.json").write_text(json.dumps({
        "schema": 1, "started": "2026-12-01T10:00:00+00:00", "steps": steps,
        "source": {"digest": digest, "files": 2, "git": {"sha": None, "dirty": None}},
        "machine": {"nvidia_smi": {"gpus": [{"name": "TestGPU", "driver_version": "999.1", "memory.total": "1 MiB"}]},
                    "torch": {"version": "2.11.0", "cuda": "13.0", "cuda_available": True}, "triton": "3.6.0",
                    "cpu": {"model": "x", "cores": 16}, "libs": {"libnvcuvid.so.1": {"loaded": True}}},
        "imports": {"eva_fast": {"ok": True, "build_info": {"cuda": True}}, "trl": {"ok": True, "version": "1.16.0"},
                    "PyNvVideoCodec": {"ok": False, "error": "ImportError: x"}},
    }))

    def dec(video, system, status, ms):
        return {"video": {"name": video}, "workload": {"name": "survey"}, "system": system, "status": status,
                "ms_per_call": ms, "reason": None if status == "ok" else "no peer", "commit": {"sha": None}}
    (d / "decode.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        dec("clip", "eva_fast", "ok", 300.0), dec("clip", "eva_fast_cuda", "ok", 12.5),
        dec("clip", "pynvvideocodec", "skipped", None)]))
    pack = [{"device": "cuda", "frames": 32, "height": 364, "width": 644, "dtype": "bfloat16", "backend": b,
             "status": "ok", "median_ms": ms, "gb_per_s": g, "fraction_of_copy": f}
            for b, ms, g, f in [("d2d-copy", 0.1, 4000.0, None), ("eva-triton", 0.2, 2000.0, 0.5),
                                ("eva-torch-cuda", 1.0, 400.0, 0.1)]]
    (d / "pack.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pack))
    (d / "rollout.jsonl").write_text(json.dumps(
        {"questions": 2, "generations": 4, "wall_ms": 75939.3, "frame_work_share": 0.0184, "frames_decoded": 95,
         "frames_requested": 192, "stages_ms": {"generate": 75084.4, "decoder_work": 643.5, "pack": 767.8}}) + "\n"
        + json.dumps({"mode": "batched", "questions": 2, "generations": 8, "episodes": 16, "wall_ms": 20000.0,
                      "episodes_per_s": 0.8, "model_ms": 18500.0, "tokens_per_s": 350.0, "decode_step_ms": 95.5,
                      "prefill_share": 0.12, "concurrency": 13.3, "padding_waste": 0.21, "frame_work_share": 0.041,
                      "frames_decoded": 190, "frames_requested": 384, "check": {"ok": True}}) + "\n")
    soak = [{"kind": "checkpoint", "requests": i, "gpu_used_mib": 1000.0 + i / 100, "rss_mib": 900.0, "ms_p50": 9.0}
            for i in (100, 200)]
    (d / "soak.jsonl").write_text("".join(json.dumps(r) + "\n" for r in soak) + '{"kind": "summ')  # killed mid-line
    (d / "pytest.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="gpu_check" tests="4" failures="1" errors="0" skipped="1" '
        'time="12.5"><testcase classname="tests.video.test_nvdec" name="test_ok"/>'
        '<testcase classname="tests.video.test_nvdec" name="test_ok2"/>'
        '<testcase classname="tests.video.test_nvdec" name="test_bad"><failure message="assert 5 &lt;= 4">tb</failure>'
        '</testcase><testcase classname="tests.kernels.x" name="test_skip"><skipped message="no media"/></testcase>'
        '</testsuite></testsuites>')
    (d / "log.txt").write_text("log\n")
    return d


def test_results_converter_appends_rows_with_commit_and_renders_readme(tmp_path, repo):
    digest, _ = gpu_probe.source_digest(repo)  # the tree as the GPU machine saw it (no .git there)
    head = _git(repo, "rev-parse", "HEAD")
    ret = _returned_dir(tmp_path, digest)
    results = tmp_path / "results"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{gpu_results.README_START}\nold\n{gpu_results.README_END}\n\nafter\n")
    args = [str(ret), "--repo", str(repo), "--results-dir", str(results), "--readme", str(readme)]
    assert gpu_results.main(args) == 0
    run = json.loads((results / "gpu_runs.jsonl").read_text())
    assert run["commit"]["sha"] == head and run["commit"]["how"] == "source digest" and not run["commit"]["dirty"]
    assert run["machine"]["gpu"] == "TestGPU" and run["machine"]["driver"] == "999.1"
    assert run["pytest"]["passed"] == 2 and run["pytest"]["failures"] == 1 and run["pytest"]["skipped"] == 1
    assert run["pytest"]["failed"] == [{"test": "tests.video.test_nvdec::test_bad", "kind": "failure",
                                        "message": "assert 5 <= 4"}]
    assert run["rows"] == {"decode.jsonl": 3, "pack.jsonl": 3, "soak.jsonl": 2,  # truncated line dropped
                           "rollout.jsonl": 2, "limits.jsonl": 0}
    assert run["imports"] == {"trl": "1.16.0", "PyNvVideoCodec": "failed: ImportError: x"}
    dec = [json.loads(x) for x in (results / "gpu_decode.jsonl").read_text().splitlines()]
    assert all(r["commit"]["sha"] == head and r["gpu_check_run"] == run["run_id"] for r in dec)
    text = readme.read_text()
    assert "old" not in text and text.endswith("after\n")
    assert "| clip | survey | 300.0 (24.00x) | 12.5 | skip | skip |" in text
    assert "| 32 | 364x644 | bfloat16 | 2000 | 50% | 5.0 | - |" in text
    assert "FAILED `tests.video.test_nvdec::test_bad`: assert 5 <= 4" in text
    assert "| soak | timeout | 100.0 |" in text and "cut short after 200 requests" in text
    # a row of the first GPU run (batch 1, before the rows had a mode)
    assert "| batch1 | 2 x 4 | 75.9 | 0.105 | 1.00 | 75.1 | - | - | - | - | - | 0.018 | 95 / 192 | - |" in text
    assert "| batched | 2 x 8 | 20.0 | 0.800 | 7.59 | 18.5 | 350 | 95.5 | 0.120 | 13.3 | 0.210 | 0.041 | 190 / 384 | ok |" in text
    assert (results / "gpu_summary.md").read_text().startswith("# Latest GPU check")
    with pytest.raises(SystemExit, match="already in"):
        gpu_results.main(args)


def test_results_converter_commit_given_or_not_found(tmp_path, repo):
    first = _git(repo, "rev-list", "--max-parents=0", "HEAD")
    ret = _returned_dir(tmp_path, "0" * 64)  # a tree that matches no commit (uncommitted changes)
    results = tmp_path / "results"
    run = gpu_results.convert(ret, results, repo)
    assert run["commit"]["sha"] is None and "pass --commit" in run["commit"]["how"]
    run = gpu_results.convert(ret, results, repo, commit=first, force=True)
    assert run["commit"]["sha"] == first and run["commit"]["dirty"] and "dirty" in run["commit"]["how"]
    digest_first = gpu_results.digest_at_commit(repo, first)
    assert gpu_results.find_commit(repo, digest_first) == first


def test_results_converter_reads_a_killed_pytest_from_the_log(tmp_path, repo):
    ret = _returned_dir(tmp_path, gpu_probe.source_digest(repo)[0])
    (ret / "pytest.xml").unlink()
    (ret / "log.txt").write_text(
        "[gpu_check] === step pytest (timeout 150s, 400s of the budget left) ===\n"
        "tests/video/test_nvdec.py::test_a[x-0] PASSED [ 10%]\n"
        "tests/video/test_nvdec.py::test_b FAILED [ 20%]\n"
        "tests/kernels/test_pack_triton.py::test_c SKIPPED (no GPU) [ 30%]\n"
        "[gpu_check] step pytest: timeout (rc 124, 150.0s of 150s) - killed after 150s\n"
        "tests/other.py::test_not_pytest PASSED\n")
    run = gpu_results.convert(ret, tmp_path / "results", repo)
    pt = run["pytest"]
    assert pt["partial"] and (pt["tests"], pt["passed"], pt["failures"], pt["skipped"]) == (3, 1, 1, 1)
    assert pt["failed"][0]["test"] == "tests/video/test_nvdec.py::test_b"
    assert "cut short: from log.txt" in gpu_results.render(tmp_path / "results")


def test_results_render_keeps_tables_a_partial_run_skipped(tmp_path, repo):
    """A later run with --skip bench,pack,rollout (a short device lease) must not erase the earlier
    run's decode/pack/rollout tables from the README: they stay, labelled with their run."""
    results = tmp_path / "results"
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    first = _returned_dir(tmp_path / "a", gpu_probe.source_digest(repo)[0])
    gpu_results.convert(first, results, repo)
    second = _returned_dir(tmp_path / "b", "0" * 64)
    for f in ("decode.jsonl", "pack.jsonl", "rollout.jsonl"):
        (second / f).unlink()
    machine = json.loads((second / "machine.json").read_text())
    machine["started"] = "2026-12-02T10:00:00+00:00"
    (second / "machine.json").write_text(json.dumps(machine))
    gpu_results.convert(second, results, repo, commit=_git(repo, "rev-parse", "HEAD"))
    text = gpu_results.render(results)
    assert text.startswith("GPU check 2026-12-02T10:00:00+00:00")
    assert "| clip | survey | 300.0 (24.00x) | 12.5 | skip | skip |" in text
    assert "| batch1 | 2 x 4 | 75.9 | 0.105 | 1.00 | 75.1 | - | - | - | - | - | 0.018 | 95 / 192 | - |" in text
    assert text.count("from the GPU check of 2026-12-01T10:00:00+00:00") == 3  # decode, pack, rollout
