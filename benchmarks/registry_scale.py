"""How the registry behaves with many versions and a long audit log, on SQLite and PostgreSQL.

For each backend: 10,000 versions of one model (synthetic records written through the metadata
store, each with its registration event), then the p50 of listing the model's versions, of
showing one version, and of a promotion (an ``unsafe_allow`` policy, so the figure is the
store's work, not a gate's); then the audit log grown to 100,000 events and the time of a full
``audit verify``. PostgreSQL is Debian's server started in a temp dir (as the tests do), or
``--postgres-url``.

    .venv/bin/python benchmarks/registry_scale.py [--versions 10000] [--events 100000]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lockgate.api.facade import Lockgate
from lockgate.audit import AuditEvent, EventType, now
from lockgate.config.settings import GateSpec, Settings
from lockgate.seal.folder import ensure_default_keys
from lockgate.store.artifacts import MemoryArtifactStore
from lockgate.store.metadata import Change


def _record(number: int) -> dict[str, Any]:
    return {"digest": "sha256:" + f"{number:064x}", "framework": "onnx",
            "framework_version": "1.0", "opset": 17, "ir_version": 8,
            "signature": {"inputs": [{"name": "input", "dtype": "float32",
                                      "shape": ["batch", 4]}],
                          "outputs": [{"name": "output", "dtype": "float32",
                                       "shape": ["batch", 3]}]},
            "parity": None, "environment": {}, "creator": "bench", "created_at": now(),
            "description": "", "tags": {}, "metrics": {}, "seeds": {"seed": number},
            "files": {}, "signature_bundle": None, "signed_by": ""}


def _p50(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def run(url: str, home: Path, versions: int, events: int) -> dict[str, float]:
    settings = Settings.for_home(home, user="bench", database_url=url,
                                 gates={"*": (GateSpec("unsafe_allow"),)},
                                 require_signature=False)
    ensure_default_keys(settings)
    lg = Lockgate(settings, artifacts=MemoryArtifactStore())
    out: dict[str, float] = {}
    t = time.perf_counter()
    for _ in range(versions):
        lg.meta.create_version("m", _record, "prototype",
                               AuditEvent(EventType.MODEL_REGISTERED, "bench"))
    out["register_each_ms"] = (time.perf_counter() - t) / versions * 1000
    out["list_p50_ms"] = _p50(lambda: lg.versions("m"), 10)
    out["show_p50_ms"] = _p50(lambda: lg.get(f"m@{versions // 2}"), 50)
    numbers = iter(range(1, versions + 1))
    out["promote_p50_ms"] = _p50(lambda: lg.promote(f"m@{next(numbers)}", "stabilized"), 30)
    have = len(lg.meta.audit_records())
    batch = 1000
    while have < events:
        n = min(batch, events - have)
        lg.meta.apply(Change(events=[AuditEvent(EventType.ALIAS_SET, "bench", "m", 1,
                                                {"i": have + i}) for i in range(n)]))
        have += n
    t = time.perf_counter()
    report = lg.audit_verify()
    out["audit_verify_s"] = time.perf_counter() - t
    out["audit_events"] = float(report.count)
    assert report.ok
    lg.close()
    return out


@contextmanager
def _postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    import sqlalchemy as sa

    from services import pg_bin, start_postgres

    bindir = pg_bin()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries here: pass --postgres-url")
    with start_postgres(bindir) as base:
        engine = sa.create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE bench")
        engine.dispose()
        yield f"{base}/bench"


def main() -> None:
    warnings.simplefilter("ignore", UserWarning)  # unsafe_allow warns on every promotion
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = run(f"sqlite:///{tmp}/bench.db", Path(tmp) / "a", args.versions,
                                args.events)
        with _postgres(args.postgres_url) as url:
            results["PostgreSQL"] = run(url, Path(tmp) / "b", args.versions, args.events)
    print(f"registry scale: {args.versions} versions, {args.events} audit events, "
          f"{os.cpu_count()} CPUs")
    keys = ["register_each_ms", "list_p50_ms", "show_p50_ms", "promote_p50_ms",
            "audit_verify_s"]
    print(f"{'backend':<12}" + "".join(f"{k:>18}" for k in keys))
    for backend, r in results.items():
        print(f"{backend:<12}" + "".join(f"{r[k]:>18.2f}" for k in keys))


if __name__ == "__main__":
    main()
