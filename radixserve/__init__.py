"""radixserve: CPU LLM serving where every token prefix is stored once."""
from __future__ import annotations

import os

__version__ = "0.1.0"

# The engine's own thread pool owns the cores. OpenBLAS (numpy's BLAS) would
# otherwise keep its own threads spinning after any numpy call and steal
# cycles from every forward; set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
