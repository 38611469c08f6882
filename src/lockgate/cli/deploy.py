"""What servers serve: deploy (blue/green, canary, shadow, batching, status) and rollback."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from lockgate.cli.context import open_registry
from lockgate.cli.render import emit_json, out
from lockgate.errors import InvalidInputError


@click.command()
@click.argument("target")
@click.option("--canary", type=int, default=None, metavar="WEIGHT",
              help="Deploy as the candidate taking WEIGHT percent of traffic.")
@click.option("--shadow", is_flag=True, help="Deploy as the shadow (mirrored, never answers).")
@click.option("--weight", type=int, default=None, help="Change the candidate's weight.")
@click.option("--promote-candidate", is_flag=True, help="Make the candidate the stable one.")
@click.option("--analyze", default=None, metavar="METRIC<=MAX",
              help="Automatic rollback rule: error_rate<=0.01, p99_latency<=0.05 (seconds) or "
                   "shadow_divergence<=0.001.")
@click.option("--interval", type=float, default=10.0, show_default=True,
              help="Seconds per analysis measurement.")
@click.option("--min-requests", type=int, default=20, show_default=True,
              help="Fewer requests in a measurement make it inconclusive.")
@click.option("--failure-limit", type=int, default=0, show_default=True,
              help="Failed measurements tolerated before rolling back.")
@click.option("--batching", default=None, metavar="KEY=N,...",
              help="Dynamic batching for NAME: max_batch_size, max_queue_delay_us, "
                   "preferred_batch_sizes (a:b), max_queue_size, timeout_ms; 'off' disables.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def deploy(ctx: click.Context, target: str, canary: int | None, shadow: bool,
           weight: int | None, promote_candidate: bool, analyze: str | None, interval: float,
           min_requests: int, failure_limit: int, batching: str | None,
           as_json: bool) -> None:
    """Change what servers serve: `deploy NAME@V` (blue/green switch), `--canary W`,
    `--shadow`, `deploy NAME --weight W`, `deploy NAME --promote-candidate`, or
    `deploy status`. Running servers follow within a poll interval."""
    lg = open_registry(ctx)
    if target == "status":
        deps = lg.deployments()
        if as_json:
            emit_json({n: d.to_dict() for n, d in deps.items()})
            return
        t = Table(title="deployments")
        for col in ("model", "stable", "candidate", "weight", "shadow", "previous", "state",
                    "generation"):
            t.add_column(col)
        for d in deps.values():
            t.add_row(d.name, str(d.stable), str(d.candidate or "-"), f"{d.weight}%",
                      str(d.shadow or "-"), str(d.previous or "-"), d.state,
                      str(d.generation or "implicit"))
        out.print(t)
        return
    if batching is not None:
        d = lg.set_batching(target, None if batching == "off" else _batching(batching))
    elif weight is not None:
        d = lg.set_canary_weight(target, weight)
    elif promote_candidate:
        d = lg.promote_candidate(target)
    else:
        analysis = None
        if analyze is not None:
            metric, sep, limit = analyze.partition("<=")
            if not sep:
                raise InvalidInputError(f"--analyze {analyze!r}: expected METRIC<=MAX")
            try:
                maximum = float(limit)
            except ValueError:
                raise InvalidInputError(f"--analyze: {limit!r} is not a number") from None
            analysis = {"metric": metric.strip(), "max": maximum, "interval_s": interval,
                        "min_requests": min_requests, "failure_limit": failure_limit}
        d = lg.deploy(target, canary=canary, shadow=shadow, analysis=analysis)
    if as_json:
        emit_json(d.to_dict())
        return
    out.print(f"{d.name}: stable {d.stable}"
              + (f", candidate {d.candidate} at {d.weight}%" if d.candidate else "")
              + (f", batching {d.batching}" if d.batching else "")
              + (f", shadow {d.shadow}" if d.shadow else "") + f" (generation {d.generation})")


def _batching(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInputError(f"--batching {text!r}: expected KEY=N pairs")
        key = key.strip()
        out[key] = value.split(":") if key == "preferred_batch_sizes" else value.strip()
    return out


@click.command()
@click.argument("name")
@click.option("--reason", default="", help="Why, for the audit log.")
@click.pass_context
def rollback(ctx: click.Context, name: str, reason: str) -> None:
    """Drop the canary, or return to the previous stable version; servers switch within a poll
    interval (the previous version stays loaded for the grace period)."""
    d = open_registry(ctx).rollback(name, reason=reason)
    out.print(f"{d.name}: stable {d.stable}, state {d.state} (generation {d.generation})")


COMMANDS: tuple[click.Command, ...] = (deploy, rollback)
