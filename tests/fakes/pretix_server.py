"""FakePretix: a small, faithful pretix 2026.8 on 127.0.0.1, for tests and the benchmark.

It answers the voucher API, and the organizer, event, quota and item reads the bot's `check`
needs, the way /work/shared/pretix-api.md says real pretix answers: status codes, bodies byte
for byte, trailing slashes, token auth, pagination, validation messages and the
X-Idempotency-Key middleware with its sharp edges. Every request is recorded, and test
controls add latency, failures, hangs and dropped connections.

A request passes these layers, outermost first, as in a real deployment:

1. the network and the proxy in front of pretix: `latency`, `hang_next`, `fail_next`
   (their answers are never stored under an idempotency key);
2. pretix's idempotency middleware, for every write under /api/ with X-Idempotency-Key:
   keyed by the Authorization header and the key only; answers other than 409, 429, 500 and
   503 are stored and replayed byte for byte; a key still in flight gets 409;
3. Django's URL routing: an unknown address (e.g. no trailing slash) is a 404 HTML page;
4. Django REST framework: authentication (401), permission (403, also for an unknown
   organizer or event), `hang_next(..., while_processing=True)`, then the view;
5. `call_while_answering_next`: the answer is made, then a test's callback runs (another
   client's work done while the answer is on its way), then it is sent;
6. `drop_after_processing_next`: the answer is made (and stored), then the connection closes.

Checked against a real pretix 2026.8 by the contract tests (`make test-pretix`,
tests/contract/), which found these facts pretix-api.md did not spell out and the fake now follows:

- `price_mode` "none" keeps a `value` that was given (on create and PATCH); pretix never clears it.
- `batch_create` looks for the same code twice in the request only once every row is valid, so
  a batch with a field error reports no duplicates; it compares the codes as sent, so the same
  code in two cases gets past that check and the save fails on the unique index: a 500 page.
- Redeeming adds each ticket's discount to `budget_used` (`redeem(..., discount=...)`).
- A replayed answer whose stored headers name no Content-Type (a DELETE's 204) comes back as
  `text/html; charset=utf-8` (Django's HttpResponse default).
- Without the trailing slash, GET, HEAD and DELETE of an existing address get a 301 to it
  (relative Location, query kept, empty body) before authentication; POST, PUT and PATCH a 404
  page.
- The 409 for a key in flight is Django's JsonResponse (`{"detail": "..."}`, with spaces) with
  `Retry-After: 5`; a DELETE of a voucher that was ever in an order stays refused even after
  the order is cancelled (the fake has no orders; `redeem` never goes back).
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, parse_qsl, urlencode

from tests.fakes.http_server import LocalHandler, LocalServer

logger = logging.getLogger(__name__)

CODE_TAKEN = "A voucher with this code already exists."
VOUCHER_USED = "This voucher can not be deleted as it has already been used."
NO_PERMISSION = "You do not have permission to perform this action."
BUSY = "The server was too busy to process your request. Please try again."
CONCURRENT_KEY = "Concurrent request with idempotency key."
PAGE_SIZE = 50
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PRICE_MODES = ("none", "set", "subtract", "percent")
ORDERING = ("id", "code", "max_usages", "valid_until", "value")
# pretix's voucher code alphabet: upper case without look-alikes (settings.ENTROPY).
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ3789"
NOT_FOUND_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Not found</title></head><body><h1>Not found</h1>"
    "<p>The page you requested was not found.</p></body></html>\n"
)
SERVER_ERROR_HTML = "<h1>Server Error (500)</h1>"
# pretix's own error page (an exception in a view), trimmed: the real one links hashed assets.
PRETIX_ERROR_HTML = (
    "\n\n\n\n<!DOCTYPE html>\n<html>\n<head>\n    <title>Internal Server Error</title>\n"
    '    <meta charset="utf-8">\n</head>\n<body>\n<div class="container">\n'
    "    <h1>Internal Server Error</h1>\n</div>\n</body>\n</html>\n"
)
VOUCHER_FIELDS = (
    "id", "created", "code", "max_usages", "redeemed", "min_usages", "valid_until",
    "block_quota", "allow_ignore_quota", "price_mode", "value", "item", "variation", "quota",
    "tag", "comment", "subevent", "show_hidden_items", "seat", "all_addons_included",
    "all_bundles_included", "budget", "budget_used",
)  # fmt: skip
MAX_INT = 2147483647


@dataclass
class RecordedRequest:
    """One request as the fake received it, and what it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any  # the decoded body; None when empty or not JSON
    body: bytes
    status: int | None = None  # None while in flight, or when the connection was dropped
    dropped: bool = False  # the connection was closed without an answer
    replayed: bool = False  # a stored answer was replayed for its idempotency key

    @property
    def idempotency_key(self) -> str | None:
        """The X-Idempotency-Key header, if sent."""
        return self.headers.get("x-idempotency-key")

    @property
    def is_write(self) -> bool:
        """POST, PUT, PATCH or DELETE."""
        return self.method in WRITES


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


class _RefusalError(Exception):
    """Raised inside a view: answer this instead."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def _drf(status: int, data: object, *headers: tuple[str, str]) -> _Answer:
    """A Django REST framework answer: compact JSON, UTF-8."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return _Answer(status, body, (("Content-Type", "application/json"), *headers))


def _refuse(status: int, data: object, *headers: tuple[str, str]) -> _RefusalError:
    return _RefusalError(_drf(status, data, *headers))


def _html(status: int, text: str, *headers: tuple[str, str]) -> _Answer:
    return _Answer(status, text.encode(), (("Content-Type", "text/html; charset=utf-8"), *headers))


@dataclass
class _Fault:
    kind: str  # "fail", "hang", "stall" (hang while processing), "drop", "call", "call_before"
    times: int
    method: str | None
    path_contains: str | None
    answer: _Answer | None = None
    seconds: float = 0.0
    callback: Callable[[], object] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path_contains is None or self.path_contains in path
        )


@dataclass
class _Event:
    organizer: str
    slug: str
    name: str
    quotas: dict[int, str]
    items: dict[int, str]
    vouchers: dict[int, dict[str, Any]] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)  # upper-cased code -> voucher id

    def store(self, voucher: dict[str, Any]) -> None:
        old = self.vouchers.get(voucher["id"])
        if old is not None:
            self.codes.pop(old["code"].upper(), None)
        self.vouchers[voucher["id"]] = voucher
        self.codes[voucher["code"].upper()] = voucher["id"]

    def remove(self, voucher_id: int) -> None:
        voucher = self.vouchers.pop(voucher_id)
        self.codes.pop(voucher["code"].upper(), None)


@dataclass
class _Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))


_IN_FLIGHT = _Answer(0)
_EVENT = r"^/api/v1/organizers/(?P<organizer>[^/]+)/events/(?P<event>[^/]+)/"
_ROUTES: tuple[tuple[re.Pattern[str], str, frozenset[str]], ...] = tuple(
    (re.compile(pattern), name, frozenset(methods))
    for pattern, name, methods in (
        (r"^/api/v1/organizers/$", "organizers", {"GET"}),
        (r"^/api/v1/organizers/(?P<organizer>[^/]+)/events/$", "events", {"GET"}),
        (_EVENT + "$", "event", {"GET"}),
        (_EVENT + r"quotas/(?P<pk>[^/]+)/$", "quota", {"GET"}),
        (_EVENT + r"items/(?P<pk>[^/]+)/$", "item", {"GET"}),
        (_EVENT + r"vouchers/$", "vouchers", {"GET", "POST"}),
        (_EVENT + r"vouchers/batch_create/$", "batch_create", {"POST"}),
        (_EVENT + r"vouchers/(?P<pk>[^/.]+)/$", "voucher", {"GET", "PUT", "PATCH", "DELETE"}),
    )
)


class FakePretix:
    """A real HTTP server on 127.0.0.1 that answers like pretix; thread-safe, one lock.

    Use as a context manager, or call start() and stop(). `url` is the PRETIX_URL to give the
    bot. State is kept as the JSON pretix would send, so tests can compare dicts directly.
    """

    def __init__(
        self,
        *,
        token: str = "test-token",  # noqa: S107 - a token for tests only
        organizer: str = "pycon",
        event: str = "pycon2026",
        latency: float = 0.0,
        quotas: Mapping[int, str] | None = None,
        items: Mapping[int, str] | None = None,
        read_only_tokens: Iterable[str] = (),
    ) -> None:
        self.token = token
        self.tokens = {token}  # tokens with event.vouchers:write
        self.read_only_tokens = set(read_only_tokens)  # tokens with event.vouchers:read only
        self.organizer = organizer
        self.event = event
        self.latency = latency
        self._initial_latency = latency
        # pretix builds `next` links from the request's Host; set this to mimic a SITE_URL.
        self.site_url: str | None = None
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._events: dict[tuple[str, str], _Event] = {}
        self._idempotency: dict[tuple[str, str], _Answer] = {}
        self._faults: list[_Fault] = []
        self._next_id = 1
        self._server: _Server | None = None
        self.add_event(
            organizer,
            event,
            quotas={1: "Grant tickets"} if quotas is None else quotas,
            items={10: "Conference ticket"} if items is None else items,
        )

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> FakePretix:
        """Listen on a free port of 127.0.0.1 and serve from a daemon thread."""
        self._stopping.clear()
        self._server = _Server(self)
        self._server.serve_in_background("fake-pretix")
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake hanging requests."""
        self._stopping.set()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakePretix:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL (PRETIX_URL), e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("FakePretix is not started")
        return self._server.url

    # --- set-up and inspection --------------------------------------------------------------

    def add_event(
        self,
        organizer: str,
        event: str,
        *,
        name: str | None = None,
        quotas: Mapping[int, str] | None = None,
        items: Mapping[int, str] | None = None,
    ) -> None:
        """Add an event (and its organizer), or add quotas and items to an existing one.

        Each quota holds every item of the event and has no size limit.
        """
        with self._lock:
            ev = self._events.setdefault(
                (organizer, event), _Event(organizer, event, name or event, {}, {})
            )
            ev.quotas.update(quotas or {})
            ev.items.update(items or {})

    def seed_voucher(
        self, *, organizer: str | None = None, event: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Put a voucher straight into the event, without validation; returns it as JSON.

        Any voucher field may be given (`id`, `code`, `redeemed`, `price_mode`, `value` as
        Decimal or str, `valid_until` as datetime or str, ...). Without a code, a random one.
        """
        unknown = set(fields) - set(VOUCHER_FIELDS)
        if unknown:
            raise TypeError(f"not voucher fields: {sorted(unknown)}")
        with self._lock:
            ev = self._event(organizer, event)
            voucher_id = int(fields.pop("id", self._next_id))
            if any(voucher_id in other.vouchers for other in self._events.values()):
                raise ValueError(f"voucher id {voucher_id} exists already")
            self._next_id = max(self._next_id, voucher_id + 1)
            voucher = _new_voucher(voucher_id, fields.pop("code", None) or self._free_code(ev))
            for name in ("value", "budget", "budget_used"):
                if fields.get(name) is not None:
                    fields[name] = f"{Decimal(str(fields[name])):.2f}"
            for name in ("valid_until", "created"):
                if isinstance(fields.get(name), datetime):
                    fields[name] = _render_datetime(fields[name])
            voucher.update(fields)
            voucher["code"] = voucher["code"].upper()
            if voucher["code"] in ev.codes:
                raise ValueError(f"code {voucher['code']} exists already")
            ev.store(voucher)
            return dict(voucher)

    def seed_vouchers_json(
        self, path: str | Path, *, organizer: str | None = None, event: str | None = None
    ) -> list[dict[str, Any]]:
        """Load vouchers made elsewhere, shaped like /work/shared/data/vouchers.json.

        speaker: price set to 0.00; co_speaker: 25 percent off; grant: price set to 0.00.
        The tag is the type; ids and codes are kept.
        """
        terms = {
            "speaker": ("set", "0.00"),
            "co_speaker": ("percent", "25.00"),
            "grant": ("set", "0.00"),
        }
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
        return [
            self.seed_voucher(
                organizer=organizer,
                event=event,
                id=row["pretix_voucher_id"],
                code=row["code"],
                price_mode=terms[row["type"]][0],
                value=terms[row["type"]][1],
                tag=row["type"],
            )
            for row in rows
        ]

    def redeem(
        self, voucher_id: int, n: int = 1, *, discount: Decimal | str = "0.00"
    ) -> dict[str, Any]:
        """Mark a voucher as used n more times (as if tickets were bought with it).

        `discount` is what each ticket cost less thanks to the voucher: pretix adds it to
        `budget_used` (e.g. "100.00" for a free ticket of price 100).
        """
        with self._lock:
            _, voucher = self._find(voucher_id)
            if voucher["redeemed"] + n > voucher["max_usages"]:
                raise ValueError(f"voucher {voucher_id} cannot be redeemed {n} more time(s)")
            voucher["redeemed"] += n
            used = Decimal(voucher["budget_used"]) + n * Decimal(str(discount))
            voucher["budget_used"] = f"{used:.2f}"
            return dict(voucher)

    def all_vouchers(
        self, *, organizer: str | None = None, event: str | None = None
    ) -> list[dict[str, Any]]:
        """The event's vouchers as pretix would send them, by id."""
        with self._lock:
            ev = self._event(organizer, event)
            return [dict(ev.vouchers[i]) for i in sorted(ev.vouchers)]

    def voucher(self, voucher_id: int) -> dict[str, Any] | None:
        """One voucher by id (any event), or None."""
        with self._lock:
            try:
                return dict(self._find(voucher_id)[1])
            except KeyError:
                return None

    def voucher_by_code(
        self, code: str, *, organizer: str | None = None, event: str | None = None
    ) -> dict[str, Any] | None:
        """The voucher with this code (case-insensitive), or None."""
        with self._lock:
            ev = self._event(organizer, event)
            voucher_id = ev.codes.get(code.strip().upper())
            return None if voucher_id is None else dict(ev.vouchers[voucher_id])

    def writes(self) -> list[RecordedRequest]:
        """The recorded POST, PUT, PATCH and DELETE requests."""
        with self._lock:
            return [r for r in self.requests if r.is_write]

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
        """How many recorded requests match the method and path fragment."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (path_contains is None or path_contains in r.path)
            )

    def in_flight(self, key: str, *, token: str | None = None) -> bool:
        """True while a request with this idempotency key (and token) is being processed."""
        slot = (f"Token {token or self.token}", key)
        with self._lock:
            return self._idempotency.get(slot) is _IN_FLIGHT

    def expire_idempotency_keys(self) -> None:
        """Forget every stored key, as pretix does after about 24 hours."""
        with self._lock:
            self._idempotency = {k: v for k, v in self._idempotency.items() if v is _IN_FLIGHT}

    def reset_faults(self) -> None:
        """Forget every fault scheduled with fail_next, hang_next, drop_after_processing_next
        or call_while_answering_next."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Back to the state just after start: no vouchers, requests, keys or faults.

        Events, quotas, items and tokens stay; `latency` returns to its initial value.
        """
        with self._lock:
            for ev in self._events.values():
                ev.vouchers.clear()
                ev.codes.clear()
            self.requests.clear()
            self._idempotency.clear()
            self._faults.clear()
            self._next_id = 1
            self.latency = self._initial_latency

    # --- fault injection --------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: int | str | None = None,
        body: dict[str, Any] | list[Any] | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next matching request(s) with `status` before pretix sees them.

        Default bodies are what that status looks like in front of pretix: 409 is pretix's
        busy answer with Retry-After: 5 (unless `retry_after` says otherwise), 429 DRF's
        throttle answer, 5xx an HTML error page. `retry_after` is seconds or an HTTP date.
        Never stored under an idempotency key.
        """
        if status == 409 and retry_after is None:
            retry_after = 5
        headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
        phrase = f"{status} {HTTPStatus(status).phrase}"
        if body is not None:
            answer = _drf(status, body, *headers)
        elif status == 409:
            answer = _drf(409, {"detail": BUSY}, *headers)
        elif status == 429:
            wait = (
                f" Expected available in {retry_after} seconds."
                if isinstance(retry_after, int)
                else ""
            )
            answer = _drf(429, {"detail": f"Request was throttled.{wait}"}, *headers)
        elif status == 500:
            answer = _html(500, SERVER_ERROR_HTML, *headers)
        elif status > 500:
            page = f"<html><head><title>{phrase}</title></head><body><center><h1>{phrase}</h1>"
            answer = _html(
                status, f"{page}</center><hr><center>nginx</center></body></html>\n", *headers
            )
        else:
            answer = _drf(status, {"detail": HTTPStatus(status).phrase}, *headers)
        self._add_fault(_Fault("fail", times, method, path_contains, answer=answer))

    def hang_next(
        self,
        seconds: float,
        *,
        times: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        while_processing: bool = False,
    ) -> None:
        """Wait `seconds` before answering the next matching request(s): client timeouts.

        By default the request waits before pretix sees it (queued in a proxy); nothing is
        done until the wait is over. With `while_processing`, pretix holds the request's
        idempotency key during the wait (a retry with the same key gets 409) and does the
        work after it. `stop()` ends every wait at once, without processing.
        """
        kind = "stall" if while_processing else "hang"
        self._add_fault(_Fault(kind, times, method, path_contains, seconds=seconds))

    def drop_after_processing_next(
        self, *, times: int = 1, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Do the next matching request(s) fully, then close the connection without answering.

        The answer is stored under the idempotency key as usual, so a retry with the same
        key gets it replayed: "pretix did the work, the client never heard".
        """
        self._add_fault(_Fault("drop", times, method, path_contains))

    def call_while_answering_next(
        self,
        callback: Callable[[], object],
        *,
        times: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        before: bool = False,
    ) -> None:
        """Run `callback()` after the next matching request's answer is made, before it is sent.

        With `before`, the callback runs when the request arrives, before its answer is made:
        what it does is in that answer ("it happened just before the request was served").

        What the callback does (another client creating a voucher, say) is not in that
        answer, and is done before the client hears it: "it happened while the page was on
        its way". It runs on the server's thread for that request, outside the fake's lock,
        so it may call this fake itself.
        """
        kind = "call_before" if before else "call"
        self._add_fault(_Fault(kind, times, method, path_contains, callback=callback))

    def _add_fault(self, fault: _Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind: str, call: _Call) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.matches(call.method, call.path):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- the request pipeline ---------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        call = handler.read_call()
        try:
            decoded = json.loads(call.body) if call.body else None
        except ValueError:
            decoded = None
        record = RecordedRequest(
            call.method, call.path, call.params, call.headers, decoded, call.body
        )
        with self._lock:
            self.requests.append(record)
        if self.latency:
            time.sleep(self.latency)
        hang = self._take_fault("hang", call)
        if hang is not None and self._stopping.wait(hang.seconds):
            record.dropped = True
            handler.close_connection = True
            return
        first = self._take_fault("call_before", call)
        if first is not None and first.callback is not None:
            first.callback()
        fail = self._take_fault("fail", call)
        answer = fail.answer if fail and fail.answer else self._idempotent(call, record)
        meanwhile = self._take_fault("call", call)
        if meanwhile is not None and meanwhile.callback is not None:
            meanwhile.callback()
        if self._take_fault("drop", call) is not None:
            record.dropped = True
            handler.close_connection = True
            return
        record.status = answer.status
        handler.write_answer(answer)

    def _idempotent(self, call: _Call, record: RecordedRequest) -> _Answer:
        """pretix.api.middleware.IdempotencyMiddleware: before routing and authentication."""
        key = call.headers.get("x-idempotency-key")
        if call.method not in WRITES or not key or not call.path.startswith("/api/"):
            return self._app(call)
        slot = (call.headers.get("authorization", ""), key)
        with self._lock:
            stored = self._idempotency.get(slot)
            if stored is None:
                self._idempotency[slot] = _IN_FLIGHT
        if stored is _IN_FLIGHT:
            # Django's JsonResponse, not DRF: note the spaces in this body.
            body = json.dumps({"detail": CONCURRENT_KEY}).encode()
            headers = (("Content-Type", "application/json"), ("Retry-After", "5"))
            return _Answer(409, body, headers)
        if stored is not None:
            record.replayed = True
            if not any(name.lower() == "content-type" for name, _ in stored.headers):
                # Replayed as a Django HttpResponse: a stored 204 comes back as text/html.
                html = ("Content-Type", "text/html; charset=utf-8")
                return _Answer(stored.status, stored.body, (html, *stored.headers))
            return stored
        answer = self._app(call)
        with self._lock:
            if answer.status in {409, 429, 500, 503}:  # meant to be retried: not stored
                self._idempotency.pop(slot, None)
            elif slot in self._idempotency:  # (unless reset() ran meanwhile)
                self._idempotency[slot] = answer
        return answer

    def _app(self, call: _Call) -> _Answer:
        """pretix itself: URL routing, authentication, permission, then the view."""
        stall = self._take_fault("stall", call)
        if stall is not None and self._stopping.wait(stall.seconds):
            return _html(503, "stopping")
        try:
            with self._lock:
                return self._route(call)
        except _RefusalError as refusal:
            return refusal.answer
        except Exception:
            logger.exception("FakePretix failed on %s %s", call.method, call.path)
            return _html(500, SERVER_ERROR_HTML)

    def _route(self, call: _Call) -> _Answer:
        for pattern, name, methods in _ROUTES:
            match = pattern.match(call.path)
            if match is not None:
                return self._dispatch(call, match, name, methods)
        slashed = call.path + "/"
        if call.method in {"GET", "HEAD", "DELETE"} and any(
            p.match(slashed) for p, _, _ in _ROUTES
        ):
            # Django's APPEND_SLASH: a relative redirect, before authentication.
            location = f"{slashed}?{call.query}" if call.query else slashed
            return _Answer(
                301, b"", (("Content-Type", "text/html; charset=utf-8"), ("Location", location))
            )
        return _html(404, NOT_FOUND_HTML)  # Django: no URL pattern (e.g. no trailing slash)

    def _dispatch(
        self, call: _Call, match: re.Match[str], name: str, methods: frozenset[str]
    ) -> _Answer:
        token = self._authenticate(call)
        args = match.groupdict()
        organizer, event = args.get("organizer"), args.get("event")
        known = (organizer is None or any(o == organizer for o, _ in self._events)) and (
            event is None or (organizer, event) in self._events
        )
        if not known or (call.method in WRITES and token not in self.tokens):
            raise _refuse(403, {"detail": NO_PERMISSION})
        if call.method not in methods:
            raise _refuse(405, {"detail": f'Method "{call.method}" not allowed.'})
        ev = self._events.get((organizer, event)) if organizer and event else None
        view: Callable[..., _Answer] = getattr(self, f"_view_{name}")
        return view(call, ev, organizer=organizer, pk=args.get("pk"))

    def _authenticate(self, call: _Call) -> str:
        """DRF TokenAuthentication with pretix's team tokens (keyword "Token")."""
        parts = call.headers.get("authorization", "").split()
        if not parts or parts[0].lower() not in {"token", "bearer"}:
            raise _unauthorized("Authentication credentials were not provided.")
        if len(parts) == 1:
            raise _unauthorized("Invalid token header. No credentials provided.")
        if len(parts) > 2:
            raise _unauthorized("Invalid token header. Token string should not contain spaces.")
        token = parts[1]
        if parts[0].lower() != "token" or token not in self.tokens | self.read_only_tokens:
            raise _unauthorized("Invalid token.")
        return token

    # --- views (called with the lock held) --------------------------------------------------

    def _view_organizers(self, call: _Call, ev: None, **_: Any) -> _Answer:
        base = self._base(call)
        names = sorted({o for o, _ in self._events})
        rows = [{"name": o, "slug": o, "public_url": f"{base}/{o}/"} for o in names]
        return self._page(call, rows)

    def _view_events(self, call: _Call, ev: None, *, organizer: str, **_: Any) -> _Answer:
        events = [e for (o, _), e in sorted(self._events.items()) if o == organizer]
        return self._page(call, [_event_json(e) for e in events])

    def _view_event(self, call: _Call, ev: _Event, **_: Any) -> _Answer:
        return _drf(200, _event_json(ev))

    def _view_quota(self, call: _Call, ev: _Event, *, pk: str, **_: Any) -> _Answer:
        quota_id = _pk_or_404(pk, ev.quotas, "Quota")
        return _drf(200, {
            "id": quota_id, "name": ev.quotas[quota_id], "size": None,
            "items": sorted(ev.items), "variations": [], "subevent": None, "closed": False,
            "close_when_sold_out": False, "release_after_exit": False,
            "ignore_for_event_availability": False,
        })  # fmt: skip

    def _view_item(self, call: _Call, ev: _Event, *, pk: str, **_: Any) -> _Answer:
        item_id = _pk_or_404(pk, ev.items, "Item")
        return _drf(200, {
            "id": item_id, "category": None, "name": {"en": ev.items[item_id]},
            "internal_name": None, "active": True, "description": None,
            "default_price": "0.00", "free_price": False, "admission": True,
            "has_variations": False, "variations": [],
        })  # fmt: skip

    def _view_vouchers(self, call: _Call, ev: _Event, **_: Any) -> _Answer:
        if call.method == "POST":
            data = _parse_json(call)
            if not isinstance(data, dict):
                raise _refuse(400, {"non_field_errors": [_not_a_dict(data)]})
            clean, errors = self._validate(ev, data, instance=None, taken=ev.codes)
            if errors:
                raise _refuse(400, errors)
            return _drf(201, self._create(ev, clean))
        rows = _filter_vouchers(ev, call.params)
        return self._page(call, rows)

    def _view_batch_create(self, call: _Call, ev: _Event, **_: Any) -> _Answer:
        data = _parse_json(call)
        if not isinstance(data, list):
            kind = type(data).__name__ if data is not None else "dict"
            message = f'Expected a list of items but got type "{kind}".'
            raise _refuse(400, {"non_field_errors": [message]})
        cleaned: list[dict[str, Any]] = []
        errors: list[dict[str, list[str]]] = []
        for row in data:
            if not isinstance(row, dict):
                cleaned.append({})
                errors.append({"non_field_errors": [_not_a_dict(row)]})
                continue
            clean, row_errors = self._validate(ev, row, instance=None, taken=ev.codes)
            cleaned.append(clean)
            errors.append(row_errors)
        if any(errors):
            raise _refuse(400, errors)  # all or nothing; in-request duplicates not checked yet
        # pretix's VoucherListSerializer.create: duplicates compared as sent, case-sensitively.
        sent = [str(row.get("code") or "").strip() for row in data]
        seen: set[str] = set()
        for index, code in enumerate(sent):
            errors[index] = {"code": ["Duplicate voucher code in request."]} if code in seen else {}
            if code:
                seen.add(code)
        if any(errors):
            raise _refuse(400, errors)
        upper = [code.upper() for code in sent if code]
        if len(set(upper)) != len(upper):
            # The same code in two cases passes that check; saving both breaks the unique index.
            return _html(500, PRETIX_ERROR_HTML)
        return _drf(201, [self._create(ev, clean) for clean in cleaned])

    def _view_voucher(self, call: _Call, ev: _Event, *, pk: str, **_: Any) -> _Answer:
        voucher_id = _pk_or_404(pk, ev.vouchers, "Voucher")
        voucher = ev.vouchers[voucher_id]
        if call.method == "GET":
            return _drf(200, voucher)
        if call.method == "DELETE":
            if voucher["redeemed"] > 0:
                raise _refuse(403, {"detail": VOUCHER_USED})
            ev.remove(voucher_id)
            return _Answer(204)
        data = _parse_json(call)
        if not isinstance(data, dict):
            raise _refuse(400, {"non_field_errors": [_not_a_dict(data)]})
        others = {c: i for c, i in ev.codes.items() if i != voucher_id}
        clean, errors = self._validate(ev, data, instance=voucher, taken=others)
        if errors:
            raise _refuse(400, errors)
        updated = {**voucher, **clean}
        ev.store(updated)
        return _drf(200, updated)

    # --- helpers (lock held) ----------------------------------------------------------------

    def _event(self, organizer: str | None, event: str | None) -> _Event:
        return self._events[(organizer or self.organizer, event or self.event)]

    def _find(self, voucher_id: int) -> tuple[_Event, dict[str, Any]]:
        for ev in self._events.values():
            if voucher_id in ev.vouchers:
                return ev, ev.vouchers[voucher_id]
        raise KeyError(voucher_id)

    def _free_code(self, ev: _Event) -> str:
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(16))
            if code not in ev.codes:
                return code

    def _create(self, ev: _Event, clean: dict[str, Any]) -> dict[str, Any]:
        voucher = _new_voucher(self._next_id, clean.pop("code", None) or self._free_code(ev))
        self._next_id += 1
        voucher.update(clean)
        ev.store(voucher)
        return voucher

    def _base(self, call: _Call) -> str:
        if self.site_url:
            return self.site_url.rstrip("/")
        return f"http://{call.headers.get('host', '127.0.0.1')}"

    def _page(self, call: _Call, rows: list[Any]) -> _Answer:
        """DRF PageNumberPagination as pretix configures it: 50 a page, page_size lowers it."""
        params = call.params
        size = PAGE_SIZE
        raw_size = params.get("page_size", "")
        if raw_size.isdigit() and int(raw_size) > 0:
            size = min(int(raw_size), PAGE_SIZE)
        pages = max(1, math.ceil(len(rows) / size))
        raw_page = params.get("page", "1")
        page = pages if raw_page == "last" else int(raw_page) if raw_page.isdigit() else 0
        if not 1 <= page <= pages:
            raise _refuse(404, {"detail": "Invalid page."})
        url = f"{self._base(call)}{call.path}"

        def link(number: int) -> str:
            query = parse_qs(call.query, keep_blank_values=True)
            query.pop("page", None)
            if number > 1:
                query["page"] = [str(number)]
            encoded = urlencode(sorted(query.items()), doseq=True)
            return f"{url}?{encoded}" if encoded else url

        return _drf(200, {
            "count": len(rows),
            "next": link(page + 1) if page < pages else None,
            "previous": link(page - 1) if page > 1 else None,
            "results": rows[(page - 1) * size : page * size],
        })  # fmt: skip

    def _validate(
        self,
        ev: _Event,
        data: dict[str, Any],
        *,
        instance: dict[str, Any] | None,
        taken: Mapping[str, int],
    ) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """pretix's VoucherSerializer: field errors first, then the object-level checks."""
        clean: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for name, value in data.items():
            check = _FIELD_CHECKS.get(name)
            if check is None:
                continue  # read-only and unknown fields are ignored silently
            try:
                clean[name] = check(value, ev)
            except _FieldError as exc:
                errors[name] = [str(exc)]
        if errors:
            return clean, errors
        merged = {**(instance or {}), **clean}
        problem = None
        if merged.get("item") is not None and merged.get("quota") is not None:
            problem = "You cannot select a quota and a specific product at the same time."
        elif instance is not None and merged["max_usages"] < instance["redeemed"]:
            problem = (
                f"This voucher has already been redeemed {instance['redeemed']} times. You "
                "cannot reduce the maximum number of usages below this number."
            )
        elif clean.get("code") is not None and clean["code"] in taken:
            problem = CODE_TAKEN
        if problem:
            errors["non_field_errors"] = [problem]
        return clean, errors


# --- field validation, with DRF's messages ----------------------------------------------------


class _FieldError(Exception):
    pass


def _text(
    *, max_length: int | None = None, min_length: int = 0, blank: bool = True
) -> Callable[[Any, _Event], str]:
    def check(value: Any, ev: _Event) -> str:
        if value is None:
            raise _FieldError("This field may not be null.")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _FieldError("Not a valid string.")
        text = str(value).strip()
        if not text and not blank:
            raise _FieldError("This field may not be blank.")
        if max_length is not None and len(text) > max_length:
            raise _FieldError(f"Ensure this field has no more than {max_length} characters.")
        if text and len(text) < min_length:
            raise _FieldError(f"Ensure this field has at least {min_length} characters.")
        return text

    return check


def _code(value: Any, ev: _Event) -> str:
    return _text(max_length=255, min_length=5, blank=False)(value, ev).upper()


def _integer(*, minimum: int = 0) -> Callable[[Any, _Event], int]:
    def check(value: Any, ev: _Event) -> int:
        if value is None:
            raise _FieldError("This field may not be null.")
        number = _as_int(value)
        if number is None:
            raise _FieldError("A valid integer is required.")
        if number < minimum:
            raise _FieldError(f"Ensure this value is greater than or equal to {minimum}.")
        if number > MAX_INT:
            raise _FieldError(f"Ensure this value is less than or equal to {MAX_INT}.")
        return number

    return check


def _boolean(value: Any, ev: _Event) -> bool:
    if value in (True, "true", "True", "TRUE", "1", 1, "yes", "on", "t", "y"):
        return True
    if value in (False, "false", "False", "FALSE", "0", 0, "no", "off", "f", "n"):
        return False
    raise _FieldError(
        "This field may not be null." if value is None else "Must be a valid boolean."
    )


def _money(value: Any, ev: _Event) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _FieldError("A valid number is required.")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise _FieldError("A valid number is required.") from None
    if not number.is_finite():
        raise _FieldError("A valid number is required.")
    digits, exponent = len(number.as_tuple().digits), int(number.as_tuple().exponent)
    places = max(0, -exponent)
    if max(digits, places) + max(0, exponent) > 13:
        raise _FieldError("Ensure that there are no more than 13 digits in total.")
    if places > 2:
        raise _FieldError("Ensure that there are no more than 2 decimal places.")
    return f"{number:.2f}"


def _price_mode(value: Any, ev: _Event) -> str:
    if value is None:
        raise _FieldError("This field may not be null.")
    if value not in PRICE_MODES:
        raise _FieldError(f'"{value}" is not a valid choice.')
    return str(value)


def _datetime(value: Any, ev: _Event) -> str | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise _FieldError(
            "Datetime has wrong format. Use one of these formats instead: "
            "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
        ) from None
    return _render_datetime(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def _related(attribute: str | None) -> Callable[[Any, _Event], int | None]:
    """A PrimaryKeyRelatedField onto the event's items or quotas (None: nothing exists)."""

    def check(value: Any, ev: _Event) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _FieldError(
                f"Incorrect type. Expected pk value, received {type(value).__name__}."
            )
        pk = _as_int(value)
        if pk is None or attribute is None or pk not in getattr(ev, attribute):
            raise _FieldError(f'Invalid pk "{value}" - object does not exist.')
        return pk

    return check


_FIELD_CHECKS: dict[str, Callable[[Any, _Event], Any]] = {
    "code": _code,
    "max_usages": _integer(),
    "min_usages": _integer(),
    "valid_until": _datetime,
    "block_quota": _boolean,
    "allow_ignore_quota": _boolean,
    "price_mode": _price_mode,
    "value": _money,
    "item": _related("items"),
    "variation": _related(None),
    "quota": _related("quotas"),
    "tag": _text(max_length=255),
    "comment": _text(),
    "subevent": _related(None),
    "show_hidden_items": _boolean,
    "seat": _related(None),
    "all_addons_included": _boolean,
    "all_bundles_included": _boolean,
    "budget": _money,
}


# --- pure helpers -------------------------------------------------------------------------------


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.0*)?\s*", value):
        return int(float(value)) if "." in value else int(value)
    return None


def _pk_or_404(pk: str, existing: Mapping[int, Any], model: str) -> int:
    number = int(pk) if pk.isdigit() else None
    if number is None:
        raise _refuse(404, {"detail": "Not found."})
    if number not in existing:
        raise _refuse(404, {"detail": f"No {model} matches the given query."})
    return number


def _parse_json(call: _Call) -> Any:
    if not call.body.strip():
        return {}
    try:
        return json.loads(call.body)
    except ValueError as exc:
        raise _refuse(400, {"detail": f"JSON parse error - {exc}"}) from None


def _not_a_dict(data: Any) -> str:
    return f"Invalid data. Expected a dictionary, but got {type(data).__name__}."


def _unauthorized(message: str) -> _RefusalError:
    return _refuse(401, {"detail": message}, ("WWW-Authenticate", "Token"))


def _render_datetime(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _new_voucher(voucher_id: int, code: str) -> dict[str, Any]:
    return {
        "id": voucher_id, "created": _render_datetime(datetime.now(UTC)), "code": code.upper(),
        "max_usages": 1, "redeemed": 0, "min_usages": 1, "valid_until": None,
        "block_quota": False, "allow_ignore_quota": False, "price_mode": "none", "value": None,
        "item": None, "variation": None, "quota": None, "tag": "", "comment": "",
        "subevent": None, "show_hidden_items": True, "seat": None, "all_addons_included": False,
        "all_bundles_included": False, "budget": None, "budget_used": "0.00",
    }  # fmt: skip


def _event_json(ev: _Event) -> dict[str, Any]:
    return {
        "name": {"en": ev.name}, "slug": ev.slug, "live": True, "testmode": False,
        "currency": "EUR", "date_from": "2026-05-27T07:00:00Z", "date_to": None,
        "is_public": True, "presale_start": None, "presale_end": None, "location": None,
        "has_subevents": False, "timezone": "Europe/Rome", "meta_data": {},
    }  # fmt: skip


def _filter_vouchers(ev: _Event, params: Mapping[str, str]) -> list[dict[str, Any]]:
    """pretix's VoucherFilter and ordering; unknown parameters are ignored."""
    rows = [ev.vouchers[i] for i in sorted(ev.vouchers)]
    errors: dict[str, list[str]] = {}
    if "code" in params:
        rows = [v for v in rows if v["code"].lower() == params["code"].lower()]
    if "tag" in params:
        rows = [v for v in rows if v["tag"] == params["tag"]]
    if "search" in params:
        needle = params["search"].lower()
        fields = ("code", "tag", "comment")
        rows = [v for v in rows if any(needle in (v[f] or "").lower() for f in fields)]
    if "price_mode" in params:
        mode = params["price_mode"]
        if mode not in PRICE_MODES:
            errors["price_mode"] = [
                f"Select a valid choice. {mode} is not one of the available choices."
            ]
        rows = [v for v in rows if v["price_mode"] == mode]
    for name in ("max_usages", "redeemed", "item", "quota", "subevent"):
        if name in params:
            number = _as_int(params[name])
            if number is None:
                errors[name] = ["Enter a number."]
            rows = [v for v in rows if v[name] == number]
    if params.get("active") in {"true", "True", "1", "false", "False", "0"}:
        wanted = params["active"] in {"true", "True", "1"}
        now = _render_datetime(datetime.now(UTC))
        rows = [v for v in rows if _active(v, now) == wanted]
    if errors:
        raise _refuse(400, errors)
    for term in reversed([t.strip() for t in params.get("ordering", "").split(",")]):
        name = term.lstrip("-")
        if name in ORDERING:
            rows.sort(key=_sort_key(name), reverse=term.startswith("-"))
    return rows


def _active(voucher: dict[str, Any], now: str) -> bool:
    valid = voucher["valid_until"] is None or datetime.fromisoformat(
        voucher["valid_until"]
    ) > datetime.fromisoformat(now)
    return voucher["redeemed"] < voucher["max_usages"] and valid


def _sort_key(name: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    def key(voucher: dict[str, Any]) -> tuple[bool, Any]:
        raw = voucher[name]
        if raw is None:
            # Postgres puts NULLs last ascending and first descending, as this does.
            return (True, 0)
        if name == "value":
            return (False, Decimal(raw))
        if name == "valid_until":
            return (False, datetime.fromisoformat(raw))
        return (False, raw)

    return key


# --- HTTP plumbing ------------------------------------------------------------------------------


class _Handler(LocalHandler):
    """Every method goes to FakePretix._serve."""

    def _dispatch(self) -> None:
        cast(_Server, self.server).fake._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch  # noqa: N815 - http.server names

    def read_call(self) -> _Call:
        return _Call(*self.read_parts())

    def write_answer(self, answer: _Answer) -> None:
        # A 204 goes out without Content-Length.
        self.write_response(
            answer.status, answer.headers, answer.body, content_length=answer.status != 204
        )


class _Server(LocalServer):
    request_queue_size = 128  # the benchmark opens ~20 connections at once

    def __init__(self, fake: FakePretix) -> None:
        self.fake = fake
        super().__init__(_Handler)
