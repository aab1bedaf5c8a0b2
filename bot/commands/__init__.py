"""Every slash command and button the bot answers, registered from this one place.

The manifest (`manifest.yaml`) declares the same command and the interactivity URL.
"""

from __future__ import annotations

from slack_bolt import App

from bot.commands import bulk, buttons, digest, drift, held, home, voucher
from bot.slack.edge import SlackEdge


def register(app: App, edge: SlackEdge) -> None:
    """Attach the listeners of every Slack surface to the app."""
    # Subcommands with a listener of their own (a matcher on the text) come before
    # `voucher`, which answers every other `/voucher` request.
    digest.register(app, edge)
    drift.register(app, edge)
    voucher.register(app, edge)
    buttons.register(app, edge)
    bulk.register(app, edge)
    held.register(app, edge)
    home.register(app, edge)
