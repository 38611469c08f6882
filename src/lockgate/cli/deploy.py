"""What servers serve: deploy (blue/green, canary, shadow, batching, status) and rollback."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from lockgate.cli.context import open_registry
from lockgate.cli.render import emit_json, out
from lockgate.config.providers import FALLBACKS, ProviderSet, parse_providers_text
from lockgate.errors import InvalidInputError
from lockgate.rollout.state import Deployment


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
@click.option("--providers", default=None, metavar="NAME[:KEY=VALUE...],...",
              help="Execution providers the deployment's versions load on, in order: "
                   "cuda,cpu or tensorrt:trt_fp16_enable=true,cuda,cpu; 'default' goes back "
                   "to the servers' [serve] providers. With NAME alone, changes only them.")
@click.option("--fallback", type=click.Choice(FALLBACKS), default=None,
              help="With --providers: when one cannot load, refuse the version (none, the "
                   "default) or serve it on the CPU (cpu).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def deploy(ctx: click.Context, target: str, canary: int | None, shadow: bool,
           weight: int | None, promote_candidate: bool, analyze: str | None, interval: float,
           min_requests: int, failure_limit: int, batching: str | None,
           providers: str | None, fallback: str | None, as_json: bool) -> None:
    """Change what servers serve: `deploy NAME@V` (blue/green switch), `--canary W`,
    `--shadow`, `deploy NAME --weight W`, `deploy NAME --promote-candidate`,
    `deploy NAME --providers cuda,cpu`, or `deploy status`. Running servers follow within a
    poll interval."""
    provider_set = _provider_set(providers, fallback)
    lg = open_registry(ctx)
    if target == "status":
        deps = lg.deployments()
        if as_json:
            emit_json({n: d.to_dict() for n, d in deps.items()})
            return
        t = Table(title="deployments")
        for col in ("model", "stable", "candidate", "weight", "shadow", "previous", "state",
                    "providers", "generation"):
            t.add_column(col)
        for d in deps.values():
            t.add_row(d.name, str(d.stable), str(d.candidate or "-"), f"{d.weight}%",
                      str(d.shadow or "-"), str(d.previous or "-"), d.state,
                      _providers_key(d), str(d.generation or "implicit"))
        out.print(t)
        return
    if provider_set is not None and (batching is not None or weight is not None
                                     or promote_candidate):
        raise InvalidInputError("--providers goes with NAME@V (a deployment) or NAME alone",
                                hint="change batching, weights or the candidate apart")
    if providers == "default" and ("@" in target or canary is not None or shadow):
        raise InvalidInputError("--providers default goes with NAME alone",
                                hint=f"lockgate deploy {target.partition('@')[0]} "
                                     "--providers default")
    if providers is not None and "@" not in target and canary is None and not shadow:
        d = lg.set_providers(target, provider_set)
    elif batching is not None:
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
        d = lg.deploy(target, canary=canary, shadow=shadow, analysis=analysis,
                      providers=provider_set)
    if as_json:
        emit_json(d.to_dict())
        return
    out.print(f"{d.name}: stable {d.stable}"
              + (f", candidate {d.candidate} at {d.weight}%" if d.candidate else "")
              + (f", batching {d.batching}" if d.batching else "")
              + (f", shadow {d.shadow}" if d.shadow else "")
              + (f", providers {text}" if (text := _providers_text(d)) else "")
              + f" (generation {d.generation})")


def _provider_set(text: str | None, fallback: str | None) -> ProviderSet | None:
    """The set --providers and --fallback name; None when --providers is not given."""
    if text is None:
        if fallback is not None:
            raise InvalidInputError("--fallback goes with --providers",
                                    hint="--providers cuda,cpu --fallback cpu")
        return None
    if text == "default":
        if fallback is not None:
            raise InvalidInputError("--providers default takes no --fallback: the servers' "
                                    "[serve] provider_fallback applies")
        return None
    return ProviderSet(parse_providers_text(text, "--providers"), fallback or "none")


def _providers_text(d: Deployment) -> str:
    """The deployment's providers as given on the command line; empty: the servers' own."""
    if not d.providers:
        return ""
    ps = ProviderSet.from_dict(d.providers)
    return str(ps) + (f" (fallback {ps.fallback})" if ps.fallback != "none" else "")


def _providers_key(d: Deployment) -> str:
    """The deployment's providers in short (``tensorrt[fp16]+cuda+cpu``), for the table."""
    if not d.providers:
        return "server's"
    ps = ProviderSet.from_dict(d.providers)
    return ps.key + (f", fallback {ps.fallback}" if ps.fallback != "none" else "")


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
