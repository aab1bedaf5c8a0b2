"""The voucher email's words: every field in both bodies, time zones, variants and escaping."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bot.email_content import (
    RenderedEmail,
    VoucherEmailContext,
    redeem_url,
    render_voucher_email,
)

URL = "https://pretix.eu/pycon/pycon2026/redeem?voucher=GRANT-AB12"


def _context(**changes: object) -> VoucherEmailContext:
    context = VoucherEmailContext(
        grantee_name="Zoë Müller",
        conference_name="PyCon Italia 2026",
        code="GRANT-AB12",
        redeem_url=URL,
        valid_until=datetime(2026, 5, 31, 21, 59, tzinfo=UTC),
        timezone="Europe/Rome",
        voucher_kind="grant",
    )
    return dataclasses.replace(context, **changes)  # type: ignore[arg-type]


def _bodies(rendered: RenderedEmail) -> tuple[str, str]:
    return rendered.text, rendered.html


def test_both_bodies_name_every_field() -> None:
    rendered = render_voucher_email(_context())

    assert rendered.subject == "Your free ticket voucher for PyCon Italia 2026"
    for body in _bodies(rendered):
        assert "Hi Zoë Müller," in body
        assert "PyCon Italia 2026" in body
        assert "GRANT-AB12" in body
        assert "financial aid grant" in body
        assert "reply to this email" in body
    assert URL in rendered.text
    assert f'href="{URL}"' in rendered.html


def test_validity_is_shown_in_the_conference_time_zone() -> None:
    rendered = render_voucher_email(_context())

    for body in _bodies(rendered):
        assert "31 May 2026, 23:59 CEST" in body


def test_validity_follows_the_zone_and_its_offset() -> None:
    # 30 June 23:00 UTC is already 1 July in Tokyo; a winter date in Rome shows CET.
    tokyo = render_voucher_email(
        _context(valid_until=datetime(2026, 6, 30, 23, 0, tzinfo=UTC), timezone="Asia/Tokyo")
    )
    winter = render_voucher_email(
        _context(valid_until=datetime(2026, 1, 15, 10, 30, tzinfo=timezone(timedelta(hours=-5))))
    )

    assert "1 July 2026, 08:00 JST" in tokyo.text
    assert "15 January 2026, 16:30 CET" in winter.text


def test_no_expiry_wording() -> None:
    rendered = render_voucher_email(_context(valid_until=None))

    for body in _bodies(rendered):
        assert "no expiry date" in body
        assert "valid until" not in body


def test_without_a_shop_link_the_code_is_still_explained() -> None:
    rendered = render_voucher_email(_context(redeem_url=None))

    for body in _bodies(rendered):
        assert "GRANT-AB12" in body
        assert "ticket shop" in body
        assert "redeem?voucher" not in body
    assert "href" not in rendered.html


def test_speaker_variant_has_its_own_wording() -> None:
    grant = render_voucher_email(_context())
    speaker = render_voucher_email(_context(voucher_kind="speaker", code="SPEAK-9Z"))

    assert speaker.subject == "Your PyCon Italia 2026 ticket: use your speaker voucher"
    for body in _bodies(speaker):
        assert "speaker voucher" in body
        assert "SPEAK-9Z" in body
    for body in _bodies(grant):
        assert "speaker" not in body


def test_resend_says_the_code_is_unchanged() -> None:
    rendered = render_voucher_email(_context(resend=True))

    assert rendered.subject.endswith("(sent again)")
    for body in _bodies(rendered):
        assert "sending your voucher again" in body
    assert "again" not in render_voucher_email(_context()).text


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "O'Brien & Co"])
def test_html_escapes_names_and_text_keeps_them(name: str) -> None:
    rendered = render_voucher_email(
        _context(grantee_name=name, conference_name='PyCon "<b>" & Friends')
    )

    assert "<script>" not in rendered.html
    assert "<b>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html or "O&#39;Brien &amp; Co" in rendered.html
    assert "PyCon &#34;&lt;b&gt;&#34; &amp; Friends" in rendered.html
    assert f"Hi {name}," in rendered.text
    assert 'PyCon "<b>" & Friends' in rendered.subject


def test_html_escapes_the_link_in_attributes() -> None:
    rendered = render_voucher_email(
        _context(redeem_url='https://shop.example/redeem?voucher=A&x="><script>')
    )

    assert "<script>" not in rendered.html
    assert 'href="https://shop.example/redeem?voucher=A&amp;x=&#34;&gt;&lt;script&gt;"' in (
        rendered.html
    )


def test_subject_is_one_line_and_blank_names_get_a_greeting() -> None:
    rendered = render_voucher_email(_context(grantee_name="  ", conference_name="PyCon\nItalia"))

    assert rendered.subject == "Your free ticket voucher for PyCon Italia"
    assert "Hi there," in rendered.text


def test_context_refuses_naive_times_and_unknown_zones() -> None:
    with pytest.raises(ValueError, match="time zone"):
        _context(valid_until=datetime(2026, 5, 31, 23, 59))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="unknown time zone"):
        _context(timezone="Mars/Olympus_Mons")


@pytest.mark.parametrize(
    ("shop_url", "code", "expected"),
    [
        (
            "https://pretix.eu/pycon/pycon2026/",
            "GRANT-AB12",
            "https://pretix.eu/pycon/pycon2026/redeem?voucher=GRANT-AB12",
        ),
        (
            "https://pretix.eu/pycon/pycon2026",
            "GRANT-AB12",
            "https://pretix.eu/pycon/pycon2026/redeem?voucher=GRANT-AB12",
        ),
        (
            "https://tickets.example/",
            "A B&C/é?#",
            "https://tickets.example/redeem?voucher=A%20B%26C%2F%C3%A9%3F%23",
        ),
        (None, "GRANT-AB12", None),
        ("", "GRANT-AB12", None),
    ],
)
def test_redeem_url(shop_url: str | None, code: str, expected: str | None) -> None:
    assert redeem_url(shop_url, code) == expected
