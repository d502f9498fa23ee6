"""Stop strings found across token boundaries, never shown to the client.

A stop string may arrive split over several tokens ("<|", "end", "|>"), so a
stream cannot emit text that might be the start of one: the matcher holds
back the longest tail of the text that is a prefix of some stop string, and
releases it as soon as it can no longer become one. When a stop string
completes, everything before it is released and the rest is dropped.
"""
from __future__ import annotations

from collections.abc import Sequence


class StopStrings:
    """Feed text deltas; get back what is safe to emit, and whether a stop string was hit."""

    __slots__ = ("stops", "_held", "stopped", "matched")

    def __init__(self, stops: Sequence[str]) -> None:
        for s in stops:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
        self.stops = tuple(stops)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None

    def push(self, delta: str) -> str:
        """Text that can be emitted now (everything before a stop string, or
        everything that cannot be the start of one)."""
        if self.stopped:
            return ""
        text = self._held + delta
        if not self.stops:
            self._held = ""
            return text
        first = min(((i, s) for s in self.stops if (i := text.find(s)) >= 0), default=None)
        if first is not None:
            self.stopped = True
            self.matched = first[1]
            self._held = ""
            return text[:first[0]]
        keep = self._partial_tail(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """End of generation without a stop string: release what was held."""
        text, self._held = ("" if self.stopped else self._held), ""
        return text

    def _partial_tail(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
