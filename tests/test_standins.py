"""`make standins`: the fakes as local Slack, Pretix and SMTP for the README's walk-through.

Started as the README says, its printed `.env` lines are all `check` and the imports need.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.standins import READY

ROOT = Path(__file__).resolve().parent.parent
VOUCHER_BOT = Path(sys.executable).parent / "voucher-bot"


def read_settings(process: subprocess.Popen[str], timeout: float = 30) -> dict[str, str]:
    """The KEY=VALUE lines printed before the ready line, quotes removed as .env readers do."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout

    def read() -> None:
        for line in iter(stdout.readline, ""):
            lines.put(line.rstrip("\n"))
            if line.rstrip("\n") == READY:
                return
        lines.put("")  # the end of the output

    threading.Thread(target=read, daemon=True).start()
    settings: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise AssertionError("the stand-ins did not say they were ready") from None
        if line == READY:
            return settings
        assert line, f"the stand-ins exited ({process.poll()}) before they were ready"
        if not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key] = value.strip('"')


@pytest.fixture
def standins(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.standins"],
        cwd=ROOT,
        env={**keep, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, read_settings(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def bot(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VOUCHER_BOT), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_standins_print_settings_that_check_and_the_sample_imports_accept(
    tmp_path: Path, standins: tuple[subprocess.Popen[str], dict[str, str]]
) -> None:
    process, settings = standins
    for name in ("PRETIX_URL", "SMTP_PORT", "SLACK_API_URL", "SLACK_STAFF_USERGROUP"):
        assert name in settings
    # The README's walk: conferences.toml copied from the example, SQLite in the folder.
    (tmp_path / "conferences.toml").write_text(
        (ROOT / "conferences.example.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env = {**keep, **settings}

    assert bot(env, "migrate", cwd=tmp_path).returncode == 0
    check = bot(env, "check", cwd=tmp_path)

    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert all(line.startswith("ok") for line in lines), check.stdout
    names = [line.split(":")[0].split(maxsplit=1)[1] for line in lines]
    for part in ("pretix pycon2026", "pretix pycon2025", "smtp", "slack staff"):
        assert part in names, check.stdout
    assert "slack channel pycon2026" in names and "quota 12" in check.stdout

    vouchers = bot(env, "vouchers", "import", str(ROOT / "demo/data/vouchers.json"), cwd=tmp_path)
    assert vouchers.returncode == 0, vouchers.stdout + vouchers.stderr
    dry = bot(
        env, "grants", "import", "--dry-run", str(ROOT / "demo/data/grants.json"), cwd=tmp_path
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Read 7 grants: would be 7 created." in dry.stdout

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert process.stdout is not None
    assert "# stopped: Pretix holds 15 vouchers" in process.stdout.read()
