"""The Retry button's service: what failed is tried again, once, and reported like any step."""

from __future__ import annotations

from collections.abc import Callable

from bot.services.context import Outcome, ServiceContext
from bot.services.outcomes import EmailResult, ProvisionOutcome, ProvisionResult
from bot.services.provisioning import provision_grant_voucher
from bot.services.retry import retry_grant
from bot.slack.blocks import parent_state, thread_reply
from tests.conftest import TEST_ACTOR
from tests.fakes.pretix_server import FakePretix
from tests.fakes.smtp_server import FakeSmtpServer


class Recorder:
    """An outcome listener that keeps what it hears (the Slack thread listens here)."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def publish(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def test_retrying_a_failed_email_sends_it_once_and_tells_the_thread(
    make_ctx: Callable[..., ServiceContext],
    make_grant: Callable[..., int],
    smtp_server: FakeSmtpServer,
) -> None:
    heard = Recorder()
    ctx = make_ctx(listener=heard)
    grant_id = make_grant()
    smtp_server.reject_next(1, code=550, text="mailbox unavailable")

    first = provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    assert first.email is not None and first.email.result is EmailResult.FAILED
    heard.outcomes.clear()

    retried = retry_grant(ctx, grant_id=grant_id, actor=TEST_ACTOR)
    again = retry_grant(ctx, grant_id=grant_id, actor=TEST_ACTOR)  # a double click

    assert retried.email is not None and retried.email.result is EmailResult.SENT
    assert again.email is not None and again.email.result is EmailResult.ALREADY_SENT
    assert len(smtp_server.messages) == 1
    [told, quiet] = heard.outcomes
    assert isinstance(told, ProvisionOutcome) and thread_reply(told) is not None
    assert "emailed" in (parent_state(told) or "")
    assert isinstance(quiet, ProvisionOutcome) and thread_reply(quiet) is None


def test_retrying_a_failed_voucher_restarts_it(
    ctx: ServiceContext, make_grant: Callable[..., int], pretix_server: FakePretix
) -> None:
    grant_id = make_grant()
    pretix_server.fail_next(401, body={"detail": "Invalid token."}, method="POST")

    assert provision_grant_voucher(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is (
        ProvisionResult.FAILED
    )
    assert retry_grant(ctx, grant_id=grant_id, actor=TEST_ACTOR).result is ProvisionResult.CREATED
