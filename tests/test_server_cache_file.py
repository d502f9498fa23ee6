"""--cache-file: the server loads its prefix cache at start, saves it on
POST /v1/cache/save and at shutdown; a restarted server answers an old prompt
from the cache with the same text."""
from __future__ import annotations

import os

import pytest

from radixserve.__main__ import build_parser
from radixserve.server import ServerConfig
from radixserve.server.config import ServerConfigError
from scheduler.config import SchedulerConfig
from server_util import ServerThread

PROMPT = {"prompt": [(7 * i) % 200 + 3 for i in range(90)], "max_tokens": 6, "temperature": 0,
          "ignore_eos": True}


@pytest.fixture(scope="module")
def model_path(tiny_model):
    return str(tiny_model(weight_type="Q8_0", n_ctx=512, seed=11))


def config(model_path, cache_file, **kw):
    return ServerConfig(model_path=model_path, threads=1, kv_pages=64, cache_file=cache_file,
                        scheduler=SchedulerConfig(max_running=4, max_batch_tokens=64), **kw)


def test_save_restart_and_serve_from_the_snapshot(model_path, tmp_path):
    path = str(tmp_path / "cache.rsx")
    with ServerThread(config(model_path, path)) as s:
        assert s.state.cache_load is not None and not s.state.cache_load.loaded  # no file yet
        status, first = s.request("POST", "/v1/completions", PROMPT)
        assert status == 200 and first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        status, saved = s.request("POST", "/v1/cache/save")
        assert status == 200 and saved["pages"] > 0 and os.path.getsize(path) == saved["bytes"]
        s.invariants_when_idle()
        os.unlink(path)  # the shutdown save writes it again
    assert os.path.exists(path)
    with ServerThread(config(model_path, path)) as s:
        assert s.state.cache_load.loaded
        status, again = s.request("POST", "/v1/completions", PROMPT)
        assert status == 200
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 89 // 16 * 16
        assert again["choices"][0]["text"] == first["choices"][0]["text"]
        s.invariants_when_idle()


def test_save_without_a_cache_file_is_a_400(model_path):
    with ServerThread(config(model_path, None)) as s:
        status, body = s.request("POST", "/v1/cache/save")
        assert status == 400 and body["error"]["code"] == "no_cache_file"


def test_a_bad_snapshot_starts_an_empty_server(model_path, tmp_path):
    path = tmp_path / "bad.rsx"
    path.write_bytes(b"not a snapshot at all")
    with ServerThread(config(model_path, str(path))) as s:
        assert not s.state.cache_load.loaded and "bad magic" in s.state.cache_load.reason
        assert s.request("GET", "/health")[0] == 200


def test_cli_flags_and_config_validation():
    args = build_parser().parse_args(["serve", "--cache-file", "/tmp/x.rsx", "--cache-save-interval", "30"])
    assert args.cache_file == "/tmp/x.rsx" and args.cache_save_interval == 30.0
    with pytest.raises(ServerConfigError, match="needs cache_file"):
        ServerConfig(cache_save_interval_s=5.0)
    with pytest.raises(ServerConfigError, match="> 0"):
        ServerConfig(cache_file="x", cache_save_interval_s=0)


def test_periodic_save(model_path, tmp_path):
    import time
    path = tmp_path / "auto.rsx"
    with ServerThread(config(model_path, str(path), cache_save_interval_s=0.1)) as s:
        assert s.request("POST", "/v1/completions", PROMPT)[0] == 200
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.exists()
