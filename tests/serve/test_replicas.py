"""Three `lockgate serve` replicas on one PostgreSQL and one S3 store converge on a promotion and
on a rollback, each verifying the artifacts itself."""

from __future__ import annotations

import http.client
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from lockgate.api.facade import Lockgate
from onnx_models import linear_onnx
from servers import http_post, lockgate_server
from services import NEEDS_POSTGRES

pytestmark = [pytest.mark.slow, NEEDS_POSTGRES]

BOUND_S = 5.0  # generous for a loaded 2-CPU machine; the measured figure is printed
BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                    "data": [1.0, 2.0, 3.0, 4.0]}]}


def _versions(ports: list[int]) -> list[str]:
    out = []
    for port in ports:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            status, body = http_post(conn, "/v2/models/m/infer", BODY)
            out.append(str(body.get("model_version")) if status == 200 else f"http {status}")
        finally:
            conn.close()
    return out


def _converge(ports: list[int], version: str) -> float:
    start = time.monotonic()
    while _versions(ports) != [version] * len(ports):
        assert time.monotonic() - start < 30, f"replicas never converged on {version}"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize("poll", ["0.1", "30"], ids=["polling", "notify"])
def test_three_replicas_on_postgres_and_s3_converge(home: Path, postgres_url: str,
                                                    s3_server: str, poll: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 30 s poll, only PostgreSQL's NOTIFY can wake the replicas in time."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="models")
    monkeypatch.setenv("LOCKGATE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("LOCKGATE_ARTIFACT_URL", "s3://models/registry")
    monkeypatch.setenv("LOCKGATE_S3_ENDPOINT_URL", s3_server)
    (home / "lockgate.toml").write_text('[gates]\n"*" = ["seeds_recorded"]\n')
    with Lockgate.open(home) as lg:
        for seed in (1, 2):
            lg.register(linear_onnx(seed=seed), name="m", seed=seed)
        lg.promote("m@1", "production")
        lg.deploy("m@1")  # a stored deployment: the promotion below keeps 1 as its previous
        assert not (home / "artifacts").exists()  # everything went to S3
    with ExitStack() as stack:
        ports = [stack.enter_context(lockgate_server(home, "--poll", poll))[1]
                 for _ in range(3)]
        assert _versions(ports) == ["1", "1", "1"]
        with Lockgate.open(home) as lg:
            lg.promote("m@2", "production")
            promoted = _converge(ports, "2")
            lg.rollback("m", reason="replica test")
            rolled_back = _converge(ports, "1")
    print(f"replicas (poll {poll} s) converged {promoted:.2f} s after the promotion, "
          f"{rolled_back:.2f} s after the rollback")
    assert promoted < BOUND_S
    assert rolled_back < BOUND_S
    with Lockgate.open(home) as lg:
        started = [r for r in lg.audit_log() if r.type == "serve.started"]
        assert len(started) == 3
        assert lg.audit_verify().ok
