"""Retraining triggers on the wire: CloudEvents 1.0 (structured JSON mode) signed per Standard
Webhooks, or handed to a command on stdin.

Standard Webhooks signing is the ``standardwebhooks`` library's: the secret is ``whsec_`` +
base64 of the key; the signed content is ``{webhook-id}.{webhook-timestamp}.{body}``;
``webhook-signature`` is ``v1,`` + base64 of its HMAC-SHA256. The id stays the same on every
retry, so receivers de-duplicate on it.
"""

from __future__ import annotations

import base64
import hmac
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from lockgate.errors import ConfigError

__all__ = ["DRIFT_EVENT", "cloud_event", "post_webhook", "run_command", "sign",
           "verify_signature"]

DRIFT_EVENT = "dev.lockgate.drift.detected.v1"
CONTENT_TYPE = "application/cloudevents+json"


def cloud_event(kind: str, source: str, subject: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": uuid.uuid4().hex, "source": source, "type": kind,
            "subject": subject,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "datacontenttype": "application/json", "data": dict(data)}


def _webhook(secret: str) -> Webhook:
    """The signer for ``whsec_<base64>``; ConfigError for anything else (the library would read
    a malformed secret leniently) and for an empty key."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:  # binascii.Error
        key = b""
    if not key:
        raise ConfigError("the webhook secret is not whsec_<base64>",
                          hint="make one with: python -c \"import base64, os; "
                               "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\"")
    return Webhook(key)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of a UTF-8 ``body``."""
    return _webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes, *,
                     tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does: recompute the signature and compare in constant time; refuse a
    timestamp outside ``tolerance_s``."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(stamp)) > tolerance_s:
        return False
    try:
        expected = sign(secret, msg_id, int(stamp), body).split(",", 1)[1]
    except UnicodeDecodeError:  # Standard Webhooks signs text
        return False
    for part in headers.get("webhook-signature", "").split():
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


def post_webhook(url: str, secret: str, event: Mapping[str, Any], *, timeout_s: float = 10.0
                 ) -> str | None:
    """POST the event once; None when the receiver answered 2xx, else why not."""
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    stamp = int(time.time())
    msg_id = str(event["id"])
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": CONTENT_TYPE, "webhook-id": msg_id, "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, body),
        "user-agent": "lockgate-webhooks"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return None if 200 <= status < 300 else f"HTTP {status}"


def run_command(command: Sequence[str], event: Mapping[str, Any], *, timeout_s: float = 60.0
                ) -> str | None:
    """Run the command with the event as JSON on stdin; None when it exits 0."""
    try:
        done = subprocess.run(list(command), input=json.dumps(event), text=True,
                              capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if done.returncode == 0 else f"exit status {done.returncode}"
