"""Every slash command and button the bot answers, registered from this one place.

The manifest (`manifest.yaml`) declares the same command and the interactivity URL.
"""

from __future__ import annotations

from slack_bolt import App

from bot.commands import buttons, held, home, voucher
from bot.slack.edge import SlackEdge


def register(app: App, edge: SlackEdge) -> None:
    """Attach the listeners of every Slack surface to the app."""
    voucher.register(app, edge)
    buttons.register(app, edge)
    held.register(app, edge)
    home.register(app, edge)
