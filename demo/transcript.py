"""What the demo shows: the Slack channel as people would see it, and the emails sent.

Pure functions from what the stand-ins recorded (FakeSlack's messages and calls, the SMTP
server's messages) to rich renderables, so the test reads the same text a person does.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tests.fakes.smtp_server import ReceivedMessage

_EMOJI = {
    "white_check_mark": "✅",
    "information_source": "ℹ️",  # noqa: RUF001 - the emoji Slack shows
    "hourglass_flowing_sand": "⏳",
    "hourglass": "⌛",
    "warning": "⚠️",
    "x": "❌",
    "email": "📧",
    "no_entry_sign": "🚫",
    "lock": "🔒",
}


@dataclass(frozen=True)
class Interaction:
    """Something a person did in Slack (a command, a click) and what the bot answered them."""

    who: str
    did: str
    answers: tuple[str, ...]


def slack_text(text: str) -> str:
    """Slack mrkdwn as a terminal shows it: emoji codes as emoji, links and mentions as text."""
    text = re.sub(r":([a-z_]+):", lambda m: _EMOJI.get(m.group(1), m.group(0)), text)
    text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r"\2 (\1)", text)
    text = re.sub(r"<(?:@|#)([A-Z0-9]+)(?:\|([^>]+))?>", lambda m: "@" + (m.group(2) or m[1]), text)
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"\1", text)  # *bold*
    text = text.replace("`", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def message_lines(message: Mapping[str, Any]) -> list[str]:
    """A message's visible text: its blocks (sections, fields, context, buttons), else `text`."""
    lines: list[str] = []
    for block in message.get("blocks") or []:
        kind = block.get("type")
        if kind in ("section", "header") and block.get("text"):
            lines.append(slack_text(block["text"]["text"]))
        if kind == "section":
            lines.extend(slack_text(field["text"]) for field in block.get("fields", []))
        elif kind == "context":
            # Slack sets a context block's elements apart with a dot.
            lines.append(" · ".join(slack_text(e.get("text", "")) for e in block["elements"]))
        elif kind == "actions":
            buttons = [e["text"]["text"] for e in block["elements"] if e.get("type") == "button"]
            lines.append("  ".join(f"[ {label} ]" for label in buttons))
    return lines or [slack_text(str(message.get("text", "")))]


def channel_view(
    messages: Iterable[Mapping[str, Any]], updates: Iterable[Mapping[str, Any]]
) -> list[RenderableType]:
    """Each top-level message in a panel (marked when edited), its thread replies inside."""
    edits = Counter(str(update["ts"]) for update in updates)
    ordered = list(messages)
    parents = [m for m in ordered if m.get("thread_ts") in (None, m["ts"])]
    panels: list[RenderableType] = []
    for parent in parents:
        body: list[RenderableType] = [Text("\n".join(message_lines(parent)))]
        replies = [m for m in ordered if m.get("thread_ts") == parent["ts"] != m["ts"]]
        if replies:
            noun = "reply" if len(replies) == 1 else "replies"
            body.append(Text(f"\n🧵 {len(replies)} {noun} in the thread", style="dim"))
        body.extend(_reply(reply) for reply in replies)
        edited = edits.get(str(parent["ts"]), 0)
        subtitle = f"edited {edited}x: shows the latest state" if edited else None
        panels.append(
            Panel(Group(*body), title="voucher-bot", title_align="left", subtitle=subtitle)
        )
    return panels


def _reply(message: Mapping[str, Any]) -> RenderableType:
    """A thread reply after its arrow: every line under the first, wrapped ones too, indented."""
    grid = Table.grid()
    grid.add_column(no_wrap=True)
    grid.add_column()
    grid.add_row(" ↳ ", Text("\n".join(message_lines(message))))
    return grid


def interaction_view(interaction: Interaction) -> RenderableType:
    """A command or click and the answer only that person sees."""
    answers = "\n".join(f"bot (only visible to you): {a}" for a in interaction.answers)
    return Panel(
        Text(f"{interaction.who}: {interaction.did}\n{answers}"),
        title="only you can see this",
        title_align="left",
        border_style="dim",
    )


def email_view(mail: ReceivedMessage, *, max_lines: int = 8) -> RenderableType:
    """One email as received: its headers and the start of its text body."""
    message = mail.message
    headers = [f"{name}: {message[name]}" for name in ("From", "To", "Reply-To", "Subject")]
    body = message.get_body(("plain",))
    text = str(body.get_content()) if body is not None else ""
    lines = text.strip().splitlines()
    shown = lines[:max_lines] + (["…"] if len(lines) > max_lines else [])
    kept = [line for line in headers if not line.endswith(": None")]
    return Panel(Text("\n".join([*kept, "", *shown])), title="email", title_align="left")
