"""Send one signed notification to the bot's grant webhook (Python standard library only).

    GRANTS_WEBHOOK_SECRET=... python3 docs/examples/send_grant_event.py \
        http://127.0.0.1:3000/hooks/grants docs/examples/grant-confirmed.json

Prints the bot's answer and exits 0 when the bot took the event (202 accepted, or 200 for an
event id it has already seen), 1 otherwise. Sending the same file again is safe: the event
id makes it a duplicate. A conference backend copies `sign` and `send` into its own code and
retries on a 5xx answer or a network error with the same body and event id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Grants-Signature header: `v1=` + hex HMAC-SHA256 of `v1:<timestamp>:<raw body>`."""
    message = b"v1:" + timestamp.encode() + b":" + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def send(url: str, body: bytes, *, secret: str, timeout: float = 10.0) -> tuple[int, Any]:
    """POST the exact bytes that were signed; return the HTTP status and the decoded answer."""
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 (the URL is the operator's own)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Grants-Timestamp": timestamp,
            "X-Grants-Signature": sign(secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:  # 4xx and 5xx answers carry a JSON body too
        return error.code, json.loads(error.read() or b"null")


def main(argv: list[str]) -> int:
    """Send the event in a JSON file; the secret comes from GRANTS_WEBHOOK_SECRET."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)  # noqa: T201
        return 2
    url, path = argv
    secret = os.environ.get("GRANTS_WEBHOOK_SECRET")
    if not secret:
        print("set GRANTS_WEBHOOK_SECRET to the bot's secret", file=sys.stderr)  # noqa: T201
        return 2
    body = Path(path).read_bytes()
    status, answer = send(url, body, secret=secret)
    print(status, json.dumps(answer))  # noqa: T201
    return 0 if status in (200, 202) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
