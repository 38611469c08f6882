"""Server time of the web console's pages with 1,000 versions in the registry (SQLite).

10 models of 100 versions each: the first version of each is a real registration (signed, with
its BOM and model card), the other 99 synthetic copies of its record written through the
metadata store with their audit events; m0@1 is in production with a reference profile and 20
monitor windows; the audit log holds every event. Each page is requested in-process (Starlette's
test client, so the figure is the app's own time plus a few hundred microseconds of client) and
the median and the worst of ``--repeat`` requests are printed.

    .venv/bin/python benchmarks/ui_render.py [--models 10] [--versions 100] [--repeat 20]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from starlette.testclient import TestClient

from lockgate.api.facade import Lockgate
from lockgate.audit import AuditEvent, EventType
from lockgate.web import create_ui_app
from monitor_windows import store_window
from onnx_models import linear_onnx


def build(home: Path, models: int, versions: int) -> Lockgate:
    home.mkdir(parents=True)
    (home / "lockgate.toml").write_text('[gates]\n"*" = ["signature"]\n', encoding="utf-8")
    onnx = home.parent / "m.onnx"
    onnx.write_bytes(linear_onnx().SerializeToString())
    lg = Lockgate.open(home)
    rng = np.random.default_rng(0)
    for i in range(models):
        ref = {"input": rng.normal(size=(2000, 4)).astype(np.float32)} if i == 0 else None
        v = lg.register(str(onnx), name=f"m{i}", creator="dev", reference=ref)
        record = v.record()
        for _ in range(versions - 1):
            lg.meta.create_version(f"m{i}", lambda n, r=record: r, "prototype",
                                   AuditEvent(EventType.MODEL_REGISTERED, "bench"))
    lg.promote("m0@1", "stabilized", actor="ops")
    lg.promote("m0@1", "production", actor="ops")
    for w in range(20):
        x = rng.normal(w / 20, 1.0, size=(300, 4)).astype(np.float32)
        store_window(lg, "m0@1", x, f"2026-11-26T{w:02d}:00:00Z")
    return lg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--versions", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        lg = build(Path(tmp) / "home", args.models, args.versions)
        total = len(lg.meta.list_versions("m0")) * args.models
        print(f"built {total} versions, {len(lg.audit_log())} audit events in "
              f"{time.perf_counter() - t:.1f} s")
        client = TestClient(create_ui_app(lg, auth=False), base_url="http://127.0.0.1")
        pages = {
            "models": "/ui/",
            "model (100 versions)": "/ui/models/m0",
            "version (verify, BOM, gates)": "/ui/models/m0/versions/1",
            "drift (20 windows)": "/ui/models/m0/versions/1/drift",
            "deployments": "/ui/deployments",
            "deployment": "/ui/deployments/m0",
            "audit trail (verify chain)": "/ui/audit",
            "audit trail filtered": "/ui/audit?model=m3",
        }
        print(f"{'page':32} {'p50 ms':>8} {'max ms':>8}")
        worst = 0.0
        for label, path in pages.items():
            assert client.get(path).status_code == 200, path
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200
            worst = max(worst, statistics.median(times))
            print(f"{label:32} {statistics.median(times):8.1f} {max(times):8.1f}")
        print(f"slowest page p50: {worst:.1f} ms (target: under 300 ms)")
        lg.close()


if __name__ == "__main__":
    main()
