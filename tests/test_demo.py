"""`make demo`: the bot on its stand-ins plays the whole story and prints what people see."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_runs_alone_and_prints_the_conversation_and_the_emails(tmp_path: Path) -> None:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    # Settings a developer may have exported: the demo must ignore every one of them.
    hostile = {
        "DATABASE_URL": "postgresql+psycopg://nobody@192.0.2.1:5432/prod",
        "SLACK_APP_TOKEN": "xapp-1-real",
        "SLACK_API_URL": "https://slack.com/api/",
        "PRETIX_URL": "https://pretix.eu",
        "CONFERENCES_FILE": str(tmp_path / "missing.toml"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=tmp_path,  # any directory: the demo brings its own data
        env={**keep, **hostile, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    channel, rest = out.split("what Alice saw", 1)
    answers, emails = rest.split("emails sent", 1)
    # A new voucher, in its own thread, with the parent edited to the latest state.
    assert "Ada Yilmaz confirmed their grant for PyCon Italia 2026" in channel
    assert re.search(r"↳ ✅ Grant voucher \w{4}… created \(Pretix #\d+\)", channel)
    assert "edited 1x" in channel
    # The co-speaker's voucher upgraded in place (vouchers.json id 7).
    assert "Co-speaker voucher 7GV5… upgraded to a free grant voucher (Pretix #7)" in channel
    # The waiting-list confirmation held, not issued.
    assert "Joana Marino confirmed from waiting_list: held for staff" in channel
    # The failure with its Retry button, then the retry's success in the same thread.
    ximena = channel[channel.index("Ximena Colombo confirmed") :]
    assert "Failed: Pretix refused our token" in ximena
    assert "[ Retry ]" in ximena
    assert ximena.index("[ Retry ]") < ximena.index("Grant voucher")
    # The status command's answer and the click's answer.
    assert "alice: /voucher status 5211" in answers
    assert re.search(r"Ada Yilmaz, PyCon Italia 2026: grant\s+confirmed; grant voucher", answers)
    assert "alice: clicks [ Retry ]" in answers
    assert "created for Ximena Colombo" in answers
    # Three emails: Ada, Bruno (upgraded), Ximena (after the retry); none for Joana.
    assert emails.startswith(" (3)")
    for name in ("Ada Yilmaz", "Bruno Jensen", "Ximena Colombo"):
        assert f"To: {name} <" in emails
    assert "Joana" not in emails
    assert "Reply-To: Financial aid team <financial-aid@pycon.example.org>" in emails
    assert "Demo finished" in out


def test_the_transcript_sets_context_elements_apart_and_indents_wrapped_replies() -> None:
    from rich.console import Console

    from demo.transcript import channel_view, message_lines

    context = {"blocks": [{"type": "context", "elements": [{"text": "a"}, {"text": "b"}]}]}
    assert message_lines(context) == ["a · b"]

    long = "word " * 40
    messages = [
        {"ts": "1", "text": "parent"},
        {"ts": "2", "thread_ts": "1", "text": long.strip()},
    ]
    console = Console(width=60, record=True, color_system=None)
    for panel in channel_view(messages, []):
        console.print(panel)
    raw = console.export_text().splitlines()
    start = next(i for i, line in enumerate(raw) if "↳" in line)
    continuation = raw[start + 1]
    assert continuation.index("word") == raw[start].index("word"), "\n".join(raw)
