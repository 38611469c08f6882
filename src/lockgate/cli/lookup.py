"""Reading the registry: models, versions, show, and aliases."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from lockgate.api.validations import validated_sets
from lockgate.cli.context import open_registry
from lockgate.cli.optimize import lineage_lines
from lockgate.cli.render import emit_json, out, print_parity


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List registered models."""
    summaries = open_registry(ctx).models()
    if as_json:
        emit_json([s.to_dict() for s in summaries])
        return
    t = Table()
    for col in ("model", "versions", "latest", "stages", "aliases"):
        t.add_column(col)
    for s in summaries:
        t.add_row(s.name, str(s.versions), str(s.latest),
                  ", ".join(f"{k}: {v}" for k, v in s.stages.items()),
                  ", ".join(f"{k}→{v}" for k, v in s.aliases.items()))
    out.print(t)


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def versions(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the versions of a model."""
    vs = open_registry(ctx).versions(name)
    if as_json:
        emit_json([v.to_dict() for v in vs])
        return
    t = Table()
    for col in ("version", "stage", "framework", "opset", "parity", "created", "creator"):
        t.add_column(col)
    for v in vs:
        parity = "n/a" if v.parity is None else ("pass" if v.parity.passed else "FAIL")
        t.add_row(str(v.number), v.stage, f"{v.framework} {v.framework_version}", str(v.opset),
                  parity, v.created_at[:19], v.creator)
    out.print(t)


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one version: NAME, NAME@V, NAME@STAGE or NAME@ALIAS."""
    lg = open_registry(ctx)
    v = lg.get(ref)
    runs = lg.gate_runs(v.ref)
    if as_json:
        data = v.to_dict()
        data["gate_runs"] = [dict(r.__dict__) for r in runs]
        data["validated_on"] = validated_sets(runs)
        emit_json(data)
        return
    out.print(Text.assemble((f"{v.name}@{v.number}", "bold"),
                            f"  stage: {v.stage}  digest: {v.digest}"))
    out.print(f"framework: {v.framework} {v.framework_version}   opset {v.opset}, "
              f"IR {v.ir_version}   created {v.created_at} by {v.creator}")
    if v.description:
        out.print(f"description: {v.description}")
    for spec in v.signature.inputs:
        out.print(f"  input  {spec.name}: {spec.dtype}{list(spec.shape)}")
    for spec in v.signature.outputs:
        out.print(f"  output {spec.name}: {spec.dtype}{list(spec.shape)}")
    if v.metrics:
        out.print("metrics: " + ", ".join(f"{k}={x:g}" for k, x in v.metrics.items()))
    if v.tags:
        out.print("tags: " + ", ".join(f"{k}={x}" for k, x in v.tags.items()))
    if v.seeds:
        out.print("seeds: " + ", ".join(f"{k}={x}" for k, x in v.seeds.items()))
    env = v.environment
    git = env.get("git", {})
    out.print(f"environment: python {env.get('python', {}).get('version', '?')}, "
              f"onnxruntime {env.get('onnxruntime', {}).get('version', '?')}, "
              f"git {git.get('commit', '?') if isinstance(git, dict) else git}")
    for line in lineage_lines(v):
        out.print(line, markup=False)
    print_parity(v)
    out.print(f"files: {', '.join(sorted(v.files)) or '-'}; "
              + (f"signed with key {v.signed_by[:16]}" if v.signed_by else "unsigned"))
    out.print(_validated_on(validated_sets(runs)), markup=False)
    for r in runs:
        status = "passed" if r.passed else "refused"
        out.print(f"gates {r.from_stage}→{r.to_stage} {status} ({r.created_at[:19]}, {r.actor}):")
        for res in r.results:
            out.print(f"  {res['gate']}: {res['status']} — {res['message']}")


def _validated_on(sets: dict[str, dict[str, Any]]) -> str:
    """``validated on: cuda+cpu (fp32, atol 0.0001 rtol 0.001, 2026-05-01 10:00), cpu (...)``."""
    if not sets:
        return "validated on: none (infra_validation has not passed on any provider set)"

    def one(key: str, rec: dict[str, Any]) -> str:
        tol = (f", atol {rec['atol']:g} rtol {rec['rtol']:g}"
               if isinstance(rec.get("atol"), float | int) and isinstance(rec.get("rtol"),
                                                                          float | int) else "")
        return f"{key} ({rec.get('precision', 'fp32')}{tol}, {str(rec['validated_at'])[:16]})"

    return "validated on: " + ", ".join(one(k, r) for k, r in sorted(sets.items()))


@click.group()
def alias() -> None:
    """Set, remove or list aliases (mutable pointers to versions)."""


@alias.command("set")
@click.argument("name")
@click.argument("alias_name")
@click.argument("version", type=int)
@click.pass_context
def alias_set(ctx: click.Context, name: str, alias_name: str, version: int) -> None:
    """Point ALIAS_NAME of model NAME at VERSION."""
    open_registry(ctx).set_alias(name, alias_name, version)
    out.print(f"{name}@{alias_name} → {name}@{version}")


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name")
@click.pass_context
def alias_rm(ctx: click.Context, name: str, alias_name: str) -> None:
    """Remove ALIAS_NAME from model NAME."""
    open_registry(ctx).set_alias(name, alias_name, None)
    out.print(f"removed {name}@{alias_name}")


@alias.command("ls")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alias_ls(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the aliases of model NAME."""
    found = open_registry(ctx).aliases(name)
    if as_json:
        emit_json(found)
        return
    for a, n in sorted(found.items()):
        out.print(f"{a} → {name}@{n}")


COMMANDS: tuple[click.Command, ...] = (models, versions, show, alias)
