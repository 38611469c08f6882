"""Execution providers as deployment state and configuration: `lockgate deploy --providers`
stored in the deployment record and kept through transitions, `lockgate serve --providers`,
the [serve] settings, and one clear line with exit code 2 for a bad provider."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest

from cli_in_process import run_cli
from lockgate.api.facade import Lockgate
from lockgate.config.load import load_settings
from lockgate.config.providers import ProviderSet, parse_providers_text
from lockgate.errors import ConfigError
from lockgate.rollout.state import Deployment
from onnx_models import linear_onnx

TRT = "tensorrt:trt_fp16_enable=true,cuda,cpu"


def _two_versions(home: Path, tmp: Path) -> None:
    (home / "lockgate.toml").write_text('[gates]\n"*" = ["seeds_recorded"]\n')
    with Lockgate.open(home) as lg:
        for seed in range(2):
            path = tmp / f"m{seed}.onnx"
            onnx.save(linear_onnx(seed=seed), path)
            lg.register(str(path), name="m", seed=seed)
        lg.promote("m@1", "production")


def _state(home: Path) -> tuple[Deployment, int]:
    with Lockgate.open(home) as lg:
        return lg.deployments()["m"], len(lg.audit_log())


def test_deploy_stores_the_providers_and_transitions_keep_them(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _two_versions(home, tmp_path)
    code, out, err = run_cli(capsys, "deploy", "m@1", "--providers", TRT, "--fallback", "cpu")
    assert code == 0, err
    assert "providers tensorrt:trt_fp16_enable=1,cuda,cpu (fallback cpu)" in out
    wanted = ProviderSet(parse_providers_text(TRT, "t"), "cpu")
    d, _ = _state(home)
    assert d.providers == wanted.to_dict()
    assert ProviderSet.from_dict(d.providers).key == "tensorrt[fp16]+cuda+cpu"
    with Lockgate.open(home) as lg:
        lg.promote("m@2", "production")  # the stored deployment follows: a switch
        assert lg.desired_state()["m"].providers == wanted
        lg.rollback("m", reason="test")
    d, _ = _state(home)
    assert (d.stable, d.previous, d.state) == (1, 2, "rolled-back")
    assert d.providers == wanted.to_dict()
    code, out, _ = run_cli(capsys, "deploy", "status", "--json")
    assert code == 0
    assert json.loads(out)["m"]["providers"] == wanted.to_dict()
    code, out, _ = run_cli(capsys, "deploy", "status")
    assert code == 0
    assert "│ m " in out
    with Lockgate.open(home) as lg:
        changes = [r.payload for r in lg.audit_log() if r.type == "deployment.changed"]
    assert changes[0]["after"]["providers"] == wanted.to_dict()


def test_providers_of_a_deployment_change_alone_and_go_back_to_the_default(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _two_versions(home, tmp_path)
    assert run_cli(capsys, "deploy", "m@1")[0] == 0
    code, _, err = run_cli(capsys, "deploy", "m", "--providers", "azure,cpu")
    assert code == 0, err
    d, _ = _state(home)
    assert (d.stable, d.generation) == (1, 2)
    assert ProviderSet.from_dict(d.providers).names == ["AzureExecutionProvider",
                                                        "CPUExecutionProvider"]
    assert run_cli(capsys, "deploy", "m", "--providers", "default")[0] == 0
    d, _ = _state(home)
    assert d.providers is None
    with Lockgate.open(home) as lg:
        assert lg.desired_state()["m"].providers is None
    code, _, err = run_cli(capsys, "deploy", "m@1", "--providers", "default")
    assert code == 2
    assert "--providers default goes with NAME alone" in err
    code, _, err = run_cli(capsys, "deploy", "m@1", "--providers", "azure,cpu")
    assert code == 0, err  # the stable version already: only its providers change
    d, _ = _state(home)
    assert (d.stable, d.previous, d.generation) == (1, None, 4)
    assert ProviderSet.from_dict(d.providers).key == "azure+cpu"
    code, _, err = run_cli(capsys, "deploy", "m@1")
    assert code == 2
    assert "already the stable version" in err


@pytest.mark.parametrize(("args", "message"), [
    (("--providers", "cudaa,cpu"), "unknown execution provider 'cudaa'"),
    (("--providers", "cuda:fp17=true,cpu"), "cuda has no option 'fp17'"),
    (("--providers", "cpu,cuda"), "cpu must come last"),
    (("--fallback", "cpu"), "--fallback goes with --providers"),
])
def test_a_bad_provider_is_one_line_exit_2_and_changes_nothing(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        args: tuple[str, ...], message: str) -> None:
    _two_versions(home, tmp_path)
    assert run_cli(capsys, "deploy", "m@1")[0] == 0
    before = _state(home)
    code, out, err = run_cli(capsys, "deploy", "m@1", *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    assert _state(home) == before
    code, _, err = run_cli(capsys, "deploy", "m@1", "--providers", "cuda,cpu", "--fallback",
                           "gpu")
    assert code == 2  # click's usage error for a choice
    assert "'gpu' is not one of 'none', 'cpu'" in err
    assert _state(home) == before


def test_serve_refuses_a_bad_provider_before_it_starts(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _two_versions(home, tmp_path)
    code, _, err = run_cli(capsys, "serve", "m@1", "--providers", "gpu,cpu", "--port", "0")
    assert code == 2
    assert "--providers[0]: unknown execution provider 'gpu'" in err
    assert len(err.strip().splitlines()) == 1, err
    monkeypatch.setenv("LOCKGATE_SERVE_PROVIDERS", "cuda:device_id=-1,cpu")
    code, _, err = run_cli(capsys, "serve", "m@1", "--port", "0")
    assert code == 2
    assert "LOCKGATE_SERVE_PROVIDERS[0].device_id: must not be negative" in err


def test_serve_settings_read_from_the_file_the_environment_and_the_policy(
        tmp_path: Path) -> None:
    assert load_settings(tmp_path, env={}).serve_provider_set == ProviderSet()
    (tmp_path / "lockgate.toml").write_text(
        '[serve]\nproviders = [{name = "tensorrt", fp16 = true}, "cuda", "cpu"]\n'
        'provider_fallback = "cpu"\n')
    s = load_settings(tmp_path, env={})
    assert s.serve_provider_set.key == "tensorrt[fp16]+cuda+cpu"
    assert s.serve_provider_set.fallback == "cpu"
    s = load_settings(tmp_path, env={"LOCKGATE_SERVE_PROVIDERS": "azure,cpu",
                                     "LOCKGATE_SERVE_PROVIDER_FALLBACK": "none"})
    assert s.serve_provider_set == ProviderSet(parse_providers_text("azure,cpu", "t"))
    policy = tmp_path / "policy.toml"
    policy.write_text('[serve]\nproviders = ["cuda", "cpu"]\nprovider_fallback = "none"\n')
    s = load_settings(tmp_path, env={"LOCKGATE_POLICY": str(policy)})
    assert s.serve_provider_set.names == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert s.serve_provider_fallback == "none"
    policy.write_text('[serve]\nport = 9000\n')
    with pytest.raises(ConfigError, match=r"serve\.port is not a policy setting"):
        load_settings(tmp_path, env={"LOCKGATE_POLICY": str(policy)})


@pytest.mark.parametrize(("toml", "message"), [
    ('providers = ["cpu", "cuda"]', "serve.providers: cpu must come last"),
    ('providers = ["quantum"]', "serve.providers[0]: unknown execution provider"),
    ('providers = []', "serve.providers: expected a non-empty list"),
    ('provider_fallback = "gpu"', "serve.provider_fallback: expected 'none' or 'cpu'"),
])
def test_bad_serve_settings_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "lockgate.toml").write_text(f"[serve]\n{toml}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(tmp_path, env={})


def test_a_record_without_providers_reads_as_the_servers_setting() -> None:
    old = {"stable": 3, "candidate": None, "weight": 0, "shadow": None, "previous": 2,
           "state": "healthy", "analysis": None, "batching": None}
    d = Deployment.from_record("m", 4, old)
    assert d.providers is None
    assert d.record() == {**old, "providers": None}
    stored = ProviderSet(parse_providers_text("azure,cpu", "t"), "cpu").to_dict()
    again = Deployment.from_record("m", 5, d.switch(4).record() | {"providers": stored})
    assert again.providers == stored
    assert again.canary(5, 10).providers == stored
    assert Deployment.from_record("m", 5, again.record()) == again
