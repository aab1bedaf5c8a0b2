"""Who asked for a piece of work, and through which edge."""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage import Source


@dataclass(frozen=True)
class Actor:
    """The person or process behind a request, for permissions and the audit log."""

    source: Source
    name: str

    @property
    def label(self) -> str:
        """A short `source:name` form for logs and the audit table."""
        return f"{self.source.value}:{self.name}"


RECONCILER = Actor(Source.RECONCILER, "reconciler")
