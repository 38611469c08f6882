"""The OpenAPI 3.1 document of the data plane: the Open Inference Protocol v2 REST routes
(KServe v2 / Triton) that ``lockgate serve`` answers, plus lockgate's ``/metrics`` and capture
routes. Served at ``GET /v2/openapi.json``.

Schemas follow the OIP v2 REST specification: ``InferenceRequest`` ``{id?, parameters?,
inputs: [{name, shape, datatype, parameters?, data}], outputs?: [{name, parameters?}]}``,
``InferenceResponse`` ``{model_name, model_version?, id?, parameters?, outputs}``, the
server and model metadata answers, and ``{"error": ...}`` for every refusal. Each operation
lists the answers it can give: 400 for a bad request, 401/403 on infer and capture when the
server requires tokens (``Authorization: Bearer ...``), 404 for an unknown model or version,
408/413/431 from the HTTP layer (a request too slow to arrive, a body or headers too large),
503 for a model not ready, a server overloaded (with ``Retry-After``), and 500 for an
unexpected failure, whose body never carries details. The binary tensor extension
(``application/octet-stream`` with ``Inference-Header-Content-Length``) is documented as an
alternative request and response content; Triton's statistics and model repository extensions
have their routes and answers.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lockgate.serve.about import lockgate_version

__all__ = ["OPENAPI_PATH", "openapi_document", "openapi_endpoint"]

OPENAPI_PATH = "/v2/openapi.json"
"""Where the server publishes :func:`openapi_document`."""

_JSON = "application/json"
_BINARY = "application/octet-stream"
_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
              "FP16", "FP32", "FP64", "BYTES"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], description: str = "", **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if description:
        schema["description"] = description
    return schema


_STRING = {"type": "string"}
_COUNT = {"type": "integer", "minimum": 0}
_PARAMETERS = {"type": "object", "additionalProperties": True,
               "description": "Free-form parameters (OIP ``$parameters``)."}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _obj(["error"], "Every refusal: a readable message (and, for some answers, more "
                  "fields).", error=_STRING),
    "Datatype": {"type": "string", "enum": _DATATYPES,
                 "description": "An OIP tensor datatype."},
    "Parameters": _PARAMETERS,
    "TensorData": {
        "description": "Tensor elements, row-major: flat or nested lists (a single string is "
                       "accepted for a one-element BYTES tensor).",
        "anyOf": [{"type": "array",
                   "items": {"type": ["number", "boolean", "string", "array"]}},
                  {"type": "number"}, {"type": "boolean"}, {"type": "string"}],
    },
    "ResponseData": {
        "description": "Output elements, flat (row-major). Non-finite floats are written "
                       "NaN, Infinity and -Infinity, as Python's and Triton's JSON do (a "
                       "parser that maps them to null sees null): elements are scalars, "
                       "not only the standard JSON types.",
        "type": "array", "items": {"not": {"type": ["object", "array"]}},
    },
    "RequestInput": _obj(
        ["name", "shape", "datatype"],
        "An input tensor. ``data`` is required unless ``parameters.binary_data_size`` places "
        "the data in the binary part of the body.",
        name={"type": "string", "minLength": 1},
        shape={"type": "array", "items": _COUNT},
        datatype=_ref("Datatype"),
        parameters=_obj([], "Tensor parameters; ``binary_data_size`` (bytes) with the binary "
                        "tensor extension.", binary_data_size=_COUNT),
        data=_ref("TensorData"),
    ),
    "RequestOutput": _obj(
        ["name"], "An output to return; ``parameters.binary_data`` asks for it as binary.",
        name={"type": "string", "minLength": 1},
        parameters=_obj([], "", binary_data={"type": "boolean"}),
    ),
    "InferenceRequest": _obj(
        ["inputs"], "OIP ``$inference_request``.",
        id=_STRING,
        parameters=_obj([], "Request parameters; ``binary_data_output`` returns every output "
                        "as binary.", binary_data_output={"type": "boolean"}),
        inputs={"type": "array", "minItems": 1, "items": _ref("RequestInput")},
        outputs={"type": "array", "items": _ref("RequestOutput")},
    ),
    "ResponseOutput": _obj(
        ["name", "shape", "datatype"],
        "An output tensor; without ``data`` its bytes follow the JSON header "
        "(``parameters.binary_data_size``).",
        name=_STRING, shape={"type": "array", "items": _COUNT}, datatype=_ref("Datatype"),
        parameters=_PARAMETERS, data=_ref("ResponseData"),
    ),
    "InferenceResponse": _obj(
        ["model_name", "outputs"], "OIP ``$inference_response``.",
        model_name=_STRING, model_version=_STRING, id=_STRING, parameters=_PARAMETERS,
        outputs={"type": "array", "items": _ref("ResponseOutput")},
    ),
    "ServerMetadata": _obj(["name", "version", "extensions"],
                           "OIP ``$metadata_server_response``.",
                           name=_STRING, version=_STRING,
                           extensions={"type": "array", "items": _STRING}),
    "Live": _obj(["live"], "", live={"type": "boolean"}),
    "Ready": _obj(["ready"], "", ready={"type": "boolean"}),
    "SlotStatus": _obj(["name", "version", "state"], "A served version and its state.",
                       name=_STRING, version=_STRING, state=_STRING),
    "NotReady": _obj(["ready", "error", "models"], "The versions not ready yet.",
                     ready={"const": False}, error=_STRING,
                     models={"type": "array", "items": _ref("SlotStatus")}),
    "MetadataTensor": _obj(
        ["name", "datatype", "shape"],
        "OIP ``$metadata_tensor``: ``-1`` for a variable dimension; a datatype with no OIP name "
        "is shown as ONNX names it.",
        name=_STRING, datatype=_STRING, shape={"type": "array", "items": {"type": "integer"}}),
    "ModelMetadata": _obj(
        ["name", "platform", "inputs", "outputs"], "OIP ``$metadata_model_response``.",
        name=_STRING, versions={"type": "array", "items": _STRING}, platform=_STRING,
        inputs={"type": "array", "items": _ref("MetadataTensor")},
        outputs={"type": "array", "items": _ref("MetadataTensor")},
        parameters=_PARAMETERS),
    "ModelReady": _obj(["name", "version", "state", "ready"], "",
                       name=_STRING, version=_STRING, state=_STRING,
                       ready={"type": "boolean"}, error=_STRING),
    "ModelNotReady": {
        "description": "A version loading, failed or not deployed yet.",
        "anyOf": [_ref("ModelReady"), _ref("Error")],
    },
    "Capture": _obj(
        ["model", "version", "instance", "window", "rows", "requests"],
        "Rows and request outcomes captured after the cursors (lockgate extension).",
        model=_STRING, version=_STRING, instance=_STRING, window=_COUNT,
        rows=_obj(["from", "to", "features"], "", **{
            "from": _COUNT, "to": _COUNT,
            "features": {"type": "object", "additionalProperties": _obj(
                ["kind", "values"], "", kind=_STRING,
                values={"type": "array",
                        "items": {"type": ["number", "string", "null"]}})}}),
        requests=_obj(["from", "to", "count", "errors", "latencies"], "", **{
            "from": _COUNT, "to": _COUNT, "count": _COUNT, "errors": _COUNT,
            "latencies": {"type": "array", "items": {"type": "number"}}}),
    ),
    **{
        "Duration": _obj(["count", "ns"], "A count and its cumulative nanoseconds.",
                         count=_COUNT, ns=_COUNT),
        "BatchStats": _obj(
            ["batch_size", "compute_input", "compute_infer", "compute_output"],
            "The executions of one batch size.", batch_size=_COUNT,
            compute_input=_ref("Duration"), compute_infer=_ref("Duration"),
            compute_output=_ref("Duration")),
        "ModelStats": _obj(
            ["name", "version", "last_inference", "inference_count", "execution_count",
             "inference_stats", "batch_stats"],
            "Triton's ``$model_stat``: one version's statistics since it was first used.",
            name=_STRING, version=_STRING, last_inference=_COUNT, inference_count=_COUNT,
            execution_count=_COUNT,
            inference_stats=_obj(
                ["success", "fail", "queue", "compute_input", "compute_infer",
                 "compute_output"], "",
                **{k: _ref("Duration") for k in (
                    "success", "fail", "queue", "compute_input", "compute_infer",
                    "compute_output", "cache_hit", "cache_miss")}),
            batch_stats={"type": "array", "items": _ref("BatchStats")}),
        "Statistics": _obj(["model_stats"], "Triton's ``$stats_model_response``.",
                           model_stats={"type": "array", "items": _ref("ModelStats")}),
        "IndexRequest": _obj([], "Triton's ``$repository_index_request``.",
                             ready={"type": "boolean"}),
        "RepositoryIndex": {"type": "array", "description": "Triton's repository index.",
                            "items": _obj(["name", "version", "state", "reason"], "",
                                          name=_STRING, version=_STRING, reason=_STRING,
                                          state={"enum": ["READY", "LOADING",
                                                          "UNAVAILABLE"]})},
    },
}
"""The document's component schemas, by name."""

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer", "minimum": 0}}}


def _error(description: str, **headers: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {_JSON: {"schema": _ref("Error")}}}
    if headers:
        answer["headers"] = headers
    return answer


# the answers the HTTP layer can give to any request
_TRANSPORT = {
    "400": _error("Bad request: the HTTP parser refused it, or its data are invalid."),
    "408": _error("The request did not arrive in time."),
    "413": _error("The body is over the server's limit."),
    "431": _error("The request's headers are too large."),
    "500": _error("An unexpected failure (logged on the server; no details are given)."),
}
_NOT_FOUND = _error("Unknown model or version.")
_UNAVAILABLE = _error("Not ready (loading, failed, not deployed yet) or overloaded.",
                      **_RETRY_AFTER)
_UNAUTHORIZED = _error("A token is required and none or an unknown one was given.",
                       **{"WWW-Authenticate": {"schema": _STRING}})
_FORBIDDEN = _error("The token may not use this route.")
# optional: tokens are required only when the server is configured to
_AUTH: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]


def _ok(schema: dict[str, Any], description: str = "OK", media: str = _JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _path_params(path: str) -> list[dict[str, Any]]:
    params = []
    if "{model}" in path:
        params.append({"name": "model", "in": "path", "required": True,
                       "description": "Model name.", "schema": {"type": "string",
                                                                 "minLength": 1}})
    if "{version}" in path:
        params.append({"name": "version", "in": "path", "required": True,
                       "description": "Version number.",
                       "schema": {"type": "string", "minLength": 1}})
    return params


def _operation(op_id: str, summary: str, path: str, ok: dict[str, Any],
               *extra: tuple[str, dict[str, Any]], tag: str = "inference") -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, **copy.deepcopy(_TRANSPORT)}
    for status, answer in extra:
        responses[status] = copy.deepcopy(answer)
    return {"operationId": op_id, "summary": summary, "tags": [tag],
            "parameters": _path_params(path),
            "responses": dict(sorted(responses.items()))}


def _infer(op_id: str, path: str, which: str) -> dict[str, Any]:
    op = _operation(
        op_id, f"Run {which} on a request.", path,
        {"description": "The outputs: JSON, or with binary outputs a JSON header followed by "
                        "their bytes.",
         "headers": {"Inference-Header-Content-Length": {
             "description": "With binary outputs: the length of the JSON header.",
             "schema": _COUNT}},
         "content": {_JSON: {"schema": _ref("InferenceResponse")},
                     _BINARY: {"schema": {"type": "string", "format": "binary"}}}},
        ("401", _UNAUTHORIZED), ("403", _FORBIDDEN), ("404", _NOT_FOUND),
        ("503", _UNAVAILABLE))
    op["parameters"].append({
        "name": "Inference-Header-Content-Length", "in": "header", "required": False,
        "description": "Binary tensor extension: the length of the body's JSON part; the "
                       "inputs' binary data follow it.",
        "schema": {"type": "integer", "minimum": 0}})
    op["requestBody"] = {"required": True, "content": {
        _JSON: {"schema": _ref("InferenceRequest")},
        _BINARY: {"schema": {"type": "string", "format": "binary",
                             "description": "Binary tensor extension: a JSON InferenceRequest "
                                            "of Inference-Header-Content-Length bytes, then "
                                            "the inputs' raw little-endian data."}}}}
    op["security"] = copy.deepcopy(_AUTH)
    return op


def _paths() -> dict[str, dict[str, Any]]:
    model = "/v2/models/{model}"
    versioned = model + "/versions/{version}"
    meta = _ok(_ref("ModelMetadata"))
    capture = _operation(
        "modelVersionCapture", "Rows and request outcomes captured after the cursors.",
        versioned + "/capture", _ok(_ref("Capture")),
        ("401", _UNAUTHORIZED), ("403", _FORBIDDEN), ("404", _NOT_FOUND),
        ("503", _UNAVAILABLE), tag="monitoring")
    capture["parameters"] += [
        {"name": key, "in": "query", "required": False, "description": text,
         "schema": {"type": "integer", "minimum": 0, "default": 0}}
        for key, text in (("rows_since", "Rows already read (a cursor)."),
                          ("requests_since", "Requests already read (a cursor)."))]
    capture["security"] = copy.deepcopy(_AUTH)
    not_ready = {"description": "Not ready.", "headers": copy.deepcopy(_RETRY_AFTER),
                 "content": {_JSON: {"schema": _ref("ModelNotReady")}}}
    return {
        "/v2": {"get": _operation("serverMetadata", "Server metadata.", "/v2",
                                  _ok(_ref("ServerMetadata")), tag="server")},
        "/v2/health/live": {"get": _operation(
            "serverLive", "200 while the process serves HTTP.", "/v2/health/live",
            _ok(_ref("Live")), tag="server")},
        "/v2/health/ready": {"get": _operation(
            "serverReady", "200 when every model is ready.", "/v2/health/ready",
            _ok(_ref("Ready")),
            ("503", {"description": "Some version is not ready.",
                     "content": {_JSON: {"schema": _ref("NotReady")}}}), tag="server")},
        model: {"get": _operation("modelMetadata", "The metadata of the version unversioned "
                                  "requests reach.", model, meta, ("404", _NOT_FOUND),
                                  ("503", _UNAVAILABLE))},
        versioned: {"get": _operation("modelVersionMetadata", "A version's metadata.",
                                      versioned, meta, ("404", _NOT_FOUND),
                                      ("503", _UNAVAILABLE))},
        model + "/ready": {"get": _operation(
            "modelReady", "200 when the version unversioned requests reach is ready.",
            model + "/ready", _ok(_ref("ModelReady")), ("404", _NOT_FOUND),
            ("503", not_ready))},
        versioned + "/ready": {"get": _operation(
            "modelVersionReady", "200 when the version is ready.", versioned + "/ready",
            _ok(_ref("ModelReady")), ("404", _NOT_FOUND), ("503", not_ready))},
        model + "/infer": {"post": _infer("modelInfer", model + "/infer",
                                          "the model's routed version")},
        versioned + "/infer": {"post": _infer("modelVersionInfer", versioned + "/infer",
                                              "one version")},
        versioned + "/capture": {"get": capture},
        "/metrics": {"get": _operation(
            "metrics", "Prometheus metrics.", "/metrics",
            _ok({"type": "string"}, "Prometheus text format.", "text/plain"),
            tag="monitoring")},
        **_extension_paths(model, versioned),
        OPENAPI_PATH: {"get": _operation(
            "openapi", "This document.", OPENAPI_PATH,
            _ok({"type": "object"}, "OpenAPI 3.1."), tag="server")},
    }


def _extension_paths(model: str, versioned: str) -> dict[str, dict[str, Any]]:
    """Triton's statistics and model repository extensions."""
    stats = _ok(_ref("Statistics"))
    errors = (("404", _NOT_FOUND), ("503", _UNAVAILABLE))
    index = _operation("repositoryIndex", "The models this server serves and their states.",
                       "/v2/repository/index", _ok(_ref("RepositoryIndex")), tag="repository")
    index["requestBody"] = {"required": False,
                            "content": {_JSON: {"schema": _ref("IndexRequest")}}}
    paths: dict[str, dict[str, Any]] = {
        "/v2/models/stats": {"get": _operation(
            "modelsStatistics", "Every served version's statistics.", "/v2/models/stats",
            stats, tag="statistics")},
        model + "/stats": {"get": _operation(
            "modelStatistics", "The model's versions' statistics.", model + "/stats", stats,
            *errors, tag="statistics")},
        versioned + "/stats": {"get": _operation(
            "modelVersionStatistics", "One version's statistics.", versioned + "/stats",
            stats, *errors, tag="statistics")},
        "/v2/repository/index": {"post": index},
    }
    for action, text in (("load", "Put the model back in this server's set."),
                         ("unload", "Take the model out of this server's set.")):
        path = f"/v2/repository/models/{{model}}/{action}"
        op = _operation(f"repositoryModel{action.title()}", text, path,
                        {"description": "Done (an empty body)."}, ("401", _UNAUTHORIZED),
                        ("403", _FORBIDDEN), *errors, tag="repository")
        op["security"] = copy.deepcopy(_AUTH)
        paths[path] = {"post": op}
    return paths


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the data plane's routes (a fresh copy on each call)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "lockgate inference server (Open Inference Protocol v2)",
                 "version": lockgate_version(),
                 "description": "KServe v2 / Triton REST inference. Tokens, where the server "
                                "requires them, go in 'Authorization: Bearer ...'."},
        "paths": _paths(),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


@functools.cache
def _document_body() -> bytes:
    return orjson.dumps(openapi_document())


async def openapi_endpoint(request: Request) -> Response:
    """``GET /v2/openapi.json``: the document, built once."""
    return Response(_document_body(), media_type=_JSON)
