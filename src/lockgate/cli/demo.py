"""`lockgate demo`: the whole journey on the embedded default, in a fresh temporary home.

Trains a small PyTorch classifier and a scikit-learn pipeline on synthetic data with fixed
seeds, registers both (parity-checked), promotes them to production, serves them on a free
127.0.0.1 port, sends Open Inference Protocol requests, compares the answers with the source
frameworks, verifies the audit chain, exports an evidence pack, and shuts down. Output goes
through a ``DemoView``; the command draws it with :class:`lockgate.cli.render.DemoPrinter`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

import click
import numpy as np

from lockgate.api.facade import Lockgate
from lockgate.cli.render import DemoPrinter
from lockgate.errors import AuditChainError, Error, GateFailedError, ServeError
from lockgate.progress import Progress
from lockgate.seal.folder import BOM_FILE
from lockgate.types import Version

__all__ = ["COMMANDS", "DemoView", "run_demo"]

SEED = 7
DEMO_POLICY = """\
# lockgate demo policy: the default gates (`lockgate policy show`, docs/first-release.md) with the
# two things no default can say, the metric bar and who approves. The vulnerabilities gate needs a
# current, whole OSV export (`lockgate vulndb update`), which this offline demo does not download,
# so production's list here is the default one without it.
[gates]
"*->production" = ["parity", "sbom_valid", "signature", "licenses", "metrics", "infra_validation",
                   "latency_budget", "approval", "rollback_ready"]
"*" = ["parity"]

[gate.metrics]
accuracy = { threshold = 0.8, greater_is_better = true }

[roles]
approver = ["demo-approver"]

[[licenses.decisions]]
package = "cvss"
accept = true
reason = "LGPL-3.0-or-later, used unmodified as a library"
by = "demo-approver"

[monitor]
min_rows = 100
consecutive = 1
"""
APPROVER = "demo-approver"
N_FEATURES = 12
N_CLASSES = 3
HELD_OUT_FROM = 450


class DemoView(Protocol):
    def step(self, title: str) -> None: ...

    def say(self, text: str) -> None: ...

    def version(self, v: Version) -> None: ...

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None: ...

    def progress(self) -> AbstractContextManager[Progress | None]: ...


def synthetic_data(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes in 12 dimensions, float32, from a fixed seed."""
    rng = np.random.default_rng(SEED)
    centers = rng.normal(0.0, 2.0, size=(N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, size=n)
    x = centers[y] + rng.normal(0.0, 1.0, size=(n, N_FEATURES))
    return x.astype(np.float32), y.astype(np.int64)


def train_torch(x: np.ndarray, y: np.ndarray) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Linear(32, N_CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xt), yt)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return model.eval()


def train_sklearn(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)


class _Server:
    """lockgate's HTTP server on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: Any) -> None:
        from lockgate.serve.http import HTTPServer

        self.server = HTTPServer(app, getattr(app.state, "inference", None))
        self.thread = threading.Thread(target=self.server.run, args=("127.0.0.1", 0),
                                       daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while self.server.address is None:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServeError("the demo server did not start")
            time.sleep(0.02)
        self.port = self.server.address[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=30)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/v2/health/ready")
                return
            except OSError:
                time.sleep(0.05)
        raise ServeError("the demo server never became ready")


def _infer(server: _Server, v: Version, batch: np.ndarray) -> dict[str, np.ndarray]:
    spec = v.signature.inputs[0]
    body = {
        "id": f"demo-{v.name}",
        "inputs": [{"name": spec.name, "shape": list(batch.shape), "datatype": "FP32",
                    "data": batch.ravel().tolist()}],
    }
    resp = server.request("POST", f"/v2/models/{v.name}/infer", body)
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp["outputs"]}


def _other_frameworks(lg: Lockgate, view: DemoView, x: np.ndarray, y: np.ndarray
                      ) -> list[Version]:
    """A Keras model and a JAX model, each when its extra is installed: one pipeline for every
    framework."""
    import importlib.util

    found = []
    if all(importlib.util.find_spec(m) for m in ("keras", "tensorflow", "tf2onnx")):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras

        keras.utils.set_random_seed(SEED)
        model = keras.Sequential([keras.Input((N_FEATURES,)),
                                  keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(N_CLASSES, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=20, verbose=0)
        with view.progress() as bar:
            found.append(lg.register(model, x[:4], name="demo-keras-mlp", seed=SEED,
                                     description="Keras 3 Sequential MLP", progress=bar))
    else:
        view.say("keras: extra 'tensorflow' not installed, skipped")
    if all(importlib.util.find_spec(m) for m in ("jax", "jax2onnx")):
        import jax.numpy as jnp

        from lockgate.convert import JaxFunction

        onehot = np.eye(N_CLASSES, dtype=np.float32)[y]
        w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], onehot, rcond=None)[0].astype(np.float32)
        params = {"w": jnp.asarray(w[:-1]), "b": jnp.asarray(w[-1])}
        model = JaxFunction(lambda p, v: jnp.tanh(v @ p["w"] + p["b"]), params)
        with view.progress() as bar:
            found.append(lg.register(model, x[:4], name="demo-jax-linear", seed=SEED,
                                     description="least-squares classifier in JAX",
                                     progress=bar))
    else:
        view.say("jax: extra 'jax' not installed, skipped")
    return found


def _observe(view: DemoView, lg: Lockgate, server: _Server, v: Version, x: np.ndarray) -> None:
    """Traffic like the training data, then shifted traffic; a monitor run after each, with a
    monitoring token (the home has users, so the server's capture asks for one)."""
    url = f"http://127.0.0.1:{server.port}"
    lg.add_user("demo-monitor", ["monitoring"], actor="admin")
    _, token = lg.create_token("demo-monitor", description="demo monitor runs", days=1,
                               actor="admin")
    _infer(server, v, x[:300])
    calm = lg.monitor(v.name, url=url, token=token)
    view.say(f"monitor, traffic like the training data: {calm['state']} "
             f"({calm['drift']['share']:.0%} of features drifted)")
    shifted = (x[300:600] * 1.5 + 1.0).astype(np.float32)
    _infer(server, v, shifted)
    moved = lg.monitor(v.name, url=url, token=token)
    view.table(f"monitor, shifted traffic: {moved['state']} "
               f"({moved['drift']['share']:.0%} of features drifted)",
               ["feature", "method", "score", "threshold", "drifted"],
               [[f["feature"], f["method"], f"{f['score']:.3g}", f"{f['threshold']:g}",
                 "yes" if f["drifted"] else "no"] for f in moved["drift"]["features"][:6]])
    sent = [d for d in moved.get("deliveries", []) if d["delivered"]]
    if not moved.get("triggered") or not sent:
        raise Error("the demo expected shifted traffic to trigger retraining")
    view.say(f"retraining trigger {moved['triggered']} (CloudEvent "
             f"dev.lockgate.drift.detected.v1) handed to the configured command")


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _models(payload: Any) -> str:
    models = payload.get("models", []) if isinstance(payload, dict) else []
    return ", ".join(f"{m.get('model')}@{m.get('version')}" for m in models
                     if isinstance(m, dict))


def run_demo(view: DemoView, *, keep: bool = False) -> Path:
    """Run the demo; returns the temporary home (deleted unless ``keep``)."""
    try:
        import sklearn  # noqa: F401
        import torch
    except ImportError as exc:
        raise Error("the demo needs PyTorch and scikit-learn",
                    hint="pip install 'lockgate[all]'") from exc
    torch.set_num_threads(2)
    home = Path(tempfile.mkdtemp(prefix="lockgate-demo-"))
    try:
        _journey(view, home)
    finally:
        if keep:
            view.say(f"demo home kept at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return home


def _journey(view: DemoView, home: Path) -> None:
    lg = _fresh_home(view, home)
    try:
        x, y = synthetic_data()
        net, pipe, accuracy = _train(view, x, y)
        v_torch, v_sk = _register(view, lg, net, pipe, accuracy, x, y)
        _promote(view, lg, v_torch, v_sk)
        _serve(view, lg, (net, v_torch), (pipe, v_sk), x, y)
        _audit(view, lg)
        _evidence(view, lg, home, v_torch)
        _team(view, lg, home, v_torch)
    finally:
        lg.close()


def _fresh_home(view: DemoView, home: Path) -> Lockgate:
    """Step 1: a home whose policy is the demo's, with a retraining trigger writing to a file."""
    view.step(f"1. a fresh home: {home}")
    home.mkdir(parents=True, exist_ok=True)
    trigger = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() "
               "+ '\\n')", str(home / "retraining-requests.jsonl")]
    (home / "lockgate.toml").write_text(
        DEMO_POLICY + f"[monitor.trigger]\ncommand = {json.dumps(trigger)}\n", encoding="utf-8")
    lg = Lockgate.open(home)
    view.say("policy: production needs " + ", ".join(
        g.name for g in lg.settings.gates_for("stabilized", "production")))
    return lg


def _train(view: DemoView, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any, tuple[float, float]]:
    """Step 2: the PyTorch MLP and the scikit-learn pipeline, fitted on the first 450 rows, and
    their accuracies on the 150 rows they did not see."""
    import torch

    view.step("2. train a PyTorch MLP and a scikit-learn pipeline (seed 7)")
    n = HELD_OUT_FROM
    net = train_torch(x[:n], y[:n])
    pipe = train_sklearn(x[:n], y[:n])
    with torch.no_grad():
        torch_acc = float((net(torch.from_numpy(x[n:])).argmax(1).numpy() == y[n:]).mean())
    sk_acc = float(pipe.score(x[n:], y[n:]))
    view.say(f"held-out accuracy: torch {torch_acc:.3f}, sklearn {sk_acc:.3f}")
    return net, pipe, (torch_acc, sk_acc)


def _register(view: DemoView, lg: Lockgate, net: Any, pipe: Any, accuracy: tuple[float, float],
              x: np.ndarray, y: np.ndarray) -> tuple[Version, Version]:
    """Step 3: both models (and Keras and JAX ones when installed) registered as ONNX."""
    view.step("3. register: convert to ONNX, prove parity, capture the environment")
    torch_acc, sk_acc = accuracy
    sample = x[:4]
    with view.progress() as bar:
        v_torch = lg.register(net, sample, name="demo-torch-mlp", seed=SEED,
                              metrics={"accuracy": torch_acc}, reference={"input": x},
                              description="3-class MLP on synthetic data", progress=bar)
    view.version(v_torch)
    with view.progress() as bar:
        v_sk = lg.register(pipe, sample, name="demo-sklearn-logreg", seed=SEED,
                           metrics={"accuracy": sk_acc},
                           description="scaler + logistic regression", progress=bar)
    view.version(v_sk)
    for v in _other_frameworks(lg, view, x, y):
        view.version(v)
    for v in (v_torch, v_sk):
        bom = json.loads(lg.file_bytes(v, BOM_FILE))
        view.say(f"{v.name}@{v.number}: CycloneDX {bom['specVersion']} BOM with "
                 f"{len(bom['components'])} components, model card, manifest; signed by "
                 f"key {v.signed_by[:16]}")
    return v_torch, v_sk


def _promote(view: DemoView, lg: Lockgate, v_torch: Version, v_sk: Version) -> None:
    """Step 4: a refused first try at production, then the approver's approval and first-release
    waiver through the registry with an API token, then production."""
    view.step("4. promote to production through the gates")
    ref = f"{v_torch.name}@{v_torch.number}"
    try:
        lg.promote(ref, "production", run_all=True)
        raise Error("the demo expected the approval gate to block the first attempt")
    except GateFailedError as exc:
        view.table(f"{ref} → production: refused", ["gate", "status", "message"],
                   [[r.gate, r.status.value, _short(r.message)] for r in exc.results])
    _approve_over_http(view, lg, (v_torch, v_sk))
    for v in (v_torch, v_sk):
        res = lg.promote(f"{v.name}@{v.number}", "production")
        view.table(f"{v.name}@{v.number} → production: promoted",
                   ["gate", "status", "message"],
                   [[r.gate, r.status.value, _short(r.message)] for r in res.results])


def _approve_over_http(view: DemoView, lg: Lockgate, versions: Sequence[Version]) -> None:
    """The approver, identified by an API token at the registry, approves each version and
    waives rollback_ready for this first release."""
    from lockgate.registry import create_registry_app
    from lockgate.registry.client import connect

    lg.add_user(APPROVER, ["approver"], actor="admin")
    _, token = lg.create_token(APPROVER, description="demo approvals", days=1, actor="admin")
    with _Server(create_registry_app(lg)) as server, \
            connect(f"http://127.0.0.1:{server.port}", token) as reg:
        for v in versions:
            reg.approve(f"{v.name}@{v.number}", "production",
                        comment="held-out metrics and validation reviewed")
            reg.waive(f"{v.name}@{v.number}", "production", "rollback_ready",
                      reason="first release: nothing to roll back to",
                      expires=date.today() + timedelta(days=7))
    view.say(f"{APPROVER} approves over HTTP with an API token (an approval made in the home "
             "as a local user would not count), and waives rollback_ready for this first "
             "release only")


def _serve(view: DemoView, lg: Lockgate, torch_model: tuple[Any, Version],
           sklearn_model: tuple[Any, Version], x: np.ndarray, y: np.ndarray) -> None:
    """Step 5: the production versions served; their answers against the source frameworks."""
    view.step("5. serve production versions over the Open Inference Protocol v2")
    app = lg.create_app()
    batch = x[100:105]
    with _Server(app) as server:
        server.wait_ready()
        meta = server.request("GET", "/v2")
        view.say(f"server {meta.get('name')} {meta.get('version')} on "
                 f"http://127.0.0.1:{server.port}/v2")
        got_t = _infer(server, torch_model[1], batch)
        got_s = _infer(server, sklearn_model[1], batch)
        _observe(view, lg, server, torch_model[1], x)
    _check_predictions(view, torch_model, sklearn_model, batch, y[100:105], (got_t, got_s))


def _check_predictions(view: DemoView, torch_model: tuple[Any, Version],
                       sklearn_model: tuple[Any, Version], batch: np.ndarray, truth: np.ndarray,
                       served: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> None:
    """The served answers side by side with the source frameworks'; an error if they differ."""
    import torch

    (net, v_torch), (pipe, v_sk) = torch_model, sklearn_model
    got_t, got_s = served
    with torch.no_grad():
        ref_t = net(torch.from_numpy(batch)).numpy()
    ref_s = pipe.predict_proba(batch)
    out_t = got_t[v_torch.signature.outputs[0].name]
    prob_name = next((o.name for o in v_sk.signature.outputs
                      if o.name.startswith("prob")), v_sk.signature.outputs[-1].name)
    out_s = got_s[prob_name]
    rows = []
    for i in range(len(batch)):
        rows.append([
            str(i), str(int(truth[i])),
            f"{int(ref_t[i].argmax())} / {int(out_t[i].argmax())}",
            f"{np.abs(ref_t[i] - out_t[i]).max():.1e}",
            f"{int(ref_s[i].argmax())} / {int(out_s[i].argmax())}",
            f"{np.abs(ref_s[i] - out_s[i]).max():.1e}",
        ])
    view.table("predictions: source framework / lockgate server",
               ["row", "truth", "torch / server", "max |Δ| logits", "sklearn / server",
                "max |Δ| proba"], rows)
    agree = bool(np.array_equal(ref_t.argmax(1), out_t.argmax(1))
                 and np.array_equal(ref_s.argmax(1), out_s.argmax(1)))
    if not agree or not np.allclose(ref_t, out_t, atol=1e-4, rtol=1e-3):
        raise Error("served predictions differ from the source frameworks")
    view.say("served predictions match both source frameworks")


def _audit(view: DemoView, lg: Lockgate) -> None:
    """Step 6: the audit chain verified and listed."""
    view.step("6. verify the audit chain")
    report = lg.audit_verify()
    if not report.ok:
        raise AuditChainError(f"audit chain broken at row {report.first_broken}")
    view.table("audit log", ["#", "event", "target"], [
        [str(r.seq), r.type,
         f"{r.model}@{r.version}" if r.version else r.model or _models(r.payload)]
        for r in lg.audit_log()
    ])
    view.say(f"audit chain intact: {report.count} events, each hashed over the previous")


def _evidence(view: DemoView, lg: Lockgate, home: Path, v: Version) -> None:
    """Steps 7 and 8: the evidence pack and the HTML model report of the torch version."""
    view.step("7. export an evidence pack an auditor can check without lockgate")
    pack = lg.export_evidence(f"{v.name}@{v.number}", home / "evidence")
    view.say(f"{pack}: " + ", ".join(sorted(p.name for p in pack.iterdir())))
    view.say("see VERIFY.md there: sha256sum -c, model_signing verify key, CycloneDX "
             "validation")

    view.step("8. the model report: one HTML page, no network needed to open it")
    from lockgate.web.report import write_report

    page = write_report(lg, f"{v.name}@{v.number}", home / "report.html")
    view.say(f"{page} ({page.stat().st_size // 1024} KiB): card, lineage, parity, gates, "
             "latency, drift histograms, audit trail")


def _team(view: DemoView, lg: Lockgate, home: Path, v: Version) -> None:
    """The registry over HTTP: users with roles, tokens, a CI upload, a refused action."""
    from starlette.applications import Starlette

    from lockgate.errors import AccessDeniedError
    from lockgate.registry import create_registry_app
    from lockgate.registry.client import connect
    from lockgate.web import ui_routes

    view.step("9. a team registry: users, roles, API tokens, the HTTP API and the console")
    lg.add_user("ci-bot", ["developer"], actor="admin")
    lg.add_user("reviewer", ["approver"], actor="admin")
    _, ci_token = lg.create_token("ci-bot", description="CI uploads", days=90, actor="admin")
    api = create_registry_app(lg)
    app = Starlette(routes=[*api.routes, *ui_routes(lg)])
    exported = home / "exported.onnx"
    exported.write_bytes(lg.model_bytes(v))
    with _Server(app) as server, connect(f"http://127.0.0.1:{server.port}", ci_token) as reg:
        uploaded = reg.register(exported, name="demo-uploaded", metrics=dict(v.metrics))
        view.say(f"ci-bot uploaded {uploaded.name}@{uploaded.number} over HTTP "
                 f"(signed by the registry, creator {uploaded.creator})")
        try:
            reg.approve(f"{uploaded.name}@{uploaded.number}", "production")
        except AccessDeniedError as exc:
            view.say(f"ci-bot may not approve: {exc.message} (403, audited)")
        denied = [r for r in lg.audit_log() if r.type == "access.denied"]
        view.say(f"audit: {denied[-1].type} by {denied[-1].actor}; OpenAPI document at "
                 f"/openapi.json, console at /ui (`lockgate ui`, login with a token)")


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo's temporary home and print its path.")
def demo(keep: bool) -> None:
    """Train, register, promote and serve a PyTorch and a scikit-learn model, end to end."""
    run_demo(DemoPrinter(), keep=keep)


COMMANDS: tuple[click.Command, ...] = (demo,)
