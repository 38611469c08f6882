"""The OIP v2 app through Starlette's in-process client, over real ONNX Runtime sessions."""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # starlette 1.x prefers httpx2 and warns when its test client falls back to httpx (the dev
    # extra's client); either works the same here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from prometheus_client.parser import text_string_to_metric_families

from lockgate.errors import InvalidInputError
from lockgate.runtime.predictor import Predictor
from lockgate.serve import ServedModel, create_app

RNG = np.random.default_rng(0)


def x_tensor(x: np.ndarray, name: str = "x", datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}


def ort_run(model: bytes, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def assert_error(response: Any, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) >= {"error"}
    assert fragment in body["error"], body["error"]
    assert "Traceback" not in response.text


class Harness:
    def __init__(self, client: TestClient, events: Any, models: dict[str, bytes]) -> None:
        self.client = client
        self.events = events
        self.models = models

    def infer(self, path: str, body: object) -> Any:
        return self.client.post(f"/v2/models/{path}/infer", json=body)


@pytest.fixture
def serve(events: Any) -> Iterator[Callable[..., Harness]]:
    """Start an app over the given ServedModels; wait until every load has settled."""
    stack: list[TestClient] = []

    def start(models: Sequence[ServedModel], *, settle: int | None = None, **kw: Any) -> Harness:
        app = create_app(models, on_event=events, **kw)
        client = TestClient(app)
        client.__enter__()
        stack.append(client)
        count = len(models) if settle is None else settle
        if count:
            events.wait_for(("model.ready", "model.load_failed"), count)
        return Harness(client, events, {})

    yield start
    for client in reversed(stack):
        client.__exit__(None, None, None)


@pytest.fixture
def models(make_linear: Callable[[float], bytes], typed_bytes: bytes) -> dict[str, bytes]:
    return {"lin1": make_linear(1.0), "lin2": make_linear(2.0), "typed": typed_bytes}


@pytest.fixture
def healthy(serve: Callable[..., Harness], models: dict[str, bytes]) -> Harness:
    h = serve(
        [
            ServedModel("lin", 1, lambda: Predictor(models["lin1"])),
            ServedModel("lin", 2, lambda: Predictor(models["lin2"])),
            ServedModel("typed", 1, lambda: Predictor(models["typed"])),
        ]
    )
    h.models = models
    return h


# --- metadata and health ------------------------------------------------------------------------


def test_server_metadata(healthy: Harness) -> None:
    r = healthy.client.get("/v2")
    assert r.status_code == 200
    assert r.json() == {
        "name": "lockgate",
        "version": importlib.metadata.version("lockgate"),
        "extensions": ["binary_tensor_data", "statistics", "model_repository"],
    }


def test_server_name(serve: Callable[..., Harness], models: dict[str, bytes]) -> None:
    h = serve([ServedModel("lin", 1, lambda: Predictor(models["lin1"]))], server_name="edge")
    assert h.client.get("/v2").json()["name"] == "edge"


def test_health(healthy: Harness) -> None:
    assert healthy.client.get("/v2/health/live").status_code == 200
    r = healthy.client.get("/v2/health/ready")
    assert r.status_code == 200
    assert r.json() == {"ready": True}


def test_model_metadata_unversioned_describes_highest_version(healthy: Harness) -> None:
    r = healthy.client.get("/v2/models/lin")
    assert r.status_code == 200
    assert r.json() == {
        "name": "lin",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "z", "datatype": "FP32", "shape": [-1, 3]},
        ],
        "parameters": {"lockgate_providers": {
            "requested": ["CPUExecutionProvider"], "used": ["CPUExecutionProvider"],
            "fallback": "none", "fell_back": False, "missing": [], "reasons": []}},
    }


def test_model_metadata_versioned(healthy: Harness) -> None:
    r = healthy.client.get("/v2/models/typed/versions/1")
    assert r.status_code == 200
    meta = r.json()
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "ids", "datatype": "INT64", "shape": [-1]},
        {"name": "flags", "datatype": "BOOL", "shape": [-1]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "pixels", "datatype": "UINT8", "shape": [-1, 2]},
    ]
    assert [o["datatype"] for o in meta["outputs"]] == ["BOOL", "BOOL", "BYTES", "FP64"]


@pytest.mark.parametrize("path", ["lin", "lin/versions/1", "lin/versions/2", "typed"])
def test_model_ready(healthy: Harness, path: str) -> None:
    r = healthy.client.get(f"/v2/models/{path}/ready")
    assert r.status_code == 200
    assert r.json()["ready"] is True


# --- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [5, 1])
def test_infer_dynamic_batch(healthy: Harness, batch: int) -> None:
    x = RNG.standard_normal((batch, 4)).astype(np.float32)
    r = healthy.infer("lin/versions/1", {"inputs": [x_tensor(x)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "lin"
    assert body["model_version"] == "1"
    assert "id" not in body
    expected = ort_run(healthy.models["lin1"], {"x": x})
    assert [o["name"] for o in body["outputs"]] == ["y", "z"]
    for out in body["outputs"]:
        assert out["datatype"] == "FP32"
        assert out["shape"] == [batch, 3]
        got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        np.testing.assert_array_equal(got, expected[out["name"]])


def test_unversioned_infer_goes_to_highest_version(healthy: Harness) -> None:
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    body = healthy.infer("lin", {"inputs": [x_tensor(x)]}).json()
    assert body["model_version"] == "2"
    expected = ort_run(healthy.models["lin2"], {"x": x})["y"]
    np.testing.assert_array_equal(
        np.asarray(body["outputs"][0]["data"], np.float32), expected.ravel()
    )


def test_infer_echoes_id_and_selects_outputs(healthy: Harness) -> None:
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    r = healthy.infer(
        "lin/versions/2", {"id": "req-42", "inputs": [x_tensor(x)], "outputs": [{"name": "z"}]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-42"
    assert [o["name"] for o in body["outputs"]] == ["z"]
    expected = ort_run(healthy.models["lin2"], {"x": x})["z"]
    np.testing.assert_array_equal(
        np.asarray(body["outputs"][0]["data"], np.float32), expected.ravel()
    )


def test_infer_nested_data(healthy: Harness) -> None:
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    nested = {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.tolist()}
    body = healthy.infer("lin/versions/1", {"inputs": [nested]}).json()
    expected = ort_run(healthy.models["lin1"], {"x": x})["y"]
    np.testing.assert_array_equal(
        np.asarray(body["outputs"][0]["data"], np.float32), expected.ravel()
    )


def test_infer_other_datatypes(healthy: Harness) -> None:
    inputs = [
        {"name": "ids", "shape": [3], "datatype": "INT64", "data": [-4, 0, 9]},
        {"name": "flags", "shape": [3], "datatype": "BOOL", "data": [True, False, True]},
        {"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "héllo", ""]},
        {"name": "pixels", "shape": [3, 2], "datatype": "UINT8", "data": [0, 1, 2, 3, 254, 255]},
    ]
    r = healthy.infer("typed", {"inputs": inputs})
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["positive"] == {
        "name": "positive",
        "datatype": "BOOL",
        "shape": [3],
        "data": [False, False, True],
    }
    assert outputs["flipped"]["data"] == [False, True, False]
    assert outputs["echo"] == {
        "name": "echo",
        "datatype": "BYTES",
        "shape": [3],
        "data": ["a", "héllo", ""],
    }
    assert outputs["wide"] == {
        "name": "wide",
        "datatype": "FP64",
        "shape": [3, 2],
        "data": [0, 1, 2, 3, 254, 255],
    }


# --- errors -------------------------------------------------------------------------------------


def good_x() -> dict[str, Any]:
    return x_tensor(np.ones((2, 4), np.float32))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [{**good_x(), "shape": [2, 5]}]}, "shape [2, 5] needs 10 elements, data has 8"),
        ({"inputs": [{**good_x(), "shape": [8]}]}, "input 'x' has shape [8], the model wants"),
        (
            {"inputs": [{**good_x(), "shape": [4, 2]}]},
            "input 'x' has shape [4, 2], the model wants",
        ),
        (
            {"inputs": [{**good_x(), "datatype": "FP64"}]},
            "has dtype float64, the model wants float32",
        ),
        ({"inputs": [{**good_x(), "datatype": "INT64"}]}, "INT64 data must be JSON integers"),
        ({"inputs": [{**good_x(), "datatype": "F32"}]}, "unknown datatype 'F32'"),
        ({"inputs": [{**good_x(), "name": "q"}]}, "missing ['x'], unexpected ['q']"),
        ({"inputs": [good_x(), {**good_x(), "name": "q"}]}, "unexpected ['q']"),
        ({"inputs": [good_x()], "outputs": [{"name": "nope"}]}, "unknown outputs ['nope']"),
        ({"inputs": []}, "request needs 'inputs'"),
        ({"id": 3, "inputs": [good_x()]}, "'id' must be a string"),
    ],
)
def test_bad_requests_are_400(healthy: Harness, body: object, fragment: str) -> None:
    assert_error(healthy.infer("lin", body), 400, fragment)


def test_missing_inputs_are_400(healthy: Harness) -> None:
    body = {"inputs": [{"name": "ids", "shape": [1], "datatype": "INT64", "data": [1]}]}
    assert_error(
        healthy.infer("typed", body), 400, "missing ['flags', 'text', 'pixels'], unexpected []"
    )


def test_bad_json_is_400(healthy: Harness) -> None:
    r = healthy.client.post(
        "/v2/models/lin/infer",
        content=b'{"inputs": [',
        headers={"content-type": "application/json"},
    )
    assert_error(r, 400, "request body is not valid JSON")


@pytest.mark.parametrize(
    ("method", "path", "fragment"),
    [
        ("GET", "/v2/models/nope", "unknown model 'nope'"),
        ("GET", "/v2/models/nope/ready", "unknown model 'nope'"),
        ("GET", "/v2/models/nope/versions/1", "unknown model 'nope'"),
        ("POST", "/v2/models/nope/infer", "unknown model 'nope'"),
        ("POST", "/v2/models/nope/versions/1/infer", "unknown model 'nope'"),
        ("GET", "/v2/models/lin/versions/3", "model 'lin' has no version '3'"),
        ("GET", "/v2/models/lin/versions/3/ready", "model 'lin' has no version '3'"),
        ("POST", "/v2/models/lin/versions/3/infer", "model 'lin' has no version '3'"),
        ("POST", "/v2/models/lin/versions/latest/infer", "has no version 'latest'"),
        ("POST", "/v2/models/lin/versions/01x/infer", "has no version '01x'"),
        ("GET", "/v2/nowhere", "Not Found"),
    ],
)
def test_unknown_model_or_version_is_404(
    healthy: Harness, method: str, path: str, fragment: str
) -> None:
    r = healthy.client.request(method, path, json={"inputs": [good_x()]})
    assert_error(r, 404, fragment)


def test_wrong_method_is_405_json(healthy: Harness) -> None:
    assert_error(healthy.client.get("/v2/models/lin/infer"), 405, "Method Not Allowed")


def test_body_over_the_limit_is_413(serve: Callable[..., Harness], models: dict[str, bytes]):
    h = serve([ServedModel("lin", 1, lambda: Predictor(models["lin1"]))], max_request_bytes=64)
    assert_error(h.infer("lin", {"inputs": [good_x()]}), 413, "request body exceeds 64 bytes")

    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ['
        yield b" " * 64

    r = h.client.post("/v2/models/lin/infer", content=chunks())
    assert_error(r, 413, "request body exceeds 64 bytes")


def test_not_ready_model_gets_no_traffic(
    serve: Callable[..., Harness], models: dict[str, bytes], events: Any
) -> None:
    gate = threading.Event()

    def slow_load() -> Predictor:
        assert gate.wait(60)
        return Predictor(models["lin2"])

    h = serve(
        [
            ServedModel("lin", 1, lambda: Predictor(models["lin1"])),
            ServedModel("lin", 2, slow_load),
        ],
        settle=1,
    )
    try:
        body = {"inputs": [good_x()]}
        assert_error(h.infer("lin/versions/2", body), 503, "version 2 is not ready (loading)")
        # no silent fallback: unversioned traffic waits for the highest version
        assert_error(h.infer("lin", body), 503, "version 2 is not ready (loading)")
        assert_error(h.client.get("/v2/models/lin"), 503, "not ready")
        r = h.client.get("/v2/health/ready")
        assert_error(r, 503, "not ready: lin@2 (loading)")
        assert r.json()["ready"] is False
        r = h.client.get("/v2/models/lin/versions/2/ready")
        assert_error(r, 503, "not ready (loading)")
        assert r.json()["state"] == "loading"
        assert h.infer("lin/versions/1", body).status_code == 200
    finally:
        gate.set()
    events.wait_for("model.ready", 2)
    assert h.infer("lin", {"inputs": [good_x()]}).status_code == 200
    assert h.client.get("/v2/health/ready").status_code == 200


def test_failed_load_is_503_and_reported(
    serve: Callable[..., Harness], models: dict[str, bytes], events: Any
) -> None:
    def broken() -> Predictor:
        raise RuntimeError("weights at /secret/path are corrupt")

    h = serve(
        [
            ServedModel("lin", 1, lambda: Predictor(models["lin1"])),
            ServedModel("bad", 1, broken),
            ServedModel("garbage", 4, lambda: Predictor(b"not an onnx model")),
        ]
    )
    failed = {e["model"]: e for e in events.named("model.load_failed")}
    assert failed["bad"] == {
        "model": "bad",
        "version": 1,
        "error": "RuntimeError: weights at /secret/path are corrupt",
        "error_type": "RuntimeError",
    }
    assert failed["garbage"]["error_type"] == "ServeError"
    assert "ONNX Runtime could not load the model" in failed["garbage"]["error"]
    r = h.infer("bad", {"inputs": [good_x()]})
    assert_error(r, 503, "model 'bad' version 1 failed to load")
    assert "secret" not in r.text
    assert_error(h.client.get("/v2/models/garbage/versions/4/ready"), 503, "failed to load")
    assert_error(h.client.get("/v2/health/ready"), 503, "bad@1 (failed), garbage@4 (failed)")
    assert h.client.get("/v2/health/live").status_code == 200
    assert h.infer("lin", {"inputs": [good_x()]}).status_code == 200


class ExplodingPredictor(Predictor):
    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        raise KeyError("bug in the predictor")


def test_unexpected_error_is_500_and_logged(
    serve: Callable[..., Harness], models: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    h = serve([ServedModel("lin", 1, lambda: ExplodingPredictor(models["lin1"]))])
    with caplog.at_level(logging.ERROR, logger="lockgate.serve"):
        r = h.infer("lin", {"inputs": [good_x()]})
    assert r.status_code == 500
    assert r.json() == {"error": "internal error"}
    assert "bug in the predictor" in caplog.text


def test_events_start_and_stop(models: dict[str, bytes], events: Any) -> None:
    app = create_app(
        [
            ServedModel("lin", 1, lambda: Predictor(models["lin1"])),
            ServedModel("lin", 2, lambda: Predictor(models["lin2"])),
        ],
        on_event=events,
        server_name="edge",
    )
    assert events.items == []
    with TestClient(app):
        start = events.wait_for("serve.start")[0]
        assert start == {
            "server": "edge",
            "models": [{"model": "lin", "version": 1}, {"model": "lin", "version": 2}],
        }
        ready = events.wait_for("model.ready", 2)
        assert {(e["model"], e["version"]) for e in ready} == {("lin", 1), ("lin", 2)}
        assert all(e["seconds"] >= 0 for e in ready)
        assert events.named("serve.stop") == []
    assert events.items[0][0] == "serve.start"
    assert events.items[-1] == (
        "serve.stop",
        {
            "server": "edge",
            "models": [
                {"model": "lin", "version": 1, "state": "ready"},
                {"model": "lin", "version": 2, "state": "ready"},
            ],
        },
    )


def test_failing_event_hook_on_model_event_is_logged(
    models: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    loaded = threading.Event()

    def hook(name: str, payload: dict[str, Any]) -> None:
        if name == "model.ready":
            loaded.set()
            raise OSError("audit sink is down")

    app = create_app([ServedModel("lin", 1, lambda: Predictor(models["lin1"]))], on_event=hook)
    with caplog.at_level(logging.ERROR, logger="lockgate.serve"), TestClient(app) as client:
        assert loaded.wait(60)
        r = client.post("/v2/models/lin/infer", json={"inputs": [good_x()]})
        assert r.status_code == 200
    assert "event hook failed on model.ready" in caplog.text


def test_create_app_rejects_bad_model_lists(models: dict[str, bytes]) -> None:
    def load() -> Predictor:
        return Predictor(models["lin1"])

    with pytest.raises(InvalidInputError, match="model list is empty"):
        create_app([])
    with pytest.raises(InvalidInputError, match="'lin' version 1 is listed twice"):
        create_app([ServedModel("lin", 1, load), ServedModel("lin", 1, load)])
    with pytest.raises(InvalidInputError, match="at least one thread"):
        create_app([ServedModel("lin", 1, load)], workers=0)
    with pytest.raises(InvalidInputError, match="invalid name"):
        ServedModel("bad/name", 1, load)
    for version in (0, -1, True, "1"):
        with pytest.raises(InvalidInputError, match="version must be a positive integer"):
            ServedModel("lin", version, load)  # type: ignore[arg-type]


# --- metrics --------------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_failures_batches_and_durations(
    serve: Callable[..., Harness], make_linear: Callable[[float], bytes]
) -> None:
    model = make_linear(1.0)
    h = serve([ServedModel("lin", 1, lambda: Predictor(model),
                           lambda p: {"lockgate_version_digest": "sha256:" + "ab" * 32})])
    x = np.ones((3, 4), np.float32)
    for _ in range(2):
        assert h.infer("lin", {"inputs": [x_tensor(x)]}).status_code == 200
    assert h.infer("lin", {"inputs": [x_tensor(x, name="nope")]}).status_code == 400
    r = h.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    m = _samples(r.text)

    def at(name: str, **extra: str) -> float:
        return m[(name, tuple(sorted({"model": "lin", "version": "1", **extra}.items())))]

    assert at("lockgate_requests_total") == 3
    assert at("lockgate_request_failures_total", reason="bad_request") == 1
    assert at("lockgate_inferences_total") == 6
    assert at("lockgate_executions_total") == 2
    assert at("lockgate_pending_requests") == 0
    assert at("lockgate_batch_size_count") == 2
    assert at("lockgate_batch_size_sum") == 6
    assert at("lockgate_request_duration_seconds_count") == 3
    assert at("lockgate_compute_duration_seconds_sum") > 0
    assert at("lockgate_model_info", digest="sha256:" + "ab" * 32) == 1
    assert at("lockgate_model_providers", provider="CPUExecutionProvider") == 1
    labels = {k for (_, labels) in m for k, _ in labels}
    assert labels <= {"model", "version", "reason", "digest", "provider", "le"}
