"""Turn the folder a GPU check returned (``scripts/gpu_check.sh --out DIR``) into committed data.

    python scripts/gpu_results.py DIR                 # append rows, write the summary, update README
    python scripts/gpu_results.py DIR --commit SHA    # name the commit (else found from the digest)
    python scripts/gpu_results.py --render-only       # re-render summary + README from bench/results

What it writes (``--results-dir``, default ``bench/results``):

* ``gpu_runs.jsonl``: one row per check run: run id, commit, machine (GPU, driver, CUDA, torch,
  Triton, CPU, glibc, libcuda/libnvcuvid), eva_fast's build info, the carried imports, every step's
  status / wall time / reason, and the pytest summary (counts and each failure's first line);
* ``gpu_decode.jsonl`` / ``gpu_pack.jsonl`` / ``gpu_soak.jsonl`` / ``gpu_rollout.jsonl`` /
  ``gpu_limits.jsonl``: the run's bench rows unchanged,
  with ``gpu_check_run`` (the run id) and ``commit`` set to the resolved commit (the GPU machine has
  no ``.git``, so the rows it wrote carry none);
* ``gpu_summary.md``: the short markdown summary of the latest run (also printed), whose tables
  replace the block between ``<!-- gpu-results:start -->`` and ``<!-- gpu-results:end -->`` in
  README.md (``--readme``), so the README's GPU table is generated from these files.

The commit: ``machine.json`` holds the digest of the source tree that ran
(``scripts/gpu_probe.py``, :func:`source_digest`); the commit is the one among the last
``--search`` commits of this repository whose tree has that digest. If none matches, the tree that
ran had uncommitted changes: pass ``--commit`` to name the base commit (recorded with
``verified: false``). A run already converted (same run id) is not appended twice.

Standard library plus the bench's row loader (numpy), so it runs in the project's environment.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]
from bench._harness import load_rows  # noqa: E402
from gpu_probe import DIGEST_ROOTS, _digest_included, digest_of  # noqa: E402

BENCH_FILES = {"decode.jsonl": "gpu_decode.jsonl", "pack.jsonl": "gpu_pack.jsonl", "soak.jsonl": "gpu_soak.jsonl",
               "rollout.jsonl": "gpu_rollout.jsonl", "limits.jsonl": "gpu_limits.jsonl"}
README_START, README_END = "<!-- gpu-results:start -->", "<!-- gpu-results:end -->"


# --------------------------------------------------------------------------------------- commit
def _git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, check=True).stdout


def digest_at_commit(repo: Path, commit: str, _blob_cache: dict | None = None) -> str:
    """:func:`gpu_probe.digest_of` over the files of ``commit`` under :data:`DIGEST_ROOTS`."""
    cache = {} if _blob_cache is None else _blob_cache
    listing = _git(repo, "ls-tree", "-r", "-z", commit, "--", *DIGEST_ROOTS).split(b"\0")
    entries = []
    for ent in filter(None, listing):
        meta, path = ent.split(b"\t", 1)
        mode, kind, sha = meta.split()
        rel = path.decode()
        if kind == b"blob" and mode != b"120000" and _digest_included(rel):
            entries.append((rel, sha.decode()))
    need = [sha for _, sha in entries if sha not in cache]
    if need:
        out = _git(repo, "cat-file", "--batch", input="\n".join(need).encode() + b"\n")
        pos = 0
        for sha in need:
            nl = out.index(b"\n", pos)
            size = int(out[pos:nl].split()[2])
            cache[sha] = out[nl + 1:nl + 1 + size]
            pos = nl + 1 + size + 1
    return digest_of({rel: cache[sha] for rel, sha in entries})


def find_commit(repo: Path, digest: str, search: int = 200) -> str | None:
    """The newest of the last ``search`` commits (all local branches) whose tree has ``digest``."""
    try:
        commits = _git(repo, "rev-list", f"--max-count={search}", "--all").decode().split()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    cache: dict = {}
    for c in commits:
        if digest_at_commit(repo, c, cache) == digest:
            return c
    return None


def resolve_commit(repo: Path, machine: dict, given: str | None, search: int) -> dict:
    src = machine.get("source") or {}
    git = src.get("git") or {}
    digest = src.get("digest")
    if given:
        sha = _git(repo, "rev-parse", given).decode().strip()
        ok = digest is not None and digest_at_commit(repo, sha) == digest
        return {"sha": sha, "verified": ok, "how": "given" + ("" if ok else " (tree that ran differs: dirty)"),
                "source_digest": digest}
    if git.get("sha"):
        return {"sha": git["sha"], "verified": not git.get("dirty"), "how": "git on the GPU machine",
                "source_digest": digest}
    sha = find_commit(repo, digest, search) if digest else None
    return {"sha": sha, "verified": sha is not None,
            "how": "source digest" if sha else f"no commit among the last {search} has this tree: pass --commit",
            "source_digest": digest}


# --------------------------------------------------------------------------------------- reading
def read_jsonl(path: Path) -> list[dict]:
    """Rows of a jsonl file (none if it is missing); a truncated last line (a run killed
    mid-write) is dropped, as by the bench's own loader."""
    return load_rows(path.parent, path.name)


def pytest_summary(path: Path) -> dict | None:
    """Counts and failures from a JUnit XML file (None when the file is missing or unreadable)."""
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"error": f"unreadable JUnit XML: {e}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time_s": 0.0, "failed": [], "skipped_reasons": {}}
    for s in suites:
        for k in ("tests", "failures", "errors", "skipped"):
            out[k] += int(s.get(k, 0))
        out["time_s"] += float(s.get("time", 0))
        for case in s.iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            for tag in ("failure", "error"):
                el = case.find(tag)
                if el is not None:
                    msg = (el.get("message") or el.text or "").strip().splitlines()
                    out["failed"].append({"test": name, "kind": tag, "message": msg[0][:300] if msg else ""})
            sk = case.find("skipped")
            if sk is not None:
                reason = (sk.get("message") or "").strip()[:200]
                out["skipped_reasons"][reason] = out["skipped_reasons"].get(reason, 0) + 1
    out["passed"] = out["tests"] - out["failures"] - out["errors"] - out["skipped"]
    out["time_s"] = round(out["time_s"], 1)
    return out


def pytest_from_log(log: Path) -> dict | None:
    """Per-test outcomes from the pytest step's ``-v`` lines in log.txt: the record of a pytest run
    that was killed before it wrote its JUnit XML (``partial: True``)."""
    if not log.is_file():
        return None
    text = log.read_text(errors="replace")
    if "=== step pytest" not in text:
        return None
    section = text.split("=== step pytest", 1)[1].split("[gpu_check] step pytest:", 1)[0]
    out = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time_s": None, "failed": [], "partial": True}
    key = {"PASSED": None, "XPASS": None, "XFAIL": "skipped", "SKIPPED": "skipped", "FAILED": "failures",
           "ERROR": "errors"}
    for line in section.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "::" in parts[0] and parts[1] in key:
            out["tests"] += 1
            k = key[parts[1]]
            if k:
                out[k] += 1
            if k in ("failures", "errors"):
                out["failed"].append({"test": parts[0], "kind": k[:-1], "message": "(from log.txt)"})
    out["passed"] = out["tests"] - out["failures"] - out["errors"] - out["skipped"]
    return out if out["tests"] else None


def machine_short(machine: dict) -> dict:
    """The fields of machine.json a row and the summary need."""
    m = machine.get("machine") or {}
    gpus = (m.get("nvidia_smi") or {}).get("gpus") or [{}]
    t = m.get("torch") or {}
    return {
        "gpu": gpus[0].get("name"), "gpu_memory": gpus[0].get("memory.total"), "driver": gpus[0].get("driver_version"),
        "compute_cap": gpus[0].get("compute_cap"), "torch": t.get("version"), "torch_cuda": t.get("cuda"),
        "cuda_available": t.get("cuda_available"), "triton": m.get("triton"), "nvcc": m.get("nvcc"),
        "cpu": (m.get("cpu") or {}).get("model"), "cores": (m.get("cpu") or {}).get("cores"),
        "memory_gib": (m.get("cpu") or {}).get("memory_gib"), "glibc": m.get("glibc"), "os": m.get("os"),
        "python": (m.get("python") or {}).get("version"),
        "libs": {k: v.get("loaded") for k, v in (m.get("libs") or {}).items()},
    }


# --------------------------------------------------------------------------------------- convert
def convert(out_dir: Path, results_dir: Path, repo: Path, commit: str | None = None, search: int = 200,
            force: bool = False) -> dict:
    """Append the run in ``out_dir`` to ``results_dir`` (see module doc); returns the run row."""
    mpath = out_dir / "machine.json"
    machine = json.loads(mpath.read_text()) if mpath.is_file() else {}
    if not machine:
        print(f"[gpu_results] WARNING: {mpath} missing or empty: machine and commit unknown", file=sys.stderr)
    cm = resolve_commit(repo, machine, commit, search)
    src = machine.get("source") or {}
    run_id = f"gpu-{machine.get('started', 'unknown')}-{(src.get('digest') or 'nodigest')[:12]}"
    runs_path = results_dir / "gpu_runs.jsonl"
    if not force and any(r.get("run_id") == run_id for r in read_jsonl(runs_path)):
        raise SystemExit(f"run {run_id} is already in {runs_path} (--force to append it again)")
    short = machine_short(machine)
    commit_field = {"sha": cm["sha"], "dirty": not cm["verified"], "how": cm["how"], "source_digest": cm["source_digest"]}
    counts = {}
    results_dir.mkdir(parents=True, exist_ok=True)
    for src_name, dst_name in BENCH_FILES.items():
        rows = read_jsonl(out_dir / src_name)
        counts[src_name] = len(rows)
        if rows:
            with open(results_dir / dst_name, "a") as f:
                for r in rows:
                    r = {**r, "gpu_check_run": run_id, "commit": commit_field}
                    r.setdefault("machine", short)
                    f.write(json.dumps(r, default=str) + "\n")
    run = {
        "schema": 1, "run_id": run_id, "started": machine.get("started"), "commit": commit_field,
        "machine": short, "build": (machine.get("imports") or {}).get("eva_fast"),
        "imports": {k: (v.get("version") if v.get("ok") else f"failed: {v.get('error')}")
                    for k, v in (machine.get("imports") or {}).items() if k != "eva_fast"},
        "carry": (machine.get("machine") or {}).get("carry"),
        "steps": [{k: s.get(k) for k in ("name", "status", "rc", "wall_s", "timeout_s", "reason", "files")}
                  for s in machine.get("steps", [])],
        "pytest": pytest_summary(out_dir / "pytest.xml") or pytest_from_log(out_dir / "log.txt"), "rows": counts,
        "files_returned": sorted(p.name for p in out_dir.iterdir() if p.is_file()),
    }
    with open(runs_path, "a") as f:
        f.write(json.dumps(run, default=str) + "\n")
    return run


# --------------------------------------------------------------------------------------- render
def _f(v, fmt="{:.1f}", none="-"):
    return none if v is None else fmt.format(v)


def _latest(rows: list[dict], run_id: str) -> list[dict]:
    return [r for r in rows if r.get("gpu_check_run") == run_id]


def _newest_with_rows(results_dir: Path, name: str, runs: list[dict], lines: list[str]) -> list[dict]:
    """Rows of ``name`` from the newest run that has any. A run that skipped a step (``--skip``, or cut
    short by the budget) keeps the table of the run before it, labelled with that run's date and commit,
    so the README never loses a measurement a later partial run did not repeat."""
    rows = read_jsonl(results_dir / name)
    for i, run in enumerate(reversed(runs)):
        got = _latest(rows, run["run_id"])
        if got:
            if i:
                c = (run.get("commit") or {}).get("sha") or "unknown"
                lines += ["", f"(The newest run did not measure this; from the GPU check of {run.get('started') or '?'}, "
                              f"commit {c[:10]}.)"]
            return got
    return []


def render(results_dir: Path) -> str:
    """Markdown summary of the latest run in ``results_dir`` (a note when there is none)."""
    runs = read_jsonl(results_dir / "gpu_runs.jsonl")
    if not runs:
        return ("No GPU check has run yet: `bash scripts/gpu_check.sh --out DIR` on a GPU machine, then "
                "`python scripts/gpu_results.py DIR` (see above).\n")
    run = runs[-1]
    m, c = run.get("machine") or {}, run.get("commit") or {}
    lines = [f"GPU check {run.get('started') or '?'}, commit {(c.get('sha') or 'unknown')[:10]}"
             f"{' (tree differs from the commit)' if c.get('dirty') else ''}: {m.get('gpu') or 'no GPU'}"
             f" ({m.get('gpu_memory') or '?'}), driver {m.get('driver') or '?'}, torch {m.get('torch') or '?'}"
             f" (CUDA {m.get('torch_cuda') or '?'}), Triton {m.get('triton') or '?'}, {m.get('cores') or '?'} CPU cores,"
             f" libnvcuvid {'loads' if (m.get('libs') or {}).get('libnvcuvid.so.1') else 'MISSING'}.", ""]
    lines += ["| step | status | wall s | note |", "|---|---|---|---|"]
    for s in run.get("steps", []):
        lines.append(f"| {s['name']} | {s['status']} | {_f(s.get('wall_s'))} | {s.get('reason') or ''} |")
    pt = run.get("pytest")
    if pt and "tests" in pt:
        lines += ["", f"`pytest -m cuda`: {pt['passed']} passed, {pt['failures']} failed, {pt['errors']} errors, "
                      f"{pt['skipped']} skipped"
                      + (" (cut short: from log.txt, no JUnit XML)." if pt.get("partial") else f" ({pt['time_s']} s).")]
        lines += [f"- FAILED `{x['test']}`: {x['message']}" for x in pt["failed"][:15]]
    dec = _newest_with_rows(results_dir, "gpu_decode.jsonl", runs, lines)
    if dec:
        systems = ["eva_fast", "eva_fast_cuda", "pynvvideocodec", "torchcodec_cuda"]
        cells: dict[tuple, dict] = {}
        for r in dec:
            cells.setdefault((r["video"]["name"], r["workload"]["name"]), {})[r["system"]] = r
        lines += ["", "Decode (ms per `frame_select` call, median; x = time / eva_fast_cuda's, > 1: eva_fast_cuda "
                      "faster; frames checked against eva_fast's CPU frames before timing):", "",
                  "| video | workload | " + " | ".join(systems) + " |", "|---|---|" + "---|" * len(systems)]
        skipped = {}
        for (video, wl), by in cells.items():
            base = by.get("eva_fast_cuda", {}).get("ms_per_call") if by.get("eva_fast_cuda", {}).get("status") == "ok" else None
            row = []
            for s in systems:
                r = by.get(s)
                if r is None or r.get("status") == "skipped":
                    row.append("skip")
                    if r is not None:
                        skipped.setdefault(s, r.get("reason"))
                elif r.get("status") != "ok":
                    row.append(r.get("status", "?").upper())
                else:
                    x = f" ({r['ms_per_call'] / base:.2f}x)" if base and s != "eva_fast_cuda" else ""
                    row.append(f"{r['ms_per_call']:.1f}{x}")
            lines.append(f"| {video} | {wl} | " + " | ".join(row) + " |")
        lines += [f"- {s} skipped: {why}" for s, why in skipped.items()]
    pack = [r for r in _newest_with_rows(results_dir, "gpu_pack.jsonl", runs, lines) if r.get("device") == "cuda"]
    if pack:
        lines += ["", "Triton packer (`pack_qwen25vl`, GB/s = frames read + pixel_values written; copy = a "
                      "device-to-device copy of the same bytes):", "",
                  "| frames | HxW | dtype | Triton GB/s | % of copy | x torch | x HF (cuda) |", "|---|---|---|---|---|---|---|"]
        by: dict[tuple, dict] = {}
        for r in pack:
            by.setdefault((r["frames"], r["height"], r["width"], r["dtype"]), {})[r["backend"]] = r
        for (t, h, w, dt), b in by.items():
            tr = b.get("eva-triton")
            if tr is None or tr.get("status") != "ok":
                lines.append(f"| {t} | {h}x{w} | {dt} | {'FAILED CHECK' if tr else '-'} | | | |")
                continue
            tor, hf = b.get("eva-torch-cuda"), b.get("hf-torchvision-cuda")
            lines.append(f"| {t} | {h}x{w} | {dt} | {tr['gb_per_s']:.0f} | {tr['fraction_of_copy']:.0%} | "
                         f"{_f(tor and tor['median_ms'] / tr['median_ms'], '{:.1f}')} | "
                         f"{_f(hf and hf['median_ms'] / tr['median_ms'], '{:.1f}')} |")
    roll = _newest_with_rows(results_dir, "gpu_rollout.jsonl", runs, lines)
    if roll:
        def eps_of(r):  # rows before the batched path (no "mode") were batch 1 and lack episodes/s
            if r.get("episodes_per_s"):
                return r["episodes_per_s"]
            n, wall = (r.get("questions") or 0) * (r.get("generations") or 0), (r.get("wall_ms") or 0) / 1e3
            return n / wall if n and wall else None

        def mode_of(r):
            return r.get("mode", "batch1")

        b1 = [eps_of(r) for r in roll if mode_of(r) == "batch1" and eps_of(r)]
        lines += ["", "Rollouts (a GRPO step's episodes on a random Qwen2.5-VL-7B-shaped bf16 model, replies forced "
                      "token by token; batched = one generate per tick over every live episode, batch1 = one per "
                      "episode turn; model s = the generate calls' wall time; frame-work share = (decoder work + pack) "
                      "/ (that + model s); check = tokens and logprobs against the batched run):",
                  "", "| mode | questions x episodes | wall s | episodes/s | x batch-1 | model s | tokens/s | decode step ms "
                      "| prefill share | concurrency | padding | frame-work share | frames decoded / requested | check |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in roll:
            st = r.get("stages_ms") or {}
            eps = eps_of(r)
            chk = r.get("check") or {}
            lines.append(
                f"| {mode_of(r)} | {r.get('questions')} x "
                f"{r.get('generations')} | {_f((r.get('wall_ms') or 0) / 1e3)} | {_f(eps, '{:.3f}')} | "
                f"{_f(eps / b1[0] if eps and b1 else None, '{:.2f}')} | "
                f"{_f((r.get('model_ms', st.get('generate', 0)) or 0) / 1e3)} | {_f(r.get('tokens_per_s'), '{:.0f}')} | "
                f"{_f(r.get('decode_step_ms'), '{:.1f}')} | {_f(r.get('prefill_share'), '{:.3f}')} | "
                f"{_f(r.get('concurrency'), '{:.1f}')} | {_f(r.get('padding_waste'), '{:.3f}')} | "
                f"{_f(r.get('frame_work_share'), '{:.3f}')} | {r.get('frames_decoded')} / {r.get('frames_requested')} | "
                f"{'-' if not chk else ('ok' if chk.get('ok') else 'FAILED')} |")
    lim = _newest_with_rows(results_dir, "gpu_limits.jsonl", runs, lines)
    if lim:
        ff = [r for r in lim if r.get("kind") == "ffmpeg"]
        eva = [r for r in lim if r.get("kind") == "eva"]
        rd = [r for r in lim if r.get("kind") == "readers"]
        v = (ff or eva or rd)[0]
        lines += ["", f"Decode limits on {v.get('video')} ({v.get('width')}x{v.get('height')} {v.get('codec')}, "
                      f"{_f(v.get('duration_s'), '{:.0f}')} s; ffmpeg rows decode the first {_f(v.get('window_s'), '{:.0f}')} s):",
                  "", "| what | decoded frames/s | fraction of its limit |", "|---|---|---|"]
        for r in ff:
            what = (f"`ffmpeg -hwaccel cuda`, {r.get('procs')} process{'es' if r.get('procs', 1) > 1 else ''}"
                    if r.get("label") == "nvdec" else f"`ffmpeg -threads {r.get('threads')}` (CPU)")
            lines.append(f"| {what} | {_f(r.get('fps'), '{:,.0f}') if r.get('ok') else 'FAILED: ' + str(r.get('error'))} | limit |")
        for r in eva:
            lines.append(f"| eva_fast `{r.get('device')}` ({r.get('backend')}), {r.get('call')} "
                         f"{r.get('nframes')} @ {r.get('resize')}: {_f(r.get('ms'), '{:.0f}')} ms, {r.get('decoded')} decoded"
                         f"{'' if r.get('check_ok') else ' (WRONG FRAMES)'} | {_f(r.get('decoded_fps'), '{:,.0f}')} | "
                         f"{_f(r.get('fraction_of_limit'), '{:.2f}')} of {r.get('limit')} |")
        for r in rd:
            fr = [f"{_f(r.get(k), '{:.2f}')} of {k[len('fraction_of_'):]}" for k in sorted(r) if k.startswith("fraction_of_")]
            lines.append(f"| eva_fast `cuda`, {r.get('readers')} reader(s) at once | "
                         f"{_f(r.get('decoded_fps'), '{:,.0f}') if r.get('ok') else 'FAILED: ' + str(r.get('error'))} | "
                         f"{', '.join(fr)} |")
        for r in (x for x in lim if x.get("kind") == "workers"):
            lines.append(f"| eva_fast `{r.get('device')}`, {r.get('call')} with {r.get('workers')} decoders per request "
                         f"({r.get('gop_workers_used')} used): {_f(r.get('ms'), '{:.0f}')} ms, {r.get('decoded')} decoded"
                         f"{'' if r.get('frames_equal_first') else ' (FRAMES DIFFER)'} | "
                         f"{_f(r.get('decoded_fps'), '{:,.0f}')} | |")
        anchors = [x for x in lim if x.get("kind") == "anchor" and x.get("ok")]
        if anchors:
            a0 = anchors[0]
            lines += ["", f"The paper's survey (256 frames @ 0.1) on {a0.get('video')} ({_f(a0.get('duration_s'), '{:.0f}')} s, "
                          f"GOP {a0.get('gop')} frames):", "", "| device | policy | s | decoded | goal |", "|---|---|---|---|---|"]
            for r in anchors:
                goal = "" if r.get("goal_s") is None else f"<= {r['goal_s']:g} s: {'met' if r.get('meets_goal') else 'NOT met'}"
                lines.append(f"| {r.get('device')} ({r.get('backend')}, {r.get('gop_workers_used')} decoders) | "
                             f"{r.get('policy')} | {_f(r.get('s'), '{:.2f}')} | {r.get('decoded')} | {goal} |")
        summ = next((x for x in lim if x.get("kind") == "summary"), None)
        if summ and summ.get("goals"):
            lines += ["", "Goals (issue #24): " + ", ".join(f"{k} = {v}" for k, v in summ["goals"].items()) + "."]
    soak = _newest_with_rows(results_dir, "gpu_soak.jsonl", runs, lines)
    summ = next((r for r in soak if r.get("kind") == "summary"), None)
    cps = [r for r in soak if r.get("kind") == "checkpoint"]
    if summ or cps:
        lines += [""]
        if summ and not summ.get("requests_done") and not cps:
            lines.append(f"Soak: did not run: {summ.get('stopped')}.")
        elif summ:
            lines.append(f"Soak: {summ.get('requests_done')} of {summ.get('requests_planned')} mixed "
                         f"`select_frames(device=\"{summ.get('device', 'cuda')}\")` requests in {summ.get('wall_s')} s ({summ.get('stopped')}); "
                         f"GPU memory {_f(summ.get('gpu_growth_mib'), '{:+.1f}')} MiB, host RSS "
                         f"{_f(summ.get('rss_growth_mib'), '{:+.1f}')} MiB from the first checkpoint to the last "
                         f"({'flat' if summ.get('flat') else 'NOT flat' if summ.get('flat') is False else 'n/a'}, "
                         f"bound {summ.get('flat_bound_mib')} MiB); {summ.get('errors')} errors, "
                         f"{summ.get('block_checks_failed')} failed frame checks.")
        else:
            lines.append(f"Soak: cut short after {cps[-1]['requests']} requests (no summary row).")
        bad = [r for r in soak if r.get("kind") == "check" and not r.get("ok")]
        if bad:
            lines.append("Pre-check (each video's frames on the device vs the CPU) FAILED for: " + "; ".join(
                f"{r.get('video')} ({r.get('codec')} {r.get('bit_depth')}-bit, {r.get('backend')}): max |d| "
                f"{r.get('max_abs_diff')}, mean {r.get('mean_abs_diff')}" for r in bad) + ".")
        if cps:
            lines.append("GPU MiB / RSS MiB / p50 ms every checkpoint: "
                         + ", ".join(f"{r['requests']}: {_f(r.get('gpu_used_mib'), '{:.0f}')}/{_f(r.get('rss_mib'), '{:.0f}')}"
                                     f"/{_f(r.get('ms_p50'))}" for r in cps) + ".")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, body: str) -> bool:
    """Replace the generated block in ``readme``; False when its markers are missing."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    a = text.index(README_START) + len(README_START)
    b = text.index(README_END)
    readme.write_text(text[:a] + "\n" + body + text[b:])
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", type=Path, help="the folder gpu_check.sh wrote (the device's $OUT)")
    ap.add_argument("--commit", help="commit the tree that ran was (default: found from machine.json's digest)")
    ap.add_argument("--search", type=int, default=200, help="commits searched for the digest (default 200)")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md", help="README whose generated block is updated")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--repo", type=Path, default=ROOT, help="git repository the commit is looked up in")
    ap.add_argument("--render-only", action="store_true", help="only re-render the summary and README block")
    ap.add_argument("--force", action="store_true", help="append a run that is already there")
    a = ap.parse_args(argv)
    if not a.render_only:
        if a.dir is None or not a.dir.is_dir():
            ap.error(f"DIR must be the folder gpu_check.sh wrote, got {a.dir}")
        run = convert(a.dir, a.results_dir, a.repo, a.commit, a.search, a.force)
        print(f"[gpu_results] run {run['run_id']}: commit {run['commit']['sha']} ({run['commit']['how']}); "
              f"rows {run['rows']} appended to {a.results_dir}")
    body = render(a.results_dir)
    if (a.results_dir / "gpu_runs.jsonl").is_file():
        (a.results_dir / "gpu_summary.md").write_text("# Latest GPU check\n\n" + body)
    if not a.no_readme:
        if update_readme(a.readme, body):
            print(f"[gpu_results] updated the GPU block of {a.readme}")
        else:
            print(f"[gpu_results] {a.readme} is missing or has no {README_START} block; not updated", file=sys.stderr)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
