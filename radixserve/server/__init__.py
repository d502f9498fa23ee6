"""The HTTP API: OpenAI-compatible completions and chat (SSE streaming), and
native endpoints (tokenize, health, metrics, system prompt, cache)."""
from .app import create_app
from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
