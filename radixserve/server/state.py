"""What one server holds: the model, its tokenizer and chat template, the
scheduler, and the system prompt. Loaded in the background so that /health
can answer 503 until everything (the pinned system prompt included) is ready.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from scheduler.scheduler import Scheduler

from ..cache_persist import LoadReport, load_cache, save_cache
from ..chat_template import ChatTemplate, PromptPrefix
from ..snapshot_file import WriteReport
from ..engine import Model
from ..tokenizer import Tokenizer
from .config import ServerConfig
from .errors import ApiError

log = logging.getLogger("radixserve.server")

DEFAULT_KV_PAGES = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Loaded:
    model: Model
    tokenizer: Tokenizer
    template: ChatTemplate
    scheduler: Scheduler
    model_name: str
    created: int


class ServerState:
    """Mutated only on the event loop: by load(), close() and set_system_prompt()."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loaded: Loaded | None = None
        self.load_error: str | None = None
        self.system_text: str | None = None
        self.system_prefix: PromptPrefix | None = None
        self.stopping = False
        self.load_task: asyncio.Task[None] | None = None
        self._system_lock = asyncio.Lock()
        self._save_lock = asyncio.Lock()
        self._autosave: asyncio.Task[None] | None = None
        self.cache_load: LoadReport | None = None

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    def require(self) -> Loaded:
        """The loaded model, or a 503 while loading (or after a failed load)."""
        if self.stopping:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        if self.loaded is None:
            msg = f"the model failed to load: {self.load_error}" if self.load_error else "the model is loading"
            raise ApiError(503, msg, code="model_loading")
        return self.loaded

    async def load(self) -> None:
        """Open the model (off the loop), start the scheduler, pin the system prompt."""
        cfg = self.config
        t0 = time.perf_counter()
        try:
            model, tok, template, kv = await asyncio.get_running_loop().run_in_executor(None, self._open)
            sched = Scheduler(model, kv, cfg.scheduler)
            if cfg.cache_file:  # before the loop starts: nothing else touches the cache yet
                self.cache_load = await asyncio.get_running_loop().run_in_executor(
                    None, load_cache, sched, cfg.cache_file)
            await sched.start()
            self.loaded = Loaded(model, tok, template, sched, cfg.model_name(model.path), int(time.time()))
            if cfg.system_prompt:
                await self.set_system_prompt(cfg.system_prompt)
            if cfg.cache_file and cfg.cache_save_interval_s:
                self._autosave = asyncio.get_running_loop().create_task(self._save_every(cfg.cache_save_interval_s))
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("load failed: %s", self.load_error)
            if self.loaded is not None:
                await self.loaded.scheduler.stop()
                self.loaded = None
            raise
        log.info("loaded %s (%s kernels, %d threads), %d KV pages of %d tokens in %.2f s",
                 model.path.name, model.kernels, model.threads, kv.n_pages, kv.page_size, time.perf_counter() - t0)

    def _open(self):  # type: ignore[no-untyped-def]
        cfg = self.config
        model = Model(cfg.model_path, threads=cfg.threads)
        tok = Tokenizer.from_model(model)
        template = ChatTemplate.from_model(model, tok)
        if cfg.kv_bytes is not None:
            kv = model.kv_store(budget_bytes=cfg.kv_bytes, page_size=cfg.page_size)
        else:
            kv = model.kv_store(n_pages=cfg.kv_pages or DEFAULT_KV_PAGES, page_size=cfg.page_size)
        return model, tok, template, kv

    async def close(self) -> None:
        """Stop the scheduler (requests in flight are cancelled and their pages
        cached), then save the prefix cache if a cache file is configured."""
        self.stopping = True
        if self._autosave is not None:
            self._autosave.cancel()
            await asyncio.gather(self._autosave, return_exceptions=True)  # a save in progress completes
        if self.loaded is not None:
            await self.loaded.scheduler.stop()
            if self.config.cache_file:
                try:
                    await self.save_cache(reserve_pages=0)  # nothing runs any more: save all of it
                except OSError as e:
                    log.error("could not save the prefix cache to %s: %s", self.config.cache_file, e)

    async def save_cache(self, reserve_pages: int | None = None) -> WriteReport:
        """Write the prefix cache to the configured file (one save at a time;
        serving continues meanwhile). Raises OSError when it cannot be written."""
        loaded = self.loaded
        assert loaded is not None and self.config.cache_file
        async with self._save_lock:
            return await save_cache(loaded.scheduler, self.config.cache_file, reserve_pages=reserve_pages)

    async def _save_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.save_cache()
            except OSError as e:
                log.error("periodic save of the prefix cache to %s failed: %s", self.config.cache_file, e)

    async def set_system_prompt(self, text: str) -> PromptPrefix:
        """Render the system turn as the chat template does, prefill and pin its
        ids, then make it the default system message. Rotations are serialized;
        requests running on the old prefix keep it until they finish."""
        loaded = self.require() if self.loaded is None else self.loaded
        prefix = loaded.template.render_system_prefix(text)
        async with self._system_lock:
            if prefix.ids:
                await loaded.scheduler.set_system_prompt(prefix.ids)
            self.system_text, self.system_prefix = text, prefix
        return prefix
