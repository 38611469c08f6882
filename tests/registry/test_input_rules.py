"""Registry input rules against a real `lockgate server`: JSON bodies and `registration.json`
nested too deep are a 400 that says so, numbers in paths, queries and references are ASCII
digits only (`²` and `٣` are refused, never a 500), and nothing is changed by a refusal."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from lockgate.api.facade import Lockgate
from lockgate.errors import InvalidInputError
from lockgate.registry.bundle import MAX_JSON_BYTES, MAX_JSON_DEPTH, load_json
from lockgate.types import ModelRef, whole_number
from registry_server import Registry


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _no_internal_errors(reg: Registry) -> None:
    text = "".join(reg.log)
    assert "Traceback" not in text
    assert "internal error" not in text


@pytest.fixture(scope="module")
def model(registry: Registry) -> str:
    with registry.client("dev") as c:
        r = c.post("/api/v1/models/rules/versions", content=registry.onnx.read_bytes(),
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return "rules"


def test_deep_json_bodies_are_refused(registry: Registry, model: str) -> None:
    with registry.open() as lg:
        before = lg.aliases(model)
    with registry.client("dev") as c:
        for body in (_deep(3000), _deep(100_000), '{"version": ' + _deep(MAX_JSON_DEPTH) + "}"):
            r = c.put(f"/api/v1/models/{model}/aliases/best", content=body,
                      headers={"Content-Type": "application/json"})
            assert r.status_code == 400, r.text
            assert r.json()["type"] == "InvalidInputError"
            assert f"nests deeper than {MAX_JSON_DEPTH} levels" in r.json()["error"]
        r = c.put(f"/api/v1/models/{model}/aliases/best", content='{"version": NaN}',
                  headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        r = c.put(f"/api/v1/models/{model}/aliases/best", content=b" " * (MAX_JSON_BYTES + 1024),
                  headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.put(f"/api/v1/models/{model}/aliases/best", json={"version": 1})
        assert r.status_code == 200, r.text  # a shallow body still works
    with registry.open() as lg:
        after = lg.aliases(model)
    assert before == {}
    assert after == {"best": 1}
    _no_internal_errors(registry)


def _bundle(onnx: Path, options: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(onnx, arcname="model.onnx")
        info = tarfile.TarInfo("registration.json")
        info.size = len(options)
        tar.addfile(info, io.BytesIO(options))
    return buf.getvalue()


def test_deep_registration_json_in_a_bundle_is_refused(registry: Registry) -> None:
    deep = ('{"tags": ' + '{"a": ' * 3000 + '"x"' + "}" * 3000 + "}").encode()
    with registry.client("dev") as c:
        r = c.post("/api/v1/models/deepreg/versions", content=_bundle(registry.onnx, deep),
                   headers={"Content-Type": "application/gzip"})
        assert r.status_code == 400, r.text
        assert "registration.json nests deeper than" in r.json()["error"]
        assert c.get("/api/v1/models/deepreg/versions").status_code == 404  # nothing stored
    _no_internal_errors(registry)


@pytest.mark.parametrize("ref", ["²", "٣", "1²", "+1", " 1", "1_0"])
def test_unicode_digits_in_version_paths(registry: Registry, model: str, ref: str) -> None:
    with registry.client("view") as c:
        r = c.get(f"/api/v1/models/{model}/versions/{ref}")
        assert r.status_code in (400, 404), r.text
        assert r.json()["type"] in ("InvalidInputError", "NotFoundError")
        assert c.get(f"/api/v1/models/{model}/versions/1").status_code == 200
    _no_internal_errors(registry)


@pytest.mark.parametrize("query", ["after=²", "after=٣", "limit=²", "after=+1", "after=1_0",
                                   "after=-1", "after=" + "9" * 40])
def test_unicode_digits_in_cursors(registry: Registry, query: str) -> None:
    with registry.client("view") as c:
        r = c.get(f"/api/v1/audit?{query}")
        assert r.status_code == 400, r.text
        assert "query parameter" in r.json()["error"]
        assert c.get("/api/v1/audit?after=1&limit=2").status_code == 200
    _no_internal_errors(registry)


@pytest.mark.parametrize("query", ["offset=²", "limit=٣"])
def test_unicode_digits_in_paging(registry: Registry, model: str, query: str) -> None:
    with registry.client("view") as c:
        r = c.get(f"/api/v1/models/{model}/versions?{query}")
        assert r.status_code == 400, r.text
    _no_internal_errors(registry)


def test_refs_take_ascii_digits_only(registry: Registry, model: str) -> None:
    assert whole_number("42") == 42
    for text in ("²", "٣", "", "+1", " 1", "1_0", "9" * 19):
        assert whole_number(text) is None, text
    assert ModelRef.parse("m@3") == ModelRef("m", 3)
    with pytest.raises(InvalidInputError, match="invalid name"):
        ModelRef.parse("m@²")
    with pytest.raises(InvalidInputError, match="invalid name"):
        ModelRef.parse("m@٣")  # int("٣") would read it as 3
    with Lockgate.open(registry.home) as lg, pytest.raises(InvalidInputError):
        lg.get(f"{model}@²")


def test_load_json_limits() -> None:
    assert isinstance(load_json(_deep(MAX_JSON_DEPTH), "x"), list)
    with pytest.raises(InvalidInputError, match="nests deeper"):
        load_json(_deep(MAX_JSON_DEPTH + 1), "x")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_json("Infinity", "x")
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        load_json('{"comment": "\\udfff"}', "x")
    assert load_json('{"comment": "\\ud83d\\ude00"}', "x") == {"comment": "\U0001f600"}


def test_lone_surrogates_in_bodies_are_refused(registry: Registry, model: str) -> None:
    with Lockgate.open(registry.home) as lg:
        before = len(lg.audit_log())
    with registry.client("appr") as c:
        for verb in ("approve", "reject"):
            for comment in ("\\udfff", "ok \\ud800 then", "\\ude00\\ud83d"):
                body = '{"stage": "production", "comment": "' + comment + '"}'
                r = c.post(f"/api/v1/models/{model}/versions/1/{verb}", content=body,
                           headers={"Content-Type": "application/json"})
                assert r.status_code == 400, r.text
                assert r.json()["type"] == "InvalidInputError"
                assert "lone surrogate" in r.json()["error"]
    with Lockgate.open(registry.home) as lg:
        assert len(lg.audit_log()) == before  # nothing decided, nothing recorded
        assert lg.meta.decisions(model, 1) == []
    _no_internal_errors(registry)


def test_json_bodies_must_say_they_are_json(registry: Registry, model: str) -> None:
    with Lockgate.open(registry.home) as lg:
        before = lg.aliases(model)
    with registry.client("dev") as c:
        # what a cross-site `fetch(..., {mode: "no-cors"})` or a form can send
        for media in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": media} if media else {}
            r = c.put(f"/api/v1/models/{model}/aliases/typed", content=b'{"version": 1}',
                      headers=headers)
            assert r.status_code == 415, media
            assert r.json()["type"] == "_UnsupportedMediaError"
            assert "application/json" in r.json()["error"]
        # a browser saying another site sent it: refused, whatever the body
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
            r = c.put(f"/api/v1/models/{model}/aliases/typed", json={"version": 1},
                      headers=headers)
            assert r.status_code == 403, headers
        with Lockgate.open(registry.home) as lg:
            assert lg.aliases(model) == before
        r = c.put(f"/api/v1/models/{model}/aliases/typed", json={"version": 1},
                  headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 200, r.text
    _no_internal_errors(registry)
