"""SmtpMailer against a real SMTP server on 127.0.0.1: what arrives, and how failures are sorted."""

# The SMTP fixtures are imported by name until tests/conftest.py lists
# tests.fakes.smtp_fixtures in pytest_plugins; test parameters then "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

import pytest

from bot.email_content import VoucherEmailContext, redeem_url, render_voucher_email
from bot.mailer import (
    MailerError,
    MailerRejected,
    MailerUnavailable,
    OutgoingEmail,
    SmtpMailer,
    message_id_domain,
)
from bot.settings import Settings
from tests.fakes.smtp_fixtures import (  # noqa: F401 - fixtures, until tests/conftest.py lists the module
    SENDER,
    SmtpServerFactory,
    smtp_ca,
    smtp_client_tls_context,
    smtp_mailer,
    smtp_server,
    smtp_server_factory,
    smtp_server_tls_context,
)
from tests.fakes.smtp_server import FakeSmtpServer

CREDENTIALS = ("grants", "correct horse battery staple")


def _email(**changes: str) -> OutgoingEmail:
    values = {
        "to_name": "Zoë Müller",
        "to_address": "zoe@example.org",
        "subject": "Your free ticket voucher for PyCon Italia 2026",
        "text": "Your code: GRANT-AB12",
        "html": "<p>Your code: <strong>GRANT-AB12</strong></p>",
        "message_id": "<voucher-17.grant@pycon.example.org>",
    }
    values.update(changes)
    return OutgoingEmail(**values, headers={"X-Voucher-Bot-Grant": "17"})


def _kept_mailer(server: FakeSmtpServer) -> SmtpMailer:
    """A mailer that keeps each thread's connection for its next email, as the bot runs it."""
    return SmtpMailer(host=server.host, port=server.port, tls="none", sender=SENDER, keep_alive=20)


def _mailer(
    server: FakeSmtpServer,
    *,
    tls: Literal["none", "starttls", "ssl"] = "none",
    credentials: tuple[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    port: int | None = None,
    timeout: float = 5.0,
) -> SmtpMailer:
    username, password = credentials if credentials else (None, None)
    return SmtpMailer(
        host=server.host,
        port=server.port if port is None else port,
        tls=tls,
        sender=SENDER,
        username=username,
        password=password,
        timeout=timeout,
        ssl_context=context,
    )


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_delivers_multipart_email_with_exact_headers(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer
) -> None:
    context = VoucherEmailContext(
        grantee_name="Zoë Müller",
        conference_name="PyCon Italia 2026",
        code="GRANT-AB12",
        redeem_url=redeem_url("https://pretix.eu/pycon/pycon2026/", "GRANT-AB12"),
        valid_until=datetime(2026, 5, 31, 21, 59, tzinfo=UTC),
        timezone="Europe/Rome",
        voucher_kind="grant",
    )
    rendered = render_voucher_email(context)
    before = datetime.now(UTC).replace(microsecond=0)

    smtp_mailer.send(_email(subject=rendered.subject, text=rendered.text, html=rendered.html))

    [received] = smtp_server.wait_for(1)
    assert received.mail_from == "grants@pycon.example.org"
    assert received.rcpt_tos == ("zoe@example.org",)
    assert not received.tls
    message = received.message
    assert message["Message-ID"] == "<voucher-17.grant@pycon.example.org>"
    assert b"\r\nMessage-ID: <voucher-17.grant@pycon.example.org>\r\n" in received.raw
    assert message["From"] == SENDER
    assert message["To"] == "Zoë Müller <zoe@example.org>"
    assert message["To"].addresses[0].display_name == "Zoë Müller"
    assert received.raw.isascii()  # RFC 2047 headers and quoted-printable bodies
    assert message["Subject"] == "Your free ticket voucher for PyCon Italia 2026"
    assert message["X-Voucher-Bot-Grant"] == "17"
    sent_at = parsedate_to_datetime(message["Date"])
    assert before <= sent_at <= datetime.now(UTC) + timedelta(seconds=1)

    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    for body in (text.get_content(), html.get_content()):
        assert "GRANT-AB12" in body
        assert "https://pretix.eu/pycon/pycon2026/redeem?voucher=GRANT-AB12" in body
        assert "Zoë Müller" in body


def test_starttls_with_login(
    smtp_server_factory: SmtpServerFactory,
    smtp_server_tls_context: ssl.SSLContext,
    smtp_client_tls_context: ssl.SSLContext,
) -> None:
    server = smtp_server_factory(
        credentials=CREDENTIALS, tls_context=smtp_server_tls_context, require_starttls=True
    )
    mailer = _mailer(
        server, tls="starttls", credentials=CREDENTIALS, context=smtp_client_tls_context
    )

    mailer.check()
    mailer.send(_email())

    [received] = server.wait_for(1)
    assert received.tls
    assert received.authenticated_as == "grants"
    assert received.message["Message-ID"] == "<voucher-17.grant@pycon.example.org>"


def test_implicit_tls_with_login(
    smtp_server_factory: SmtpServerFactory,
    smtp_server_tls_context: ssl.SSLContext,
    smtp_client_tls_context: ssl.SSLContext,
) -> None:
    server = smtp_server_factory(
        credentials=CREDENTIALS, tls_context=smtp_server_tls_context, implicit_tls=True
    )
    mailer = _mailer(server, tls="ssl", credentials=CREDENTIALS, context=smtp_client_tls_context)

    mailer.check()
    mailer.send(_email())

    [received] = server.wait_for(1)
    assert received.tls
    assert received.authenticated_as == "grants"


def test_plain_login_without_tls(smtp_server_factory: SmtpServerFactory) -> None:
    server = smtp_server_factory(credentials=CREDENTIALS)

    _mailer(server, credentials=CREDENTIALS).send(_email())

    assert server.wait_for(1)[0].authenticated_as == "grants"


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_4xx_is_unavailable_and_a_retry_goes_through(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer, stage: Literal["rcpt", "data"]
) -> None:
    smtp_server.reject_next(1, code=451, stage=stage)

    with pytest.raises(MailerUnavailable) as caught:
        smtp_mailer.send(_email())

    assert caught.value.smtp_code == 451
    assert not caught.value.permanent
    assert "451" in str(caught.value)
    assert f"127.0.0.1:{smtp_server.port}" in str(caught.value)
    assert smtp_server.messages == []

    smtp_mailer.send(_email())
    assert len(smtp_server.wait_for(1)) == 1


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_5xx_is_rejected(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer, stage: Literal["rcpt", "data"]
) -> None:
    smtp_server.reject_next(1, code=550, text="5.1.1 No such user here", stage=stage)

    with pytest.raises(MailerRejected) as caught:
        smtp_mailer.send(_email())

    assert caught.value.permanent
    assert caught.value.smtp_code == 550
    assert "550 5.1.1 No such user here" in str(caught.value)
    assert smtp_server.messages == []


def test_recipient_refusal_names_the_recipient(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer
) -> None:
    smtp_server.reject_next(code=550)

    with pytest.raises(MailerRejected, match=r"refused the recipient \(zoe@example.org: 550"):
        smtp_mailer.send(_email())


def test_rejections_stop_after_the_count(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer
) -> None:
    smtp_server.reject_next(2, code=452)

    for _ in range(2):
        with pytest.raises(MailerUnavailable):
            smtp_mailer.send(_email())
    smtp_mailer.send(_email())

    assert len(smtp_server.messages) == 1


def test_connection_refused_names_host_and_port(
    smtp_server: FakeSmtpServer, closed_port: int
) -> None:
    mailer = _mailer(smtp_server, port=closed_port)

    with pytest.raises(MailerUnavailable) as sending:
        mailer.send(_email())
    with pytest.raises(MailerUnavailable) as checking:
        mailer.check()

    for caught in (sending, checking):
        message = str(caught.value)
        assert f"cannot connect to the SMTP server at 127.0.0.1:{closed_port}" in message
        assert "refused" in message.lower()


def test_silent_server_times_out_as_unavailable(
    smtp_server: FakeSmtpServer, silent_port: int
) -> None:
    mailer = _mailer(smtp_server, port=silent_port, timeout=0.2)

    with pytest.raises(MailerUnavailable, match=r"did not answer within 0\.2 s"):
        mailer.send(_email())


def test_wrong_password_is_rejected(
    smtp_server_factory: SmtpServerFactory,
    smtp_server_tls_context: ssl.SSLContext,
    smtp_client_tls_context: ssl.SSLContext,
) -> None:
    server = smtp_server_factory(credentials=CREDENTIALS, tls_context=smtp_server_tls_context)
    mailer = _mailer(
        server, tls="starttls", credentials=("grants", "wrong"), context=smtp_client_tls_context
    )

    for attempt in (mailer.check, lambda: mailer.send(_email())):
        with pytest.raises(MailerRejected, match="refused the login for 'grants'") as caught:
            attempt()
        assert caught.value.smtp_code == 535
    assert server.messages == []


def test_missing_login_is_rejected(smtp_server_factory: SmtpServerFactory) -> None:
    server = smtp_server_factory(credentials=CREDENTIALS)

    with pytest.raises(MailerRejected, match="530"):
        _mailer(server).send(_email())


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_untrusted_certificate_is_a_tls_failure(
    smtp_server_factory: SmtpServerFactory,
    smtp_server_tls_context: ssl.SSLContext,
    tls: Literal["starttls", "ssl"],
) -> None:
    server = smtp_server_factory(tls_context=smtp_server_tls_context, implicit_tls=tls == "ssl")
    # The system trust store does not know the test CA, so verification must fail.
    mailer = _mailer(server, tls=tls)

    for attempt in (mailer.check, lambda: mailer.send(_email())):
        with pytest.raises(MailerUnavailable, match=r"TLS with the SMTP server at 127\.0\.0\.1:"):
            attempt()
    assert server.messages == []


def test_starttls_not_offered_is_refused_not_downgraded(
    smtp_server: FakeSmtpServer,
) -> None:
    mailer = _mailer(smtp_server, tls="starttls")

    with pytest.raises(MailerRejected, match="does not offer STARTTLS"):
        mailer.check()
    assert smtp_server.messages == []


def test_check_happy_path_sends_nothing(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer
) -> None:
    smtp_mailer.check()

    assert smtp_server.messages == []


def test_invalid_recipient_is_rejected_before_connecting(closed_port: int) -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=closed_port, tls="none", sender=SENDER)

    with pytest.raises(MailerRejected, match="cannot build the email"):
        mailer.send(_email(to_address="not-an-address"))
    with pytest.raises(MailerRejected, match="cannot build the email"):
        mailer.send(_email(to_name="Eve\r\nBcc: everyone@example.org"))


def test_concurrent_sends_are_all_recorded(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer
) -> None:
    def send(number: int) -> None:
        smtp_mailer.send(_email(message_id=f"<voucher-{number}@pycon.example.org>"))

    threads = [threading.Thread(target=send, args=(number,)) for number in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    received = smtp_server.wait_for(5, timeout=5)
    ids = sorted(message.message["Message-ID"] for message in received)
    assert ids == sorted(f"<voucher-{number}@pycon.example.org>" for number in range(5))


def test_wait_for_fails_in_words_after_the_timeout(smtp_server: FakeSmtpServer) -> None:
    with pytest.raises(AssertionError, match=r"expected 1 message\(s\) within 0.05 s, got 0"):
        smtp_server.wait_for(1, timeout=0.05)


def test_from_settings(smtp_server: FakeSmtpServer) -> None:
    settings = Settings(
        _env_file=None,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_tls="none",
        email_from=SENDER,
        smtp_timeout_seconds=3,
    )
    mailer = SmtpMailer.from_settings(settings)

    mailer.send(_email())
    mailer.close()  # the bot's mailer keeps a connection between emails until it closes

    assert smtp_server.wait_for(1)[0].mail_from == "grants@pycon.example.org"


def test_from_settings_needs_email_configured() -> None:
    with pytest.raises(ValueError, match="SMTP_HOST and EMAIL_FROM"):
        SmtpMailer.from_settings(Settings(_env_file=None))


@pytest.mark.parametrize(
    ("message_id", "headers"),
    [
        ("voucher-1@pycon.example.org", {}),
        ("<voucher 1@pycon.example.org>", {}),
        ("<voucher-1>", {}),
        ("<voucher-1@pycon.example.org>", {"Subject": "again"}),
        ("<voucher-1@pycon.example.org>", {"content-type": "text/plain"}),
    ],
)
def test_outgoing_email_refuses_bad_ids_and_headers(
    message_id: str, headers: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match=r"Message-ID|headers"):
        OutgoingEmail(
            to_name="Zoë",
            to_address="zoe@example.org",
            subject="s",
            text="t",
            html="h",
            message_id=message_id,
            headers=headers,
        )


def test_errors_share_one_base() -> None:
    assert issubclass(MailerUnavailable, MailerError)
    assert issubclass(MailerRejected, MailerError)
    assert MailerRejected("x").permanent
    assert not MailerUnavailable("x").permanent


@pytest.mark.parametrize(
    ("sender", "domain"),
    [
        ("PyCon Italia Grants <grants@pycon.example.org>", "pycon.example.org"),
        ("grants@PyCon.IT", "pycon.it"),
        ('"Grants, PyCon" <grants@pycon.it>', "pycon.it"),
    ],
)
def test_message_id_domain(sender: str, domain: str) -> None:
    assert message_id_domain(sender) == domain


@pytest.mark.parametrize("sender", ["grants", "a@example.org, b@example.org", ""])
def test_message_id_domain_refuses_non_addresses(sender: str) -> None:
    with pytest.raises(ValueError, match="one sender address"):
        message_id_domain(sender)


def test_one_thread_keeps_its_connection_for_the_next_email(
    smtp_server: FakeSmtpServer,
) -> None:
    mailer = _kept_mailer(smtp_server)
    for n in range(3):
        mailer.send(_email(to_address=f"grantee{n}@example.org"))
    mailer.close()
    fresh = _mailer(smtp_server)  # no keep-alive: one connection per email
    for n in range(2):
        fresh.send(_email(to_address=f"other{n}@example.org"))

    peers = [m.peer for m in smtp_server.wait_for(5)]
    assert len(set(peers[:3])) == 1  # three emails, one connection
    assert len(set(peers[3:])) == 2 and not set(peers[3:]) & set(peers[:3])


def test_a_kept_connection_the_server_dropped_is_replaced_without_losing_the_email(
    smtp_server_factory: SmtpServerFactory,
) -> None:
    server = smtp_server_factory(idle_timeout=0.3)
    mailer = _kept_mailer(server)
    mailer.send(_email(to_address="first@example.org"))
    time.sleep(0.8)  # the server hangs up on the idle connection

    mailer.send(_email(to_address="second@example.org"))
    mailer.close()

    received = server.wait_for(2)
    assert [m.rcpt_tos for m in received] == [("first@example.org",), ("second@example.org",)]
    assert received[0].peer != received[1].peer


def test_a_kept_connection_the_server_closes_with_421_is_replaced_for_the_same_email(
    smtp_server: FakeSmtpServer,
) -> None:
    mailer = _kept_mailer(smtp_server)
    mailer.send(_email(to_address="first@example.org"))
    smtp_server.reject_next(code=421, text="4.4.2 Idle too long, closing", stage="mail")

    mailer.send(_email(to_address="second@example.org"))
    mailer.close()

    received = smtp_server.wait_for(2)
    assert [m.rcpt_tos for m in received] == [("first@example.org",), ("second@example.org",)]
    assert received[0].peer != received[1].peer


def test_421_on_a_new_connection_is_unavailable_not_retried(smtp_server: FakeSmtpServer) -> None:
    smtp_server.reject_next(code=421, text="4.3.2 Shutting down", stage="mail")

    with pytest.raises(MailerUnavailable, match="421"):
        _mailer(smtp_server).send(_email(to_address="first@example.org"))
    _mailer(smtp_server).send(_email(to_address="second@example.org"))

    assert [m.rcpt_tos for m in smtp_server.wait_for(1)] == [("second@example.org",)]


def test_a_connection_lost_after_the_message_is_never_sent_again_at_once(
    smtp_server: FakeSmtpServer,
) -> None:
    mailer = _kept_mailer(smtp_server)
    mailer.send(_email(to_address="first@example.org"))
    smtp_server.hang_up_after_next_message()

    with pytest.raises(MailerUnavailable, match="closed the connection"):
        mailer.send(_email(to_address="second@example.org"))  # on the kept connection
    mailer.send(_email(to_address="third@example.org"))
    mailer.close()

    time.sleep(0.2)
    # The second went out once (its sender cannot know: the caller retries it later with the
    # same Message-ID); it was not sent again on a new connection right away.
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        "first@example.org",
        "second@example.org",
        "third@example.org",
    ]


def test_the_wire_form_round_trips_what_a_template_can_hold(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer
) -> None:
    # The mailer assembles the MIME parts itself (quoted-printable bodies, policy-folded
    # headers): whatever a template or a grantee's name holds comes back out unchanged.
    text = (
        ".a line starting with a dot\n"
        "trailing spaces   \n"
        "tab\tand = sign and =3D already encoded\n"
        + "a very long line without any break " * 8
        + "\nFrom the team\n\n\u00e8 \u4e2d\u6587 \U0001f389\n"
    )
    html = "<p>Ciao <b>Zo\u00eb</b>,</p>\n<p>=\u00a0</p>"
    subject = "Il tuo biglietto gratuito per la PyCon Italia 2026 \u2014 " + "molto lungo " * 6
    smtp_mailer.send(
        OutgoingEmail(
            to_name='Zo\u00eb "Zed" M\u00fcller, Ph.D. ' + "Verylongname" * 6,
            to_address="zoe@example.org",
            subject=subject,
            text=text,
            html=html,
            message_id="<voucher-18.grant@pycon.example.org>",
            headers={"X-Voucher-Bot-Grant": "pycon/\u00e9t\u00e9-18"},
        )
    )

    [received] = smtp_server.wait_for(1)
    assert received.raw.isascii()
    assert all(len(line) <= 998 for line in received.raw.split(b"\r\n"))
    message = received.message
    assert not message.defects
    assert message["Subject"] == subject
    assert message["To"].addresses[0].display_name == (
        'Zo\u00eb "Zed" M\u00fcller, Ph.D. ' + "Verylongname" * 6
    )
    assert message["X-Voucher-Bot-Grant"] == "pycon/\u00e9t\u00e9-18"
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content().replace("\r\n", "\n").rstrip("\n") == html


@pytest.mark.parametrize(
    "headers",
    [{"X-Voucher-Bot-Grant": "17\r\nBcc: someone@example.org"}, {"X Bad Name": "17"}],
)
def test_a_header_that_would_inject_or_break_is_rejected_before_connecting(
    headers: dict[str, str], closed_port: int
) -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=closed_port, tls="none", sender=SENDER)
    message = OutgoingEmail(
        to_name="Zo\u00eb",
        to_address="zoe@example.org",
        subject="s",
        text="t",
        html="h",
        message_id="<voucher-19@pycon.example.org>",
        headers=headers,
    )
    with pytest.raises(MailerRejected, match="cannot build the email"):
        mailer.send(message)  # nothing listens: a rejection means it never tried to connect


def test_carriage_returns_in_a_body_never_reach_the_wire_bare(
    smtp_server: FakeSmtpServer, smtp_mailer: SmtpMailer
) -> None:
    smtp_mailer.send(_email(text="one\r\ntwo\rthree\nfour", html="<p>a</p>\r\n<p>b</p>"))

    [received] = smtp_server.wait_for(1)
    assert b"\r\r" not in received.raw
    assert all(part.endswith(b"\r") or not part for part in received.raw.split(b"\n")[:-1])
    plain = received.message.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == "one\ntwo\nthree\nfour"
