"""The documents in docs/ describe the code as it is: settings, conference keys, the webhook."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from bot.bootstrap import Bot
from bot.conferences import ConferenceConfig
from bot.settings import Settings
from bot.storage import Grant
from bot.webhook import sign
from tests.conftest import WEBHOOK_SECRET, unique

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"


def load_sender() -> ModuleType:
    """docs/examples/send_grant_event.py as a module (it is a script, not a package)."""
    path = EXAMPLES / "send_grant_event.py"
    spec = importlib.util.spec_from_file_location("send_grant_event", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_event(tmp_path: Path, conference: str, name: str = "grant-confirmed.json") -> Path:
    """The docs' example event, for this test's own conference, grant and event id."""
    event: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    event["id"] = unique("evt_")
    body = event.get("grant") or event["voucher"]
    body["conference"] = conference
    if "grant" in event:
        body["id"] = unique("")
        body["email"] = f"jane.{body['id']}@example.org"
    path = tmp_path / name
    path.write_text(json.dumps(event, indent=2), encoding="utf-8")
    return path


def webhook_url(http: httpx.Client) -> str:
    """Where the bot under test listens for notifications."""
    return str(http.base_url).rstrip("/") + "/hooks/grants"


def stored_grant(bot: Bot, external_id: str) -> Grant | None:
    with bot.db.transaction() as session:
        return session.query(Grant).filter_by(external_id=external_id).one_or_none()


def test_every_setting_is_in_the_configuration_document() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in text]
    assert missing == [], f"docs/configuration.md does not describe {missing}"


def test_every_conference_key_is_in_the_configuration_document() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    keys = [name for name in ConferenceConfig.model_fields if name != "code"]
    missing = [key for key in keys if f"`{key}`" not in text]
    assert missing == [], f"docs/configuration.md does not describe {missing}"


def test_the_example_conference_file_loads() -> None:
    from bot.conferences import load_conferences

    conferences = load_conferences(ROOT / "conferences.example.toml", required=True)
    assert set(conferences) == {"pycon2026", "pycon2025"}


def test_the_example_sender_signs_as_the_bot_checks() -> None:
    sender = load_sender()
    body = (EXAMPLES / "grant-confirmed.json").read_bytes()

    assert sender.sign("s3cret", "1777716000", body) == sign("s3cret", "1777716000", body)


def test_the_example_sender_is_accepted_by_the_real_webhook(
    http: httpx.Client, running_bot: Bot, conference: ConferenceConfig, tmp_path: Path
) -> None:
    path = example_event(tmp_path, conference.code)
    command = [sys.executable, str(EXAMPLES / "send_grant_event.py"), webhook_url(http)]

    def run(secret: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GRANTS_WEBHOOK_SECRET": secret}
        return subprocess.run(
            [*command, str(path)], env=env, capture_output=True, text=True, check=False
        )

    first = run(WEBHOOK_SECRET)
    again = run(WEBHOOK_SECRET)
    forged = run("guess")

    assert (first.returncode, first.stdout.split()[0]) == (0, "202"), first
    assert (again.returncode, again.stdout.split()[0]) == (0, "200"), again
    assert '"duplicate"' in again.stdout
    assert (forged.returncode, forged.stdout.split()[0]) == (1, "401"), forged
    grant_id = json.loads(path.read_text(encoding="utf-8"))["grant"]["id"]
    running_bot.background.join(timeout=20)
    assert stored_grant(running_bot, grant_id) is not None


def test_the_example_voucher_event_is_accepted(
    http: httpx.Client, conference: ConferenceConfig, tmp_path: Path
) -> None:
    sender = load_sender()
    path = example_event(tmp_path, conference.code, "speaker-voucher.json")

    status, answer = sender.send(webhook_url(http), path.read_bytes(), secret=WEBHOOK_SECRET)

    assert (status, answer["status"]) == (202, "accepted")


def shell_block(document: Path, marker: str) -> str:
    """The ```sh block of a document that contains `marker`."""
    text = document.read_text(encoding="utf-8")
    blocks = [match.group(1) for match in re.finditer(r"```sh\n(.*?)```", text, re.DOTALL)]
    [block] = [block for block in blocks if marker in block]
    return block


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="no curl")
def test_the_curl_example_is_accepted_by_the_real_webhook(
    http: httpx.Client, running_bot: Bot, conference: ConferenceConfig, tmp_path: Path
) -> None:
    script = shell_block(DOCS / "webhook.md", "openssl dgst")
    path = example_event(tmp_path, conference.code)
    script = script.replace("http://127.0.0.1:3000/hooks/grants", webhook_url(http))
    script = script.replace("docs/examples/grant-confirmed.json", str(path))

    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run(
        [bash, "-euo", "pipefail", "-c", script],
        check=False,
        env={**os.environ, "GRANTS_WEBHOOK_SECRET": WEBHOOK_SECRET},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )

    assert done.returncode == 0, done
    assert json.loads(done.stdout)["status"] == "accepted", done
    grant_id = json.loads(path.read_text(encoding="utf-8"))["grant"]["id"]
    running_bot.background.join(timeout=20)
    assert stored_grant(running_bot, grant_id) is not None
