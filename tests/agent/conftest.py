"""Fixtures for the agent tests: a real OpenAI-compatible server process on localhost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = Path(__file__).parent / "_openai_server.py"


class ScriptedServer:
    """A running ``_openai_server.py`` process (see its docstring for the script format)."""

    def __init__(self, tmp: Path, script: dict) -> None:
        self.record = tmp / "requests.jsonl"
        script_path = tmp / "script.json"
        script_path.write_text(json.dumps(script))
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--script", str(script_path), "--record", str(self.record)],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"test server did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{int(line.split()[1])}/v1"

    def requests(self) -> list[dict]:
        """Recorded requests, in arrival order."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def scripted_server(tmp_path):
    """Factory: ``scripted_server({"replies": [...]})`` starts a server process; all are stopped
    at the end of the test."""
    started: list[ScriptedServer] = []

    def start(script: dict) -> ScriptedServer:
        d = tmp_path / f"server{len(started)}"
        d.mkdir()
        s = ScriptedServer(d, script)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()
