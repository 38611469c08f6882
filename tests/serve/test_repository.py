"""Triton's model repository extension on real `lockgate serve` processes: the index, unload
stopping a model's traffic and load bringing it back, for named versions and for a server
following the store; the deployer role where the home has users, loopback clients only where
it has none."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_process import call, infer_doc, register, wait_until

from lockgate.api.facade import Lockgate
from lockgate.errors import AccessDeniedError
from lockgate.runtime.predictor import Predictor
from lockgate.serve import ServedModel, create_app
from lockgate.serve.repository import Repository
from onnx_models import linear_onnx
from servers import started_server

pytestmark = pytest.mark.slow


def _ready(port: int) -> None:
    wait_until(lambda: call(port, "GET", "/v2/health/ready")[0] == 200, "ready")


def test_unload_stops_a_named_version_and_load_brings_it_back(
        home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    register(home, tmp_path, name="n")
    with started_server(home, "m@1", "n@1") as port:
        _ready(port)
        status, index = call(port, "POST", "/v2/repository/index")
        assert status == 200
        assert index == [{"name": "m", "version": "1", "state": "READY", "reason": ""},
                         {"name": "n", "version": "1", "state": "READY", "reason": ""}]
        assert call(port, "POST", "/v2/repository/models/m/unload") == (200, None)
        status, doc = call(port, "POST", "/v2/models/m/infer", infer_doc())
        assert status == 404
        assert "unloaded" in doc["error"]
        assert call(port, "GET", "/v2/models/m")[0] == 404
        assert call(port, "POST", "/v2/models/n/infer", infer_doc())[0] == 200
        assert call(port, "GET", "/v2/health/ready")[0] == 200  # unloaded is not waited for
        status, ready_only = call(port, "POST", "/v2/repository/index", {"ready": True})
        assert [e["name"] for e in ready_only] == ["n"]
        status, index = call(port, "POST", "/v2/repository/index")
        assert index[0] == {"name": "m", "version": "1", "state": "UNAVAILABLE",
                            "reason": "unloaded"}
        assert call(port, "POST", "/v2/repository/models/m/load") == (200, None)
        assert call(port, "POST", "/v2/models/m/infer", infer_doc())[0] == 200
        status, doc = call(port, "POST", "/v2/repository/models/zz/load")
        assert status == 404
        assert "unknown model 'zz'" in doc["error"]
        assert call(port, "POST", "/v2/repository/index", [1])[0] == 400


def test_following_the_store_unload_and_load_map_onto_its_deployments(
        home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    register(home, tmp_path, name="other")
    with Lockgate.open(home) as lg:
        lg.promote("m@1", "production")
        lg.deploy("m@1")
    with started_server(home) as port:
        _ready(port)
        assert call(port, "POST", "/v2/repository/index")[1] == [
            {"name": "m", "version": "1", "state": "READY", "reason": ""}]
        assert call(port, "POST", "/v2/repository/models/m/unload")[0] == 200
        assert call(port, "POST", "/v2/models/m/infer", infer_doc())[0] == 404
        assert call(port, "POST", "/v2/repository/index")[1][0]["state"] == "UNAVAILABLE"
        assert call(port, "POST", "/v2/repository/models/m/load")[0] == 200
        wait_until(lambda: call(port, "POST", "/v2/models/m/infer", infer_doc())[0] == 200,
                   "m answers again")
        status, doc = call(port, "POST", "/v2/repository/models/other/load")
        assert status == 404  # registered, never deployed: nothing here to load
        assert "no deployment" in doc["error"]


def test_load_and_unload_need_the_deployer_role_where_the_home_has_users(
        home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    with Lockgate.open(home) as lg:
        lg.add_user("ops", ["deployer"])
        lg.add_user("caller", ["inference"])
        deployer, caller = lg.create_token("ops")[1], lg.create_token("caller")[1]
    with started_server(home, "m@1") as port:
        _ready(port)
        path = "/v2/repository/models/m/unload"
        assert call(port, "POST", path)[0] == 401
        status, doc = call(port, "POST", path, headers={"authorization": f"Bearer {caller}"})
        assert status == 403
        assert "deployer" in doc["error"]
        assert call(port, "POST", "/v2/models/m/infer", infer_doc())[0] == 200
        assert call(port, "POST", path,
                    headers={"authorization": f"Bearer {deployer}"}) == (200, None)
        assert call(port, "POST", "/v2/models/m/infer", infer_doc())[0] == 404


def test_without_users_only_loopback_clients_may_load_and_unload() -> None:
    model = linear_onnx().SerializeToString()
    app = create_app([ServedModel("m", 1, lambda: Predictor(model))])
    repository: Repository = app.state.repository
    repository.check(None, "127.0.0.1", "m")
    repository.check(None, "::1", "m")
    with pytest.raises(AccessDeniedError, match="loopback"):
        repository.check(None, "10.1.2.3", "m")
    with pytest.raises(AccessDeniedError):
        repository.check(None, None, "m")
