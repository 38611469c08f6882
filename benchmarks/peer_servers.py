"""The servers ``peers.py`` compares: how each one is prepared, started, asked and stopped.

Every server serves the same MLP 64-256-256-10 (float32, the ONNX file of
``serve_overhead.build_mlp``; TorchServe gets a TorchScript trace of the same weights) on
127.0.0.1, one model worker, ONNX Runtime with one intra-op thread where the server lets us
choose (lockgate runs with its defaults, as a user starts it, but for ``--workers 1``;
``lockgate-workers``, measured only when named, keeps its default of one process per core).
Each runs in its own process group and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from peer_setup import PEERS, venv_python

PROJECT_BIN = Path(sys.executable).parent

BARE = textwrap.dedent("""
    import sys
    import numpy as np, onnxruntime as ort, orjson, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
    async def predict(request):
        doc = orjson.loads(await request.body())
        y = sess.run(None, {"x": np.asarray(doc["data"], dtype=np.float32)})[0]
        return Response(orjson.dumps({"outputs": y.tolist()}), media_type="application/json")
    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
""")

PYTRITON = textwrap.dedent("""
    import sys
    import numpy as np, onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig
    model, port, grpc_port, metrics_port, workspace = sys.argv[1:6]
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    @batch
    def infer(x):
        return {"y": sess.run(None, {"x": x.astype(np.float32, copy=False)})[0]}
    cfg = TritonConfig(http_address="127.0.0.1", http_port=int(port), grpc_address="127.0.0.1",
                       grpc_port=int(grpc_port), metrics_port=int(metrics_port),
                       allow_metrics=False, allow_gpu_metrics=False, allow_cpu_metrics=False,
                       log_verbose=0)
    with Triton(config=cfg, workspace=workspace) as triton:
        # dynamic batching on (PyTriton's default DynamicBatcher, no queue delay)
        triton.bind(model_name="mlp", infer_func=infer,
                    inputs=[Tensor(name="x", dtype=np.float32, shape=(64,))],
                    outputs=[Tensor(name="y", dtype=np.float32, shape=(10,))],
                    config=ModelConfig(max_batch_size=32))
        triton.serve()
""")

MLSERVER_RUNTIME = textwrap.dedent("""
    import numpy as np, onnxruntime as ort
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse
    class OnnxRuntime(MLModel):
        async def load(self) -> bool:
            opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self.sess = ort.InferenceSession(self.settings.parameters.uri, opts,
                                             providers=["CPUExecutionProvider"])
            return True
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
            y = self.sess.run(None, {"x": x})[0]
            return InferenceResponse(model_name=self.name,
                                     outputs=[NumpyCodec.encode_output("y", y)])
""")

TORCHSCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, torch
    w = np.load(sys.argv[1])
    n = len([k for k in w.files if k.startswith("w")])
    layers = []
    for i in range(n):
        lin = torch.nn.Linear(*w[f"w{i}"].shape)
        lin.weight.data = torch.from_numpy(np.ascontiguousarray(w[f"w{i}"].T))
        lin.bias.data = torch.from_numpy(w[f"b{i}"].copy())
        layers += [lin, torch.nn.ReLU()] if i < n - 1 else [lin]
    m = torch.nn.Sequential(*layers).eval()
    torch.jit.trace(m, torch.zeros(1, w["w0"].shape[0])).save(sys.argv[2])
""")

TORCHSERVE_HANDLER = textwrap.dedent("""
    import json
    import torch
    from ts.torch_handler.base_handler import BaseHandler
    class MLPHandler(BaseHandler):
        def initialize(self, context):
            torch.set_num_threads(1)
            super().initialize(context)
        def preprocess(self, data):
            rows = []
            for req in data:
                body = req.get("body") if req.get("body") is not None else req.get("data")
                if isinstance(body, (bytes, bytearray)):
                    body = json.loads(body)
                rows.append(torch.tensor(body["data"], dtype=torch.float32))
            self._sizes = [r.shape[0] for r in rows]
            return torch.cat(rows, 0)
        def inference(self, x, *args, **kwargs):
            with torch.inference_mode():
                return self.model(x)
        def postprocess(self, y):
            out, i = [], 0
            for n in self._sizes:
                out.append(y[i:i + n].tolist()); i += n
            return out
""")

MLFLOW = textwrap.dedent("""
    import os, sys
    import numpy as np, onnx, mlflow.onnx
    from mlflow.models import infer_signature
    model, where, port = sys.argv[1:4]
    x = np.zeros((2, 64), np.float32)
    mlflow.onnx.save_model(onnx.load(model), where,
                           signature=infer_signature(x, np.zeros((2, 10), np.float32)),
                           onnx_execution_providers=["CPUExecutionProvider"],
                           onnx_session_options={"intra_op_num_threads": 1,
                                                 "inter_op_num_threads": 1})
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    os.execv(mlflow_bin, [mlflow_bin, "models", "serve", "-m", where, "--env-manager", "local",
                          "-h", "127.0.0.1", "-p", port, "-w", "1"])
""")

BENTOML = textwrap.dedent("""
    import os
    import numpy as np
    import bentoml
    @bentoml.service(workers=1)
    class MLP:
        def __init__(self) -> None:
            import onnxruntime as ort
            opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self.sess = ort.InferenceSession(os.environ["PEER_MODEL"], opts,
                                             providers=["CPUExecutionProvider"])
        @bentoml.api
        def predict(self, inputs: list[list[float]]) -> list[list[float]]:
            return self.sess.run(None, {"x": np.asarray(inputs, dtype=np.float32)})[0].tolist()
""")


@dataclass
class Context:
    """What the servers of one run share: its folder, the model and lockgate's homes."""

    tmp: Path
    model: Path
    weights: Path
    homes: dict[str, Path] = field(default_factory=dict)
    token: str = ""


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass
class Server:
    name: str
    label: str
    venv: str | None  # the peer venv it runs in; None: the project's own venv
    path: str
    body: Callable[[np.ndarray], bytes]
    launch: Callable[[Context, int], Launch]
    first: Callable[[Any], float]
    auth: bool = False
    temp_globs: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """Why it cannot run here, or None."""
        if self.venv is None:
            return None
        if not (PEERS / self.venv / "READY").exists():
            return f"skipped: {PEERS / self.venv} missing (run with --setup {self.venv})"
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _oip_body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def _oip_first(doc: Any) -> float:
    return float(doc["outputs"][0]["data"][0])


def first_float(doc: Any) -> float:
    """The first float in a JSON document, depth first (the first logit of a nested list)."""
    if isinstance(doc, float):
        return doc
    items = doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else ()
    for item in items:
        try:
            return first_float(item)
        except ValueError:
            continue
    raise ValueError("no float in the answer")


def _lockgate_home(ctx: Context, auth: bool) -> Path:
    """A home with mlp@1 registered; the token variant a copy with serve.auth = "token" and
    a user with the inference role, whose token goes to ctx.token."""
    key = "token" if auth else "open"
    if key in ctx.homes:
        return ctx.homes[key]
    lockgate = str(PROJECT_BIN / "lockgate")
    open_home = ctx.tmp / "lockgate-home"
    if "open" not in ctx.homes:
        env = {**os.environ, "LOCKGATE_HOME": str(open_home)}
        subprocess.run([lockgate, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([lockgate, "register", str(ctx.model), "--name", "mlp"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        ctx.homes["open"] = open_home
    if auth:
        home = ctx.tmp / "lockgate-home-token"
        shutil.copytree(open_home, home)
        toml = home / "lockgate.toml"
        text = toml.read_text(encoding="utf-8")
        toml.write_text(re.sub(r'^# auth = "none".*$', 'auth = "token"', text, flags=re.M),
                        encoding="utf-8")
        made = subprocess.run([lockgate, "user", "add", "bench", "--role", "inference"],
                              env={**os.environ, "LOCKGATE_HOME": str(home)}, check=True,
                              capture_output=True, text=True)
        found = re.search(r"lgt_\S+", made.stdout)
        if found is None:
            raise RuntimeError(f"no token in `lockgate user add` output: {made.stdout!r}")
        ctx.token = found.group(0)
        ctx.homes["token"] = home
    return ctx.homes[key]


def _lockgate(auth: bool, one_worker: bool = True) -> Callable[[Context, int], Launch]:
    """``lockgate serve``; with one_worker ``--workers 1`` (one process, as every other server
    runs here), else its default of one worker process per core."""
    def launch(ctx: Context, port: int) -> Launch:
        home = _lockgate_home(ctx, auth)
        workers = ["--workers", "1"] if one_worker else []
        return Launch([str(PROJECT_BIN / "lockgate"), "serve", "mlp@1", "--host", "127.0.0.1",
                       "--port", str(port), *workers], {"LOCKGATE_HOME": str(home)})
    return launch


def _bare(ctx: Context, port: int) -> Launch:
    script = _write(ctx.tmp / "bare", "bare.py", BARE)
    return Launch([sys.executable, str(script), str(ctx.model), str(port)])


def _pytriton(ctx: Context, port: int) -> Launch:
    script = _write(ctx.tmp / "pytriton", "server.py", PYTRITON)
    python = venv_python("pytriton")
    # the Python backend stub links libpython3.x.so: it must be the venv interpreter's, not
    # a system one with another patch level
    libdir = subprocess.run([str(python), "-c", "import sysconfig; "
                             "print(sysconfig.get_config_var('LIBDIR'))"],
                            check=True, capture_output=True, text=True).stdout.strip()
    ld = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
    workspace = ctx.tmp / "pytriton" / "workspace"
    shutil.rmtree(workspace, ignore_errors=True)
    return Launch([str(python), str(script), str(ctx.model), str(port), str(free_port()),
                   str(free_port()), str(workspace)], {"LD_LIBRARY_PATH": ld})


def _mlserver(ctx: Context, port: int) -> Launch:
    repo = ctx.tmp / "mlserver"
    shutil.rmtree(repo, ignore_errors=True)
    _write(repo, "runtime.py", MLSERVER_RUNTIME)
    _write(repo, "settings.json", json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": 1, "debug": False}))
    _write(repo / "mlp", "model-settings.json", json.dumps({
        "name": "mlp", "implementation": "runtime.OnnxRuntime",
        "parameters": {"uri": str(ctx.model)}}))
    return Launch([str(PEERS / "mlserver" / "bin" / "mlserver"), "start", str(repo)], cwd=repo)


def _torchserve(ctx: Context, port: int) -> Launch:
    where = ctx.tmp / "torchserve"
    store, temp = where / "store", where / "tmp"
    store.mkdir(parents=True, exist_ok=True)
    temp.mkdir(parents=True, exist_ok=True)
    bin_dir = PEERS / "torchserve" / "bin"
    if not (store / "mlp.mar").exists():
        trace = _write(where, "trace.py", TORCHSCRIPT)
        handler = _write(where, "handler.py", TORCHSERVE_HANDLER)
        subprocess.run([str(bin_dir / "python"), str(trace), str(ctx.weights),
                        str(where / "mlp.pt")], check=True)
        subprocess.run([str(bin_dir / "torch-model-archiver"), "--model-name", "mlp",
                        "--version", "1.0", "--serialized-file", str(where / "mlp.pt"),
                        "--handler", str(handler), "--export-path", str(store), "--force"],
                       check=True)
    config = _write(where, "config.properties", "\n".join([
        f"inference_address=http://127.0.0.1:{port}",
        f"management_address=http://127.0.0.1:{free_port()}",
        f"metrics_address=http://127.0.0.1:{free_port()}",
        "default_workers_per_model=1", "disable_token_authorization=true",
        "enable_envvars_config=false", "install_py_dep_per_model=false",
        f"model_store={store}", "load_models=mlp.mar", "vmargs=-XX:-UsePerfData", ""]))
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    # TEMP: java.io.tmpdir, where the .mar is unpacked (default /tmp/models)
    return Launch([str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs",
                   "--ts-config", str(config), "--model-store", str(store),
                   "--models", "mlp=mlp.mar", "--disable-token-auth"],
                  {"PATH": path, "TEMP": str(temp)}, cwd=where)


def _mlflow(ctx: Context, port: int) -> Launch:
    where = ctx.tmp / "mlflow"
    shutil.rmtree(where, ignore_errors=True)
    script = _write(where, "serve.py", MLFLOW)
    bin_dir = PEERS / "mlflow" / "bin"
    # `mlflow models serve` runs `uvicorn` by name: the venv's bin goes first on PATH
    return Launch([str(bin_dir / "python"), str(script), str(ctx.model), str(where / "model"),
                   str(port)],
                  {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                   "MLFLOW_TRACKING_URI": (where / "mlruns").as_uri()}, cwd=where)


def _bentoml(ctx: Context, port: int) -> Launch:
    where = ctx.tmp / "bentoml"
    _write(where, "service.py", BENTOML)
    return Launch([str(PEERS / "bentoml" / "bin" / "bentoml"), "serve", "service:MLP",
                   "--host", "127.0.0.1", "--port", str(port)],
                  {"PEER_MODEL": str(ctx.model), "BENTOML_HOME": str(where / "home"),
                   "BENTOML_DO_NOT_TRACK": "True"}, cwd=where)


def _rows(key: str) -> Callable[[np.ndarray], bytes]:
    return lambda x: json.dumps({key: x.tolist()}).encode()


SERVERS = [
    Server("bare", "bare uvicorn+starlette+orjson+ort", None, "/predict", _rows("data"), _bare,
           first_float),
    Server("lockgate", "lockgate serve", None, "/v2/models/mlp/infer", _oip_body,
           _lockgate(False), _oip_first),
    Server("lockgate-token", "lockgate serve, token auth", None, "/v2/models/mlp/infer",
           _oip_body, _lockgate(True), _oip_first, auth=True),
    Server("lockgate-workers", "lockgate serve, one worker per core", None,
           "/v2/models/mlp/infer", _oip_body, _lockgate(False, one_worker=False), _oip_first),
    Server("pytriton", "Triton 2.51 via PyTriton", "pytriton", "/v2/models/mlp/infer",
           _oip_body, _pytriton, _oip_first,
           # the Python backend's hard-coded unpack folders and PyTriton's shared memory
           temp_globs=("/tmp/folder??????", "/tmp/python_env_??????", "/dev/shm/pytrtion*")),
    Server("mlserver", "MLServer 1.7", "mlserver", "/v2/models/mlp/infer", _oip_body, _mlserver,
           _oip_first),
    Server("torchserve", "TorchServe 0.12", "torchserve", "/predictions/mlp", _rows("data"),
           _torchserve, first_float),
    Server("mlflow", "MLflow 3.17 models serve", "mlflow", "/invocations", _rows("inputs"),
           _mlflow, first_float),
    Server("bentoml", "BentoML 1.4", "bentoml", "/predict", _rows("inputs"), _bentoml,
           first_float),
]
BY_NAME = {s.name: s for s in SERVERS}
# measured unless --servers says otherwise: every server with one model worker
DEFAULT = [s.name for s in SERVERS if s.name != "lockgate-workers"]


class Running:
    """A started server: its process group, its log and the temporary folders it left."""

    def __init__(self, server: Server, ctx: Context, port: int) -> None:
        self.server = server
        self.port = port
        self._before = {p for g in server.temp_globs for p in glob.glob(g)}
        launch = server.launch(ctx, port)
        logs = ctx.tmp / "logs"
        logs.mkdir(exist_ok=True)
        self.log_path = logs / f"{server.name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1", **launch.env}
        self.proc = subprocess.Popen(launch.argv, cwd=launch.cwd or ctx.tmp, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, chars: int = 600) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text[-chars:].strip()

    def _group_alive(self) -> bool:
        self.proc.poll()  # reap the leader: a zombie would still count as the group's
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM to the server's own process first (it stops its workers and cleans up),
        then to what is left of its group, then SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + 10
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            while self._group_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self._group_alive():
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._log.close()
        time.sleep(0.5)
        for path in {p for g in self.server.temp_globs for p in glob.glob(g)} - self._before:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
