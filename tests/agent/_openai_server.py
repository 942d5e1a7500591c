"""A small OpenAI-compatible chat server for the ``openai`` backend tests (a real HTTP process).

    python tests/agent/_openai_server.py --script script.json [--record requests.jsonl]

Prints ``PORT <n>`` once it listens on 127.0.0.1 (``ServerProcess`` starts it from Python). Serves:

* ``GET /v1/models`` -> one model, ``scripted-model``;
* ``POST /v1/chat/completions`` -> the scripted reply for the request's turn, where the turn is the
  number of assistant messages already in the request (so concurrent conversations each get their
  own script). With ``--record``, every request body is appended to the record file (one JSON
  line, with the number of requests in flight when it arrived and, for ``file://`` image URLs,
  whether the file existed and its size). ``bench/bench_eval_client.py`` runs it without a record
  file as an instant-reply server.

Script (JSON): ``{"replies": [entry, ...], "fail_first": N, "delay_s": s, "routes": [...]}`` where an
entry is a reply string or ``{"text": str, "delay_s": s, "status": code}``; ``fail_first`` answers the
first N POSTs with HTTP 503 (to exercise retries). ``routes`` (optional) is a list of ``{"match": str,
"replies": [entry, ...]}``: a request whose first user message contains ``match`` (its text, or the
text of its parts) is answered from that route's replies instead (first matching route wins).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class ServerProcess:
    """This server as a child process: ``ServerProcess(workdir, script, record=True)``.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v1``.
        record: the record file (None without recording).
    """

    def __init__(self, workdir: Path, script: dict, record: bool = True) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        script_path = workdir / "script.json"
        script_path.write_text(json.dumps(script))
        self.record = workdir / "requests.jsonl" if record else None
        cmd = [sys.executable, __file__, "--script", str(script_path)]
        if self.record is not None:
            cmd += ["--record", str(self.record)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"test server did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{int(line.split()[1])}/v1"

    def requests(self) -> list[dict]:
        """Recorded requests (``{"post", "in_flight", "files", "body"}``), in arrival order."""
        if self.record is None or not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far (user + system; Linux ``/proc``)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True)
    ap.add_argument("--record", default=None, help="append every request here (one JSON line each)")
    args = ap.parse_args()
    with open(args.script) as f:
        script = json.load(f)
    replies = script.get("replies", [])
    state = {"posts": 0, "in_flight": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def _send(self, code: int, obj: dict) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.rstrip("/").endswith("/v1/models"):
                self._send(200, {"object": "list", "data": [{"id": "scripted-model", "object": "model", "owned_by": "test"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(n) or b"{}")
            if not self.path.rstrip("/").endswith("/v1/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            with lock:
                state["posts"] += 1
                state["in_flight"] += 1
                post_no, in_flight = state["posts"], state["in_flight"]
            try:
                files = []
                for m in body.get("messages", []):
                    if isinstance(m.get("content"), list):
                        for p in m["content"]:
                            url = p.get("image_url", {}).get("url", "") if p.get("type") == "image_url" else ""
                            if url.startswith("file://"):
                                path = unquote(urlparse(url).path)
                                files.append([path, os.path.isfile(path), os.path.getsize(path) if os.path.isfile(path) else -1])
                if args.record:
                    with lock, open(args.record, "a") as f:
                        line = {"post": post_no, "in_flight": in_flight, "files": files, "body": body}
                        f.write(json.dumps(line) + "\n")
                if post_no <= script.get("fail_first", 0):
                    self._send(503, {"error": {"message": "scripted outage"}})
                    return
                turn = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
                script_replies = replies
                user = next((m.get("content") for m in body.get("messages", []) if m.get("role") == "user"), "")
                if isinstance(user, list):
                    user = "".join(p.get("text", "") for p in user if isinstance(p, dict))
                for route in script.get("routes", []):
                    if route["match"] in (user or ""):
                        script_replies = route["replies"]
                        break
                entry = script_replies[turn] if turn < len(script_replies) else "no script left"
                if isinstance(entry, str):
                    entry = {"text": entry}
                delay = entry.get("delay_s", script.get("delay_s", 0))
                if delay:
                    time.sleep(delay)
                status = entry.get("status", 200)
                if status != 200:
                    self._send(status, {"error": {"message": f"scripted status {status}", "type": "BadRequestError"}})
                    return
                text = entry["text"]
                prompt_tokens = len(json.dumps(body.get("messages", []))) // 4
                completion_tokens = max(1, len(text) // 4)
                self._send(200, {
                    "id": f"chatcmpl-{post_no}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", ""),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                })
            finally:
                with lock:
                    state["in_flight"] -= 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
