"""Real services for tests: a PostgreSQL server (Debian's binaries, run as the postgres user
from a temp dir, on 127.0.0.1) and an S3 API server (moto's). A missing binary skips the tests
that need it, saying why — except under LOCKGATE_REQUIRE_SERVICES=1 (CI), where it fails."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRED = os.environ.get("LOCKGATE_REQUIRE_SERVICES") == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


NEEDS_POSTGRES = pytest.mark.skipif(
    _pg_bin() is None and not REQUIRED,
    reason="PostgreSQL server binaries (initdb) not found under /usr/lib/postgresql "
           "(LOCKGATE_REQUIRE_SERVICES=1 makes this a failure)")
"""Mark for tests (or parameters) that need the PostgreSQL server the fixtures start."""


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--", *cmd] if runuser else [
        "su", "postgres", "-c", " ".join(cmd)]


@contextlib.contextmanager
def start_postgres(bindir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL server from Debian's binaries in ``bindir``: a temp data dir
    (owned by the postgres user when run as root), trust auth, 127.0.0.1, a free port. Yields
    its base URL (no database)."""
    root = Path(tempfile.mkdtemp(prefix="lockgate-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "postgres", "--no-sync"]),
                   check=True, capture_output=True, cwd=root)
    port = _free_port()
    proc = subprocess.Popen(
        _as_postgres([str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                      "-p", str(port), "-k", str(root), "-c", "fsync=off",
                      "-c", "max_connections=200"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True, check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.1)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def pg_bin() -> Path | None:
    """Where Debian's PostgreSQL server binaries are, if installed."""
    return _pg_bin()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the test session; yields its base URL (no database)."""
    bindir = _pg_bin()
    if bindir is None:  # only reached under LOCKGATE_REQUIRE_SERVICES=1 (see NEEDS_POSTGRES)
        pytest.fail("PostgreSQL server binaries (initdb) not found under /usr/lib/postgresql")
    with start_postgres(bindir) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's server."""
    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(postgres_server + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return f"{postgres_server}/{name}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 API server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer  # the dev extra installs it
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
