"""Where an OIP REST infer request's time goes in ``lockgate serve``, piece by piece.

Builds, in one process, the real serving stack for the MLP 64-256-256-10 (float32, ONNX
Runtime with one intra-op thread): ``create_app`` with bearer-token checks (an in-memory
principal), metrics, statistics and capture on, and the lean HTTP layer's connection fed a
batch-1 JSON infer request (7 header fields, kept alive) against a stub transport, so no
socket is involved. Then measures each piece of the request on its own, many times:

========== =====================================================================================
http       the HTTP layer alone: parser callbacks, head checks, token check, dispatch and the
           answer's head, with an inference service that answers a fixed body
route      unloaded check, table resolve, capture attach, metrics family and shadow route
decode     ``parse_infer_request`` of the body
validate   ``Predictor.run`` minus the ONNX Runtime run it makes (its checks, and whatever
           ``InferenceSession.run``'s Python wrapper adds)
run        ONNX Runtime's own run (``InferenceSession._sess.run``, the C++ call)
encode     ``encode_binary_response``
metrics    the Prometheus updates of one request (counters, gauge, histograms)
statistics Triton's statistics counters of one request
capture    the capture ring's record of the rows and of the request
whole      ``data_received`` of the request through the real service, answer written
========== =====================================================================================

and, for comparison, the bare handler's own work (``orjson.loads``, ``np.asarray``,
``InferenceSession.run``, ``orjson.dumps``, the handler of benchmarks/hardening_cost.py) and
uvicorn's HTTP protocol (httptools, the same parser) driving that handler through Starlette.

Two measures:

* default: microseconds per request, the best of ``--repeats`` timed loops of ``--requests``
  each (the best is what the code costs; the others carry this machine's load). ``validate``
  is a difference of two such figures, so under load it can read a little below zero;
* ``--instructions``: instructions per request, counted by valgrind's callgrind, which does not
  care about load. The process starts under valgrind with instrumentation off; once set up, it
  turns instrumentation on (``callgrind_control``) and runs each piece's loop inside one
  ``functools.reduce`` call, the only function callgrind collects in (``--toggle-collect``),
  with a dump after each, so each dump is one piece. Slow: a few minutes.

    .venv/bin/python benchmarks/rest_profile.py [--requests 20000] [--repeats 5]
    .venv/bin/python benchmarks/rest_profile.py --instructions [--requests 300]

To profile another revision, check it out (``git worktree add /tmp/before REV``) and put its
``src`` first on the path: ``PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/...``.

Needs ``valgrind`` for ``--instructions`` (Debian: ``apt-get install -y valgrind``). Not part
of ``make test``.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PIECES = ("http", "route", "decode", "validate", "run", "encode", "metrics", "statistics",
          "capture", "whole", "bare_handler", "bare_uvicorn")
TOKEN = "lgt_" + "a" * 40


class _Transport:
    """Stands in for a socket: counts what is written."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000),
                "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, data: list[bytes]) -> None:
        for d in data:
            self.write(d)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...

    def close(self) -> None:
        raise AssertionError("closed")

    abort = close


class _Principal:
    name = "bench"

    def can(self, role: str, model: str | None = None) -> bool:
        return True


def _body() -> bytes:
    import numpy as np
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def _request(body: bytes) -> bytes:
    return (b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
            b"User-Agent: bench/1.0\r\nAccept: */*\r\nAuthorization: Bearer " + TOKEN.encode() +
            b"\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def _stack(model: Path) -> dict[str, Callable[[], object]]:
    """Every piece, as a function doing it once."""
    import numpy as np
    import onnxruntime as ort
    import orjson

    from lockgate.runtime.predictor import Predictor
    from lockgate.serve.auth import TokenCheck
    from lockgate.serve.http import HTTPServer
    from lockgate.serve.inference import Answer
    from lockgate.serve.oip import encode_binary_response, parse_infer_request
    from lockgate.serve.routes import create_app
    from lockgate.serve.slots import ServedModel

    check = TokenCheck(lambda token: _Principal(), "inferrer")
    app = create_app([ServedModel("mlp", 1, lambda: Predictor(model, intra_op_threads=1))],
                     authorize=check, inline_below_s=1.0)  # inline, as it is at full speed
    service = app.state.inference
    server = HTTPServer(app, service)
    await server.start("127.0.0.1", 0)
    slot = service.table.resolve("mlp", None)
    for _ in range(600):
        if slot.state == "ready":
            break
        await asyncio.sleep(0.05)
    else:
        raise SystemExit(f"the model did not load: {slot.state}")

    body = _body()
    request = _request(body)
    transport = _Transport()
    conn = server_connection(server, transport)

    class Fixed:
        authorize = check
        answer = Answer(200, b'{"model_name":"mlp","model_version":"1","outputs":[]}')

        def infer(self, *args: Any, **kwargs: Any) -> Answer:
            return self.answer

        def reserve(self, size: int) -> None:
            return None

    stub_server = HTTPServer(None, Fixed())  # type: ignore[arg-type]
    stub = server_connection(stub_server, _Transport())

    predictor = slot.predictor()
    parsed = parse_infer_request(body)
    inputs = parsed.inputs
    session = predictor._session  # the bare run Predictor.run wraps
    outputs = predictor.run(inputs)
    m = service.metrics.for_model("mlp", "1")
    stats = service.stats.of("mlp", "1")
    phases = (0.0, 1e-5, 1e-4, 1e-5)

    def route() -> object:
        if service.unloaded and "mlp" in service.unloaded:
            raise AssertionError
        s = service.with_capture(service.table.resolve("mlp", None))
        service.metrics.for_model(s.spec.name, s.version_text)
        return service.table.route(s.spec.name)

    def metrics() -> None:
        if hasattr(m, "answered"):  # as the service does it
            m.arrived()
            m.answered(2e-4, 0.0, 1.5e-4, 1, 1.0, 1)
            return
        m.requests.inc()
        m.pending.inc()
        m.pending.dec()
        m.request_seconds.observe(2e-4)
        m.queue_seconds.observe(0.0)
        m.compute_seconds.observe(1.5e-4)
        m.inferences.inc(1)
        m.executions.inc(1.0)
        m.batch_size.observe(1)

    def capture() -> None:
        s = service.with_capture(slot)
        service._observe(s, inputs, outputs)
        s.window.record(2e-4, 200)
        if s.capture is not None:
            s.capture.record_request(2e-4, 200)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    bare_session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    def bare_handler() -> bytes:
        t = orjson.loads(body)["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
        y = bare_session.run(None, {"x": x})[0]
        out = {"model_name": "mlp", "outputs": [{"name": "y", "datatype": "FP32",
               "shape": list(y.shape), "data": y.ravel()}]}
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)

    pieces: dict[str, Callable[[], object]] = {
        "http": functools.partial(stub.data_received, request),
        "route": route,
        "decode": functools.partial(parse_infer_request, body),
        "validate": functools.partial(predictor.run, inputs),
        "run": functools.partial(session._sess.run, predictor._output_names, inputs,
                                 None),
        "encode": functools.partial(encode_binary_response, "mlp", "1", outputs, parsed),
        "metrics": metrics,
        "statistics": functools.partial(stats.succeeded, 1, 2e-4, phases, 1),
        "capture": capture,
        "whole": functools.partial(conn.data_received, request),
        "bare_handler": bare_handler,
    }
    uvicorn_feed = _uvicorn(bare_handler, request)
    if uvicorn_feed is not None:
        pieces["bare_uvicorn"] = uvicorn_feed
    for _ in range(100):  # the version's cost is measured on workers first, then it runs inline
        conn.data_received(request)
        while conn.busy:
            await asyncio.sleep(0.001)
    written = transport.written
    pieces["whole"]()
    if transport.written <= written:
        raise SystemExit("the infer request was not answered inline")
    return pieces


def server_connection(server: Any, transport: _Transport) -> Any:
    from lockgate.serve.connection import Connection
    conn = Connection(server)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn


def _uvicorn(handler: Callable[[], bytes], request: bytes) -> Callable[[], object] | None:
    """uvicorn's httptools protocol and Starlette around the bare handler, fed ``request``;
    each call runs the event loop until the answer is written (the handler runs as a task)."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route
        from uvicorn.config import Config
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.server import ServerState
    except ImportError:  # pragma: no cover - uvicorn comes with lockgate
        return None

    async def infer(req: Any) -> Response:
        await req.body()
        return Response(handler(), media_type="application/json")

    app = Starlette(routes=[Route("/v2/models/mlp/infer", infer, methods=["POST"])])
    config = Config(app, log_level="warning", access_log=False, lifespan="off")
    config.load()
    proto = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    loop = asyncio.get_event_loop()

    def feed() -> None:
        before = transport.written
        proto.data_received(request)
        while transport.written == before:
            loop.run_until_complete(asyncio.sleep(0))

    return feed


def _time(pieces: dict[str, Callable[[], object]], n: int, repeats: int) -> dict[str, float]:
    """µs per call of each piece: the best of ``repeats`` loops of ``n`` calls."""
    out = {}
    for name, fn in pieces.items():
        for _ in range(min(n, 2000)):
            fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - start) / n)
        out[name] = best * 1e6
    return out


def _step(fn: Callable[[], object], acc: None, _: int) -> None:
    fn()


def _counted(pieces: dict[str, Callable[[], object]], n: int) -> None:
    """Under callgrind: each piece's ``n`` calls inside one ``functools.reduce`` (collected and
    dumped), after a warm-up outside it (not collected)."""
    print("ready", flush=True)
    sys.stdin.readline()  # instrumentation is on
    for name, fn in pieces.items():
        for _ in range(200):
            fn()
        print(f"piece {name}", flush=True)
        functools.reduce(functools.partial(_step, fn), range(n), None)


def _instructions(args: argparse.Namespace) -> dict[str, float]:
    out_dir = Path(tempfile.mkdtemp(prefix="lockgate-rest-profile-"))
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           "--toggle-collect=functools_reduce", "--dump-after=functools_reduce",
           f"--callgrind-out-file={out_dir}/cg.%p", sys.executable, __file__, "--child",
           "--requests", str(args.requests)]
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None
    assert child.stdout is not None
    order: list[str] = []
    for line in child.stdout:
        if line.strip() == "ready":
            subprocess.run(["callgrind_control", "-i", "on", str(child.pid)], check=True,
                           capture_output=True)
            child.stdin.write("go\n")
            child.stdin.flush()
        elif line.startswith("piece "):
            order.append(line.split()[1])
    if child.wait() != 0:
        raise SystemExit("the profiled process failed")
    dumps = sorted((p for p in out_dir.iterdir() if re.search(r"\.\d+$", p.name)),
                   key=lambda p: int(p.name.rsplit(".", 1)[1]))
    totals = []
    for dump in dumps:
        text = dump.read_text(errors="replace")
        found = re.search(r"^summary:\s*(\d+)", text, re.M) or re.search(
            r"^totals:\s*(\d+)", text, re.M)
        totals.append(int(found.group(1)) if found else 0)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {name: total / args.requests for name, total in zip(order, totals, strict=False)}


def _report(figures: dict[str, float], unit: str) -> None:
    own = ("route", "decode", "validate", "run", "encode", "metrics", "statistics", "capture")
    print(f"{'piece':<14}{unit:>14}")
    for name in PIECES:
        if name in figures:
            print(f"{name:<14}{figures[name]:>14.{1 if unit == 'µs/request' else 0}f}")
    if "whole" in figures:
        parts = figures.get("http", 0.0) + sum(figures.get(p, 0.0) for p in own)
        print(f"{'sum of pieces':<14}{parts:>14.{1 if unit == 'µs/request' else 0}f}"
              "   (http + route .. capture)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=None, help="calls per loop")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--instructions", action="store_true",
                   help="count instructions with callgrind instead of timing")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.requests is None:
        args.requests = 300 if args.instructions or args.child else 20000
    if args.instructions:
        figures = _instructions(args)
        if "validate" in figures and "run" in figures:
            figures["validate"] -= figures["run"]
        _report(figures, "instr/request")
        return
    from serve_overhead import build_mlp

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "mlp.onnx"
        model.write_bytes(build_mlp())
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        pieces = loop.run_until_complete(_stack(model))
        if args.child:
            _counted(pieces, args.requests)
            return
        figures = _time(pieces, args.requests, args.repeats)
    figures["validate"] -= figures["run"]
    _report(figures, "µs/request")


if __name__ == "__main__":
    main()
