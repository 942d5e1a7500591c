"""Fixtures for the agent tests: a real OpenAI-compatible server process on localhost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent._openai_server import ServerProcess


class ScriptedServer(ServerProcess):
    """A running ``_openai_server.py`` process that records every request (see its docstring for
    the script format)."""

    def __init__(self, tmp: Path, script: dict) -> None:
        super().__init__(tmp, script, record=True)


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
