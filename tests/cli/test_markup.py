"""What a gate, a user or a model says prints as it is: nothing in square brackets is taken as
Rich markup, while the CLI's own styling still applies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cli_in_process import add_bare_version, run_cli
from lockgate.cli import render
from lockgate.types import GateResult, GateStatus

MARKUP = "[bold]not bold[/bold] [red]x[/] [link=http://x]y[/link] [gate.metrics]"


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consoles wide enough that table cells do not wrap."""
    for console in (render.out, render.err):
        monkeypatch.setattr(console, "_width", 400)


def test_gate_message_prints_intact_from_a_real_process(home: Path) -> None:
    (home / "lockgate.toml").write_text('[gates]\n"*" = ["metrics"]\n', encoding="utf-8")
    add_bare_version(home)
    env = {**os.environ, "COLUMNS": "400", "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run([sys.executable, "-m", "lockgate", "gates", "m@1", "--to",
                           "stabilized", "--home", str(home)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "no metric thresholds configured: add [gate.metrics] to the policy" in proc.stdout
    assert "add  to the policy" not in proc.stdout


def test_user_text_is_not_markup(home: Path, wide: None, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    add_bare_version(home, description=MARKUP, tags={"team": "[bold]ml[/]"})
    code, out, err = run_cli(capsys, "show", "m@1", "--home", str(home))
    assert code == 0, err
    assert f"description: {MARKUP}" in out
    assert "team=[bold]ml[/]" in out
    assert out.startswith("m@1  stage: prototype")

    (home / "lockgate.toml").write_text('[gates]\n"*" = ["parity"]\n[roles]\n'
                                        'approver = ["ann"]\n', encoding="utf-8")
    monkeypatch.setenv("LOCKGATE_USER", "ann")
    code, out, err = run_cli(capsys, "reject", "m@1", "--stage", "stabilized", "--comment",
                          MARKUP, "--home", str(home))
    assert code == 0, err
    assert out.strip() == f"ann rejected m@1 for stabilized: {MARKUP}"

    code, out, err = run_cli(capsys, "history", "m", "--home", str(home))
    assert code == 0, err
    assert "[bold]not bold[/bold]" in out


def test_error_lines_keep_brackets(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "show", "[red]nope[/red]@1", "--home", str(home))
    assert code in (2, 3)
    assert "[red]nope[/red]" in err


def test_gate_table_escapes_messages_and_still_colours_statuses() -> None:
    console = Console(record=True, width=300, color_system="truecolor", force_terminal=True)
    results = [GateResult("metrics", GateStatus.FAIL, "add [gate.metrics] to the policy"),
               GateResult("parity", GateStatus.PASS, "[green]all[/green] outputs within")]
    console.print(render.gate_table("m@1 → production [x]", results))
    text = console.export_text(clear=False)
    assert "add [gate.metrics] to the policy" in text
    assert "[green]all[/green] outputs within" in text
    assert "m@1 → production [x]" in text
    styled = console.export_text(styles=True)
    assert "\x1b[31mfail" in styled  # the status keeps its colour
    assert "\x1b[32mall" not in styled  # a message's own markup does not colour it


def test_json_output_is_untouched(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_bare_version(home, description=MARKUP)
    code, out, _ = run_cli(capsys, "show", "m@1", "--json", "--home", str(home))
    assert code == 0
    assert json.loads(out)["description"] == MARKUP
