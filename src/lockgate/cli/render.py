"""How the CLI draws: the stdout and stderr consoles, JSON output, progress bars, the parity
and gate tables, per-gate progress lines, error lines and the demo's steps.

Both consoles take text as it is: Rich markup is off, so a gate message, a comment or a model's
description saying ``[gate.metrics]`` prints intact. Styling goes through :class:`rich.text.Text`
(``Text.assemble("registered ", (ref, "bold"))``), never through markup in a string that holds
what a user or a gate wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table
from rich.text import Text

from lockgate.types import GateResult, OutputParity, Version

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class BarProgress:
    """Draws lockgate's progress reports as rich bars on stderr."""

    def __init__(self, bar: RichBar) -> None:
        self._bar = bar
        self._tasks: dict[str, Any] = {}

    def start(self, task: str, total: int | None = None) -> None:
        self._tasks[task] = self._bar.add_task(task, total=total)

    def advance(self, task: str, steps: int = 1) -> None:
        if task in self._tasks:
            self._bar.advance(self._tasks[task], steps)

    def finish(self, task: str) -> None:
        if task in self._tasks:
            t = self._tasks[task]
            total = self._bar.tasks[t].total if t < len(self._bar.tasks) else None
            self._bar.update(t, completed=total if total is not None else 1, total=total or 1)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[BarProgress | None]:
    """Rich bars on stderr while the block runs, or None when ``enabled`` is false."""
    if not enabled:
        yield None
        return
    with RichBar(SpinnerColumn(), TextColumn("{task.description:<8}", markup=False), BarColumn(),
                 TimeElapsedColumn(), console=err, transient=True) as bar:
        yield BarProgress(bar)


def emit_json(data: Any) -> None:
    """``data`` as indented, key-sorted JSON on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_parity(v: Version) -> None:
    """The parity table of a version, output by output."""
    if v.parity is None:
        out.print("parity: not checked (no source model to compare against)")
        return
    t = Table(title=f"parity over batch sizes {list(v.parity.batch_sizes)}")
    for col in ("output", "max abs err", "max rel err", "atol", "rtol", "result"):
        t.add_column(col)
    for o in v.parity.outputs:
        t.add_row(o.name, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}", f"{o.atol:g}",
                  f"{o.rtol:g}", _parity_result(o))
    out.print(t)
    for name, how in v.parity.inputs.items():
        out.print(f"  input {name}: {how}", markup=False)
    if v.parity.dims:
        out.print("  dims: " + ", ".join(f"{k} {min(s)}..{max(s)}"
                                         for k, s in v.parity.dims.items()), markup=False)
    for s in v.parity.skipped:
        out.print(f"  skipped {s}", markup=False)


def _parity_result(o: OutputParity) -> str:
    """``pass``, ``pass (2 on near ties)`` or ``FAIL (3)``."""
    counts = [] if o.passed else [str(o.mismatches)]
    if o.borderline:
        counts.append(f"{o.borderline} on near ties")
    text = "pass" if o.passed else "FAIL"
    return f"{text} ({', '.join(counts)})" if counts else text


def gate_table(title: str, results: Sequence[GateResult]) -> Table:
    """Gate results as a table, the status coloured; every text as it is, whichever console
    prints the table."""
    t = Table(title=Text(title, style="table.title"))
    for col in ("gate", "status", "message"):
        t.add_column(col)
    colors = {"pass": "green", "waived": "yellow", "skipped": "dim", "fail": "red",
              "error": "red"}
    for r in results:
        c = colors.get(r.status.value, "")
        t.add_row(Text(r.gate), Text(r.status.value, style=c), Text(r.message))
    return t


def live(enabled: bool) -> Any:
    """A per-gate progress line on stderr while gates run (terminal only)."""
    if not enabled:
        return None

    def show(result: GateResult) -> None:
        err.print(f"  {result.gate}: {result.status.value}", highlight=False)

    return show


class DemoPrinter:
    """Renders the demo's steps."""

    def step(self, title: str) -> None:
        out.rule(Text(title, style="bold"))

    def say(self, text: str) -> None:
        out.print(text)

    def version(self, v: Version) -> None:
        out.print(Text.assemble("registered ", (f"{v.name}@{v.number}", "bold"),
                                f" from {v.framework} {v.framework_version} → ONNX opset "
                                f"{v.opset} ({v.digest.value[:19]}…)"))
        print_parity(v)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        t = Table(title=Text(title, style="table.title"))
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*(Text(cell) for cell in r))
        out.print(t)

    def progress(self) -> Any:
        return progress_bars(err.is_terminal)


def error_line(text: str) -> None:
    """One ``error: ...`` line on stderr, printed as it is (no markup)."""
    err.print(f"error: {text}", markup=False)
