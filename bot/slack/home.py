"""App Home, live: published on `app_home_opened`, refreshed after changes, debounced.

`HomeTab.opened(user)` publishes that person's Home at once (staff: the picture with its
buttons; anyone else: a short note). `HomeTab` is also an outcome listener: after any service
outcome (a held decision, a provisioning or revoke outcome, an intake) it schedules one
refresh, at most once per `debounce` however many outcomes arrive, for the staff who opened
Home in the last `recent` (remembered by this process). One picture serves every viewer of a
refresh, and is reused by opens within `debounce`. Views go through the durable outbox
(`Outbox.home`, latest wins per person), whose poster honours Slack's rate limits.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import structlog

from bot.services.context import Outcome, ServiceContext
from bot.services.home import HomePicture, home_picture
from bot.services.staff import StaffDirectory
from bot.slack.blocks import Message, home_view
from bot.slack.outbox import Outbox
from bot.storage import utcnow

log = structlog.get_logger(__name__)

DEBOUNCE = dt.timedelta(seconds=10)
RECENT = dt.timedelta(minutes=30)


class HomeTab:
    """Publishes App Home views through the outbox; refreshes viewers after changes."""

    def __init__(
        self,
        *,
        services: ServiceContext,
        staff: StaffDirectory,
        outbox: Outbox,
        debounce: dt.timedelta = DEBOUNCE,
        recent: dt.timedelta = RECENT,
        clock: Callable[[], dt.datetime] = utcnow,
        picture: Callable[[ServiceContext, dt.datetime], HomePicture] | None = None,
    ) -> None:
        self._services = services
        self._staff = staff
        self._outbox = outbox
        self._debounce = debounce
        self._recent = recent
        self._clock = clock
        self._build = picture or (lambda ctx, now: home_picture(ctx, now=now))
        self._lock = threading.Lock()
        self._opened: dict[str, dt.datetime] = {}  # user -> when they last opened Home
        self._cached: HomePicture | None = None
        self._timer: threading.Timer | None = None
        self._closed = False

    def opened(self, user: str) -> None:
        """`user` opened the Home tab: remember them, publish their Home now."""
        with self._lock:
            self._opened[user] = self._clock()
        self.show(user)

    def show(self, user: str, *, notice: Message | None = None) -> None:
        """Publish `user`'s Home (staff: the live picture), with `notice` on top if given."""
        staff = self._staff.is_staff(user)
        picture = self._picture() if staff else None
        self._outbox.home(user=user, view=home_view(picture, staff=staff, notice=notice))

    def publish(self, outcome: Outcome) -> None:
        """An outcome listener: something changed, so refresh the viewers (debounced)."""
        with self._lock:
            self._cached = None
            if self._timer is not None or self._closed or not self._opened:
                return
            self._timer = threading.Timer(self._debounce.total_seconds(), self._run_refresh)
            self._timer.daemon = True
            self._timer.start()

    def refresh(self) -> int:
        """Publish the Home of every staff member who opened it recently; how many."""
        with self._lock:
            self._timer = None
            self._cached = None
            cutoff = self._clock() - self._recent
            for user in [u for u, at in self._opened.items() if at < cutoff]:
                del self._opened[user]
            viewers = [u for u in self._opened if self._staff.is_staff(u)]
        for user in viewers:
            self.show(user)
        return len(viewers)

    def close(self) -> None:
        """Cancel a pending refresh (the bot is stopping)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _run_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:  # the next change or open tries again
            log.exception("app home refresh failed")

    def _picture(self) -> HomePicture:
        now = self._clock()
        with self._lock:
            cached = self._cached
        if cached is not None and now - cached.generated_at < self._debounce:
            return cached
        picture = self._build(self._services, now)
        with self._lock:
            self._cached = picture
        return picture
