"""A server following the store starts with nothing deployed: live, not ready, unknown models
404; a version deployed afterwards is picked up, becomes ready and answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_process import call, infer_doc, register, wait_until

from lockgate.api.facade import Lockgate
from servers import started_server
from tamper import flip_byte

pytestmark = pytest.mark.slow


def test_empty_store_serves_live_not_ready_and_404_for_an_unknown_model(home: Path) -> None:
    with started_server(home) as port:
        assert call(port, "GET", "/v2/health/live") == (200, {"live": True})
        status, doc = call(port, "GET", "/v2/health/ready")
        assert status == 503
        assert doc["ready"] is False
        assert "nothing is deployed yet" in doc["error"]
        status, doc = call(port, "POST", "/v2/models/nope/infer", infer_doc())
        assert status == 404
        assert doc["error"].startswith("unknown model 'nope'")
        assert call(port, "GET", "/v2/models/nope/ready")[0] == 404
        assert call(port, "GET", "/v2/models/stats") == (200, {"model_stats": []})


def test_a_version_deployed_after_the_start_becomes_ready_and_answers(
        home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    with started_server(home) as port:
        assert call(port, "GET", "/v2/health/ready")[0] == 503
        assert call(port, "POST", "/v2/models/m/infer", infer_doc())[0] == 404
        with Lockgate.open(home) as lg:
            lg.promote("m@1", "production")
            lg.deploy("m@1")
        wait_until(lambda: call(port, "GET", "/v2/health/ready")[0] == 200, "ready")
        status, doc = call(port, "POST", "/v2/models/m/infer", infer_doc())
        assert status == 200
        assert doc["model_name"] == "m"
        assert doc["model_version"] == "1"
        assert call(port, "GET", "/v2/models/m/versions/1/ready")[1]["ready"] is True


def test_a_promotion_alone_is_picked_up(home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    with started_server(home) as port:
        with Lockgate.open(home) as lg:
            lg.promote("m@1", "production")
        wait_until(lambda: call(port, "GET", "/v2/health/ready")[0] == 200, "ready")
        assert call(port, "POST", "/v2/models/m/infer", infer_doc())[0] == 200


def test_a_deployed_version_that_fails_to_load_is_503_not_404(
        home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    with started_server(home) as port:
        with Lockgate.open(home) as lg:
            lg.promote("m@1", "production")
            lg.deploy("m@1")  # verified now; its file is damaged before the server loads it
            flip_byte(lg, lg.get("m@1").digest)

        def failed() -> bool:
            status, doc = call(port, "GET", "/v2/models/m/versions/1/ready")
            return status == 503 and doc.get("state") == "failed"

        wait_until(failed, "the load failed")
        status, doc = call(port, "POST", "/v2/models/m/infer", infer_doc())
        assert status == 503
        assert "'m'" in doc["error"]
        assert call(port, "GET", "/v2/health/ready")[0] == 503
        assert call(port, "POST", "/v2/models/other/infer", infer_doc())[0] == 404
