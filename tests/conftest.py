"""Shared fixtures. ONNX Runtime telemetry is off for every test and every process tests start."""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ["DO_NOT_TRACK"] = "1"  # Evidently (golden drift tests) reports usage otherwise
os.environ["ITERATIVE_DO_NOT_TRACK"] = "1"
# `lockgate serve` runs one process per core by default; the servers tests start run one
# unless a test asks for several (tests/serve/test_worker_processes.py covers the supervisor).
os.environ.setdefault("LOCKGATE_SERVE_WORKERS", "1")

from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.config.settings import DEFAULT_CONFIG, GateSpec, Settings
from lockgate.seal.folder import ensure_default_keys
from lockgate.store.artifacts import MemoryArtifactStore
from lockgate.store.metadata import MemoryMetadataStore
from onnx_models import linear_onnx
from services import (  # noqa: F401  (fixtures)
    NEEDS_POSTGRES,
    postgres_server,
    postgres_url,
    s3_server,
)

PARITY_ONLY = DEFAULT_CONFIG.replace('\n# "*" = ["parity"]\n', '\n"*" = ["parity"]\n')
assert PARITY_ONLY != DEFAULT_CONFIG


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh lockgate home; LOCKGATE_* variables from the caller's shell are cleared."""
    for key in list(os.environ):
        if key.startswith("LOCKGATE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    h.mkdir()
    # Tests promote with parity alone unless they write their own policy; the seed's default
    # policy (approvals, reproducibility, ...) is exercised in tests/gates.
    (h / "lockgate.toml").write_text(PARITY_ONLY, encoding="utf-8")
    monkeypatch.setenv("LOCKGATE_HOME", str(h))
    monkeypatch.setenv("LOCKGATE_USER", "tester")
    monkeypatch.setenv("LOCKGATE_SERVE_WORKERS", "1")  # one process, as above
    return h


@pytest.fixture
def lg(home: Path) -> Iterator[Lockgate]:
    """Lockgate on SQLite and a local artifact folder (the embedded default)."""
    with Lockgate.open(home) as instance:
        yield instance


@pytest.fixture
def mem_lg(tmp_path: Path) -> Lockgate:
    """Lockgate on the in-memory stores, for fast tests."""
    settings = Settings.for_home(tmp_path / "mem", user="tester",
                                 gates={"*": (GateSpec("parity"),)})
    ensure_default_keys(settings)
    return Lockgate(settings, metadata=MemoryMetadataStore(), artifacts=MemoryArtifactStore())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=NEEDS_POSTGRES)])
def sql_lg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lockgate]:
    """Lockgate on a real SQL metadata store — SQLite, then PostgreSQL — for the storage and
    promotion tests."""
    url = (f"sqlite:///{tmp_path / 'sql.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    settings = Settings.for_home(tmp_path / "sql", user="tester", database_url=url,
                                 gates={"*": (GateSpec("parity"),)})
    ensure_default_keys(settings)
    lg = Lockgate(settings, artifacts=MemoryArtifactStore())
    yield lg
    lg.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=NEEDS_POSTGRES)])
def db_home(request: pytest.FixtureRequest, home: Path,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    """``home``, with its metadata in SQLite, then in PostgreSQL (LOCKGATE_DATABASE_URL, which
    child processes inherit)."""
    if request.param == "postgresql":
        monkeypatch.setenv("LOCKGATE_DATABASE_URL", request.getfixturevalue("postgres_url"))
    return home


@pytest.fixture
def linear_model() -> onnx.ModelProto:
    return linear_onnx()
