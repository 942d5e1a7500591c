"""Fixtures of the eval tests: the mini benchmark over real videos in tests/data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

REPO = Path(__file__).resolve().parents[2]
MINI = DATA / "mini_bench" / "mini_bench.jsonl"


@pytest.fixture(scope="session")
def mini_bench() -> Path:
    return MINI


def run_cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``python -m eva_fast.cli ...`` from the repository root (so ``tests.*`` backends import)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "eva_fast.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout, **kw)
