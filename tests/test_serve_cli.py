"""`radixserve serve` as a user starts it: a subprocess that loads, answers,
logs one line per request, and exits 0 on SIGTERM."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_answers_and_stops_on_sigterm(tiny_model):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "radixserve", "serve", "-m", str(tiny_model(weight_type="Q8_0")),
                             "--port", str(port), "-t", "1", "--kv-pages", "32", "--served-model-name", "tiny",
                             "--shutdown-grace", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(url + "/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not come up"
            time.sleep(0.05)
        status, body = get(url + "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 3,
                                                     "ignore_eos": True})
        assert status == 200 and body["usage"]["completion_tokens"] == 3
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "listening on http://127.0.0.1:" in out and "stopped" in out
    line = next(ln for ln in out.splitlines() if " completions prompt=" in ln)
    assert "generated=3" in line and "finish=length" in line and "ttft=" in line and "tok/s=" in line


def test_serve_missing_model_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "radixserve", "serve", "-m", str(tmp_path / "none.gguf")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "radixserve:" in r.stderr
