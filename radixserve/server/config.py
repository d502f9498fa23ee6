"""Settings of one server, frozen and validated once (the CLI builds them from flags)."""
from __future__ import annotations

import dataclasses
import pathlib

from scheduler.config import SchedulerConfig


class ServerConfigError(ValueError):
    """A server setting is out of range; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    model_path: str | None = None          # None: the bundled SmolLM2
    served_model_name: str | None = None   # None: the model file's stem
    threads: int | None = None
    kv_pages: int | None = None            # exactly one of kv_pages / kv_bytes (default: 1024 pages)
    kv_bytes: int | None = None
    page_size: int = 16
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    system_prompt: str | None = None
    api_key: str | None = None
    max_body_bytes: int = 8 << 20
    max_waiting: int = 256                 # queued requests beyond this get a 429
    shutdown_grace_s: float = 10.0
    cache_file: str | None = None          # prefix-cache snapshot: loaded at start, saved at shutdown
    cache_save_interval_s: float | None = None  # also save every this many seconds (needs cache_file)
    socket_port: int | None = None         # the msgpack socket protocol on TCP (0: a free port); None: off
    socket_host: str = "127.0.0.1"
    unix_socket: str | None = None         # the msgpack socket protocol on a Unix socket at this path

    def __post_init__(self) -> None:
        if self.kv_pages is not None and self.kv_bytes is not None:
            raise ServerConfigError("give at most one of kv_pages and kv_bytes")
        for name in ("kv_pages", "kv_bytes", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ServerConfigError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.page_size, bool) or not isinstance(self.page_size, int) or self.page_size < 1:
            raise ServerConfigError(f"page_size must be a positive int, got {self.page_size!r}")
        if self.api_key is not None and not self.api_key:
            raise ServerConfigError("api_key must not be empty")
        if self.system_prompt is not None and not self.system_prompt:
            raise ServerConfigError("system_prompt must not be empty")
        if isinstance(self.max_waiting, bool) or not isinstance(self.max_waiting, int) or self.max_waiting < 1:
            raise ServerConfigError(f"max_waiting must be a positive int, got {self.max_waiting!r}")
        if self.max_body_bytes < 1024:
            raise ServerConfigError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.socket_port is not None and (isinstance(self.socket_port, bool) or not isinstance(self.socket_port, int)
                                             or not 0 <= self.socket_port <= 65535):
            raise ServerConfigError(f"socket_port must be an int in [0, 65535], got {self.socket_port!r}")
        if self.unix_socket is not None and not self.unix_socket:
            raise ServerConfigError("unix_socket must not be empty")
        if self.cache_file is not None and not self.cache_file:
            raise ServerConfigError("cache_file must not be empty")
        if self.cache_save_interval_s is not None:
            if self.cache_file is None:
                raise ServerConfigError("cache_save_interval_s needs cache_file")
            if isinstance(self.cache_save_interval_s, bool) or not self.cache_save_interval_s > 0:
                raise ServerConfigError(f"cache_save_interval_s must be > 0, got {self.cache_save_interval_s!r}")
        if self.shutdown_grace_s < 0:
            raise ServerConfigError(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")

    def model_name(self, resolved_path: pathlib.Path) -> str:
        return self.served_model_name or resolved_path.stem
