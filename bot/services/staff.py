"""Who counts as staff: members of a Slack user group and/or an allow-list of user ids.

The group's members are cached for a few minutes. When Slack cannot say (a free workspace
answers `plan_upgrade_required`, or Slack is down), the last known members and the
allow-list still decide; nobody is let in by an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import structlog

log = structlog.get_logger(__name__)


class StaffDirectory:
    """Answers `is_staff(user_id)`, checked on the server for every command and click."""

    def __init__(
        self,
        *,
        user_ids: Iterable[str] = (),
        usergroup: str | None = None,
        fetch_members: Callable[[str], list[str]] | None = None,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allowed = frozenset(user_ids)
        self._usergroup = usergroup
        self._fetch = fetch_members
        self._ttl = ttl_seconds
        self._clock = clock
        self._members: frozenset[str] = frozenset()
        self._fetched_at: float | None = None
        self._refreshing = False
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        """Whether anyone at all can be staff (otherwise every request is refused)."""
        return bool(self._allowed) or (self._usergroup is not None and self._fetch is not None)

    def is_staff(self, user_id: str) -> bool:
        """True for an allow-listed user or a current member of the staff user group."""
        if user_id in self._allowed:
            return True
        if self._usergroup is None or self._fetch is None:
            return False
        return user_id in self._current_members()

    def refresh(self) -> None:
        """Fetch the group's members now (the scheduler calls this to keep the cache warm)."""
        if self._usergroup is None or self._fetch is None:
            return
        try:
            members = frozenset(self._fetch(self._usergroup))
        except Exception as exc:  # noqa: BLE001 - any failure keeps the last known members
            log.warning("staff user group unavailable", usergroup=self._usergroup, error=str(exc))
            with self._lock:
                # Try again after a short pause rather than on every request.
                self._fetched_at = self._clock() - self._ttl + min(self._ttl, 30.0)
            return
        with self._lock:
            self._members = members
            self._fetched_at = self._clock()

    def _current_members(self) -> frozenset[str]:
        """The cached members; a stale cache is refreshed in the background, not waited for."""
        with self._lock:
            never = self._fetched_at is None
            stale = never or self._clock() - self._fetched_at >= self._ttl  # type: ignore[operator]
            start = stale and not never and not self._refreshing
            if start:
                self._refreshing = True
        if never:
            self.refresh()  # only the very first check waits (the scheduler warms it at start)
        elif start:
            threading.Thread(target=self._refresh_in_background, daemon=True).start()
        with self._lock:
            return self._members

    def _refresh_in_background(self) -> None:
        try:
            self.refresh()
        finally:
            with self._lock:
                self._refreshing = False
