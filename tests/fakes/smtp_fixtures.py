"""Pytest fixtures for the fake SMTP server: plain, with TLS from a throwaway CA, a mailer."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import trustme

from bot.mailer import SmtpMailer
from tests.fakes.smtp_server import FakeSmtpServer

SENDER = "PyCon Italia Grants <grants@pycon.example.org>"

SmtpServerFactory = Callable[..., FakeSmtpServer]


@pytest.fixture(scope="session")
def smtp_ca() -> trustme.CA:
    """A certificate authority that exists only for this test run."""
    return trustme.CA()


@pytest.fixture(scope="session")
def smtp_server_tls_context(smtp_ca: trustme.CA) -> ssl.SSLContext:
    """Server side TLS: a certificate for 127.0.0.1 and localhost signed by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    smtp_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def smtp_client_tls_context(smtp_ca: trustme.CA) -> ssl.SSLContext:
    """Client side TLS that trusts the test CA and still verifies the certificate and host."""
    context = ssl.create_default_context()
    smtp_ca.configure_trust(context)
    return context


@pytest.fixture
def smtp_server_factory() -> Iterator[SmtpServerFactory]:
    """Start fake servers with any FakeSmtpServer options; all are stopped after the test."""
    with ExitStack() as stack:

        def start(**options: Any) -> FakeSmtpServer:
            return stack.enter_context(FakeSmtpServer(**options))

        yield start


@pytest.fixture
def smtp_server(smtp_server_factory: SmtpServerFactory) -> FakeSmtpServer:
    """A plain SMTP server (no TLS, no AUTH) on 127.0.0.1."""
    return smtp_server_factory()


@pytest.fixture
def smtp_mailer(smtp_server: FakeSmtpServer) -> SmtpMailer:
    """A mailer that sends to `smtp_server` without TLS, as the grants team."""
    return SmtpMailer(
        host=smtp_server.host, port=smtp_server.port, tls="none", sender=SENDER, timeout=5.0
    )
