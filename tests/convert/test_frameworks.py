"""Framework policy: allowed training frameworks and version ranges, refused with the rule."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.cli.main import main
from lockgate.config.settings import load_settings
from lockgate.convert.frameworks import FrameworkPolicyError, check_framework
from lockgate.errors import ConfigError
from onnx_models import linear_onnx


def test_ranges_and_unlisted_frameworks() -> None:
    policy = {"pytorch": ">=2.4,<3", "onnx": "*"}
    check_framework(policy, "pytorch", "2.13.0+cpu")
    check_framework(policy, "onnx", "1.23.2")
    check_framework({}, "jax", "0.1")  # no policy: everything allowed
    with pytest.raises(FrameworkPolicyError, match=r"pytorch = '>=2.4,<3' does not allow "
                                                   r"pytorch 3\.1"):
        check_framework(policy, "pytorch", "3.1")
    with pytest.raises(FrameworkPolicyError, match="jax is not an allowed") as exc:
        check_framework(policy, "jax", "0.10.2")
    assert "onnx *" in (exc.value.hint or "")


def test_bad_policy_names_the_key(home: Path) -> None:
    for text, match in [('[frameworks]\ntorch = "*"\n', "unknown framework"),
                        ('[frameworks]\npytorch = "two"\n', "not a version range"),
                        ("[frameworks]\npytorch = 2\n", "expected a version range")]:
        (home / "lockgate.toml").write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_settings(home)


def test_registration_outside_the_policy_is_refused_audited_and_stores_nothing(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "lockgate.toml").write_text('[frameworks]\npytorch = ">=2.4"\n')
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "register", str(tmp_path / "m.onnx"), "--name", "m"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "framework policy: onnx is not an allowed training framework" in err
    assert "Traceback" not in err
    with Lockgate.open(home) as lg:
        assert lg.models() == []
        (event,) = [r for r in lg.audit_log() if r.type == "registration.refused"]
        assert event.model == "m"
        assert event.payload["framework"] == "onnx"
    (home / "lockgate.toml").write_text('[frameworks]\npytorch = ">=2.4"\nonnx = ">=1.10"\n')
    main(["--home", str(home), "register", str(tmp_path / "m.onnx"), "--name", "m"])
    capsys.readouterr()
    main(["--home", str(home), "policy", "frameworks", "--json"])
    rows = {r["framework"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["onnx"]["status"] == "allowed"
    assert rows["onnx"]["rule"] == ">=1.10"
    assert rows["jax"]["status"] == "refused (not listed)"
    with Lockgate.open(home) as lg:
        assert [m.name for m in lg.models()] == ["m"]


@pytest.mark.torch
def test_torch_version_outside_the_range_is_refused(mem_lg: Lockgate) -> None:
    torch = pytest.importorskip("torch")
    from dataclasses import replace

    mem_lg.settings = replace(mem_lg.settings, frameworks={"pytorch": "<2"})
    with pytest.raises(FrameworkPolicyError, match=r"pytorch = '<2' does not allow pytorch 2\."):
        mem_lg.register(torch.nn.Linear(4, 2), torch.zeros(3, 4), name="t")
    assert mem_lg.models() == []
