"""Test helpers: the CLI run in this process, and a version stored without a model behind it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from lockgate.api.facade import Lockgate
from lockgate.audit import AuditEvent, EventType
from lockgate.cli.main import main
from lockgate.types import Digest, Signature, TensorSpec, Version


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`lockgate ARGS` in this process: exit code, stdout, stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add_bare_version(home: Path, *, description: str = "",
                     tags: Mapping[str, str] | None = None) -> None:
    """Store m@1 (registered by `dev`, x → y) straight into the home's metadata: the
    version's record alone, for tests of what reads and decides on records."""
    with Lockgate.open(home) as lg:
        draft = Version(
            name="m", number=0, digest=Digest.of_bytes(b"m"), framework="test",
            framework_version="0", opset=17, ir_version=8,
            signature=Signature((TensorSpec("x", "float32", ("batch", 2)),),
                                (TensorSpec("y", "float32", ("batch", 1)),)),
            parity=None, environment={}, creator="dev", created_at="now",
            description=description, tags=dict(tags or {}))
        lg.meta.create_version("m", lambda _n: draft.record(), lg.settings.stages[0],
                               AuditEvent(EventType.MODEL_REGISTERED, "dev"))
