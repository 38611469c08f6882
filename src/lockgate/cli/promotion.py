"""Moving versions through stages: promote, gates (a dry run), approve, reject, waive, and the
promotion policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from lockgate.cli.context import local_home, open_registry
from lockgate.cli.render import emit_json, err, gate_table, live, out
from lockgate.errors import GateFailedError, InvalidInputError
from lockgate.types import GateResult


def _gate_output(results: Sequence[GateResult], *, ref: str, to_stage: str,
                 junit: Path | None, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    from lockgate.gates.junit import write_junit

    if junit is not None:
        write_junit(junit, results, suite=f"lockgate gates {ref} -> {to_stage}",
                    classname=f"lockgate.gates.{to_stage}")
    if as_json:
        emit_json({**(extra or {}), "model": ref, "to": to_stage,
                    "passed": all(r.ok for r in results),
                    "gates": [r.to_dict() for r in results]})
    else:
        out.print(gate_table(f"{ref} → {to_stage}", results))


@click.command()
@click.argument("ref")
@click.option("--to", "to_stage", required=True, help="Target stage.")
@click.option("--all", "run_all", is_flag=True,
              help="Run every gate even after one fails (default: stop at the first failure).")
@click.option("--junit", type=click.Path(path_type=Path), default=None,
              help="Also write the gate results as JUnit XML to this file.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def promote(ctx: click.Context, ref: str, to_stage: str, run_all: bool, junit: Path | None,
            as_json: bool) -> None:
    """Promote a version through the gates configured for the transition. Exit 0 promoted,
    1 a gate failed, 2 usage or configuration error."""
    lg = open_registry(ctx)
    v = lg.get(ref)
    label = f"{v.name}@{v.number}"
    try:
        result = lg.promote(v.ref, to_stage, run_all=run_all,
                            on_result=live(not as_json and err.is_terminal))
    except GateFailedError as exc:
        _gate_output(exc.results, ref=label, to_stage=to_stage, junit=junit, as_json=as_json,
                     extra={"promoted": False})
        raise
    _gate_output(result.results, ref=label, to_stage=to_stage, junit=junit, as_json=as_json,
                 extra={"promoted": True, "from": result.from_stage,
                        "retired": list(result.retired), "alias": result.alias})
    if as_json:
        return
    out.print(Text.assemble(f"{label}: {result.from_stage} → ", (result.to_stage, "bold")))
    for n in result.retired:
        out.print(f"{result.version.name}@{n} retired")
    if result.alias:
        out.print(f"alias {result.alias} → {label}")


@click.command()
@click.argument("ref")
@click.option("--to", "to_stage", required=True, help="Target stage.")
@click.option("--dry-run", is_flag=True, default=True,
              help="Evaluate without moving anything (always; the flag documents it).")
@click.option("--first-failure", is_flag=True,
              help="Stop at the first failing gate, as promote does.")
@click.option("--junit", type=click.Path(path_type=Path), default=None,
              help="Also write the gate results as JUnit XML to this file.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def gates(ctx: click.Context, ref: str, to_stage: str, dry_run: bool, first_failure: bool,
          junit: Path | None, as_json: bool) -> None:
    """Evaluate a transition's gates for a version without moving it. Exit 0 when every gate
    passes, 1 otherwise."""
    lg = open_registry(ctx)
    v = lg.get(ref)
    label = f"{v.name}@{v.number}"
    results = lg.check_gates(v.ref, to_stage, run_all=not first_failure,
                             on_result=live(not as_json and err.is_terminal))
    _gate_output(results, ref=label, to_stage=to_stage, junit=junit, as_json=as_json,
                 extra={"dry_run": True})
    if not all(r.ok for r in results):
        failed = [r.gate for r in results if r.status.value in ("fail", "error")]
        raise GateFailedError(f"{label} would not enter {to_stage}: {', '.join(failed)} failed")


@click.command()
@click.argument("ref")
@click.option("--stage", required=True, help="The stage the approval is for.")
@click.option("--comment", default="", help="What was reviewed.")
@click.pass_context
def approve(ctx: click.Context, ref: str, stage: str, comment: str) -> None:
    """Approve a version for a stage (approver role; not your own version)."""
    d = open_registry(ctx).approve(ref, stage, comment=comment)
    out.print(f"{d.actor} approved {d.name}@{d.number} for {d.stage} (identified by "
              f"{d.detail.get('identified_by', 'local')})")


@click.command()
@click.argument("ref")
@click.option("--stage", required=True, help="The stage the rejection is for.")
@click.option("--comment", required=True, help="Why.")
@click.pass_context
def reject(ctx: click.Context, ref: str, stage: str, comment: str) -> None:
    """Reject a version for a stage; it blocks the approval gate."""
    d = open_registry(ctx).reject(ref, stage, comment=comment)
    out.print(f"{d.actor} rejected {d.name}@{d.number} for {d.stage}: {d.comment}")


@click.command()
@click.argument("ref")
@click.option("--stage", required=True, help="The stage the waiver is for.")
@click.option("--gate", "gate", required=True, help="The gate to waive.")
@click.option("--reason", required=True, help="Why the failure is accepted.")
@click.option("--expires", required=True, metavar="YYYY-MM-DD", help="Last day it applies.")
@click.pass_context
def waive(ctx: click.Context, ref: str, stage: str, gate: str, reason: str,
          expires: str) -> None:
    """Waive a failing gate for one version and stage (approver role), until a date."""
    from datetime import date

    try:
        until = date.fromisoformat(expires)
    except ValueError:
        raise InvalidInputError(f"--expires {expires!r} is not a YYYY-MM-DD date") from None
    d = open_registry(ctx).waive(ref, stage, gate, reason=reason, expires=until)
    out.print(f"{d.actor} waived {d.gate} for {d.name}@{d.number} → {d.stage} until "
              f"{d.expires}: {d.comment}")


@click.group()
def policy() -> None:
    """The promotion policy: gates per transition and their parameters."""


@policy.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def policy_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective policy (defaults, lockgate.toml and the policy file merged)."""
    from lockgate.gates import GATES

    lg = local_home(ctx)
    s = lg.settings
    effective = {
        f"{a}->{b}": [g.to_dict() for g in s.gates_for(a, b)]
        for i, a in enumerate(s.stages[:-1]) for b in s.stages[i + 1:]
    }
    roles = {k: sorted(v) for k, v in s.roles.items()}
    source = str(s.policy_file) if s.policy_file else str(s.home / "lockgate.toml")
    doc = {
        "source": source,
        "stages": list(s.stages),
        "transitions": {key: [g.to_dict() for g in specs] for key, specs in s.gates.items()},
        "effective": effective,
        "gate_params": {k: dict(v) for k, v in s.gate_params.items()},
        "roles": roles,
        "gates": {name: cls.describe() for name, cls in sorted(GATES.items())},
    }
    if as_json:
        emit_json(doc)
        return
    out.print(f"policy from {source}")
    t = Table(title="gates per transition (most specific key wins)")
    t.add_column("transition")
    t.add_column("gates, in order")
    for key, specs in effective.items():
        t.add_row(key, ", ".join(
            g["gate"] + (f" {({k: x for k, x in g.items() if k != 'gate'})}"
                         if len(g) > 1 else "") for g in specs))
    out.print(t)
    out.print("roles: " + (", ".join(f"{k} = {v}" for k, v in roles.items()) or "none"))


@policy.command("frameworks")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def policy_frameworks(ctx: click.Context, as_json: bool) -> None:
    """Allowed training frameworks and version ranges, against what is installed here."""
    from lockgate.config.settings import load_settings
    from lockgate.convert.frameworks import framework_table

    settings = load_settings(ctx.obj["home"])
    rows = framework_table(settings.frameworks)
    if as_json:
        emit_json([r.__dict__ for r in rows])
        return
    t = Table(title="framework policy" + ("" if settings.frameworks else
                                          " (none set: every framework is allowed)"))
    for c in ("framework", "allowed", "installed", "registration"):
        t.add_column(c)
    for r in rows:
        t.add_row(r.framework, r.rule, r.installed, r.status)
    out.print(t)


@policy.command("check")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.pass_context
def policy_check(ctx: click.Context, file: Path | None) -> None:
    """Validate the policy (or FILE as the policy file); exit 2 naming the bad key."""
    from lockgate.config.settings import load_settings
    from lockgate.gates import check_policy

    home = ctx.obj["home"]
    settings = load_settings(home) if file is None else _with_policy(home, file)
    check_policy(settings)
    n = sum(len(v) for v in settings.gates.values())
    out.print(f"policy OK: {len(settings.gates)} transition key(s), {n} gate entries")


def _with_policy(home: Path | None, file: Path) -> Any:
    import os

    from lockgate.config.settings import load_settings

    if not file.is_file():
        raise InvalidInputError(f"{file} does not exist")
    return load_settings(home, env={**os.environ, "LOCKGATE_POLICY": str(file.resolve())})


COMMANDS: tuple[click.Command, ...] = (promote, gates, approve, reject, waive, policy)
