"""infra_validation and latency_budget on an execution provider set: a real non-CPU provider
(ONNX Runtime's Azure provider, which every CPU wheel carries), results stored and listed per
set, tolerances chosen by the set's precision, and serving refused on a set a version was never
validated on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import onnxruntime as ort
import pytest
from gate_models import sklearn_model, write_policy

from cli_in_process import run_cli
from lockgate.api.facade import Lockgate
from lockgate.audit import AuditRecord
from lockgate.config.providers import ProviderSet, parse_providers_text
from lockgate.config.settings import load_settings
from lockgate.errors import ConfigError, GateFailedError, ServeError
from lockgate.gates.probe import provider_tolerance
from lockgate.gates.serving import gate_providers
from lockgate.types import GateStatus
from servers import http_get, started_server

pytestmark = pytest.mark.sklearn

_AZURE = "AzureExecutionProvider" in ort.get_available_providers()
_NO_CUDA = "CUDAExecutionProvider" not in ort.get_available_providers()


def _set(text: str, fallback: str = "none") -> ProviderSet:
    return ProviderSet(parse_providers_text(text, "test"), fallback)


@pytest.fixture
def open_home(home: Path) -> Iterator[object]:
    opened: list[Lockgate] = []

    def open_with(policy: str) -> Lockgate:
        write_policy(home, policy)
        lg = Lockgate.open(home)
        opened.append(lg)
        return lg

    yield open_with
    for lg in opened:
        lg.close()


# -- tolerances by precision -------------------------------------------------------------------
def test_a_tensorrt_fp16_set_is_held_to_the_fp16_tolerances(tmp_path: Path) -> None:
    s = load_settings(tmp_path, env={})
    fp16 = _set("tensorrt:trt_fp16_enable=true,cuda,cpu")
    assert fp16.key == "tensorrt[fp16]+cuda+cpu"
    tol = provider_tolerance(s, fp16)
    assert (tol.atol, tol.rtol, tol.precision, tol.source) == (
        1e-2, 1e-2, "fp16", "provider_tolerances.fp16")


def test_the_cpu_alone_keeps_the_parity_tolerances(tmp_path: Path) -> None:
    (tmp_path / "lockgate.toml").write_text("[parity]\natol = 3e-5\nrtol = 2e-4\n")
    s = load_settings(tmp_path, env={})
    tol = provider_tolerance(s, ProviderSet())
    assert (tol.atol, tol.rtol, tol.source) == (3e-5, 2e-4, "parity")


@pytest.mark.parametrize(("text", "expected"), [
    ("cuda,cpu", (1e-4, 1e-3, "fp32")),
    ("tensorrt:trt_int8_enable=true,cuda,cpu", (5e-2, 5e-2, "int8")),
    ("migraphx:migraphx_fp16_enable=true,cpu", (1e-2, 1e-2, "fp16")),
])
def test_accelerated_sets_get_the_documented_defaults(
        tmp_path: Path, text: str, expected: tuple[float, float, str]) -> None:
    tol = provider_tolerance(load_settings(tmp_path, env={}), _set(text))
    assert (tol.atol, tol.rtol, tol.precision) == expected


def test_provider_tolerances_are_set_per_precision_and_never_tighter_than_parity(
        tmp_path: Path) -> None:
    (tmp_path / "lockgate.toml").write_text(
        "[parity]\natol = 1e-3\n[provider_tolerances.fp16]\natol = 0.02\n")
    s = load_settings(tmp_path, env={})
    fp16 = provider_tolerance(s, _set("tensorrt:trt_fp16_enable=true,cuda,cpu"))
    assert (fp16.atol, fp16.rtol) == (0.02, 1e-2)  # rtol keeps its default
    fp32 = provider_tolerance(s, _set("cuda,cpu"))
    assert fp32.atol == 1e-3  # [parity] atol is looser than the fp32 default


@pytest.mark.parametrize(("toml", "message"), [
    ("[provider_tolerances.fp64]\natol = 1\n", "provider_tolerances.fp64: unknown precision"),
    ("[provider_tolerances.fp16]\natol = -1\n", "must not be negative"),
    ("[provider_tolerances.fp16]\natoll = 1\n", "unknown keys ['atoll']"),
    ('[serve]\nunvalidated_providers = "maybe"\n', "serve.unvalidated_providers: expected"),
])
def test_bad_tolerance_settings_are_config_errors(tmp_path: Path, toml: str,
                                                  message: str) -> None:
    (tmp_path / "lockgate.toml").write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path, env={})
    assert message in exc.value.message


def test_policy_file_sets_tolerances_and_the_unvalidated_rule(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[provider_tolerances.int8]\nrtol = 0.1\n'
                      '[serve]\nunvalidated_providers = "allow"\n')
    s = load_settings(tmp_path, env={"LOCKGATE_POLICY": str(policy)})
    assert s.provider_tolerances["int8"] == {"atol": 5e-2, "rtol": 0.1}
    assert s.unvalidated_providers == "allow"


def test_the_gates_run_on_serve_providers_unless_their_parameters_say_otherwise(
        tmp_path: Path) -> None:
    (tmp_path / "lockgate.toml").write_text(
        '[serve]\nproviders = ["azure", "cpu"]\nprovider_fallback = "cpu"\n')
    s = load_settings(tmp_path, env={})
    assert gate_providers({}, s) == _set("azure,cpu", "cpu")
    assert gate_providers({"fallback": "none"}, s) == _set("azure,cpu")
    own = gate_providers({"providers": "tensorrt:fp16=true,cuda,cpu"}, s)
    assert (own.key, own.fallback) == ("tensorrt[fp16]+cuda+cpu", "cpu")
    assert gate_providers({}, load_settings(tmp_path / "none", env={})) == ProviderSet()


def test_a_bad_providers_parameter_is_refused_on_load(home: Path) -> None:
    write_policy(home, '[gates]\n"*" = [{ gate = "infra_validation", providers = "gpu,cpu" }]\n')
    with pytest.raises(ConfigError) as exc:
        Lockgate.open(home)
    assert "(infra_validation).providers" in exc.value.message
    assert "unknown execution provider 'gpu'" in exc.value.message


# -- on real providers ---------------------------------------------------------------------
_TWO_SETS = ('[gates]\n'
             '"prototype->stabilized" = [{ gate = "infra_validation", providers = "azure,cpu" }, '
             '{ gate = "latency_budget", providers = "azure,cpu", p99_ms = 5000, '
             'requests = 10, concurrency = 1, warmup = 2 }]\n'
             '"stabilized->production" = ["infra_validation"]\n'
             '"*" = ["parity"]\n')


@pytest.mark.slow
@pytest.mark.skipif(not _AZURE, reason="this onnxruntime carries no AzureExecutionProvider")
def test_validation_on_azure_is_stored_under_its_set_apart_from_the_cpu(
        open_home, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    lg = open_home(_TWO_SETS)
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    assert lg.validated_sets("m@1") == {}
    infra, latency = lg.promote("m@1", "stabilized").results
    assert infra.status is GateStatus.PASS, infra.message
    assert infra.measured["provider_set"] == "azure+cpu"
    assert infra.measured["providers_used"] == ["AzureExecutionProvider",
                                                "CPUExecutionProvider"]
    assert infra.measured["fell_back"] is False
    assert infra.measured["precision"] == "fp32"
    assert infra.measured["tolerance"] == {"atol": 1e-4, "rtol": 1e-3, "precision": "fp32",
                                           "source": "provider_tolerances.fp32"}
    assert "on azure+cpu" in infra.message
    assert latency.status is GateStatus.PASS, latency.message
    assert latency.measured["provider_set"] == "azure+cpu"
    assert latency.measured["providers_used"] == infra.measured["providers_used"]
    assert list(lg.validated_sets("m@1")) == ["azure+cpu"]

    (cpu,) = lg.promote("m@1", "production").results
    assert cpu.status is GateStatus.PASS, cpu.message
    assert cpu.measured["providers_used"] == ["CPUExecutionProvider"]
    assert cpu.measured["tolerance"]["source"] == "parity"
    sets = lg.validated_sets("m@1")
    assert sorted(sets) == ["azure+cpu", "cpu"]
    assert sets["azure+cpu"]["transition"] == "prototype->stabilized"
    assert sets["cpu"]["transition"] == "stabilized->production"
    assert sets["azure+cpu"]["providers_used"] == ["AzureExecutionProvider",
                                                   "CPUExecutionProvider"]

    code, out, _ = run_cli(capsys, "show", "m@1")
    assert code == 0
    assert "validated on: azure+cpu (fp32, atol 0.0001 rtol 0.001, " in out
    assert "cpu (fp32" in out.split("validated on: ")[1]
    code, out, _ = run_cli(capsys, "show", "m@1", "--json")
    assert code == 0
    assert sorted(json.loads(out)["validated_on"]) == ["azure+cpu", "cpu"]


@pytest.mark.slow
@pytest.mark.skipif(not _AZURE, reason="this onnxruntime carries no AzureExecutionProvider")
def test_a_refusing_drift_policy_still_lets_the_gate_validate_a_new_set(
        open_home) -> None:  # type: ignore[no-untyped-def]
    """Registered on the CPU, validated on azure+cpu: the set differs from the registered one,
    which is what the gate proves, so serve.environment_drift = "refuse" must not stop it."""
    lg = open_home('[serve]\nenvironment_drift = "refuse"\n[gates]\n"*" = [{ gate = '
                   '"infra_validation", providers = "azure,cpu" }]\n')
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    (result,) = lg.promote("m@1", "stabilized").results
    assert result.status is GateStatus.PASS, result.message
    assert result.measured["providers_used"] == ["AzureExecutionProvider",
                                                 "CPUExecutionProvider"]
    assert list(lg.validated_sets("m@1")) == ["azure+cpu"]


@pytest.mark.slow
@pytest.mark.skipif(not _NO_CUDA, reason="this onnxruntime carries CUDA: nothing is missing")
def test_a_missing_provider_fails_the_gate_naming_the_wheel(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*" = [{ gate = "infra_validation", providers = "cuda,cpu" }]\n')
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    with pytest.raises(GateFailedError) as exc:
        lg.promote("m@1", "stabilized")
    (result,) = exc.value.results
    assert result.status is GateStatus.FAIL
    assert "onnxruntime-gpu" in result.message
    assert result.measured["provider_set"] == "cuda+cpu"
    assert lg.validated_sets("m@1") == {}
    assert lg.gate_runs("m@1")[0].results[0]["measured"]["provider_set"] == "cuda+cpu"


@pytest.mark.slow
@pytest.mark.skipif(not _NO_CUDA, reason="this onnxruntime carries CUDA: nothing falls back")
def test_a_pass_on_the_cpu_fallback_validates_nothing(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*" = [{ gate = "infra_validation", providers = "cuda,cpu", '
                   'fallback = "cpu" }]\n')
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    (result,) = lg.promote("m@1", "stabilized").results
    assert result.status is GateStatus.PASS, result.message
    assert result.measured["fell_back"] is True
    assert result.measured["providers_used"] == ["CPUExecutionProvider"]
    assert "FELL BACK to the CPU" in result.message
    assert lg.validated_sets("m@1") == {}


# -- serving on an unvalidated set -------------------------------------------------------------
def _settled(port: int, model: str) -> dict[str, object]:
    """The model's readiness once it is ready or failed (loading takes a moment)."""
    deadline = time.monotonic() + 120
    while True:
        _, body = http_get(port, f"/v2/models/{model}/ready")
        if isinstance(body, dict) and body.get("state") in ("ready", "failed"):
            return body
        assert time.monotonic() < deadline, f"{model} never settled: {body}"
        time.sleep(0.05)


def _audited(lg: Lockgate, kind: str) -> AuditRecord:
    """The first audit record of ``kind``, once a server has written it."""
    deadline = time.monotonic() + 120
    while not (found := [r for r in lg.audit_log() if r.type == kind]):
        assert time.monotonic() < deadline, f"no {kind}: {[r.type for r in lg.audit_log()]}"
        time.sleep(0.1)
    return found[0]


def _in_production(lg: Lockgate) -> None:
    model, x = sklearn_model()
    lg.register(model, x, name="m")
    lg.promote("m@1", "stabilized")
    lg.promote("m@1", "production")


@pytest.mark.slow
@pytest.mark.skipif(not _AZURE, reason="this onnxruntime carries no AzureExecutionProvider")
def test_a_deployment_on_an_unvalidated_set_gets_no_traffic_and_is_audited(
        open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*" = ["parity"]\n')
    _in_production(lg)
    lg.rollout.deploy("m@1", providers=_set("azure,cpu"))
    with started_server(lg.settings.home) as port:
        failed = _audited(lg, "deploy.failed")
        status, body = http_get(port, "/v2/models/m/ready")
        assert status != 200, body
        assert http_get(port, "/v2/health/ready")[0] != 200
    assert failed.payload["version"] == 1
    assert "never validated on the provider set azure+cpu" in str(failed.payload["error"])


@pytest.mark.slow
@pytest.mark.skipif(not _AZURE, reason="this onnxruntime carries no AzureExecutionProvider")
def test_a_deployment_on_a_validated_set_is_served_on_it(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home(_TWO_SETS)
    _in_production(lg)  # infra_validation passed on azure+cpu on the way
    lg.rollout.deploy("m@1", providers=_set("azure,cpu"))
    with started_server(lg.settings.home) as port:
        assert _settled(port, "m")["state"] == "ready"
        _, meta = http_get(port, "/v2/models/m")
        assert meta["parameters"]["lockgate_providers"]["used"] == [
            "AzureExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.skipif(not _AZURE, reason="this onnxruntime carries no AzureExecutionProvider")
def test_the_serving_check_refuses_until_validated_unless_allowed(open_home) -> None:  # type: ignore[no-untyped-def]
    lg = open_home('[gates]\n"*" = ["parity"]\n')
    model, x = sklearn_model()
    v = lg.register(model, x, name="m")
    azure = _set("azure,cpu")
    with pytest.raises(ServeError) as exc:
        lg.serving.served(v, azure, governed=True).load()
    assert "never validated on the provider set azure+cpu" in exc.value.message
    assert "unvalidated_providers" in (exc.value.hint or "")
    cpu = lg.serving.served(v, ProviderSet(), governed=True).load()
    assert cpu.providers == ["CPUExecutionProvider"]  # registration proves the CPU
    named = lg.serving.served(v, azure).load()  # `lockgate serve NAME@V` serves what it is told
    assert named.providers == ["AzureExecutionProvider", "CPUExecutionProvider"]
    lg.settings = replace(lg.settings, unvalidated_providers="allow")
    allowed = lg.serving.served(v, azure, governed=True).load()
    assert allowed.providers == ["AzureExecutionProvider", "CPUExecutionProvider"]
