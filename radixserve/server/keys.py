"""Typed keys of what the app holds (aiohttp's AppKey)."""
from __future__ import annotations

from aiohttp import web

from .metrics import Metrics
from .state import ServerState

STATE = web.AppKey("state", ServerState)
METRICS = web.AppKey("metrics", Metrics)
