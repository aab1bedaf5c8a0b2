"""`voucher-bot bulk preview` and `bulk run`, run as real processes against the local fakes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from bot.conferences import ConferenceConfig
from bot.services.context import ServiceContext
from bot.storage import AuditEvent, BulkRequest, BulkStatus, Conference, Grant
from tests.conftest import unique
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer
from tests.helpers import grant_external_id, seed_co_speaker, write_file
from tests.test_cli import run_cli


def _requests(ctx: ServiceContext, conference: str) -> list[BulkRequest]:
    with ctx.db.transaction() as session:
        return list(
            session.scalars(
                select(BulkRequest)
                .join(Conference, BulkRequest.conference_id == Conference.id)
                .where(Conference.code == conference)
            )
        )


def test_bulk_preview_counts_by_branch_lists_the_grantees_and_changes_nothing(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    bot_env: dict[str, str],
    pretix_server: FakePretix,
) -> None:
    new = make_grant(full_name="Ada New")
    _seeded, co_email = seed_co_speaker(ctx, pretix_server, conference.code, unique("CO"))
    make_grant(full_name="Bruno Upgrade", email=co_email)
    held = make_grant(full_name="Joana Held", previous_status="waiting_list")

    result = run_cli(bot_env, "bulk", "preview")

    assert result.returncode == 1, result.stderr  # a held grant needs a person
    assert "3 confirmed grants, 2 to do" in result.stdout
    assert "1 new voucher, 1 co-speaker upgrade, 1 held" in result.stdout
    assert grant_external_id(ctx.db, new) in result.stdout
    assert grant_external_id(ctx.db, held) in result.stdout and "Joana Held" in result.stdout
    assert not pretix_server.writes() and not _requests(ctx, conference.code)


def test_bulk_run_dry_run_is_the_preview(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    bot_env: dict[str, str],
    pretix_server: FakePretix,
) -> None:
    make_grant()

    result = run_cli(bot_env, "bulk", "run", conference.code, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Dry run, nothing done.")
    assert "1 new voucher" in result.stdout
    assert not pretix_server.writes() and not _requests(ctx, conference.code)


def test_bulk_run_without_a_terminal_goes_ahead_approved_by_its_user_and_prints_the_summary(
    ctx: ServiceContext,
    conference: ConferenceConfig,
    make_grant: Callable[..., int],
    bot_env: dict[str, str],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    for _ in range(12):
        make_grant()

    result = run_cli(bot_env, "bulk", "run")
    again = run_cli(bot_env, "bulk", "run")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "done in" in result.stdout
    assert "created 12 · upgraded 0 · emailed 12 · skipped 0 · failed 0" in result.stdout
    assert pretix_server.count("POST", "/batch_create/") == 1
    assert len(smtp_server.wait_for(12)) == 12
    [request] = _requests(ctx, conference.code)
    assert request.status is BulkStatus.DONE
    assert request.requested_by == request.decided_by  # the person at the command line
    with ctx.db.transaction() as session:
        approval = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "bulk_approve",
                AuditEvent.conference_id == request.conference_id,
            )
        ).one()
    assert approval.source.value == "cli" and (approval.detail or {})["self_approved"] is True
    assert again.returncode == 0 and "Nothing to do" in again.stdout
    assert len(_requests(ctx, conference.code)) == 1  # nothing due: nothing stored


def test_bulk_with_an_unknown_conference_exits_2(bot_env: dict[str, str]) -> None:
    preview = run_cli(bot_env, "bulk", "preview", "nosuchconf")
    run = run_cli(bot_env, "bulk", "run", "nosuchconf", "--yes")

    assert preview.returncode == run.returncode == 2
    assert "Unknown conference 'nosuchconf'" in preview.stderr


def test_grants_imported_with_no_provision_wait_for_staff_until_a_bulk_run(
    tmp_path: Path,
    ctx: ServiceContext,
    conference: ConferenceConfig,
    bot_env: dict[str, str],
    pretix_server: FakePretix,
    smtp_server: FakeSmtpServer,
) -> None:
    grants = [
        {
            "id": unique(""),
            "conference": conference.code,
            "full_name": f"Grantee {n}",
            "email": f"{unique('g')}@example.org",
            "status": "confirmed",
            "previous_status": "waiting_for_confirmation",
            "updated_at": "2026-05-02T10:00:00Z",
        }
        for n in range(3)
    ]
    path = write_file(tmp_path, "grants.json", json.dumps(grants))

    imported = run_cli(bot_env, "grants", "import", str(path), "--no-provision")
    reconciled = run_cli(bot_env, "reconcile")  # the background pass, by hand
    untouched = len(pretix_server.all_vouchers()) + len(smtp_server.messages)
    with ctx.db.transaction() as session:
        waiting = set(
            session.scalars(
                select(Grant.waits_for_staff).where(
                    Grant.external_id.in_([g["id"] for g in grants])
                )
            )
        )
    ran = run_cli(bot_env, "bulk", "run", "--yes")

    assert imported.returncode == 0, imported.stderr
    assert reconciled.returncode == 0, reconciled.stderr
    assert untouched == 0
    assert waiting == {True}
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(pretix_server.all_vouchers()) == 3
    assert len(smtp_server.wait_for(3)) == 3
