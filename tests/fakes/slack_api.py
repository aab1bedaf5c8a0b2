"""FakeSlack: the Slack Web API, response_url hooks and file uploads on 127.0.0.1, for tests.

Point the bot's `WebClient(base_url=fake.api_url)` at it. It answers the methods the bot uses
the way /work/shared/SLACK.md and Slack's method pages say Slack does: HTTP 200 with
`{"ok": false, "error": ...}` for API errors, 429 with Retry-After when rate limited, form,
multipart and JSON bodies, the token from `Authorization: Bearer` (or a form field), Block
Kit limits, and the three steps of `files_upload_v2`. Every call is recorded, and test
controls inject rate limits, API errors, server errors and latency.

Addresses served:

- `/api/<method>`: the Web API (`api_url`);
- `/response/<name>`: a response_url, as Slack gives slash commands and buttons
  (`response_url(name)`); at most five uses, like Slack's;
- `/upload/v1/<file_id>`: the upload URL that files.getUploadURLExternal hands out.

views.open (a modal; each trigger_id once) and views.publish (an App Home view, type `home`)
check views as Slack does (type, title, at most 100 blocks) and keep them: `opened_views()`,
`home(user)`. Messages the bot posts are kept, so chat.update finds them (or answers
message_not_found, as Slack does for an unknown or ephemeral ts); `message(channel, ts)` shows
the last state.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

from tests.fakes.http_server import LocalHandler, LocalServer

DEFAULT_TOKEN = "xoxb-test-token"
TEAM_ID = "T0TEAM"
TEAM_NAME = "PyCon Italia"
TEAM_DOMAIN = "pycon-example"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
BOT_NAME = "voucher-bot"
APP_ID = "A0VOUCHER"
# Message timestamps start at 2026-01-01T00:00:00Z and grow by 100 microseconds a message, so
# the first message a fresh fake stores has ts "1767225600.000100".
FIRST_TS_SECONDS = 1_767_225_600
TS_STEP_MICROSECONDS = 100
RESPONSE_URL_MAX_USES = 5
MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100  # a modal or an App Home view
SERVER_ERROR_HTML = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    "<title>Server Error | Slack</title></head><body><h1>Server Error</h1>"
    "<p>It seems like there's a problem connecting to our servers, and we're investigating "
    "the issue.</p></body></html>"
)


@dataclass(frozen=True)
class SlackCall:
    """One Web API call as the fake received it, and what it answered.

    `args` merges the query string with the form, multipart or JSON body, values as sent
    (form values are strings, so `blocks` sent as a form field is a JSON string). Header
    names are lower-cased.
    """

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    status: int
    response: dict[str, Any] = field(default_factory=dict)  # the JSON answered; {} if none
    at: float = field(default_factory=time.monotonic)  # when it was answered (monotonic)

    @property
    def token(self) -> str | None:
        """The bearer token of the Authorization header, else the `token` argument."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[len("bearer ") :].strip()
        token = self.args.get("token")
        return token if isinstance(token, str) else None

    @property
    def error(self) -> str | None:
        """The `error` of an `ok: false` answer, else None."""
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass(frozen=True)
class SlackUpload:
    """A file sent with files_upload_v2: the three steps, as far as they went."""

    file_id: str
    filename: str
    length: int  # as announced to files.getUploadURLExternal
    content: bytes | None = None  # None until bytes reach the upload URL
    title: str | None = None
    channel: str | None = None
    initial_comment: str | None = None
    thread_ts: str | None = None
    completed: bool = False  # files.completeUploadExternal accepted it


@dataclass(frozen=True)
class ResponsePost:
    """One POST to a response_url, and the status the fake answered."""

    name: str
    payload: Any  # the decoded JSON body; None when it was not JSON
    status: int


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Request:
    http_method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class _Fault:
    kind: str  # "ratelimit", "server_error" (before auth) or "fail" (after auth)
    method: str
    times: int
    status: int = 200
    error: str = ""
    retry_after: int = 0


@dataclass
class _User:
    user_id: str
    email: str | None
    real_name: str
    name: str
    deleted: bool
    is_bot: bool


class _ApiError(Exception):
    """Raised by a method handler: answer `{"ok": false, "error": error, **extra}`."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class FakeSlack:
    """A real HTTP server on 127.0.0.1 that answers like Slack; thread-safe, one lock.

    Use as a context manager, or call start() and stop(). Give the bot `api_url` as the
    WebClient's base_url and `token` as its bot token; `response_url(name)` builds the
    response_url of a slash command or button payload.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        latency: float = 0.0,
        free_plan: bool = False,
        email_scope: bool = True,
    ) -> None:
        self.token = token
        # Seconds added to every request: slow networks, the bot's 3-second ack budget.
        self.latency = latency
        # usergroups.users.list needs a paid plan: True answers plan_upgrade_required.
        self.free_plan = free_plan
        # False: the app lacks users:read.email; emails vanish and lookupByEmail fails.
        self.email_scope = email_scope
        self._initial = (latency, free_plan, email_scope)
        self._cond = threading.Condition()
        self._calls: list[SlackCall] = []
        self._response_posts: list[ResponsePost] = []
        self._faults: list[_Fault] = []
        self._users: dict[str, _User] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._channels: dict[str, dict[str, Any]] = {}
        self._messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._uploads: dict[str, SlackUpload] = {}
        self._ts_counter = 0
        self._file_counter = 0
        self._views: dict[str, dict[str, Any]] = {}  # view id -> view, as Slack answered it
        self._homes: dict[str, str] = {}  # user -> the view id of their App Home
        self._used_triggers: set[str] = set()
        self._server: _Server | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "usergroups.users.list": self._usergroups_users_list,
            "conversations.info": self._conversations_info,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
        }

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        """Listen on a free port of 127.0.0.1 and serve from a daemon thread."""
        self._server = _Server(self)
        self._server.serve_in_background("fake-slack")
        return self

    def stop(self) -> None:
        """Stop serving and close open connections."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeSlack:
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
        """The server's root, e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return self._server.url

    @property
    def api_url(self) -> str:
        """The WebClient base_url, with its trailing slash: http://127.0.0.1:PORT/api/."""
        return f"{self.url}/api/"

    def response_url(self, name: str) -> str:
        """A response_url for a slash command or block action payload; posts are recorded."""
        return f"{self.url}/response/{name}"

    # --- set-up -----------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        *,
        email: str | None = None,
        real_name: str | None = None,
        name: str | None = None,
        deleted: bool = False,
        is_bot: bool = False,
    ) -> None:
        """Add or replace a workspace member; without an email the profile has no `email`."""
        handle = name or user_id.lower()
        with self._cond:
            self._users[user_id] = _User(
                user_id, email, real_name or handle.title(), handle, deleted, is_bot
            )

    def add_usergroup(self, group_id: str, members: Iterable[str]) -> None:
        """Add or replace a user group (an S... id) and its member ids."""
        with self._cond:
            self._usergroups[group_id] = list(members)

    def add_channel(
        self, channel_id: str, name: str, *, is_private: bool = False, is_member: bool = True
    ) -> None:
        """Add a channel that conversations.info knows; others answer channel_not_found.

        `is_member=False`: the bot was never invited. As in Slack, conversations.info still
        describes a public channel (with `is_member: false`) but not a private one, and
        chat.postMessage answers not_in_channel.
        """
        with self._cond:
            self._channels[channel_id] = _channel_json(
                channel_id, name, is_private=is_private, is_member=is_member
            )

    def seed_message(
        self,
        channel: str,
        *,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        user: str = BOT_USER_ID,
    ) -> str:
        """Store a message as if posted before the test (by the bot unless `user`); its ts."""
        with self._cond:
            message = self._store_message(channel, text=text, blocks=blocks, thread_ts=None)
            if user != BOT_USER_ID:
                message.pop("bot_id")
                message.pop("app_id")
                message["user"] = user
            return str(message["ts"])

    def reset(self) -> None:
        """Forget calls, responses, messages, uploads and faults; restart the ts sequence.

        Users, user groups, channels and the token stay; `latency`, `free_plan` and
        `email_scope` return to their initial values.
        """
        with self._cond:
            self._calls.clear()
            self._response_posts.clear()
            self._faults.clear()
            self._messages.clear()
            self._uploads.clear()
            self._views.clear()
            self._homes.clear()
            self._used_triggers.clear()
            self._ts_counter = 0
            self._file_counter = 0
            self.latency, self.free_plan, self.email_scope = self._initial

    # --- fault injection --------------------------------------------------------------------

    def rate_limit_next(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with 429, Retry-After and `ratelimited`."""
        self._add_fault(_Fault("ratelimit", method, times, status=429, retry_after=retry_after))

    def fail_next(self, method: str, error: str, *, times: int = 1) -> None:
        """Answer the next `times` authenticated calls of `method` with HTTP 200, ok false."""
        self._add_fault(_Fault("fail", method, times, error=error))

    def server_error_next(self, method: str, status: int = 503, *, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with a 5xx HTML page, as Slack's edge does."""
        if not 500 <= status <= 599:
            raise ValueError(f"not a server error status: {status}")
        self._add_fault(_Fault("server_error", method, times, status=status))

    def _add_fault(self, fault: _Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be at least 1")
        with self._cond:
            self._faults.append(fault)

    # --- inspection -------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[SlackCall]:
        """Web API calls received so far (every attempt, failed ones too), oldest first."""
        with self._cond:
            return [c for c in self._calls if method is None or c.method == method]

    def count(self, method: str) -> int:
        """How many calls of `method` arrived, retries included."""
        return len(self.calls(method))

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[SlackCall]:
        """Block until `count` calls of `method` arrived; their records. AssertionError if not."""
        with self._cond:
            arrived = self._cond.wait_for(
                lambda: sum(c.method == method for c in self._calls) >= count, timeout
            )
            if not arrived:
                seen = [c.method for c in self._calls]
                raise AssertionError(
                    f"expected {count} call(s) of {method} within {timeout}s; got {seen}"
                )
            return [c for c in self._calls if c.method == method]

    def responses(self, name: str | None = None) -> list[dict[str, Any]]:
        """Payloads accepted at the response_url `name` (or at any), oldest first."""
        with self._cond:
            return [
                cast(dict[str, Any], p.payload)
                for p in self._response_posts
                if p.status == 200 and (name is None or p.name == name)
            ]

    def response_posts(self, name: str | None = None) -> list[ResponsePost]:
        """Every POST to a response_url, refused ones too, with the status answered."""
        with self._cond:
            return [p for p in self._response_posts if name is None or p.name == name]

    def wait_for_response(
        self, name: str, count: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Block until `count` payloads were accepted at response_url `name`; the payloads."""
        with self._cond:
            arrived = self._cond.wait_for(lambda: len(self.responses(name)) >= count, timeout)
            if not arrived:
                raise AssertionError(
                    f"expected {count} response(s) at {name} within {timeout}s; "
                    f"got {self.response_posts()}"
                )
            return self.responses(name)

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """A stored message in its latest state (after any chat.update), or None."""
        with self._cond:
            message = self._messages.get((channel, ts))
            return copy.deepcopy(message)

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Stored messages (each with its `channel`), in ts order."""
        with self._cond:
            found = [
                {"channel": key[0], **value}
                for key, value in sorted(self._messages.items(), key=lambda i: float(i[0][1]))
                if channel is None or key[0] == channel
            ]
            return copy.deepcopy(found)

    def home(self, user: str) -> dict[str, Any] | None:
        """The App Home view last published for `user` (views.publish), or None."""
        with self._cond:
            view_id = self._homes.get(user)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    def opened_views(self) -> list[dict[str, Any]]:
        """The modals opened with views.open, in order."""
        with self._cond:
            return [copy.deepcopy(v) for v in self._views.values() if v["type"] == "modal"]

    def uploads(self) -> list[SlackUpload]:
        """Files started with files.getUploadURLExternal, in order; see `completed`."""
        with self._cond:
            return list(self._uploads.values())

    # --- serving ----------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        request = handler.read_request()
        if self.latency > 0:
            time.sleep(self.latency)
        if request.path.startswith("/api/"):
            answer = self._serve_api(request)
        elif request.path.startswith("/response/"):
            answer = self._serve_response_url(request)
        elif request.path.startswith("/upload/v1/"):
            answer = self._serve_upload(request)
        else:
            answer = _text(404, "Not Found")
        handler.write_answer(answer)

    def _serve_api(self, request: _Request) -> _Answer:
        method = request.path[len("/api/") :]
        body: dict[str, Any]
        try:
            args, form_token = _parse_args(request)
        except _ApiError as exc:
            body = {"ok": False, "error": exc.error}
            return self._record(method, {}, request, _json_answer(200, body))
        with self._cond:
            fault = next((f for f in self._faults if f.method == method), None)
            if fault is not None and fault.kind in {"ratelimit", "server_error"}:
                self._consume(fault)
                if fault.kind == "ratelimit":
                    body = {"ok": False, "error": "ratelimited"}
                    retry = (("Retry-After", str(fault.retry_after)),)
                    return self._record(method, args, request, _json_answer(429, body, *retry))
                return self._record(method, args, request, _html(fault.status, SERVER_ERROR_HTML))
            token = _bearer(request.headers) or form_token
            if token is None:
                body = {"ok": False, "error": "not_authed"}
            elif token != self.token:
                body = {"ok": False, "error": "invalid_auth"}
            elif fault is not None:
                self._consume(fault)
                body = {"ok": False, "error": fault.error}
            elif method not in self._methods:
                body = {"ok": False, "error": "unknown_method", "req_method": method}
            else:
                try:
                    body = {"ok": True, **self._methods[method](args)}
                except _ApiError as exc:
                    body = {"ok": False, "error": exc.error, **exc.extra}
            return self._record(method, args, request, _json_answer(200, body))

    def _record(
        self, method: str, args: dict[str, Any], request: _Request, answer: _Answer
    ) -> _Answer:
        response = json.loads(answer.body) if answer.body.startswith(b"{") else {}
        call = SlackCall(method, args, dict(request.headers), answer.status, response)
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()
        return answer

    def _consume(self, fault: _Fault) -> None:
        fault.times -= 1
        if fault.times == 0:
            self._faults.remove(fault)

    def _serve_response_url(self, request: _Request) -> _Answer:
        name = unquote(request.path[len("/response/") :])
        try:
            payload = json.loads(request.body) if request.body.strip() else None
        except ValueError:
            payload = None
        with self._cond:
            used = sum(p.name == name and p.status == 200 for p in self._response_posts)
            if not isinstance(payload, dict):
                status, text = 400, "invalid_payload"
            elif used >= RESPONSE_URL_MAX_USES:
                status, text = 404, "used_url"
            elif not (
                payload.get("delete_original") or payload.get("text") or payload.get("blocks")
            ):
                status, text = 400, "no_text"
            elif "blocks" in payload and _block_errors(payload["blocks"]):
                status, text = 400, "invalid_blocks"
            else:
                status, text = 200, "ok"
            self._response_posts.append(ResponsePost(name, payload, status))
            self._cond.notify_all()
        return _text(status, text)

    def _serve_upload(self, request: _Request) -> _Answer:
        file_id = request.path[len("/upload/v1/") :]
        content = _upload_content(request)
        with self._cond:
            upload = self._uploads.get(file_id)
            if upload is None or request.http_method != "POST":
                return _text(404, "Not Found")
            self._uploads[file_id] = dataclasses.replace(upload, content=content)
            self._cond.notify_all()
        # Slack's upload endpoint answers 200 text/plain "OK - <bytes received>".
        return _text(200, f"OK - {len(content)}")

    # --- Web API methods (called with the lock held) ----------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": TEAM_NAME,
            "user": BOT_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        known = self._channels.get(channel)
        if known is not None and not known["is_member"]:
            raise _ApiError("not_in_channel")
        text, blocks = _message_content(args)
        thread_ts = _optional_str(args, "thread_ts")
        message = self._store_message(channel, text=text, blocks=blocks, thread_ts=thread_ts)
        return {"channel": channel, "ts": message["ts"], "message": dict(message)}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        ts = _required(args, "ts", "message_not_found")
        message = self._messages.get((channel, ts))
        if message is None:
            raise _ApiError("message_not_found")
        if message.get("bot_id") != BOT_ID:
            raise _ApiError("cant_update_message")
        text, blocks = _message_content(args)
        if text is not None:
            message["text"] = text
        if blocks is not None:
            message["blocks"] = blocks
        return {"channel": channel, "ts": ts, "text": message["text"], "message": dict(message)}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        _required(args, "channel", "channel_not_found")
        user = self._users.get(_required(args, "user", "user_not_in_channel"))
        if user is None or user.deleted:
            raise _ApiError("user_not_in_channel")
        _message_content(args)
        # Ephemeral messages are not stored: chat.update cannot edit them.
        return {"message_ts": self._next_ts()}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(_required(args, "user", "user_not_found"))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": self._user_json(user)}

    def _users_lookup_by_email(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.email_scope:
            raise _missing_scope("users:read.email")
        email = _required(args, "email", "users_not_found").lower()
        for user in self._users.values():
            # Slack answers users_not_found for deactivated members.
            if user.email is not None and user.email.lower() == email and not user.deleted:
                return {"user": self._user_json(user)}
        raise _ApiError("users_not_found")

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.free_plan:
            raise _ApiError("plan_upgrade_required")
        members = self._usergroups.get(_required(args, "usergroup", "no_such_subteam"))
        if members is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(members)}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channels.get(_required(args, "channel", "channel_not_found"))
        if channel is None or (channel["is_private"] and not channel["is_member"]):
            raise _ApiError("channel_not_found")
        return {"channel": dict(channel)}

    def _files_get_upload_url_external(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = _required(args, "filename", "invalid_arguments")
        length = str(args.get("length", ""))
        if not length.isdigit() or int(length) < 1:
            raise _ApiError("invalid_arguments")
        self._file_counter += 1
        file_id = f"F{self._file_counter:010d}"
        self._uploads[file_id] = SlackUpload(file_id, filename, int(length))
        return {"upload_url": f"{self.url}/upload/v1/{file_id}", "file_id": file_id}

    def _files_complete_upload_external(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                raise _ApiError("invalid_arguments") from None
        if not isinstance(files, list) or not files:
            raise _ApiError("invalid_arguments")
        channel = _optional_str(args, "channel_id")
        channels = _optional_str(args, "channels")
        if channel is None and channels:
            channel = channels.split(",")[0]
        done: list[dict[str, Any]] = []
        for item in files:
            upload = self._uploads.get(item.get("id", "") if isinstance(item, dict) else "")
            if upload is None or upload.content is None:
                raise _ApiError("file_not_found")
            title = item.get("title") or upload.filename
            self._uploads[upload.file_id] = upload = dataclasses.replace(
                upload,
                title=title,
                channel=channel,
                initial_comment=_optional_str(args, "initial_comment"),
                thread_ts=_optional_str(args, "thread_ts"),
                completed=True,
            )
            done.append(self._file_json(upload))
        return {"files": done}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        # A trigger_id opens one view, once (Slack: exchanged_trigger_id); Slack also expires
        # it 3 seconds after the click, which this fake cannot know.
        trigger = _required(args, "trigger_id", "invalid_trigger_id")
        if trigger in self._used_triggers:
            raise _ApiError("exchanged_trigger_id")
        view = _view_arg(args, kind="modal")
        self._used_triggers.add(trigger)
        return {"view": self._store_view(view)}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(_required(args, "user_id", "invalid_arguments"))
        if user is None or user.deleted:
            raise _ApiError("user_not_found")
        view = _view_arg(args, kind="home")
        stored = self._store_view(view, view_id=self._homes.get(user.user_id))
        self._homes[user.user_id] = stored["id"]
        return {"view": stored}

    def _store_view(self, view: dict[str, Any], view_id: str | None = None) -> dict[str, Any]:
        view_id = view_id or f"V{len(self._views) + 1:010d}"
        stored = {
            "id": view_id,
            "team_id": TEAM_ID,
            "type": view["type"],
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{time.time():.6f}.{view_id}",
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        }
        self._views[view_id] = stored
        return copy.deepcopy(stored)

    # --- helpers (lock held) ----------------------------------------------------------------

    def _next_ts(self) -> str:
        self._ts_counter += 1
        micros = self._ts_counter * TS_STEP_MICROSECONDS
        return f"{FIRST_TS_SECONDS + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _store_message(
        self,
        channel: str,
        *,
        text: str | None,
        blocks: list[dict[str, Any]] | None,
        thread_ts: str | None,
    ) -> dict[str, Any]:
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": text or "",
            "blocks": blocks or [],
            "ts": ts,
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
            parent = self._messages.get((channel, thread_ts))
            if parent is not None:
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = ts
        self._messages[(channel, ts)] = message
        return message

    def _user_json(self, user: _User) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.name,
            "display_name_normalized": user.name,
            "team": TEAM_ID,
        }
        if user.email is not None and self.email_scope:
            profile["email"] = user.email
        return {
            "id": user.user_id,
            "team_id": TEAM_ID,
            "name": user.name,
            "deleted": user.deleted,
            "real_name": user.real_name,
            "tz": "Europe/Rome",
            "is_admin": False,
            "is_owner": False,
            "is_bot": user.is_bot,
            "is_app_user": False,
            "profile": profile,
        }

    def _file_json(self, upload: SlackUpload) -> dict[str, Any]:
        return {
            "id": upload.file_id,
            "name": upload.filename,
            "title": upload.title,
            "user": BOT_USER_ID,
            "size": len(upload.content or b""),
            "mode": "hosted",
            "is_external": False,
            "url_private": f"https://files.slack.com/files-pri/{TEAM_ID}-{upload.file_id}/"
            f"{upload.filename}",
            "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/{BOT_USER_ID}/"
            f"{upload.file_id}/{upload.filename}",
        }


# --- request parsing ----------------------------------------------------------------------------


def _parse_args(request: _Request) -> tuple[dict[str, Any], str | None]:
    """Query and body arguments, and the `token` of a form body (JSON bodies never count)."""
    args: dict[str, Any] = dict(parse_qsl(request.query, keep_blank_values=True))
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form: dict[str, str] = {}
    if mime == "application/json":
        try:
            data = json.loads(request.body) if request.body.strip() else {}
        except ValueError:
            raise _ApiError("invalid_json") from None
        if not isinstance(data, dict):
            raise _ApiError("invalid_json")
        args.update(data)
        return args, None
    if mime == "multipart/form-data":
        form = {k: v.decode("utf-8", "replace") for k, (_, v) in _multipart(request).items()}
    elif request.body:
        try:
            form = dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise _ApiError("invalid_form_data") from None
    args.update(form)
    return args, form.get("token")


def _multipart(request: _Request) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename, bytes)."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            parts[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return parts


def _upload_content(request: _Request) -> bytes:
    """The file's bytes: the raw body, or the file part of a multipart body."""
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime != "multipart/form-data":
        return request.body
    parts = _multipart(request)
    with_name = [data for filename, data in parts.values() if filename is not None]
    return parts["file"][1] if "file" in parts else (with_name or [b""])[0]


def _bearer(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[len("bearer ") :].strip()
    return None


def _required(args: Mapping[str, Any], name: str, error: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise _ApiError(error)
    return value


def _optional_str(args: Mapping[str, Any], name: str) -> str | None:
    value = args.get(name)
    return str(value) if value not in (None, "") else None


def _missing_scope(needed: str) -> _ApiError:
    return _ApiError("missing_scope", needed=needed, provided="chat:write,users:read")


def _message_content(args: Mapping[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
    """The message's text and blocks, checked as Slack does (no_text, invalid_blocks)."""
    text = args.get("text")
    text = str(text) if text is not None else None
    blocks = args.get("blocks")
    if isinstance(blocks, str):  # form bodies carry blocks as a JSON string
        try:
            blocks = json.loads(blocks) if blocks.strip() else None
        except ValueError:
            raise _ApiError("invalid_blocks_format") from None
    if blocks is not None:
        errors = _block_errors(blocks)
        if errors:
            raise _ApiError(
                "invalid_blocks",
                errors=errors,
                response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
            )
    if not text and not blocks and not args.get("attachments"):
        raise _ApiError("no_text")
    return text, cast(list[dict[str, Any]] | None, blocks)


def _view_arg(args: Mapping[str, Any], *, kind: str) -> dict[str, Any]:
    """The `view` argument of views.open / views.publish, checked as Slack does."""
    view = args.get("view")
    if isinstance(view, str):  # form bodies carry the view as a JSON string
        try:
            view = json.loads(view)
        except ValueError:
            raise _ApiError("invalid_arguments") from None
    if not isinstance(view, dict):
        raise _ApiError("invalid_arguments")
    errors = _view_errors(view, kind=kind)
    if errors:
        raise _ApiError(
            "invalid_arguments", response_metadata={"messages": [f"[ERROR] {e}" for e in errors]}
        )
    return view


def _view_errors(view: dict[str, Any], *, kind: str) -> list[str]:
    """Slack's checks of a view (a subset): its type, title, buttons, metadata and blocks."""
    if view.get("type") != kind:
        return [f"must be {kind} [json-pointer:/view/type]"]
    errors = _block_errors(view.get("blocks"), max_blocks=MAX_VIEW_BLOCKS)
    if kind == "modal":
        errors += _text_errors(view.get("title"), "/view/title", max_length=24, plain_only=True)
        for name in ("submit", "close"):
            if name in view:
                errors += _text_errors(view[name], f"/view/{name}", max_length=24, plain_only=True)
        has_input = any(
            isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []
        )
        if has_input and "submit" not in view:
            errors.append("submit is required when an input block is present [json-pointer:/view]")
    if len(str(view.get("private_metadata", ""))) > 3000:
        errors.append("must be less than 3001 characters [json-pointer:/view/private_metadata]")
    if len(str(view.get("callback_id", ""))) > 255:
        errors.append("must be less than 256 characters [json-pointer:/view/callback_id]")
    return errors


# --- Block Kit limits ---------------------------------------------------------------------------


def _block_errors(blocks: Any, *, max_blocks: int = MAX_BLOCKS) -> list[str]:
    """What Slack's Block Kit validation would say about `blocks` (a subset of its rules)."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        at = f"/blocks/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"missing required field: type [json-pointer:{at}]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            errors += _string_errors(block_id, f"{at}/block_id", max_length=255)
            if block_id in block_ids:
                errors.append(f"duplicate block_id [json-pointer:{at}/block_id]")
            block_ids.add(str(block_id))
        check = _BLOCK_CHECKS.get(block["type"])
        if check is not None:
            errors += check(block, at)
    return errors


def _string_errors(value: Any, at: str, *, max_length: int) -> list[str]:
    if not isinstance(value, str):
        return [f"must be a string [json-pointer:{at}]"]
    if not value:
        return [f"must be more than 0 characters [json-pointer:{at}]"]
    if len(value) > max_length:
        return [f"must be less than {max_length + 1} characters [json-pointer:{at}]"]
    return []


def _text_errors(obj: Any, at: str, *, max_length: int, plain_only: bool = False) -> list[str]:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict):
        return [f"must be an object [json-pointer:{at}]"]
    if obj.get("type") not in allowed:
        return [f"must be one of {', '.join(allowed)} [json-pointer:{at}/type]"]
    return _string_errors(obj.get("text"), f"{at}/text", max_length=max_length)


def _element_errors(element: Any, at: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"missing required field: type [json-pointer:{at}]"]
    errors: list[str] = []
    if "action_id" in element:
        errors += _string_errors(element["action_id"], f"{at}/action_id", max_length=255)
    if element["type"] == "button":
        errors += _text_errors(element.get("text"), f"{at}/text", max_length=75, plain_only=True)
        if "value" in element:
            errors += _string_errors(element["value"], f"{at}/value", max_length=2000)
        if "url" in element:
            errors += _string_errors(element["url"], f"{at}/url", max_length=3000)
    return errors


def _elements_errors(block: dict[str, Any], at: str, *, max_items: int) -> list[str]:
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        return [f"must provide at least 1 item [json-pointer:{at}/elements]"]
    if len(elements) > max_items:
        return [f"no more than {max_items} items allowed [json-pointer:{at}/elements]"]
    return []


def _section_errors(block: dict[str, Any], at: str) -> list[str]:
    errors: list[str] = []
    if "text" not in block and "fields" not in block:
        errors.append(f"must provide either text or fields [json-pointer:{at}]")
    if "text" in block:
        errors += _text_errors(block["text"], f"{at}/text", max_length=3000)
    fields = block.get("fields")
    if fields is not None:
        if not isinstance(fields, list) or len(fields) > 10:
            errors.append(f"no more than 10 items allowed [json-pointer:{at}/fields]")
        else:
            for i, item in enumerate(fields):
                errors += _text_errors(item, f"{at}/fields/{i}", max_length=2000)
    if "accessory" in block:
        errors += _element_errors(block["accessory"], f"{at}/accessory")
    return errors


def _header_errors(block: dict[str, Any], at: str) -> list[str]:
    return _text_errors(block.get("text"), f"{at}/text", max_length=150, plain_only=True)


def _actions_errors(block: dict[str, Any], at: str) -> list[str]:
    errors = _elements_errors(block, at, max_items=25)
    if not errors:
        for i, element in enumerate(block["elements"]):
            errors += _element_errors(element, f"{at}/elements/{i}")
    return errors


def _context_errors(block: dict[str, Any], at: str) -> list[str]:
    return _elements_errors(block, at, max_items=10)


def _input_errors(block: dict[str, Any], at: str) -> list[str]:
    errors = _text_errors(block.get("label"), f"{at}/label", max_length=2000, plain_only=True)
    element = block.get("element")
    if not isinstance(element, dict):
        return [*errors, f"missing required field: element [json-pointer:{at}]"]
    return errors + _element_errors(element, f"{at}/element")


_BLOCK_CHECKS: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "section": _section_errors,
    "header": _header_errors,
    "actions": _actions_errors,
    "context": _context_errors,
    "input": _input_errors,
}


# --- answers ------------------------------------------------------------------------------------


def _json_answer(status: int, data: Mapping[str, Any], *headers: tuple[str, str]) -> _Answer:
    body = json.dumps(data, separators=(",", ":")).encode()
    return _Answer(status, body, (("Content-Type", "application/json; charset=utf-8"), *headers))


def _text(status: int, text: str) -> _Answer:
    return _Answer(status, text.encode(), (("Content-Type", "text/plain; charset=utf-8"),))


def _html(status: int, text: str) -> _Answer:
    return _Answer(status, text.encode(), (("Content-Type", "text/html; charset=utf-8"),))


def _channel_json(
    channel_id: str, name: str, *, is_private: bool, is_member: bool = True
) -> dict[str, Any]:
    return {
        "id": channel_id,
        "name": name,
        "is_channel": True,
        "is_group": False,
        "is_im": False,
        "is_private": is_private,
        "is_archived": False,
        "is_member": is_member,
        "context_team_id": TEAM_ID,
    }


# --- HTTP plumbing ------------------------------------------------------------------------------


class _Handler(LocalHandler):
    """Every method goes to FakeSlack._serve."""

    def _dispatch(self) -> None:
        cast(_Server, self.server).fake._serve(self)

    do_GET = do_POST = _dispatch  # noqa: N815 - http.server names

    def read_request(self) -> _Request:
        return _Request(*self.read_parts())

    def write_answer(self, answer: _Answer) -> None:
        self.write_response(answer.status, answer.headers, answer.body)


class _Server(LocalServer):
    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        super().__init__(_Handler)
