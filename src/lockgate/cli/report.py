"""What a version measures and holds: compare (source framework against ONNX Runtime) and the
HTML model report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from lockgate.cli.context import local_home
from lockgate.cli.parse import load_factory
from lockgate.cli.render import emit_json, out


@click.command()
@click.argument("ref")
@click.option("--from", "factory", metavar="MODULE:FUNCTION", default=None,
              help="Function returning (model, sample) for the source model (default: the "
                   "version's recipe).")
@click.option("--arg", "args", multiple=True, help="Argument for the --from function.")
@click.option("--batch", type=int, default=32, show_default=True, help="The larger batch.")
@click.option("--seconds", type=float, default=1.0, show_default=True,
              help="Measuring time per runner and batch.")
@click.option("--no-compile", is_flag=True, help="Skip torch.compile / tf.function / jax.jit.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def compare(ctx: click.Context, ref: str, factory: str | None, args: tuple[str, ...],
            batch: int, seconds: float, no_compile: bool, as_json: bool) -> None:
    """Measure REF's source framework (eager and compiled) against ONNX Runtime (threads,
    optimisation levels) on this machine, at batch 1 and --batch, next to the parity figures;
    the result is stored with the version and shown in its report."""
    model = load_factory(factory, args)[0] if factory else None
    result = local_home(ctx).compare(ref, model, batch=batch, seconds=seconds,
                                compile_=not no_compile)
    if as_json:
        emit_json(result)
        return
    sizes = result["batch_sizes"]
    t = Table(title=f"{ref}: {result['framework']} vs ONNX Runtime on this machine "
                    f"({result['machine']['cpus']} CPUs)")
    t.add_column("runtime")
    for size in sizes:
        t.add_column(f"batch {size} p50 ms", justify="right")
        t.add_column(f"batch {size} rows/s", justify="right")
    t.add_column("first call ms", justify="right")
    by_runtime: dict[str, dict[int, dict[str, Any]]] = {}
    for r in result["results"]:
        by_runtime.setdefault(r["runtime"], {})[r["batch"]] = r
    for name, cells in by_runtime.items():
        row = [name]
        for size in sizes:
            c = cells.get(size, {})
            row += ([f"{c['p50_ms']:.3f}", f"{c['rows_per_s']:.0f}"] if "p50_ms" in c
                    else [c.get("error", "-")[:40], ""])
        first = cells.get(sizes[0], {})
        row.append(f"{first['first_call_ms']:.1f}" if "first_call_ms" in first else "-")
        t.add_row(*row)
    out.print(t)
    parity = ", ".join(f"{k} max |Δ| {v:.2g}" for k, v in result["parity"].items())
    out.print(f"parity: {parity or 'not recorded'}")


@click.command()
@click.argument("ref")
@click.option("--html", "html_out", type=click.Path(path_type=Path), required=True,
              help="Where to write the self-contained HTML page.")
@click.pass_context
def report(ctx: click.Context, ref: str, html_out: Path) -> None:
    """Write REF's model report: card, lineage, parity, gates, serving latency, drift per
    feature with histograms, and the audit trail — one HTML file, no network fetches."""
    from lockgate.web.report import write_report

    path = write_report(local_home(ctx), ref, html_out)
    out.print(f"report written to {path}")


COMMANDS: tuple[click.Command, ...] = (compare, report)
