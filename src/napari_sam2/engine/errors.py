"""Errors shared by the engine's readers, in a module of their own so that the medical readers can
derive from :class:`SourceError` while :mod:`.sources` dispatches to them (no import circle)."""

from __future__ import annotations

__all__ = ["SourceError"]


class SourceError(ValueError):
    """An image that cannot be opened or read as asked. The message says what is wrong and what to do."""
