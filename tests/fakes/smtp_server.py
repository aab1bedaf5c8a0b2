"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records what it receives, for tests."""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["mail", "rcpt", "data"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: the envelope, the raw bytes and (parsed when read) the email.

    Parsing waits until a test reads `message`: a real relay answers 250 without parsing the
    message for a test, and the bulk benchmark's ~1,000 emails should not wait for it.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    tls: bool
    authenticated_as: str | None
    peer: str = ""  # the client's address and port: one per SMTP connection

    @functools.cached_property
    def message(self) -> EmailMessage:
        """The email as the standard library's modern parser reads it."""
        return _parse(self.raw)


@dataclass
class _Rejection:
    remaining: int
    reply: str
    stage: Stage


class _Handler:
    """aiosmtpd hooks: optional AUTH enforcement, scripted rejections, recording."""

    def __init__(self, server: FakeSmtpServer) -> None:
        self._server = server

    async def handle_MAIL(  # noqa: N802 - aiosmtpd finds hooks by this name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # AUTH is enforced here rather than with aiosmtpd's auth_required, which warns (and
        # so fails under filterwarnings=error) when combined with AUTH over plain text.
        if self._server.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = self._server._take_rejection("mail")
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd finds hooks by this name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self._server._take_rejection("rcpt")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd finds hooks by this name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        reply = self._server._take_rejection("data")
        if reply is not None:
            return reply
        if self._server.delay:
            await asyncio.sleep(self._server.delay)  # a slow relay: each message takes a while
        raw = envelope.original_content or b""
        transport = server.transport
        auth = session.auth_data
        self._server._record(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
                authenticated_as=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                peer=str(session.peer),
            )
        )
        if self._server._take_hang_up():  # accepted, but the client never hears it
            assert server.transport is not None
            server.transport.close()
        return "250 2.0.0 Message accepted for delivery"


class _Controller(Controller):
    """Binds to port 0 and learns the port the OS chose, so parallel tests never collide."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated


class FakeSmtpServer:
    """A running SMTP server that records every message; thread-safe, use as a context manager."""

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        idle_timeout: float = 300.0,
    ) -> None:
        """Plain SMTP; a tls_context adds STARTTLS (or implicit TLS); credentials demand AUTH.

        `idle_timeout`: seconds after which the server drops a connection that says nothing.
        """
        if (require_starttls or implicit_tls) and tls_context is None:
            raise ValueError("TLS options need a tls_context")
        self.credentials = credentials
        self.host = "127.0.0.1"
        self.delay = 0.0  # seconds before each message is accepted (a slow relay)
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._rejection: _Rejection | None = None
        self._hang_ups = 0
        smtp_options: dict[str, Any] = {
            # A fixed name: the default, socket.getfqdn(), can stall on a DNS lookup.
            "server_hostname": "smtp.test",
            "ready_timeout": 5.0,
            "authenticator": self._authenticate,
            # Offer AUTH in clear text only when there is no TLS to protect it. aiosmtpd counts
            # only STARTTLS as TLS, so an implicit-TLS server must not require it either.
            "auth_require_tls": tls_context is not None and not implicit_tls,
            "timeout": idle_timeout,
        }
        if implicit_tls:
            smtp_options["ssl_context"] = tls_context
        elif tls_context is not None:
            smtp_options["tls_context"] = tls_context
            smtp_options["require_starttls"] = require_starttls
        self._controller = _Controller(_Handler(self), hostname=self.host, port=0, **smtp_options)

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        port: int = self._controller.port
        return port

    def start(self) -> FakeSmtpServer:
        """Start listening in a background thread."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop the server and its thread."""
        self._controller.stop()

    def __enter__(self) -> FakeSmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A copy of every message accepted so far, oldest first."""
        with self._lock:
            return list(self._messages)

    def reject_next(
        self, count: int = 1, *, code: int, text: str | None = None, stage: Stage = "rcpt"
    ) -> None:
        """Answer the next `count` RCPT (or MAIL, or DATA) commands with `code`, e.g. 451."""
        if not 400 <= code <= 599:
            raise ValueError("a rejection code is 4xx or 5xx")
        default = "4.3.0 Try again later" if code < 500 else "5.1.1 Mailbox unavailable"
        with self._lock:
            self._rejection = _Rejection(count, f"{code} {text or default}", stage)

    def hang_up_after_next_message(self) -> None:
        """Accept the next message, then close the connection before saying so: the sender
        cannot know whether it went out."""
        with self._lock:
            self._hang_ups += 1

    def _take_hang_up(self) -> bool:
        with self._lock:
            if self._hang_ups <= 0:
                return False
            self._hang_ups -= 1
            return True

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least `count` messages arrived; fail the test after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout} s, got {len(self._messages)}"
                    )
                self._lock.wait(left)
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._lock:
            self._messages.clear()

    def _record(self, received: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(received)
            self._lock.notify_all()

    def _take_rejection(self, stage: Stage) -> str | None:
        with self._lock:
            rejection = self._rejection
            if rejection is None or rejection.stage != stage:
                return None
            rejection.remaining -= 1
            if rejection.remaining <= 0:
                self._rejection = None
            return rejection.reply

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            self.credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def _parse(raw: bytes) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed
