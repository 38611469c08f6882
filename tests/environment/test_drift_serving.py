"""A version registered here (on the CPU) and served on another provider set: the provider
difference is refused under ``environment_drift = "refuse"``, by a real `lockgate serve`, and
``environment_drift_ignore`` lets it through."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lockgate.api.facade import Lockgate
from lockgate.config.providers import ProviderSet, parse_providers_text
from lockgate.errors import SupplyChainError
from lockgate.runtime.predictor import available_providers
from onnx_models import linear_onnx

pytestmark = pytest.mark.skipif("AzureExecutionProvider" not in available_providers(),
                                reason="this ONNX Runtime build has no AzureExecutionProvider")

_AZURE = "AzureExecutionProvider, CPUExecutionProvider"


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextmanager
def _serving(home: Path, *args: str) -> Iterator[str]:
    """`lockgate serve ARGS` until the model ``m`` has loaded or failed to."""
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", "--home", str(home), "serve",
                             "--port", "0", *args], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        match = None
        while match is None:  # a refused load may be logged before the banner
            line = proc.stderr.readline()
            assert line, "server exited: " + "".join(seen)
            seen.append(line)
            match = re.search(r"on (http://127\.0\.0\.1:\d+)/v2", line)
        base = match.group(1)
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/v2/models/m/ready")[1].get("state") in ("ready", "failed"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the model never finished loading"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()


def _policy(home: Path, extra: str = "") -> None:
    (home / "lockgate.toml").write_text(
        '[serve]\nenvironment_drift = "refuse"\nunvalidated_providers = "allow"\n' + extra,
        encoding="utf-8")


@pytest.mark.slow
def test_serving_on_another_provider_set_is_refused(home: Path) -> None:
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(), name="m")
        assert lg.get("m@1").environment["onnxruntime"]["session_providers"] == [
            "CPUExecutionProvider"]
    _policy(home)
    with _serving(home, "m@1", "--providers", "azure,cpu") as base:
        status, body = _get(f"{base}/v2/models/m/ready")
        assert status == 503
        assert "execution providers: registered CPUExecutionProvider, serving " + _AZURE \
            in body["error"]
    with Lockgate.open(home) as lg:
        event = next(r for r in lg.audit_log() if r.type == "environment.drift")
        assert event.payload["action"] == "refused"
        assert event.payload["differences"] == [{
            "what": "execution providers", "registered": "CPUExecutionProvider",
            "serving": _AZURE}]
    with _serving(home, "m@1") as base:  # the set it was registered on: no drift
        status, meta = _get(f"{base}/v2/models/m")
        assert status == 200
        assert meta["parameters"]["lockgate_environment_drift"] == []


def _azure() -> ProviderSet:
    return ProviderSet(parse_providers_text("azure,cpu", "test"))


def test_an_ignored_difference_does_not_count(home: Path) -> None:
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(), name="m")
        v = lg.get("m@1")
    _policy(home)
    with Lockgate.open(home) as lg, pytest.raises(SupplyChainError,
                                                  match="execution providers: registered"):
        lg.serving.served(v, _azure()).load()
    _policy(home, 'environment_drift_ignore = ["execution providers"]\n')
    with Lockgate.open(home) as lg:
        before = sum(1 for r in lg.audit_log() if r.type == "environment.drift")
        predictor = lg.serving.served(v, _azure()).load()
        assert predictor.providers == ["AzureExecutionProvider", "CPUExecutionProvider"]
        assert sum(1 for r in lg.audit_log() if r.type == "environment.drift") == before


_VALIDATE_ON_AZURE = ('[gates]\n"prototype->stabilized" = [{ gate = "infra_validation", '
                      'providers = "azure,cpu" }]\n"*" = ["parity"]\n')


@pytest.mark.slow
def test_a_set_the_version_was_validated_on_is_not_drift(home: Path) -> None:
    (home / "lockgate.toml").write_text(_VALIDATE_ON_AZURE, encoding="utf-8")
    with Lockgate.open(home) as lg:
        lg.register(linear_onnx(), name="m")
        lg.register(linear_onnx(seed=1), name="m")
        (infra,) = lg.promote("m@1", "stabilized").results
        assert infra.measured["providers_used"] == ["AzureExecutionProvider",
                                                    "CPUExecutionProvider"], infra.message
        validated, unvalidated = lg.get("m@1"), lg.get("m@2")
    _policy(home, _VALIDATE_ON_AZURE.replace("[gates]", "\n[gates]"))
    with Lockgate.open(home) as lg:
        spec = lg.serving.served(validated, _azure())
        predictor = spec.load()
        assert predictor.providers == ["AzureExecutionProvider", "CPUExecutionProvider"]
        assert spec.describe is not None
        assert spec.describe(predictor)["lockgate_environment_drift"] == []
        with pytest.raises(SupplyChainError, match="execution providers: registered"):
            lg.serving.served(unvalidated, _azure()).load()
