"""The App Home tab: `app_home_opened` publishes the person's Home (through the outbox).

Bolt acks the event by itself; the view is built on the worker, never on the ack path.
A re-delivered event (X-Slack-Retry-Num) is answered once by the app's
`ignore_redeliveries` middleware. The Messages tab sends the same event with
`tab: messages`; it is left alone.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import App

from bot.slack.edge import SlackEdge

HOME_OPENED = "app_home_opened"


def register(app: App, edge: SlackEdge) -> None:
    """Listen to `app_home_opened`."""

    def handle_home_opened(event: dict[str, Any]) -> None:
        on_home_opened(edge, event)

    app.event(HOME_OPENED)(handle_home_opened)


def on_home_opened(edge: SlackEdge, event: dict[str, Any]) -> None:
    """Publish the Home of the person who opened it (staff get the live picture)."""
    home = edge.home
    user = event.get("user")
    if home is None or event.get("tab", "home") != "home" or not isinstance(user, str):
        return
    edge.worker.submit("app home opened", lambda: home.opened(user))
