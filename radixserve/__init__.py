"""radixserve: CPU LLM serving where every token prefix is stored once."""
from __future__ import annotations

__version__ = "0.1.0"
