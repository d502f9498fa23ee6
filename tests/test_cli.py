"""The command line, run as a user runs it: a subprocess on the bundled model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.bundled


def radixserve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radixserve", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_greedy_chat_answer_mentions_paris(bundled_model_path):
    r = radixserve("generate", "What is the capital of France?", "--chat", "--temperature", "0", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "Paris" in out["text"]
    assert out["finish_reason"] in ("stop", "length")
    assert out["tokens"] and out["prompt_tokens"][:3] == [1, 9690, 198]  # the template's system turn
    assert set(out["timings"]) == {"load_s", "prefill_tok_s", "decode_tok_s"}


def test_streamed_generation_prints_text_then_statistics(bundled_model_path):
    r = radixserve("generate", "The capital of France is", "--temperature", "0", "-n", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(" Paris")
    assert "generated 8" in r.stderr and "tok/s" in r.stderr


def test_stop_string_is_not_printed(bundled_model_path):
    r = radixserve("generate", "The capital of France is", "--temperature", "0", "-n", "16", "--stop", ".",
                   "--json")
    out = json.loads(r.stdout)
    assert out["text"] == " Paris" and out["finish_reason"] == "stop"


def test_tokenize_json(bundled_model_path):
    r = radixserve("tokenize", "Hello world", "--json")
    assert json.loads(r.stdout) == [19556, 905]
    r = radixserve("tokenize", "<|im_start|>user", "--special", "--json")
    assert json.loads(r.stdout) == [1, 4093]


@pytest.mark.parametrize("args, needle", [
    (("generate", "-m", "/nonexistent/model.gguf", "hi"), "not found"),
    (("generate", "hi", "--top-p", "7"), "top_p"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    r = radixserve(*args)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_not_a_gguf_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00truncated")
    r = radixserve("info", "-m", str(bad))
    assert r.returncode == 2 and "GGUF" in r.stderr and "Traceback" not in r.stderr


def test_help_explains_every_subcommand():
    r = radixserve("--help")
    assert r.returncode == 0
    for cmd in ("generate", "chat", "tokenize", "info"):
        assert cmd in r.stdout
    r = radixserve("generate", "--help")
    for flag in ("--max-tokens", "--temperature", "--top-k", "--top-p", "--min-p", "--seed", "--stop",
                 "--ignore-eos", "--threads", "--chat", "--special", "--json"):
        assert flag in r.stdout


def test_chat_answers_each_line_with_history_and_quits_on_eof(bundled_model_path):
    r = subprocess.run([sys.executable, "-m", "radixserve", "chat", "--temperature", "0", "-n", "24"],
                       input="What is the capital of France?\nAnd of Italy?\n", capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout and "Rome" in r.stdout
