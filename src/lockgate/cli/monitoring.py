"""Watching production: reference profiles and monitor runs (drift, SLOs, triggers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from lockgate.cli.context import local_home
from lockgate.cli.parse import parse_duration
from lockgate.cli.render import emit_json, error_line, out
from lockgate.errors import GateFailedError, NotFoundError, ServeError


@click.group()
def reference() -> None:
    """Reference data profiles: what drift is measured against."""


@reference.command("set")
@click.argument("ref")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--sample", type=int, default=None,
              help="Rows kept for the exact tests (default 5000).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reference_set(ctx: click.Context, ref: str, data: Path, sample: int | None,
                  as_json: bool) -> None:
    """Profile DATA (.npy, .npz, .csv, .parquet) as the reference of REF (NAME@V)."""
    record = local_home(ctx).set_reference(ref, data, sample=sample)
    if as_json:
        emit_json(record)
        return
    out.print(f"{ref}: reference profile of {record['rows']} rows, "
              f"{len(record['features'])} features ({record['profile'][:19]})")


@reference.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reference_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """The reference profile of REF, feature by feature."""
    profile = local_home(ctx).reference_profile(ref)
    if profile is None:
        raise NotFoundError(f"{ref} has no reference profile",
                            hint="lockgate reference set NAME@V DATA")
    if as_json:
        emit_json({"rows": profile.rows, "source": profile.source,
                    "features": profile.features})
        return
    t = Table(title=f"{ref}: {profile.rows} rows from {profile.source}")
    for c in ("feature", "kind", "count", "mean", "std", "min", "max"):
        t.add_column(c)
    for name, f in profile.features.items():
        t.add_row(name, str(f["kind"]), str(f["count"]),
                  *(f"{f[k]:.4g}" if k in f else "-" for k in ("mean", "std", "min", "max")))
    out.print(t)


@click.command()
@click.argument("name")
@click.option("--url", default=None, help="Server to read (default: the configured serve "
              "host and port).")
@click.option("--every", default=None, help="Run again every DURATION (30s, 5m, 1h) until "
              "stopped.")
@click.option("--count", type=int, default=0, help="With --every: stop after N runs.")
@click.option("--check", is_flag=True, help="Exit 1 when the window drifted or breached.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def monitor(ctx: click.Context, name: str, url: str | None, every: str | None, count: int,
            check: bool, as_json: bool) -> None:
    """Judge drift and SLOs of NAME's production version on a running server; store the
    result, trigger retraining after the configured windows of drift, roll back on an SLO
    breach when the policy says so. Reads the server's capture with $LOCKGATE_TOKEN (or
    $LOCKGATE_TOKEN_FILE): a user with the monitoring role, once the home has users."""
    import time

    from lockgate.registry.client import token_from_env

    interval = parse_duration(every) if every else None
    lg = local_home(ctx)
    token = token_from_env()
    runs = 0
    result: dict[str, Any] | None = None
    while True:
        runs += 1
        try:
            result = lg.monitor(name, url=url, token=token)
        except ServeError as exc:
            if interval is None:
                raise
            error_line(f"{exc.diagnostics()} (trying again in {every})")
        else:
            _print_monitor(result, as_json)
        if interval is None or (count and runs >= count):
            break
        time.sleep(interval)
    if result is None:
        raise ServeError(f"no monitor run of {name} reached its server in {runs} tries")
    if check and result["state"] not in ("ok", "insufficient"):
        raise GateFailedError(f"{name}@{result['version']}: {result['state']}")


def _print_monitor(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json({k: v for k, v in result.items() if k != "drift"} | {
            "drift": {k: v for k, v in result["drift"].items() if k != "current"}})
        return
    drift, slo = result["drift"], result["slo"]
    out.print(Text.assemble(f"{result['model']}@{result['version']} on {result['server']}: ",
                            (str(result["state"]), "bold"),
                            f" (rows {drift.get('rows', 0)}, requests {slo['requests']})"))
    if "features" in drift:
        t = Table(title=f"drift: {drift['share']:.0%} of features drifted "
                        f"(dataset drift at {drift['drift_share']:.0%})")
        for c in ("feature", "method", "score", "threshold", "drifted"):
            t.add_column(c)
        for f in drift["features"]:
            t.add_row(f["feature"], f["method"], f"{f['score']:.4g}", f"{f['threshold']:g}",
                      "yes" if f["drifted"] else "no")
        out.print(t)
    else:
        out.print(f"drift: {drift['status']} ({drift.get('reason', '')})")
    slo_text = ", ".join(slo.get("breached", [])) or slo.get("reason", "") or "within SLO"
    p99 = f", p99 {slo['p99_ms']:.1f} ms" if "p99_ms" in slo else ""
    out.print(f"slo: {slo['status']}: error rate {slo['error_rate']:.3f}{p99}; {slo_text}")
    if result.get("triggered"):
        out.print(f"retraining trigger {result['triggered']} after "
                  f"{result['drift_streak']} window(s) of drift")
    for d in result.get("deliveries", []):
        state = "delivered" if d["delivered"] else f"pending ({d['error']})"
        out.print(f"trigger {d['id']} → {d['target']}: {state} after {d['attempts']} attempt(s)")
    rb = result.get("rollback")
    if rb:
        out.print(f"rollback: {'to version ' + str(rb['to']) if rb['done'] else rb['error']}")


COMMANDS: tuple[click.Command, ...] = (reference, monitor)
