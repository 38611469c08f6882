"""Property-based checks of lockgate's HTTP layer: random bytes and mutated valid requests sent
to a real `lockgate serve` process on 127.0.0.1 never get a 5xx (bar 505 for a version it does
not speak), never stop the server, and a good infer request is answered correctly right after."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_limits import Server, assert_infers, infer_request, serving, shared_home

pytestmark = pytest.mark.slow

BASES = [
    infer_request(),
    b"GET /v2/health/ready HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
    b"GET /v2/models/m HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: */*\r\n\r\n",
    b"POST /v2/models/m/infer HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n"
    b"2\r\n{}\r\n0\r\n\r\n",
    b"HEAD /v2 HTTP/1.0\r\n\r\n",
]
VERSIONS = [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/3", b"HTTP/11", b"HTP/1.1", b""]
_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.1 (\d{3}) ")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "version",
                                     "huge"]))
        at = draw(st.integers(0, len(raw)))
        if kind == "flip" and raw:
            at = min(at, len(raw) - 1)
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del raw[at:at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            lines = bytes(raw).split(b"\r\n")
            if len(lines) > 2:
                i = draw(st.integers(1, len(lines) - 2))
                lines.insert(i, lines[i])
                raw = bytearray(b"\r\n".join(lines))
        elif kind == "version":
            raw = bytearray(bytes(raw).replace(b"HTTP/1.1", draw(st.sampled_from(VERSIONS)), 1))
        else:
            size = draw(st.sampled_from([1000, 70_000]))
            raw = bytearray(bytes(raw).replace(b"\r\n", b"\r\nx-huge: " + b"v" * size + b"\r\n",
                                               1))
    return bytes(raw)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home: Path = shared_home(tmp_path_factory)
    with serving(home, "lockgate") as srv:
        yield srv


def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw``, half-close, and read what comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused and closed already; its answer may still be readable
        chunks = []
        try:
            while data := sock.recv(65536):
                chunks.append(data)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def check(server: Server, raw: bytes) -> None:
    answer = exchange(server.port, raw)
    for status in (int(s) for s in _STATUS.findall(answer)):
        assert status < 500 or status == 505, (raw[:200], answer[:300])
    assert server.proc.poll() is None, "the server died"
    assert_infers(server.port)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=mutated())
def test_mutated_requests_never_get_a_5xx(server: Server, raw: bytes) -> None:
    check(server, raw)


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(min_size=1, max_size=2000))
def test_random_bytes_never_get_a_5xx(server: Server, raw: bytes) -> None:
    check(server, raw)
