"""The two pretix servers a contract test talks to, and a record of what each one answered.

A scenario drives `PretixClient` against a `Target`; the target's transport records every
exchange as it went over the wire. `transcript()` normalises what must differ between the real
server and the fake (voucher ids, timestamps, the origin, HTML pages down to their title) and
keeps everything else, JSON bodies as text, so key order and spacing count too.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.pretix import EventRef, PretixClient, Voucher

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z"
_CREATED = re.compile(rf'"created":"{ISO_UTC}"')
_ID = re.compile(r'"id":(\d+)')
_PATH_ID = re.compile(r"/vouchers/(\d+)/")
_TITLE = re.compile(r"<title>(.*?)</title>", re.DOTALL)


@dataclass(frozen=True)
class Exchange:
    """One request and its answer, as sent and received."""

    method: str
    path: str
    query: str
    key: str | None
    status: int
    headers: dict[str, str]  # the few compared: content-type, retry-after, location
    body: bytes


class RecordingTransport(httpx.BaseTransport):
    """A real HTTP transport that keeps every exchange, whole, in arrival order of answers."""

    def __init__(self, exchanges: list[Exchange], lock: threading.Lock) -> None:
        self._inner = httpx.HTTPTransport()
        self._exchanges = exchanges
        self._lock = lock

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        body = response.read()
        compared = ("content-type", "retry-after", "location")
        exchange = Exchange(
            method=request.method,
            path=request.url.path,
            query=request.url.query.decode(),
            key=request.headers.get("x-idempotency-key"),
            status=response.status_code,
            headers={name: response.headers[name] for name in compared if name in response.headers},
            body=body,
        )
        with self._lock:
            self._exchanges.append(exchange)
        return response

    def close(self) -> None:
        self._inner.close()


@dataclass
class Target:
    """A pretix (real or fake) as the scenarios see it: the same calls, the same data."""

    name: str
    base_url: str
    token: str
    readonly_token: str
    event: EventRef
    item: int
    quota: int
    run: str  # this test's unique prefix for codes, tags and idempotency keys
    redeem: Callable[[Voucher, int], None]  # make n orders' worth of redemptions
    wait_in_flight: Callable[[str], None]  # return once a request with this key is in flight
    slow_next_batch: Callable[[], None]  # make the next batch_create take a while
    exchanges: list[Exchange] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _clients: list[PretixClient] = field(default_factory=list, init=False, repr=False)

    def client(self, **options: Any) -> PretixClient:
        """A PretixClient for this target that records; one attempt unless told otherwise."""
        values: dict[str, Any] = {
            "base_url": self.base_url,
            "token": self.token,
            "timeout": 60.0,
            "max_attempts": 1,
            "sleep": _no_sleep,
            "transport": RecordingTransport(self.exchanges, self._lock),
        }
        values.update(options)
        client = PretixClient(**values)
        self._clients.append(client)
        return client

    def key(self, name: str) -> str:
        """An idempotency key no earlier run used (the real server never forgets keys)."""
        return f"contract:{self.run}:{name}"

    def code(self, name: str) -> str:
        """A voucher code of this run."""
        return f"{self.run}-{name}"

    def close(self) -> None:
        """Close every client made."""
        for client in self._clients:
            client.close()

    def last(self) -> Exchange:
        """The most recent exchange."""
        with self._lock:
            return self.exchanges[-1]

    def transcript(self) -> list[dict[str, object]]:
        """The exchanges with ids, timestamps and the origin made comparable."""
        ids: dict[str, str] = {}

        def voucher_id(raw: str) -> str:
            return ids.setdefault(raw, f"<v{len(ids) + 1}>")

        def text(value: str) -> str:
            value = value.replace(self.base_url, "<origin>")
            value = _CREATED.sub('"created":"<created>"', value)
            value = _ID.sub(lambda m: f'"id":{voucher_id(m[1])}', value)
            return _PATH_ID.sub(lambda m: f"/vouchers/{voucher_id(m[1])}/", value)

        with self._lock:
            exchanges = list(self.exchanges)

        def body(ex: Exchange) -> str:
            decoded = ex.body.decode("utf-8", errors="replace")
            if ex.headers.get("content-type", "").startswith("text/html") and decoded:
                # Error pages link assets by hash; what they say is in the title.
                title = _TITLE.search(decoded)
                return f"<html page: {title[1].strip() if title else '(no title)'}>"
            return text(decoded)

        rows: list[dict[str, object]] = []
        for ex in exchanges:
            key = ex.key
            if key is not None and not key.startswith("contract:"):
                key = "<generated>"  # the client's own random key
            rows.append({
                "request": f"{ex.method} {text(ex.path)}{'?' if ex.query else ''}{ex.query}",
                "key": key,
                "status": ex.status,
                "headers": ex.headers,
                "body": body(ex),
            })  # fmt: skip
        return rows


Scenario = Callable[[Target], None]


def _no_sleep(seconds: float) -> None:
    """The default `sleep`: with one attempt the client never waits."""
    raise AssertionError(f"the client wanted to wait {seconds} s; give it a sleep for that")


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `condition` every 10 ms; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def first_difference(real: list[dict[str, object]], fake: list[dict[str, object]]) -> str | None:
    """Where the two transcripts part, in words; None when they are the same."""
    for index, (one, other) in enumerate(zip(real, fake, strict=False)):
        if one != other:
            fields = [name for name in one if one[name] != other.get(name)]
            lines = [f"exchange {index} ({one['request']}) differs in {', '.join(fields)}:"]
            lines += [f"  real {name}: {one[name]!r}" for name in fields]
            lines += [f"  fake {name}: {other.get(name)!r}" for name in fields]
            return "\n".join(lines)
    if len(real) != len(fake):
        return f"the real server saw {len(real)} exchanges, the fake {len(fake)}"
    return None
