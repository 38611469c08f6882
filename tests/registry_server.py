"""A real `lockgate server` (uvicorn on 127.0.0.1) over a home with one user per role: the
`registry` fixture (module scope), shared by tests/registry."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.config.settings import DEFAULT_CONFIG
from onnx_models import linear_onnx

# signature alone gates promotions (ONNX uploads carry no parity report), except archiving
# straight from prototype, which demands parity: a refusal to test
SIGNATURE_ONLY = DEFAULT_CONFIG.replace(
    '\n# "*" = ["parity"]\n', '\n"*" = ["signature"]\n"prototype->archived" = ["parity"]\n')
assert SIGNATURE_ONLY != DEFAULT_CONFIG

# user -> (global roles, per-model grants, disabled)
USERS: dict[str, tuple[list[str], list[tuple[str, str]], bool]] = {
    "admin": (["admin"], [], False),
    "dev": (["developer"], [], False),
    "appr": (["approver"], [], False),
    "depl": (["deployer"], [], False),
    "view": (["viewer"], [], False),
    "gdep": ([], [("gm-*", "deployer"), ("gm-*", "developer")], False),
    "nobody": ([], [], False),
    "off": (["developer"], [], True),
}


@dataclass
class Registry:
    url: str
    home: Path
    tokens: dict[str, str]
    onnx: Path
    log: list[str] = field(default_factory=list)

    def client(self, user: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def open(self) -> Lockgate:
        return Lockgate.open(self.home)


def make_home(root: Path) -> tuple[Path, dict[str, str], Path]:
    home = root / "home"
    home.mkdir()
    (home / "lockgate.toml").write_text(SIGNATURE_ONLY, encoding="utf-8")
    tokens = {}
    with Lockgate.open(home) as lg:
        for name, (roles, grants, disabled) in USERS.items():
            lg.add_user(name, roles, grants=grants, disabled=disabled, actor="setup")
            _, tokens[name] = lg.create_token(name, actor="setup")
    onnx = root / "model.onnx"
    onnx.write_bytes(linear_onnx().SerializeToString())
    return home, tokens, onnx


@contextmanager
def registry_process(home: Path, env: Mapping[str, str], cwd: Path,
                     *args: str) -> Iterator[tuple[int, list[str]]]:
    """Start `lockgate --home HOME server --port 0 ARGS`; yield its port and the lines it
    printed (still growing); stop it with SIGINT at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "server", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(env), cwd=cwd)
    assert proc.stdout is not None
    lines: list[str] = []
    reader: threading.Thread | None = None
    try:
        port = None
        while port is None:
            line = proc.stdout.readline()
            assert line, f"server exited: {''.join(lines)}"
            lines.append(line)
            if m := re.search(r"registry API on http://127\.0\.0\.1:(\d+)/", line):
                port = int(m.group(1))
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout),  # type: ignore[arg-type]
                                  daemon=True)
        reader.start()
        yield port, lines
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if reader is not None:
            reader.join(timeout=10)
        proc.stdout.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    home, tokens, onnx = make_home(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env.update(ORT_DISABLE_TELEMETRY="1", LOCKGATE_USER="ops")
    with registry_process(home, env, root, "--access-log") as (port, lines):
        yield Registry(f"http://127.0.0.1:{port}", home, tokens, onnx, lines)
