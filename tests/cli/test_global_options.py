"""Global options (--home, --server, --json, --debug) before or after the command, for every
command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cli_in_process import add_bare_version, run_cli
from lockgate.cli.main import cli

GLOBAL = ("--home", "--server", "--json", "--debug")


def _leaves(group: click.Group, path: str = "lockgate") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from _leaves(command, f"{path} {name}")


@pytest.fixture
def other(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home holding m@1, while $LOCKGATE_HOME points at an empty one."""
    h = tmp_path / "other"
    h.mkdir()
    (h / "lockgate.toml").write_text((home / "lockgate.toml").read_text())
    add_bare_version(h, description="d")
    return h


def test_every_command_takes_the_global_options() -> None:
    missing = [(path, opt) for path, command in _leaves(cli)
               for opt in GLOBAL if opt not in {o for p in command.params for o in p.opts}]
    assert missing == []
    assert len(list(_leaves(cli))) > 40


def test_home_after_the_command_is_the_home_before_it(
        other: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = run_cli(capsys, "--home", str(other), "show", "m@1")
    after = run_cli(capsys, "show", "m@1", "--home", str(other))
    assert before[0] == after[0] == 0, (before, after)
    assert before[1] == after[1]
    assert after[1].startswith("m@1  stage: prototype")
    # the default home ($LOCKGATE_HOME) holds no model m
    assert run_cli(capsys, "show", "m@1")[0] == 3
    # nested groups take them at either level
    nested = [run_cli(capsys, "policy", "show", "--json", "--home", str(other)),
              run_cli(capsys, "policy", "--home", str(other), "show", "--json"),
              run_cli(capsys, "--json", "policy", "show", "--home", str(other))]
    assert {code for code, _, _ in nested} == {0}
    assert len({out for _, out, _ in nested}) == 1
    assert "effective" in json.loads(nested[0][1])


def test_json_before_or_after(other: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = run_cli(capsys, "--json", "--home", str(other), "versions", "m")
    after = run_cli(capsys, "versions", "m", "--json", "--home", str(other))
    assert before[0] == after[0] == 0
    assert json.loads(before[1]) == json.loads(after[1])
    assert json.loads(after[1])[0]["version"] == 1
    code, _, err = run_cli(capsys, "--json", "init", "--home", str(other))
    assert code == 2
    assert "`lockgate init` has no JSON output" in err


def test_server_and_debug_after_the_command(other: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "fsck", "--server", "http://127.0.0.1:9", "--home", str(other))
    assert code == 2
    assert "`lockgate fsck` works on a home or database, not through --server" in err
    code, _, err = run_cli(capsys, "show", "m@9", "--home", str(other), "--debug")
    assert code == 3
    assert "Traceback" in err


def test_a_real_process_takes_them_after_the_command(other: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    proc = subprocess.run([sys.executable, "-m", "lockgate", "show", "m@1", "--json",
                           "--home", str(other)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["description"] == "d"
