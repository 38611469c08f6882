"""Webhook delivery: golden Standard Webhooks signatures, and the exact headers a real receiver on
127.0.0.1 gets, verified with the reference implementation."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from lockgate.errors import ConfigError
from lockgate.monitor.webhooks import (
    CONTENT_TYPE,
    DRIFT_EVENT,
    cloud_event,
    post_webhook,
    sign,
    verify_signature,
)

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
BODY = b'{"a":1,"b":"caf\\u00e9"}'
GOLDEN = "v1,Rzn2omJUF+/nvq40IW7V1ffBFZjJotSwUaATqbbUil8="
"""HMAC-SHA256 of ``msg_2b7e1c.1718000000.`` + BODY under bytes 0..31, base64."""
TRANSPORT = {"host", "content-length", "connection", "accept-encoding"}


def test_signature_is_golden() -> None:
    assert sign(SECRET, "msg_2b7e1c", 1718000000, BODY) == GOLDEN
    assert sign(SECRET, "msg_2b7e1d", 1718000000, BODY) != GOLDEN
    assert sign(SECRET, "msg_2b7e1c", 1718000001, BODY) != GOLDEN


def test_malformed_or_empty_secrets_are_config_errors() -> None:
    for secret in ("whsec_not base64!", "whsec_", ""):
        with pytest.raises(ConfigError, match="whsec_"):
            sign(secret, "id", 1718000000, BODY)


def test_verify_signature_refuses_what_it_cannot_check() -> None:
    stamp = int(time.time())
    headers = {"webhook-id": "m", "webhook-timestamp": str(stamp),
               "webhook-signature": "v0,xyz v1," + sign(SECRET, "m", stamp, BODY)[3:]}
    assert verify_signature(SECRET, headers, BODY)
    assert not verify_signature(SECRET, headers, b"\xff" + BODY)  # not text: never signed
    assert not verify_signature(SECRET, {**headers, "webhook-timestamp": "soon"}, BODY)
    assert not verify_signature(SECRET, dict(headers, **{"webhook-signature": "v1,"}), BODY)


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_posted_event_carries_the_same_headers_and_verifies(
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, received = receiver
    event = cloud_event(DRIFT_EVENT, "/lockgate/monitor", "m@1", {"drift_share": 0.75})
    assert post_webhook(url, SECRET, event) is None
    ((headers, body),) = received
    assert set(headers) - TRANSPORT == {"content-type", "webhook-id", "webhook-timestamp",
                                        "webhook-signature", "user-agent"}
    assert headers["content-type"] == CONTENT_TYPE == "application/cloudevents+json"
    assert headers["user-agent"] == "lockgate-webhooks"
    assert headers["webhook-id"] == event["id"]
    assert headers["webhook-timestamp"].isdigit()
    assert body == json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    assert headers["webhook-signature"] == sign(SECRET, event["id"],
                                                int(headers["webhook-timestamp"]), body)
    assert Webhook(SECRET).verify(body, headers)["id"] == event["id"]
    assert verify_signature(SECRET, headers, body)
