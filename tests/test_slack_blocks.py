"""The Block Kit builders, tested on their output alone: no Slack, no database."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from bot.commands.parsing import Action
from bot.services.outcomes import (
    HAS_VOUCHER,
    EmailOutcome,
    EmailResult,
    GrantIntake,
    GrantRef,
    IntakeAction,
    ProvisionOutcome,
    ProvisionResult,
    ResendOutcome,
    RevokeOutcome,
    RevokeResult,
    Step,
)
from bot.services.status import AuditLine, GrantStatusReport, VoucherView
from bot.slack.blocks import (
    FALLBACK_LIMIT,
    RETRY_ACTION,
    Message,
    error_message,
    escape,
    help_message,
    intake_reply,
    mask_code,
    not_staff_message,
    parent_state,
    problem_message,
    provision_result_message,
    redact_codes,
    resend_result_message,
    revoke_result_message,
    status_message,
    thread_parent,
    thread_reply,
    truncate,
    unknown_subcommand_message,
    working_message,
)
from bot.storage import EmailState, GrantStatus, VoucherState, VoucherType

CODE = "ABCDEFGHJKMNPQRS"
NASTY = "<!channel> & Co"
LONG_ERROR = "Pretix said: " + "x<&>" * 2500  # 10,013 characters, every kind of escape


def grant(name: str = "Jane Doe", *, email: str | None = "jane@example.com") -> GrantRef:
    return GrantRef(
        id=42,
        external_id="1234",
        conference="pycon2026",
        conference_id=3,
        conference_name="PyCon Italia 2026",
        full_name=name,
        email=email,
        slack_user_id=None,
    )


# A realistic message for every provisioning result, worded as the service words it.
PROVISION_MESSAGES = {
    ProvisionResult.CREATED: f"Grant voucher {CODE} created in Pretix for Jane Doe.",
    ProvisionResult.ADOPTED: f"Grant voucher {CODE} adopted in Pretix for Jane Doe.",
    ProvisionResult.UPGRADED: f"Co-speaker voucher {CODE} upgraded to a free grant voucher.",
    ProvisionResult.ALREADY_SPEAKER: f"Jane Doe already has a speaker voucher ({CODE}).",
    ProvisionResult.ALREADY_GRANT: f"Jane Doe already has a grant voucher ({CODE}).",
    ProvisionResult.GRANT_NOT_FOUND: "There is no grant #42.",
    ProvisionResult.NOT_CONFIRMED: "Jane Doe's grant is refused, not confirmed: no voucher.",
    ProvisionResult.NO_EMAIL: "Jane Doe's grant has no email address.",
    ProvisionResult.HELD: "Jane Doe's grant is held for staff: confirmed from waiting_list.",
    ProvisionResult.NOT_ISSUING: "PyCon Italia 2026 does not issue vouchers.",
    ProvisionResult.PRETIX_DISABLED: "Pretix is not configured; the voucher will be issued later.",
    ProvisionResult.IN_PROGRESS: "Jane Doe's voucher is being provisioned right now.",
    ProvisionResult.RETRY_SCHEDULED: (
        "Pretix is unavailable: 503. Will retry at 10:15:00 UTC (attempt 1 of 8)."
    ),
    ProvisionResult.NEEDS_REVIEW: "Jane Doe's co-speaker voucher was already used (1 of 1).",
    ProvisionResult.FAILED: "Pretix refused the voucher: quota does not exist",
}


def provision(
    result: ProvisionResult,
    *,
    email: EmailResult | None = EmailResult.SENT,
    ref: GrantRef | None = None,
    message: str | None = None,
) -> ProvisionOutcome:
    has_voucher = result in HAS_VOUCHER
    return ProvisionOutcome(
        result=result,
        message=message or PROVISION_MESSAGES[result],
        grant=None if result is ProvisionResult.GRANT_NOT_FOUND else ref or grant(),
        voucher_code=CODE if has_voucher or result is ProvisionResult.FAILED else None,
        voucher_type=VoucherType.GRANT if has_voucher else None,
        pretix_voucher_id=77 if has_voucher else None,
        email=EmailOutcome(email, EMAIL_DETAILS[email]) if has_voucher and email else None,
    )


EMAIL_DETAILS = {
    EmailResult.SENT: "voucher email sent to jane@example.com",
    EmailResult.ALREADY_SENT: "voucher email already sent on 2026-05-02 10:00 UTC",
    EmailResult.NOT_DUE: "no email is due for this voucher",
    EmailResult.IN_PROGRESS: "the email is being sent right now",
    EmailResult.DISABLED: "email is off; it goes out once email is configured",
    EmailResult.RETRY_SCHEDULED: "email to jane@example.com failed (421); will retry at 10:20 UTC",
    EmailResult.FAILED: "email to jane@example.com failed: 550 mailbox unavailable",
}

REVOKE_MESSAGES = {
    RevokeResult.REVOKED: f"Voucher {CODE} deleted in Pretix.",
    RevokeResult.ALREADY_GONE: f"Voucher {CODE} was already gone.",
    RevokeResult.ALREADY_REVOKED: f"Voucher {CODE} was already revoked.",
    RevokeResult.REDEEMED: f"Voucher {CODE} was already used (1x); it was not deleted.",
    RevokeResult.NOT_REFUSED: "Jane Doe's grant is still confirmed.",
    RevokeResult.NO_VOUCHER: "Jane Doe has no voucher to revoke.",
    RevokeResult.NOT_A_GRANT_VOUCHER: f"Jane Doe's voucher {CODE} is a speaker voucher.",
    RevokeResult.NEEDS_REVIEW: f"Voucher {CODE} was upgraded from a co-speaker voucher.",
    RevokeResult.GRANT_NOT_FOUND: "There is no grant #42.",
    RevokeResult.IN_PROGRESS: f"Voucher {CODE} is being worked on right now.",
    RevokeResult.PRETIX_DISABLED: "Pretix is not configured; nothing was revoked.",
    RevokeResult.RETRY_LATER: "Pretix is unavailable (503); nothing changed, try again later.",
    RevokeResult.FAILED: "Pretix refused the revoke: permission denied",
}


def revoke(result: RevokeResult, *, ref: GrantRef | None = None) -> RevokeOutcome:
    return RevokeOutcome(
        result=result,
        message=REVOKE_MESSAGES[result],
        grant=None if result is RevokeResult.GRANT_NOT_FOUND else ref or grant(),
        voucher_code=CODE,
    )


def resend(email: EmailResult | None, *, ref: GrantRef | None = None) -> ResendOutcome:
    who = ref or grant()
    if email is None:
        return ResendOutcome(False, "Jane Doe has no voucher; there is nothing to resend.", who)
    ok = email is EmailResult.SENT
    message = f"Voucher {CODE} sent again to jane@example.com." if ok else "Not sent: it failed."
    return ResendOutcome(ok, message, who, CODE, EmailOutcome(email, EMAIL_DETAILS[email]))


def report(*, voucher: VoucherView | None, ref: GrantRef | None = None) -> GrantStatusReport:
    return GrantStatusReport(
        grant=ref or grant(),
        status=GrantStatus.CONFIRMED,
        hold_reason=None,
        confirmed_at=dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC),
        # An aware time in another zone: shown converted, in UTC.
        reply_deadline=dt.datetime(2026, 5, 5, 1, 59, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        updated_at=dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC),
        voucher=voucher,
        history=(
            AuditLine(
                dt.datetime(2026, 5, 2, 10, 0, tzinfo=dt.UTC),
                "webhook:backend",
                "grant_intake",
                "updated",
            ),
            AuditLine(
                dt.datetime(2026, 5, 2, 10, 1, tzinfo=dt.UTC),
                "reconciler:reconciler",
                "provision",
                "upgraded",
            ),
        ),
    )


def voucher_view(**changes: Any) -> VoucherView:
    values: dict[str, Any] = {
        "code": CODE,
        "voucher_type": VoucherType.GRANT,
        "original_type": VoucherType.CO_SPEAKER,
        "state": VoucherState.CREATED,
        "pretix_voucher_id": 77,
        "last_error": None,
        "attempts": 0,
        "next_attempt_at": None,
        "email_state": EmailState.SENT,
        "email_sent_at": dt.datetime(2026, 5, 2, 10, 2, tzinfo=dt.UTC),
        "emails_sent": 2,
        "email_last_error": None,
    }
    values.update(changes)
    return VoucherView(**values)


def intake(
    *, held: bool = False, refused_with_voucher: bool = False, provision: bool = False
) -> GrantIntake:
    return GrantIntake(
        IntakeAction.UPDATED,
        "Jane Doe confirmed from waiting_list: held for staff instead of issued automatically",
        grant(),
        provision=provision,
        held=held,
        refused_with_voucher=refused_with_voucher,
    )


# --- Walking and checking a message.


def strings(value: Any) -> Iterator[str]:
    """Every string inside a message payload."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def shown(message: Message) -> str:
    """All the mrkdwn a person sees, in one string."""
    texts: list[str] = []
    for block in message.blocks:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [field["text"] for field in block.get("fields", [])]
        texts += [e["text"] for e in block.get("elements", []) if e.get("type") == "mrkdwn"]
    return "\n".join(texts)


def buttons(message: Message) -> list[dict[str, Any]]:
    return [
        element
        for block in message.blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def check_text_object(obj: Any, limit: int = 3000) -> None:
    assert isinstance(obj, dict)
    assert obj["type"] in {"mrkdwn", "plain_text"}
    assert isinstance(obj["text"], str)
    assert 1 <= len(obj["text"]) <= limit
    if obj["type"] == "mrkdwn":
        assert "emoji" not in obj
        assert isinstance(obj.get("verbatim", False), bool)


def validate(message: Message) -> None:
    """Structural checks: the shapes Slack accepts, within its limits."""
    assert isinstance(message, Message)
    assert message.text.strip()
    assert len(message.text) <= FALLBACK_LIMIT
    assert 1 <= len(message.blocks) <= 50
    assert message.as_kwargs() == {"text": message.text, "blocks": message.blocks}
    json.dumps(message.as_kwargs())
    for block in message.blocks:
        assert "type" in block
        kind = block["type"]
        if kind == "section":
            check_text_object(block["text"])
            fields = block.get("fields", [])
            assert len(fields) <= 10
            for field in fields:
                check_text_object(field, limit=2000)
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                check_text_object(element)
        elif kind == "actions":
            assert 1 <= len(block["elements"]) <= 25
            for button in block["elements"]:
                assert button["type"] == "button"
                assert button["text"]["type"] == "plain_text"
                assert 1 <= len(button["text"]["text"]) <= 75
                assert button["action_id"]
                assert isinstance(button["value"], str)
                assert 1 <= len(button["value"]) <= 2000
                assert button.get("style", "primary") in {"primary", "danger"}
        else:
            assert kind == "divider", f"unexpected block type {kind}"


def assert_retry_button(message: Message, grant_id: int = 42) -> None:
    (button,) = buttons(message)
    assert button["action_id"] == RETRY_ACTION
    assert button["value"] == str(grant_id)
    assert button["text"]["text"] == "Retry"
    assert button["style"] == "primary"


def every_message(ref: GrantRef | None = None, error: str | None = None) -> list[Message]:
    """Every builder with every outcome branch, for the checks that hold for all of them."""
    messages: list[Message | None] = [
        help_message(),
        help_message("/grants"),
        not_staff_message(),
        working_message("issue", "<@U0123ABC|jane>"),
        working_message("status", ref.full_name if ref else "1234"),
        problem_message(error or "No grant found for jane@example.com."),
        error_message(),
        status_message(report(voucher=None, ref=ref)),
        status_message(
            report(
                voucher=voucher_view(last_error=error, email_last_error=error, attempts=3),
                ref=ref,
            )
        ),
    ]
    outcomes: list[ProvisionOutcome | RevokeOutcome | ResendOutcome] = []
    for result in ProvisionResult:
        for email in EmailResult:
            outcomes.append(provision(result, email=email, ref=ref, message=error))
    outcomes += [revoke(result, ref=ref) for result in RevokeResult]
    outcomes += [resend(email, ref=ref) for email in [None, *EmailResult]]
    for outcome in outcomes:
        if isinstance(outcome, ProvisionOutcome):
            messages.append(provision_result_message(outcome))
        elif isinstance(outcome, RevokeOutcome):
            messages.append(revoke_result_message(outcome))
        else:
            messages.append(resend_result_message(outcome))
        messages.append(thread_reply(outcome))
        state = parent_state(outcome)
        if state is not None and outcome.grant is not None:
            messages.append(thread_parent(outcome.grant, state=state))
    messages += [
        intake_reply(intake(held=True)),
        intake_reply(intake(refused_with_voucher=True)),
        intake_reply(intake(provision=True)),
    ]
    return [message for message in messages if message is not None]


# --- Every message.


def test_every_message_is_structurally_valid() -> None:
    messages = every_message()
    assert len(messages) > 100
    for message in messages:
        validate(message)


def test_data_is_escaped_and_pings_nobody() -> None:
    ref = grant(NASTY, email="a<b>&c@example.com")
    for message in every_message(ref, error=f"failed for {NASTY}"):
        validate(message)
        for text in strings(message.as_kwargs()):
            assert "<!" not in text, text
            # The only markup in angle brackets is a mention the builder made itself.
            for tag in re.findall(r"<[^>]*>", text):
                assert re.fullmatch(r"<@U0123ABC>", tag), tag
        mrkdwn = [t for b in message.blocks for t in _text_objects(b) if t["type"] == "mrkdwn"]
        assert all(t["verbatim"] is True for t in mrkdwn if "grants-tech" not in t["text"])


def _text_objects(block: dict[str, Any]) -> list[dict[str, Any]]:
    found = [block["text"]] if "text" in block else []
    found += block.get("fields", [])
    found += [e for e in block.get("elements", []) if e.get("type") in {"mrkdwn", "plain_text"}]
    return found


def test_a_name_is_shown_escaped_in_bold() -> None:
    message = provision_result_message(provision(ProvisionResult.CREATED, ref=grant(NASTY)))
    assert "*&lt;!channel&gt; &amp; Co*" in shown(message)
    assert "&lt;!channel&gt; &amp; Co" in message.text


def test_a_10000_character_error_is_cut_within_the_limits() -> None:
    assert len(LONG_ERROR) > 10_000
    for message in every_message(error=LONG_ERROR):
        validate(message)  # every text object within 3,000 (fields 2,000)
    failed = provision_result_message(provision(ProvisionResult.FAILED, message=LONG_ERROR))
    section = failed.blocks[0]["text"]["text"]
    assert len(section) <= 3000
    assert "…" in section
    assert re.search(r"&(?!amp;|lt;|gt;)", section) is None  # no half-cut escape
    assert "…" in problem_message(LONG_ERROR).blocks[0]["text"]["text"]
    assert len(problem_message(LONG_ERROR).text) <= FALLBACK_LIMIT


def test_truncate_keeps_short_text_and_never_splits_an_escape() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("x" * 10, 10) == "x" * 10
    assert truncate("x" * 11, 10) == "x" * 9 + "…"
    cut = truncate("abcdef" + escape("&&&&"), 9)
    assert cut == "abcdef…"
    assert len(truncate(escape("<" * 5000), 3000)) <= 3000
    assert truncate(escape("<" * 5000), 3000).endswith("&lt;…")
    with pytest.raises(ValueError, match="at least 1"):
        truncate("x", 0)


def test_escape_handles_the_three_special_characters() -> None:
    assert escape("<!here> a&b >") == "&lt;!here&gt; a&amp;b &gt;"
    assert escape("&amp;") == "&amp;amp;"


# --- Provisioning answers and thread replies.


@pytest.mark.parametrize("result", list(ProvisionResult))
def test_provision_answer_for_every_result(result: ProvisionResult) -> None:
    outcome = provision(result, email=EmailResult.SENT)
    message = provision_result_message(outcome)
    validate(message)
    assert len(message.text) > 15
    text = shown(message)
    if result in HAS_VOUCHER:
        assert f"`{CODE}`" in text
        assert "*Jane Doe*" in text
        assert CODE in message.text
        assert "Voucher email sent to jane@example.com" in text
    else:
        # The service's own words (the reason) reach the member of staff.
        first_words = PROVISION_MESSAGES[result].split(":")[0]
        assert escape(first_words) in text
        assert escape(first_words) in message.text
    if outcome.grant is not None:
        assert "`1234`" in text
        assert "`pycon2026`" in text
    if result is ProvisionResult.FAILED:
        assert_retry_button(message)
    else:
        assert buttons(message) == []


@pytest.mark.parametrize("email", list(EmailResult))
def test_email_results_and_the_retry_button(email: EmailResult) -> None:
    outcome = provision(ProvisionResult.CREATED, email=email)
    for message in (provision_result_message(outcome), thread_reply(outcome)):
        assert message is not None
        validate(message)
        assert escape(EMAIL_DETAILS[email][1:]) in shown(message)
        if email is EmailResult.FAILED:
            assert_retry_button(message)
            assert "/voucher resend 1234 pycon2026" in shown(message)
        else:
            assert buttons(message) == []


def test_created_thread_reply_shows_the_masked_code_and_the_email() -> None:
    reply = thread_reply(provision(ProvisionResult.CREATED))
    assert reply is not None
    validate(reply)
    text = shown(reply)
    assert "`ABCD…` created" in text
    assert "Pretix #77" in text
    assert ":email: Voucher email sent to jane@example.com." in text
    assert reply.text.startswith("Jane Doe: ")
    assert "ABCD…" in reply.text
    assert CODE not in reply.text


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (ProvisionResult.ADOPTED, "adopted"),
        (ProvisionResult.UPGRADED, "Co-speaker voucher"),
        (ProvisionResult.ALREADY_SPEAKER, "speaker voucher"),
    ],
)
def test_replies_for_adopted_upgraded_and_speaker(result: ProvisionResult, words: str) -> None:
    reply = thread_reply(provision(result, email=EmailResult.ALREADY_SENT))
    assert reply is not None
    validate(reply)
    assert words in shown(reply)
    assert "`ABCD…`" in shown(reply)
    assert buttons(reply) == []


@pytest.mark.parametrize(
    ("result", "words", "retry"),
    [
        (ProvisionResult.FAILED, "quota does not exist", True),
        (ProvisionResult.NEEDS_REVIEW, "already used", False),  # a person decides
        (ProvisionResult.RETRY_SCHEDULED, "Will retry at 10:15:00 UTC", False),  # retries itself
        (ProvisionResult.HELD, "held for staff", False),
        (ProvisionResult.NO_EMAIL, "no email address", False),
        (ProvisionResult.PRETIX_DISABLED, "not configured", False),
    ],
)
def test_replies_for_problems(result: ProvisionResult, words: str, retry: bool) -> None:
    reply = thread_reply(provision(result))
    assert reply is not None
    validate(reply)
    assert words in shown(reply)
    assert words in reply.text
    if retry:
        assert_retry_button(reply)
    elif result is ProvisionResult.HELD:  # a person decides, with the held grant's buttons
        assert [(b["action_id"], b["value"]) for b in buttons(reply)] == [
            ("held_issue", "42"),
            ("held_dismiss", "42"),
        ]
    else:
        assert buttons(reply) == []


def test_held_and_no_email_replies_say_what_to_run() -> None:
    for result in (ProvisionResult.HELD, ProvisionResult.NO_EMAIL):
        reply = thread_reply(provision(result))
        assert reply is not None
        assert "`/voucher issue 1234 pycon2026`" in shown(reply)


@pytest.mark.parametrize(
    "outcome",
    [
        provision(ProvisionResult.ALREADY_GRANT, email=EmailResult.ALREADY_SENT),
        provision(ProvisionResult.ALREADY_GRANT, email=EmailResult.IN_PROGRESS),
        provision(ProvisionResult.ALREADY_GRANT, email=EmailResult.NOT_DUE),
        provision(ProvisionResult.IN_PROGRESS),
        provision(ProvisionResult.NOT_CONFIRMED),
        provision(ProvisionResult.NOT_ISSUING),
        provision(ProvisionResult.GRANT_NOT_FOUND),
        revoke(RevokeResult.ALREADY_REVOKED),
        revoke(RevokeResult.IN_PROGRESS),
        revoke(RevokeResult.NOT_REFUSED),
        revoke(RevokeResult.GRANT_NOT_FOUND),
        resend(None),
        resend(EmailResult.IN_PROGRESS),
        resend(EmailResult.DISABLED),
    ],
    ids=lambda o: f"{type(o).__name__}-{getattr(o, 'result', 'resend')}",
)
def test_no_ops_do_not_reach_the_thread(
    outcome: ProvisionOutcome | RevokeOutcome | ResendOutcome,
) -> None:
    assert thread_reply(outcome) is None
    assert parent_state(outcome) is None


@pytest.mark.parametrize(
    "email", [EmailResult.SENT, EmailResult.FAILED, EmailResult.RETRY_SCHEDULED]
)
def test_already_grant_replies_when_the_email_did_something(email: EmailResult) -> None:
    reply = thread_reply(provision(ProvisionResult.ALREADY_GRANT, email=email))
    assert reply is not None
    validate(reply)
    assert escape(EMAIL_DETAILS[email][1:]) in shown(reply)
    assert (len(buttons(reply)) == 1) is (email is EmailResult.FAILED)


# --- Revoke and resend.


@pytest.mark.parametrize("result", list(RevokeResult))
def test_revoke_answer_for_every_result(result: RevokeResult) -> None:
    outcome = revoke(result)
    message = revoke_result_message(outcome)
    validate(message)
    assert message.text
    assert buttons(message) == []  # the Retry button provisions; it never follows a revoke
    text = shown(message)
    if result in (RevokeResult.REVOKED, RevokeResult.ALREADY_GONE):
        assert f"`{CODE}`" in text
        assert "revoked" in text
        assert "*Jane Doe*" in text
    else:
        assert REVOKE_MESSAGES[result].split(";")[0].rstrip(".") in text
    if result in (RevokeResult.RETRY_LATER, RevokeResult.FAILED):
        assert "`/voucher revoke 1234 pycon2026`" in text
    reply = thread_reply(outcome)
    news = {
        RevokeResult.REVOKED,
        RevokeResult.ALREADY_GONE,
        RevokeResult.REDEEMED,
        RevokeResult.NEEDS_REVIEW,
    }
    assert (reply is not None) is (result in news)
    if reply is not None:
        validate(reply)
        assert buttons(reply) == []


def test_redeemed_voucher_reply_asks_for_a_person() -> None:
    reply = thread_reply(revoke(RevokeResult.REDEEMED))
    assert reply is not None
    assert "Needs a person" in shown(reply)
    assert "was not deleted" in shown(reply)
    assert parent_state(revoke(RevokeResult.REDEEMED)) == (
        ":warning: needs a person: voucher `ABCD…` was used, not revoked"
    )


def test_resend_answers() -> None:
    sent = resend_result_message(resend(EmailResult.SENT))
    validate(sent)
    assert f"`{CODE}` sent again to jane@example.com" in shown(sent)
    assert buttons(sent) == []
    failed = resend_result_message(resend(EmailResult.FAILED))
    validate(failed)
    assert "Not sent" in shown(failed)
    assert_retry_button(failed)
    retrying = resend_result_message(resend(EmailResult.RETRY_SCHEDULED))
    assert buttons(retrying) == []
    nothing = resend_result_message(resend(None))
    assert "nothing to resend" in shown(nothing)
    assert buttons(nothing) == []
    unknown = resend_result_message(ResendOutcome(False, "There is no grant #9.", None))
    validate(unknown)
    assert ":warning: There is no grant #9." in shown(unknown)


def test_resend_thread_replies() -> None:
    sent = thread_reply(resend(EmailResult.SENT))
    assert sent is not None
    assert "sent again" in shown(sent)
    failed = thread_reply(resend(EmailResult.FAILED))
    assert failed is not None
    assert_retry_button(failed)


# --- Parent messages and intake.


def test_thread_parent_names_the_grantee_and_shows_the_state() -> None:
    state = parent_state(provision(ProvisionResult.CREATED))
    assert state == ":white_check_mark: voucher `ABCD…` emailed"
    parent = thread_parent(grant(), state=state)
    validate(parent)
    assert "*Jane Doe* confirmed their grant for *PyCon Italia 2026*" in shown(parent)
    assert state in shown(parent)
    assert parent.text == "Jane Doe confirmed their grant for PyCon Italia 2026"


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (provision(ProvisionResult.RETRY_SCHEDULED), ":hourglass: waiting for Pretix"),
        (provision(ProvisionResult.NEEDS_REVIEW), ":warning: needs a person"),
        (provision(ProvisionResult.HELD), ":warning: held for staff"),
        (provision(ProvisionResult.FAILED), ":x: failed"),
        (provision(ProvisionResult.CREATED, email=EmailResult.FAILED), ":warning: needs a person"),
        (provision(ProvisionResult.ALREADY_SPEAKER), ":white_check_mark: speaker voucher"),
        (revoke(RevokeResult.REVOKED), ":no_entry_sign: voucher `ABCD…` revoked"),
        (resend(EmailResult.SENT), ":white_check_mark: voucher `ABCD…` emailed"),
        (intake(held=True), ":warning: held for staff"),
        (intake(refused_with_voucher=True), ":warning: needs a person"),
        (intake(provision=True), ":hourglass_flowing_sand: issuing the voucher"),
    ],
)
def test_parent_state(
    outcome: ProvisionOutcome | RevokeOutcome | ResendOutcome | GrantIntake, expected: str
) -> None:
    state = parent_state(outcome)
    assert state is not None
    assert state.startswith(expected)
    assert "\n" not in state


def test_parent_state_is_none_for_intake_without_news() -> None:
    assert parent_state(intake()) is None
    assert parent_state(GrantIntake(IntakeAction.STALE, "older; ignored", grant())) is None
    assert parent_state(GrantIntake(IntakeAction.IGNORED, "unknown conference")) is None


def test_intake_replies() -> None:
    held = intake_reply(intake(held=True))
    assert held is not None
    validate(held)
    assert "confirmed from waiting_list" in shown(held)
    assert "`/voucher issue 1234 pycon2026`" in shown(held)
    refused = intake_reply(intake(refused_with_voucher=True))
    assert refused is not None
    assert "`/voucher revoke 1234 pycon2026`" in shown(refused)
    assert [(b["action_id"], b["value"]) for b in buttons(held)] == [
        ("held_issue", "42"),
        ("held_dismiss", "42"),
    ]
    assert [(b["action_id"], b["value"]) for b in buttons(refused)] == [("revoke_voucher", "42")]
    assert intake_reply(intake(provision=True)) is None
    assert intake_reply(intake()) is None


def test_a_refused_grant_with_a_voucher_says_if_it_should_go_once() -> None:
    message = (
        "Jane Doe's grant is refused after confirmation; grant voucher ABCD-EFGH still exists: "
        "revoke it if it should go"
    )
    refused = intake_reply(
        GrantIntake(IntakeAction.UPDATED, message, grant(), refused_with_voucher=True)
    )
    assert refused is not None
    text = shown(refused)
    assert text.count("if it should go") == 1, text
    assert "`/voucher revoke 1234 pycon2026`" in text
    assert intake_reply(intake()) is None
    assert intake_reply(GrantIntake(IntakeAction.IGNORED, "unknown status")) is None


# --- Commands.


def test_help_lists_every_subcommand_with_an_example() -> None:
    message = help_message()
    validate(message)
    text = shown(message)
    subcommands = [action.value for action in Action]
    for sub in subcommands:
        assert f"`/voucher {sub}" in text
        assert sub in message.text
    assert text.count("E.g. `/voucher ") == len(subcommands) - 1  # all but help itself
    assert "&lt;@user|email|grant id&gt;" in text
    assert "Slack email" in text
    assert "Only grants staff" in text
    assert "`/grants issue" in shown(help_message("/grants"))


def test_not_staff_and_error_messages() -> None:
    refusal = not_staff_message()
    validate(refusal)
    assert "only grants staff" in refusal.text
    assert "organiser" in refusal.text
    error = error_message()
    validate(error)
    assert "nothing was changed twice" in error.text
    assert "#grants-tech" in shown(error)


def test_working_message_shows_a_mention_by_id_and_escapes_the_rest() -> None:
    issuing = working_message("issue", "<@U0123ABC|jane>")
    validate(issuing)
    assert "Issuing a voucher for <@U0123ABC>…" in shown(issuing)
    assert "grant's thread" in shown(issuing)
    assert "jane" not in shown(issuing)
    looking = working_message("status", NASTY)
    assert "Looking up &lt;!channel&gt; &amp; Co…" in shown(looking)
    assert "thread" not in shown(looking)
    mail = working_message("resend", "<mailto:jane@example.com|jane@example.com>")
    assert "again to jane@example.com…" in shown(mail)


def test_problem_message_is_one_warning_line() -> None:
    message = problem_message("jane has several grants: pycon2025, pycon2026")
    validate(message)
    # Not capitalised: a problem often starts with what the person typed.
    assert message.blocks[0]["text"]["text"] == (
        ":warning: jane has several grants: pycon2025, pycon2026."
    )
    assert message.text == "jane has several grants: pycon2025, pycon2026."


# --- Status.


def test_status_without_a_voucher() -> None:
    message = status_message(report(voucher=None))
    validate(message)
    text = shown(message)
    assert "*Jane Doe* (PyCon Italia 2026)" in text
    assert "jane@example.com" in text
    assert "confirmed" in text
    assert "No voucher yet." in text
    assert "`/voucher issue 1234 pycon2026`" in text
    assert "2026-05-04 23:59 UTC" in text  # the deadline, converted to UTC
    assert "no voucher yet" in message.text


def test_status_with_a_voucher() -> None:
    voucher = voucher_view(
        attempts=2,
        next_attempt_at=dt.datetime(2026, 5, 2, 11, 0, tzinfo=dt.UTC),
        last_error="Pretix is unavailable: 503",
        email_state=EmailState.FAILED,
        email_last_error="550 mailbox unavailable",
    )
    held = replace(report(voucher=voucher), hold_reason="confirmed from waiting_list")
    message = status_message(held)
    validate(message)
    text = shown(message)
    assert f"`{CODE}`" in text
    assert "grant (upgraded from co-speaker)" in text
    assert "created" in text
    assert "#77" in text
    assert "2026-05-02 11:00 UTC" in text
    assert "Pretix is unavailable: 503" in text
    assert "550 mailbox unavailable" in text
    assert "*Email* failed" in text
    assert "2026-05-02 10:02 UTC" in text
    assert "*Emails sent*\n2" in text
    assert "Held for staff" in text
    assert "grant_intake: updated" in text
    assert "provision: upgraded" in text
    assert CODE in message.text
    assert "No voucher" not in text


def test_status_times_are_utc() -> None:
    text = shown(status_message(report(voucher=voucher_view())))
    times = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d(?: UTC)?", text)
    assert times
    assert all(t.endswith(" UTC") for t in times)


def test_repeated_pretix_retries_are_said_once_in_the_thread() -> None:
    grant = GrantRef(
        id=7,
        external_id="1234",
        conference="pycon2026",
        conference_id=1,
        conference_name="PyCon Italia 2026",
        full_name="Jane Doe",
        email="jane@example.org",
        slack_user_id=None,
    )
    first = ProvisionOutcome(
        result=ProvisionResult.RETRY_SCHEDULED,
        message="Pretix is unavailable: 503. Will retry at 10:00:30 UTC (attempt 1 of 8).",
        grant=grant,
        voucher_code="ABCDEFGHJKMNPQRS",
        attempt=1,
    )
    third = replace(first, attempt=3)

    assert thread_reply(first) is not None
    assert thread_reply(third) is None


def test_an_unknown_subcommand_is_named_above_the_help() -> None:
    message = unknown_subcommand_message("frobnicate")

    assert message.text.startswith("Unknown subcommand 'frobnicate'.")
    assert "frobnicate" in str(message.blocks[0])
    assert message.blocks[1:] == help_message().blocks


# --- Voucher codes in the channel: a code is a free ticket.

OTHER_CODE = "ZYXWVUTSRQPNMKJH"  # another voucher of the grantee's, named only in free text
CHANNEL_OUTCOMES: list[ProvisionOutcome | RevokeOutcome | ResendOutcome] = [
    replace(
        provision(ProvisionResult.CREATED),
        steps=(
            Step("reserve", ok=True, detail=f"reserved code {CODE}"),
            Step("pretix", ok=True, detail=f"created voucher #77 ({CODE})"),
        ),
        email=EmailOutcome(EmailResult.SENT, f"voucher email with {CODE} sent to jane@example.com"),
    ),
    provision(ProvisionResult.UPGRADED, email=EmailResult.FAILED),
    provision(ProvisionResult.ALREADY_SPEAKER, email=EmailResult.SENT),
    provision(ProvisionResult.FAILED, message=f"Pretix says {CODE} exists but cannot find it"),
    provision(
        ProvisionResult.NEEDS_REVIEW,
        message=f"Jane Doe's email changed after voucher {OTHER_CODE} was sent; look at it",
    ),
    replace(
        provision(ProvisionResult.NEEDS_REVIEW, message=f"Co-speaker voucher {CODE} was used"),
        voucher_code=CODE,
    ),
    *(revoke(result) for result in RevokeResult),
    *(resend(email) for email in [None, *EmailResult]),
]


def channel_messages(outcome: ProvisionOutcome | RevokeOutcome | ResendOutcome) -> list[Message]:
    """What an outcome puts in the conference channel: the thread reply and the parent."""
    messages = [m for m in [thread_reply(outcome)] if m is not None]
    state = parent_state(outcome)
    if state is not None and outcome.grant is not None:
        messages.append(thread_parent(outcome.grant, state=state))
    return messages


def test_mask_code_keeps_four_characters_and_never_a_whole_short_code() -> None:
    assert mask_code(CODE) == "ABCD…"
    assert mask_code("SPK1-2026") == "SPK1…"
    assert mask_code("ABCD") == "AB…"  # short codes (made elsewhere) are never shown whole
    assert mask_code("") == "…"


def test_redact_codes_masks_known_codes_and_anything_shaped_like_ours() -> None:
    text = f"voucher {CODE} (was {OTHER_CODE}), speaker SPK-77, not ABCDEFGH or {CODE}X"
    assert redact_codes(text, ["SPK-77", None]) == (
        f"voucher ABCD… (was ZYXW…), speaker SPK…, not ABCDEFGH or {CODE}X"
    )
    assert redact_codes("no codes here", [CODE]) == "no codes here"


@pytest.mark.parametrize(
    "outcome", CHANNEL_OUTCOMES, ids=lambda o: f"{type(o).__name__}-{getattr(o, 'result', 'x')}"
)
def test_channel_messages_show_only_the_first_four_characters_of_a_code(
    outcome: ProvisionOutcome | RevokeOutcome | ResendOutcome,
) -> None:
    for message in channel_messages(outcome):
        validate(message)
        payload = json.dumps(message.as_kwargs(), ensure_ascii=False)
        assert CODE not in payload
        assert OTHER_CODE not in payload
        assert CODE[:5] not in payload and OTHER_CODE[:5] not in payload


def test_every_channel_message_of_every_branch_hides_the_code() -> None:
    outcomes: list[ProvisionOutcome | RevokeOutcome | ResendOutcome] = [
        provision(result, email=email) for result in ProvisionResult for email in EmailResult
    ]
    outcomes += [revoke(result) for result in RevokeResult]
    seen = 0
    for outcome in outcomes:
        for message in channel_messages(outcome):
            seen += 1
            assert CODE not in json.dumps(message.as_kwargs(), ensure_ascii=False)
    assert seen > 50


def test_the_channel_sees_which_voucher_by_its_first_four_characters() -> None:
    created = thread_reply(CHANNEL_OUTCOMES[0])
    assert created is not None
    assert "`ABCD…` created" in shown(created)
    assert "ABCD…" in created.text
    revoked = thread_reply(revoke(RevokeResult.REVOKED))
    assert revoked is not None
    assert "Voucher `ABCD…` revoked" in shown(revoked)


def test_an_intake_reply_hides_a_code_named_in_its_message() -> None:
    refused = GrantIntake(
        IntakeAction.UPDATED,
        f"Jane Doe's grant was refused after confirmation; voucher {CODE} still exists",
        grant(),
        refused_with_voucher=True,
    )
    reply = intake_reply(refused)
    assert reply is not None
    assert CODE not in json.dumps(reply.as_kwargs(), ensure_ascii=False)
    assert "ABCD…" in shown(reply)


@pytest.mark.parametrize(
    "outcome", CHANNEL_OUTCOMES, ids=lambda o: f"{type(o).__name__}-{getattr(o, 'result', 'x')}"
)
def test_answers_to_staff_keep_the_full_code(
    outcome: ProvisionOutcome | RevokeOutcome | ResendOutcome,
) -> None:
    if isinstance(outcome, ProvisionOutcome):
        answer = provision_result_message(outcome)
    elif isinstance(outcome, RevokeOutcome):
        answer = revoke_result_message(outcome)
    else:
        answer = resend_result_message(outcome)
    payload = json.dumps(answer.as_kwargs(), ensure_ascii=False)
    for code in (CODE, OTHER_CODE):
        if code in outcome.message:
            assert code in payload
    if isinstance(outcome, ProvisionOutcome) and outcome.has_voucher:
        assert f"`{CODE}`" in shown(answer)


def test_status_keeps_the_full_code() -> None:
    message = status_message(report(voucher=voucher_view()))
    assert f"`{CODE}`" in shown(message)
    assert CODE in message.text
