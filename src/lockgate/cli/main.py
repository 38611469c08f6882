"""The command line: parse → api → render. The only place that prints, exits or draws progress.

Exit codes (also in README.md): 0 ok, 1 a gate or check failed (promote, gates, reproduce),
2 usage/configuration/invalid input, 3 not found, 4 storage or integrity failure, 5 conversion
failed, 6 parity failed, 7 a concurrent change won, 8 audit chain broken, 9 serving failed,
10 supply-chain check failed, 11 access denied, 12 no valid API token, 13 fsck found damage,
70 internal error.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import json
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from lockgate.api.facade import Lockgate, init_home
from lockgate.errors import (
    AuditChainError,
    DamageFoundError,
    Error,
    GateFailedError,
    InvalidInputError,
    NotFoundError,
    ReproductionError,
    ServeError,
    SupplyChainError,
)
from lockgate.types import EntryKind, GateResult, Version

if TYPE_CHECKING:
    from lockgate.registry.client import RemoteRegistry
    from lockgate.serve import HTTPLimits

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, not a verdict (1 means a gate or check failed)


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
    if not enabled:
        yield None
        return
    with RichBar(SpinnerColumn(), TextColumn("{task.description:<8}"), BarColumn(),
                 TimeElapsedColumn(), console=err, transient=True) as bar:
        yield BarProgress(bar)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _open(ctx: click.Context) -> Lockgate | RemoteRegistry:
    """The registry: the server named by --server / LOCKGATE_SERVER, else the local home."""
    reg: Lockgate | RemoteRegistry | None = ctx.obj.get("lg")
    if reg is None:
        url = ctx.obj.get("server")
        if url:
            from lockgate.registry.client import connect

            reg = connect(url)
        else:
            reg = Lockgate.open(ctx.obj["home"])
        ctx.obj["lg"] = reg
        ctx.call_on_close(reg.close)
    return reg


def _local(ctx: click.Context) -> Lockgate:
    """The local home, for commands that run models or read local files."""
    if ctx.obj.get("server"):
        raise InvalidInputError(
            f"`lockgate {ctx.command_path.partition(' ')[2]}` works on a home or database, "
            "not through --server",
            hint="unset LOCKGATE_SERVER, or point LOCKGATE_DATABASE_URL at the shared database")
    reg = _open(ctx)
    assert isinstance(reg, Lockgate)
    return reg


@click.group()
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="lockgate home (default: $LOCKGATE_HOME or ./.lockgate).")
@click.option("--server", envvar="LOCKGATE_SERVER", default=None, metavar="URL",
              help="Use the registry server at URL (token from $LOCKGATE_TOKEN or "
                   "$LOCKGATE_TOKEN_FILE) instead of a local home.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="lockgate")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, server: str | None, debug: bool) -> None:
    """lockgate: register models as parity-checked ONNX, promote them through gates, serve them."""
    ctx.ensure_object(dict)
    ctx.obj["home"] = home
    ctx.obj["server"] = server or None
    ctx.obj["debug"] = debug


@cli.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the home folder with a commented lockgate.toml and an empty registry."""
    settings = init_home(ctx.obj["home"])
    out.print(f"initialised {settings.home} (config: {settings.home / 'lockgate.toml'})")


def _parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InvalidInputError(f"{what} must look like key=value, got {item!r}")
        pairs[k] = v
    return pairs


def _load_factory(spec: str, args: Sequence[str] = ()) -> tuple[object, object]:
    from lockgate.parity.benchmark import load_factory

    return load_factory(spec, args)


@cli.command()
@click.argument("onnx_file", required=False, type=click.Path(path_type=Path))
@click.option("--from", "factory", metavar="MODULE:FUNCTION",
              help="Function returning (model, sample_input) to register.")
@click.option("--name", required=True, help="Model name.")
@click.option("--description", default="", help="Free text stored with the version.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag (repeatable).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=NUMBER",
              help="User metric (repeatable).")
@click.option("--seed", type=int, default=None, help="Seed used for training, recorded.")
@click.option("--opset", type=int, default=None, help="ONNX opset to export with.")
@click.option("--atol", type=float, default=None, help="Parity absolute tolerance.")
@click.option("--rtol", type=float, default=None, help="Parity relative tolerance.")
@click.option("--lock-file", type=click.Path(path_type=Path), default=None,
              help="pylock.toml or requirements.txt with --hash: hashes for the BOM.")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME[=sha256:HEX]",
              help="Training dataset and its fingerprint, for the model card (repeatable).")
@click.option("--considerations", default="",
              help="Known limitations for the model card (paragraphs separated by blank lines).")
@click.option("--arg", "args", multiple=True,
              help="Argument passed to the --from function, recorded in the recipe (repeatable).")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="Reference data (.npy, .npz, .csv, .parquet) profiled for drift monitors.")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@click.pass_context
def register(ctx: click.Context, onnx_file: Path | None, factory: str | None, name: str,
             description: str, tags: tuple[str, ...], metrics: tuple[str, ...],
             seed: int | None, opset: int | None, atol: float | None, rtol: float | None,
             lock_file: Path | None, datasets: tuple[str, ...], considerations: str,
             args: tuple[str, ...], reference: Path | None, as_json: bool) -> None:
    """Register an ONNX file, or the model returned by --from MODULE:FUNCTION."""
    if (onnx_file is None) == (factory is None):
        raise InvalidInputError("give either an .onnx file or --from MODULE:FUNCTION")
    if factory is not None and ctx.obj.get("server"):
        raise InvalidInputError(
            "a remote registration uploads an .onnx file; --from converts in this process",
            hint="export to ONNX first, or point LOCKGATE_DATABASE_URL at the shared database")
    metric_values = _parse_pairs(metrics, "--metric")
    lg = _open(ctx)
    model, sample = (str(onnx_file), None) if onnx_file is not None else _load_factory(
        factory or "", args)
    recipe = None
    if factory is not None:
        from lockgate.reproduce.recipe import make_recipe

        recipe = make_recipe(factory, list(args), Path.cwd())
    with progress_bars(not as_json and err.is_terminal) as bar:
        v = lg.register(
            model, sample, name=name, description=description, tags=_parse_pairs(tags, "--tag"),
            metrics={k: _float(k, x) for k, x in metric_values.items()}, seed=seed,
            opset=opset, atol=atol, rtol=rtol, lock_file=lock_file,
            datasets=[_dataset(d) for d in datasets], considerations=considerations,
            recipe=recipe, reference=reference, progress=bar,
        )
    if as_json:
        _emit_json(v.to_dict())
        return
    out.print(f"registered [bold]{v.name}@{v.number}[/] ({v.framework} {v.framework_version}, "
              f"opset {v.opset}, {v.digest})")
    _print_parity(v)
    if v.signed_by:
        out.print(f"signed with key {v.signed_by[:16]}; files: {', '.join(sorted(v.files))}")
    else:
        out.print("[yellow]unsigned[/] (signing.require_signature = false)")


def _dataset(text: str) -> dict[str, str]:
    name, sep, fingerprint = text.partition("=")
    if not name.strip():
        raise InvalidInputError(f"--dataset {text!r}: expected NAME or NAME=sha256:HEX")
    return {"name": name.strip(), **({"fingerprint": fingerprint.strip()} if sep else {})}


def _float(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"metric {key} is not a number: {text!r}") from None


def _print_parity(v: Version) -> None:
    if v.parity is None:
        out.print("parity: not checked (no source model to compare against)")
        return
    t = Table(title=f"parity over batch sizes {list(v.parity.batch_sizes)}")
    for col in ("output", "max abs err", "max rel err", "atol", "rtol", "result"):
        t.add_column(col)
    for o in v.parity.outputs:
        t.add_row(o.name, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}", f"{o.atol:g}",
                  f"{o.rtol:g}", "pass" if o.passed else f"FAIL ({o.mismatches})")
    out.print(t)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List registered models."""
    summaries = _open(ctx).models()
    if as_json:
        _emit_json([s.to_dict() for s in summaries])
        return
    t = Table()
    for col in ("model", "versions", "latest", "stages", "aliases"):
        t.add_column(col)
    for s in summaries:
        t.add_row(s.name, str(s.versions), str(s.latest),
                  ", ".join(f"{k}: {v}" for k, v in s.stages.items()),
                  ", ".join(f"{k}→{v}" for k, v in s.aliases.items()))
    out.print(t)


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def versions(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the versions of a model."""
    vs = _open(ctx).versions(name)
    if as_json:
        _emit_json([v.to_dict() for v in vs])
        return
    t = Table()
    for col in ("version", "stage", "framework", "opset", "parity", "created", "creator"):
        t.add_column(col)
    for v in vs:
        parity = "n/a" if v.parity is None else ("pass" if v.parity.passed else "FAIL")
        t.add_row(str(v.number), v.stage, f"{v.framework} {v.framework_version}", str(v.opset),
                  parity, v.created_at[:19], v.creator)
    out.print(t)


@cli.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one version: NAME, NAME@V, NAME@STAGE or NAME@ALIAS."""
    lg = _open(ctx)
    v = lg.get(ref)
    runs = lg.gate_runs(v.ref)
    if as_json:
        data = v.to_dict()
        data["gate_runs"] = [dict(r.__dict__) for r in runs]
        _emit_json(data)
        return
    out.print(f"[bold]{v.name}@{v.number}[/]  stage: {v.stage}  digest: {v.digest}")
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
    _print_parity(v)
    out.print(f"files: {', '.join(sorted(v.files)) or '-'}; "
              + (f"signed with key {v.signed_by[:16]}" if v.signed_by else "unsigned"))
    for r in runs:
        status = "passed" if r.passed else "refused"
        out.print(f"gates {r.from_stage}→{r.to_stage} {status} ({r.created_at[:19]}, {r.actor}):")
        for res in r.results:
            out.print(f"  {res['gate']}: {res['status']} — {res['message']}")


def _gate_table(title: str, results: Sequence[GateResult]) -> Table:
    t = Table(title=title)
    for col in ("gate", "status", "message"):
        t.add_column(col)
    colors = {"pass": "green", "waived": "yellow", "skipped": "dim", "fail": "red",
              "error": "red"}
    for r in results:
        c = colors.get(r.status.value, "")
        t.add_row(r.gate, f"[{c}]{r.status.value}[/]" if c else r.status.value, r.message)
    return t


def _gate_output(results: Sequence[GateResult], *, ref: str, to_stage: str,
                 junit: Path | None, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    from lockgate.gates.junit import write_junit

    if junit is not None:
        write_junit(junit, results, suite=f"lockgate gates {ref} -> {to_stage}",
                    classname=f"lockgate.gates.{to_stage}")
    if as_json:
        _emit_json({**(extra or {}), "model": ref, "to": to_stage,
                    "passed": all(r.ok for r in results),
                    "gates": [r.to_dict() for r in results]})
    else:
        out.print(_gate_table(f"{ref} → {to_stage}", results))


def _live(enabled: bool) -> Any:
    """A per-gate progress line on stderr while gates run (terminal only)."""
    if not enabled:
        return None

    def show(result: GateResult) -> None:
        err.print(f"  {result.gate}: {result.status.value}", highlight=False)

    return show


@cli.command()
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
    lg = _open(ctx)
    v = lg.get(ref)
    label = f"{v.name}@{v.number}"
    try:
        result = lg.promote(v.ref, to_stage, run_all=run_all,
                            on_result=_live(not as_json and err.is_terminal))
    except GateFailedError as exc:
        _gate_output(exc.results, ref=label, to_stage=to_stage, junit=junit, as_json=as_json,
                     extra={"promoted": False})
        raise
    _gate_output(result.results, ref=label, to_stage=to_stage, junit=junit, as_json=as_json,
                 extra={"promoted": True, "from": result.from_stage,
                        "retired": list(result.retired), "alias": result.alias})
    if as_json:
        return
    out.print(f"{label}: {result.from_stage} → [bold]{result.to_stage}[/]")
    for n in result.retired:
        out.print(f"{result.version.name}@{n} retired")
    if result.alias:
        out.print(f"alias {result.alias} → {label}")


@cli.command()
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
    lg = _open(ctx)
    v = lg.get(ref)
    label = f"{v.name}@{v.number}"
    results = lg.check_gates(v.ref, to_stage, run_all=not first_failure,
                             on_result=_live(not as_json and err.is_terminal))
    _gate_output(results, ref=label, to_stage=to_stage, junit=junit, as_json=as_json,
                 extra={"dry_run": True})
    if not all(r.ok for r in results):
        failed = [r.gate for r in results if r.status.value in ("fail", "error")]
        raise GateFailedError(f"{label} would not enter {to_stage}: {', '.join(failed)} failed")


@cli.command()
@click.argument("ref")
@click.option("--stage", required=True, help="The stage the approval is for.")
@click.option("--comment", default="", help="What was reviewed.")
@click.pass_context
def approve(ctx: click.Context, ref: str, stage: str, comment: str) -> None:
    """Approve a version for a stage (approver role; not your own version)."""
    d = _open(ctx).approve(ref, stage, comment=comment)
    out.print(f"{d.actor} approved {d.name}@{d.number} for {d.stage}")


@cli.command()
@click.argument("ref")
@click.option("--stage", required=True, help="The stage the rejection is for.")
@click.option("--comment", required=True, help="Why.")
@click.pass_context
def reject(ctx: click.Context, ref: str, stage: str, comment: str) -> None:
    """Reject a version for a stage; it blocks the approval gate."""
    d = _open(ctx).reject(ref, stage, comment=comment)
    out.print(f"{d.actor} rejected {d.name}@{d.number} for {d.stage}: {d.comment}")


@cli.command()
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
    d = _open(ctx).waive(ref, stage, gate, reason=reason, expires=until)
    out.print(f"{d.actor} waived {d.gate} for {d.name}@{d.number} → {d.stage} until "
              f"{d.expires}: {d.comment}")


@cli.group()
def policy() -> None:
    """The promotion policy: gates per transition and their parameters."""


@policy.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def policy_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective policy (defaults, lockgate.toml and the policy file merged)."""
    from lockgate.gates import GATES

    lg = _local(ctx)
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
        _emit_json(doc)
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
        _emit_json([r.__dict__ for r in rows])
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


@cli.command()
@click.argument("ref")
@click.option("--env", "env_kind", type=click.Choice(["fresh", "current"]), default="fresh",
              show_default=True,
              help="fresh: a new venv from the recorded lock; current: this interpreter.")
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="The git repository holding the recorded commit (default: as recorded).")
@click.option("--lockgate-spec", default=None,
              help="What to pip install as lockgate in a fresh venv (default: this one).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reproduce(ctx: click.Context, ref: str, env_kind: str, source: Path | None,
              lockgate_spec: str | None, as_json: bool) -> None:
    """Rebuild a version from its recorded recipe and compare with the stored ONNX; the result
    is stored for the reproducible gate. Exit 1 when it does not reproduce."""
    from lockgate.reproduce.recipe import reproduce as run_reproduction

    lg = _local(ctx)
    v = lg.get(ref)
    with err.status(f"rebuilding {v.name}@{v.number} ({env_kind} environment)"):
        detail = run_reproduction(lg, v, source=source, env=env_kind,
                                  lockgate_spec=lockgate_spec)
    if as_json:
        _emit_json(detail)
    else:
        out.print(f"{v.name}@{v.number}: {'reproduced' if detail['passed'] else 'NOT reproduced'}"
                  f" — {detail['message']} ({detail['seconds']} s)")
    if not detail["passed"]:
        raise ReproductionError(f"{v.name}@{v.number} did not reproduce: {detail['message']}")


@cli.command("_rebuild", hidden=True)
@click.argument("entry")
@click.argument("opset", type=int)
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("args", nargs=-1)
def rebuild_child(entry: str, opset: int, out: Path, args: tuple[str, ...]) -> None:
    """The child side of `lockgate reproduce` (see lockgate.reproduce.rebuild)."""
    from lockgate.reproduce.rebuild import rebuild

    rebuild(entry, opset, out, args)


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(ctx: click.Context, name: str, as_json: bool) -> None:
    """Which version held each stage and alias when, who moved it, which gates passed."""
    h = _open(ctx).history(name)
    if as_json:
        _emit_json(h)
        return
    t = Table(title=f"{name}: stages and aliases held")
    for col in ("stage/alias", "version", "from", "until", "moved by"):
        t.add_column(col)
    for row in h["holdings"]:
        t.add_row(f"{row['kind']} {row['name']}", str(row["version"]), row["from"][:19],
                  (row["until"] or "now")[:19], row["by"])
    out.print(t)
    t = Table(title=f"{name}: timeline")
    for col in ("at", "version", "what", "by", "gates"):
        t.add_column(col)
    for row in h["timeline"]:
        t.add_row(row["at"][:19], str(row["version"] or "-"), row["detail"], row["actor"],
                  ", ".join(row["gates"]))
    out.print(t)


@cli.command()
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
    lg = _open(ctx)
    if target == "status":
        deps = lg.deployments()
        if as_json:
            _emit_json({n: d.to_dict() for n, d in deps.items()})
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
        _emit_json(d.to_dict())
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


@cli.command()
@click.argument("name")
@click.option("--reason", default="", help="Why, for the audit log.")
@click.pass_context
def rollback(ctx: click.Context, name: str, reason: str) -> None:
    """Drop the canary, or return to the previous stable version; servers switch within a poll
    interval (the previous version stays loaded for the grace period)."""
    d = _open(ctx).rollback(name, reason=reason)
    out.print(f"{d.name}: stable {d.stable}, state {d.state} (generation {d.generation})")


@cli.group()
def alias() -> None:
    """Set, remove or list aliases (mutable pointers to versions)."""


@alias.command("set")
@click.argument("name")
@click.argument("alias_name")
@click.argument("version", type=int)
@click.pass_context
def alias_set(ctx: click.Context, name: str, alias_name: str, version: int) -> None:
    """Point ALIAS_NAME of model NAME at VERSION."""
    _open(ctx).set_alias(name, alias_name, version)
    out.print(f"{name}@{alias_name} → {name}@{version}")


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name")
@click.pass_context
def alias_rm(ctx: click.Context, name: str, alias_name: str) -> None:
    """Remove ALIAS_NAME from model NAME."""
    _open(ctx).set_alias(name, alias_name, None)
    out.print(f"removed {name}@{alias_name}")


@alias.command("ls")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alias_ls(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the aliases of model NAME."""
    found = _open(ctx).aliases(name)
    if as_json:
        _emit_json(found)
        return
    for a, n in sorted(found.items()):
        out.print(f"{a} → {name}@{n}")


@cli.command()
@click.argument("refs", nargs=-1)
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080; 0 picks a free one).")
@click.option("--poll", "poll_s", type=float, default=0.5, show_default=True,
              help="Seconds between looks at the deployments (without REFS).")
@click.option("--grace", "grace_s", type=float, default=300.0, show_default=True,
              help="Seconds a replaced version stays loaded for an instant rollback.")
@click.option("--model", "only", multiple=True,
              help="Serve only this model's deployment (repeatable; without REFS).")
@click.option("--request-log", type=click.Path(path_type=Path), default=None,
              help="Folder for sampled request logs (overrides [serve] request_log).")
@click.option("--request-log-rate", type=float, default=None,
              help="Share of requests logged (default 0.01).")
@click.option("--ui", "with_ui", is_flag=True,
              help="Also serve the web console at /ui, with this server's live figures.")
@click.option("--no-auth", is_flag=True,
              help="With --ui: no login, act as the home's user (loopback only).")
@click.option("--insecure-no-auth", is_flag=True,
              help="Allow a bind off loopback although the home has no users (anyone who "
                   "reaches the port can infer and read captured production data).")
@click.option("--http", "http_layer", type=click.Choice(["lockgate", "uvicorn"]),
              default="lockgate", show_default=True,
              help="HTTP layer: lockgate's own (infer requests skip ASGI) or uvicorn.")
@click.option("--inline-below-us", type=float, default=None,
              help="Run a version's requests on the event loop when they measure under this "
                   "many microseconds (default 1000; 0: always on worker threads).")
@click.pass_context
def serve(ctx: click.Context, refs: tuple[str, ...], host: str | None, port: int | None,
          poll_s: float, grace_s: float, only: tuple[str, ...], request_log: Path | None,
          request_log_rate: float | None, with_ui: bool, no_auth: bool,
          insecure_no_auth: bool, http_layer: str, inline_below_us: float | None) -> None:
    """Serve models over the Open Inference Protocol v2: the versions named, or else every
    model's deployment (its production version unless `lockgate deploy` says otherwise),
    following changes without a restart."""
    from lockgate.serve import run_server

    if poll_s <= 0 or grace_s < 0:
        raise InvalidInputError("--poll must be positive and --grace not negative")
    if inline_below_us is not None and inline_below_us < 0:
        raise InvalidInputError("--inline-below-us cannot be negative")
    lg = _local(ctx)
    h = host or lg.settings.serve_host
    _check_data_plane_bind(lg, h, insecure_no_auth)
    if request_log is not None or request_log_rate is not None:
        from dataclasses import replace

        lg.settings = replace(
            lg.settings, request_log=request_log or lg.settings.request_log,
            request_log_rate=(lg.settings.request_log_rate if request_log_rate is None
                              else request_log_rate))
    app = lg.create_app(refs, poll_s=poll_s, grace_s=grace_s, models=only,
                        inline_below_s=None if inline_below_us is None else inline_below_us / 1e6)
    p = lg.settings.serve_port if port is None else port
    if with_ui:
        from lockgate.web import attach_console

        metrics = app.state.metrics
        attach_console(
            app, lg, auth=_auth_on(lg, h, no_auth),
            metrics_source=lambda: metrics.render().decode("utf-8"))
    names = ", ".join(f"{v.name}@{v.number}" for v in lg.serve_refs(refs)) if refs else \
        ", ".join(f"{n}@{d.stable}" for n, d in lg.deployments().items()
                  if not only or n in only)

    def started(bound_host: str, bound_port: int) -> None:
        err.print(f"serving {names} on http://{bound_host}:{bound_port}/v2 (Ctrl-C stops)")

    try:
        run_server(app, host=h, port=p, on_started=started, http=http_layer,
                   limits=_http_limits(lg), allowed_hosts=_local_names(lg, h))
    except KeyboardInterrupt:
        err.print("stopped")


def _http_limits(lg: Lockgate) -> HTTPLimits:
    """The serve_* HTTP limits of the settings, for run_server."""
    from lockgate.serve import HTTPLimits

    s = lg.settings
    return HTTPLimits(
        max_head_bytes=s.serve_max_head_bytes, max_headers=s.serve_max_headers,
        head_timeout_s=s.serve_head_timeout_s, body_timeout_s=s.serve_body_timeout_s,
        min_body_rate=s.serve_min_body_rate, keep_alive_s=s.serve_keep_alive_s,
        max_connections=s.serve_max_connections)


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _local_names(lg: Lockgate, host: str) -> frozenset[str] | None:
    """The host names a zero-config server (loopback, a home without users) answers for, so
    that a page re-pointed by DNS to 127.0.0.1 cannot reach it (421); None otherwise."""
    if host not in _LOOPBACK or lg.users():
        return None
    return frozenset({"127.0.0.1", "localhost", "::1", "[::1]", host})


def _check_data_plane_bind(lg: Lockgate, host: str, insecure: bool) -> None:
    """Off loopback, a server must be able to check tokens: the home needs users (capture
    then needs the monitoring role) unless the operator insists; infer stays open unless
    serve.auth = "token", which is said."""
    if host in _LOOPBACK:
        return
    if not lg.users():
        if not insecure:
            raise InvalidInputError(
                f"no users: serving on {host} would let anyone who reaches the port infer "
                "and read captured production inputs and outputs",
                hint="add users and tokens (`lockgate user add NAME --role inference`) and "
                     "set [serve] auth = \"token\", bind 127.0.0.1, or pass "
                     "--insecure-no-auth")
        err.print(f"warning: serving on {host} without authentication (--insecure-no-auth)")
    elif lg.settings.serve_auth != "token":
        err.print(f"warning: infer requests on {host} need no token (set [serve] auth = "
                  "\"token\" to require one)")


def _auth_on(lg: Lockgate, host: str, no_auth: bool) -> bool:
    """Tokens are required once any user exists, and always off loopback; a home with no
    users served on loopback is one person's (zero-config), as the CLI is."""
    if host not in _LOOPBACK:
        if no_auth:
            raise InvalidInputError(f"--no-auth serves without access control; bind it to "
                                    f"127.0.0.1, not {host}")
        if not lg.users():
            raise InvalidInputError(
                f"no users: serving on {host} needs tokens",
                hint="create an admin with `lockgate user add NAME --role admin`")
        return True
    return not no_auth and bool(lg.users())


@cli.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", type=int, default=8000, show_default=True,
              help="Port (0 picks a free one).")
@click.option("--no-auth", is_flag=True,
              help="Act as the home's user with every role, no tokens (loopback only).")
@click.option("--max-upload-mb", type=int, default=2048, show_default=True,
              help="Largest registration upload.")
@click.option("--access-log", is_flag=True,
              help="Log every request line (paths only: headers and tokens never are).")
@click.pass_context
def server(ctx: click.Context, host: str, port: int, no_auth: bool,
           max_upload_mb: int, access_log: bool) -> None:
    """Serve the registry HTTP API (OpenAPI at /openapi.json) over this home or database:
    tokens and roles required unless --no-auth on a loopback address."""
    from lockgate.registry import create_registry_app
    from lockgate.serve import run_server

    if max_upload_mb <= 0:
        raise InvalidInputError("--max-upload-mb must be positive")
    lg = _local(ctx)
    auth = _auth_on(lg, host, no_auth)
    app = create_registry_app(lg, auth=auth, max_upload_bytes=max_upload_mb << 20)

    def started(bound_host: str, bound_port: int) -> None:
        mode = "tokens required" if auth else f"no auth: acting as {lg.settings.user}"
        err.print(f"registry API on http://{bound_host}:{bound_port}/api/v1 ({mode}; "
                  f"OpenAPI at /openapi.json; Ctrl-C stops)")

    try:
        run_server(app, host=host, port=port, on_started=started, limits=_http_limits(lg),
                   log_level="info" if access_log else "warning", access_log=access_log)
    except KeyboardInterrupt:
        err.print("stopped")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", type=int, default=8090, show_default=True,
              help="Port (0 picks a free one).")
@click.option("--no-auth", is_flag=True,
              help="No login: act as the home's user with every role (loopback only).")
@click.option("--serving-url", default=None, metavar="URL",
              help="A `lockgate serve` to read live figures from (its /metrics).")
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, no_auth: bool,
       serving_url: str | None) -> None:
    """Serve the web console: models, versions, gates, approvals, deployments, drift and the
    audit trail. Login with an API token once users exist."""
    from lockgate.serve import run_server
    from lockgate.web import create_ui_app

    lg = _local(ctx)
    auth = _auth_on(lg, host, no_auth)
    source = None
    if serving_url is not None:
        if not serving_url.startswith(("http://", "https://")):
            raise InvalidInputError("--serving-url must start with http:// or https://")
        import httpx

        url = serving_url.rstrip("/") + "/metrics"

        def source() -> str:
            return httpx.get(url, timeout=2.0).text

    app = create_ui_app(lg, auth=auth, metrics_source=source)

    def started(bound_host: str, bound_port: int) -> None:
        mode = "login with a token" if auth else f"no login: acting as {lg.settings.user}"
        err.print(f"console on http://{bound_host}:{bound_port}/ui/ ({mode}; Ctrl-C stops)")

    try:
        run_server(app, host=host, port=port, on_started=started, limits=_http_limits(lg))
    except KeyboardInterrupt:
        err.print("stopped")


@cli.group()
def user() -> None:
    """Registry users and their roles (viewer, developer, approver, deployer, admin)."""


def _grants(items: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        model, sep, role = item.partition("=")
        if not sep or not model or not role:
            raise InvalidInputError(f"--grant must look like MODEL_PATTERN=ROLE, got {item!r}")
        out.append((model, role))
    return out


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, help="Global role (repeatable).")
@click.option("--grant", "grants", multiple=True, metavar="MODEL=ROLE",
              help="A role for the models matching a pattern, e.g. fraud-*=deployer.")
@click.option("--disabled", is_flag=True, help="Keep the user but refuse its tokens.")
@click.option("--token/--no-token", "with_token", default=True, show_default=True,
              help="Also create an API token and print it once.")
@click.pass_context
def user_add(ctx: click.Context, name: str, roles: tuple[str, ...], grants: tuple[str, ...],
             disabled: bool, with_token: bool) -> None:
    """Create a user, or replace its roles and grants."""
    reg = _open(ctx)
    u = reg.add_user(name, list(roles), grants=_grants(grants), disabled=disabled)
    # the token alone goes to stdout, so TOKEN=$(lockgate user add ...) captures it
    console = err if with_token and not disabled else out
    console.print(f"user {u.name}: roles {', '.join(u.roles) or '-'}"
                  + (f"; grants {', '.join(f'{m}={r}' for m, r in u.grants)}" if u.grants
                     else "")
                  + (" (disabled)" if u.disabled else ""))
    if with_token and not disabled:
        row, token = reg.create_token(name, description="created with the user")
        _print_token(row.id, token)


def _print_token(token_id: str, token: str) -> None:
    err.print(f"token {token_id} (shown once; store it in a secret manager):", highlight=False)
    click.echo(token)


@user.command("ls")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def user_ls(ctx: click.Context, as_json: bool) -> None:
    """List users."""
    users = _open(ctx).users()
    if as_json:
        _emit_json([u.to_dict() for u in users])
        return
    t = Table()
    for col in ("user", "roles", "grants", "state"):
        t.add_column(col)
    for u in users:
        t.add_row(u.name, ", ".join(u.roles), ", ".join(f"{m}={r}" for m, r in u.grants),
                  "disabled" if u.disabled else "active")
    out.print(t)


@cli.group()
def token() -> None:
    """API tokens: random, shown once, stored as a hash."""


@token.command("create")
@click.argument("user_name")
@click.option("--description", default="", help="What the token is for.")
@click.option("--days", type=int, default=None, help="Expire after this many days.")
@click.pass_context
def token_create(ctx: click.Context, user_name: str, description: str,
                 days: int | None) -> None:
    """Create a token for a user and print it once."""
    row, text = _open(ctx).create_token(user_name, description=description, days=days)
    _print_token(row.id, text)


@token.command("ls")
@click.option("--user", "user_name", default=None, help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_ls(ctx: click.Context, user_name: str | None, as_json: bool) -> None:
    """List tokens (ids, never secrets)."""
    rows = _open(ctx).tokens(user_name)
    if as_json:
        _emit_json([r.to_dict() for r in rows])
        return
    t = Table()
    for col in ("id", "user", "created", "expires", "state", "description"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.id, r.user, r.created_at[:19], (r.expires_at or "never")[:19],
                  "revoked" if r.revoked_at else "active", r.description)
    out.print(t)


@token.command("revoke")
@click.argument("token_id")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a token; it is refused from the next request on."""
    row = _open(ctx).revoke_token(token_id)
    out.print(f"token {row.id} of {row.user} revoked at {row.revoked_at}")


@cli.command()
@click.pass_context
def whoami(ctx: click.Context) -> None:
    """Who the registry server takes this token for, and the roles it holds."""
    reg = _open(ctx)
    if isinstance(reg, Lockgate):
        out.print(f"{reg.settings.user} (local home {reg.settings.home}: no server, no tokens)")
        return
    me = reg.whoami()
    grants = ", ".join(f"{g['model']}={g['role']}" for g in me["grants"])
    out.print(f"{me['name']} at {reg.url}: roles {', '.join(me['roles']) or '-'}"
              + (f"; grants {grants}" if grants else ""))


@cli.group()
def keys() -> None:
    """Signing keys."""


@keys.command("generate")
@click.argument("private_key", type=click.Path(path_type=Path))
@click.option("--public-key", type=click.Path(path_type=Path), default=None,
              help="Where to write the public key (default: PRIVATE_KEY with .pub).")
def keys_generate(private_key: Path, public_key: Path | None) -> None:
    """Write a new EC P-256 key pair (PEM; the private key readable by you only)."""
    from lockgate.supplychain.signing import generate_keypair, key_id

    public = public_key or private_key.with_suffix(".pub")
    generate_keypair(private_key, public)
    out.print(f"private key {private_key}\npublic key  {public}\nkey id      {key_id(public)}")
    out.print("point lockgate.toml at them: [signing] private_key = ..., public_keys = [...]")


@cli.group()
def vulndb() -> None:
    """Offline vulnerability data (OSV)."""


@vulndb.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def vulndb_import(ctx: click.Context, source: Path, as_json: bool) -> None:
    """Import an OSV snapshot: osv.dev's PyPI all.zip, or a folder of OSV JSON files."""
    snap = _local(ctx).import_vulns(source)
    if as_json:
        _emit_json(snap.to_dict())
        return
    out.print(f"imported {snap.records} PyPI records, snapshot of {snap.snapshot_date[:10]} "
              f"(sha256 {snap.sha256[:16]})")


@vulndb.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def vulndb_status(ctx: click.Context, as_json: bool) -> None:
    """Show the current snapshot and its age."""
    from datetime import UTC, datetime

    from lockgate.supplychain.vulns.policy import snapshot_age_days

    lg = _local(ctx)
    snap = lg.vuln_snapshot()
    if snap is None:
        raise NotFoundError("no vulnerability data imported",
                            hint="lockgate vulndb import all.zip")
    age = snapshot_age_days(snap, datetime.now(UTC).date())
    if as_json:
        _emit_json({**snap.to_dict(), "age_days": age,
                    "max_age_days": lg.settings.vuln_max_age_days})
        return
    out.print(f"snapshot {snap.snapshot_date[:10]} ({age} days old, limit "
              f"{lg.settings.vuln_max_age_days}), {snap.records} records, sha256 "
              f"{snap.sha256[:16]}, imported {snap.imported_at[:19]}")


@cli.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def scan(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Match a version's packages against the imported OSV data; exit 10 when the policy
    would block it."""
    lg = _local(ctx)
    v = lg.get(ref)
    report = lg.vulnerability_report(v.ref)
    if as_json:
        _emit_json(report.to_dict())
    else:
        snap = report.snapshot
        if snap is not None:
            out.print(f"OSV snapshot {snap.snapshot_date[:10]}: {report.age_days} days old "
                      f"(limit {report.max_age_days}), sha256 {snap.sha256[:16]}")
        if report.decisions:
            t = Table(title=f"{v.name}@{v.number}: {len(report.decisions)} finding(s)")
            for col in ("package", "version", "id", "severity", "fixed in", "decision"):
                t.add_column(col)
            for d in report.decisions:
                f = d.finding
                t.add_row(f.package, f.version, f.vuln_id, f.severity.value,
                          ", ".join(f.fixed_versions) or "-",
                          d.outcome + (f" ({d.note})" if d.note else ""))
            out.print(t)
        elif snap is not None:
            out.print(f"{v.name}@{v.number}: no known vulnerabilities")
    if not report.passed:
        raise SupplyChainError(f"{v.name}@{v.number}: " + "; ".join(report.problems()))


@cli.command()
@click.argument("ref")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.pass_context
def evidence(ctx: click.Context, ref: str, out_dir: Path) -> None:
    """Write a version's evidence pack (model, BOM, card, signature, gate results, audit
    events, SHA256SUMS, VERIFY.md) into a new folder."""
    folder = _open(ctx).export_evidence(ref, out_dir)
    out.print(f"evidence written to {folder}; see {folder / 'VERIFY.md'}")


@cli.group()
def audit() -> None:
    """Read and verify the hash-chained audit log."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_verify(ctx: click.Context, as_json: bool) -> None:
    """Recompute the hash chain; exit 8 naming the first broken row if it does not hold."""
    report = _open(ctx).audit_verify()
    if as_json:
        _emit_json(report.to_dict())
    elif report.ok:
        out.print(f"audit chain intact: {report.count} events")
    if not report.ok:
        raise AuditChainError(f"audit chain broken at row {report.first_broken}: {report.reason}")


@audit.command("log")
@click.option("--model", default=None, help="Only events of this model.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_log(ctx: click.Context, model: str | None, as_json: bool) -> None:
    """List audit events, oldest first."""
    records = _open(ctx).audit_log(model=model)
    if as_json:
        _emit_json([r.to_dict() for r in records])
        return
    t = Table()
    for col in ("#", "time", "event", "actor", "model", "details"):
        t.add_column(col)
    for r in records:
        target = f"{r.model}@{r.version}" if r.version is not None else (r.model or "")
        details = ", ".join(f"{k}={v}" for k, v in r.payload.items() if k not in (
            "results", "model", "version"))
        t.add_row(str(r.seq), r.ts[:19], r.type, r.actor, target, details[:80])
    out.print(t)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fsck(ctx: click.Context, as_json: bool) -> None:
    """Verify every version (blobs, signature, manifest), the audit chain and the artifact
    store. Exit 0 when nothing is damaged (orphans and unfinished writes are warnings), 13
    when something is."""
    with progress_bars(not as_json and err.is_terminal) as bars:
        report = _local(ctx).fsck(progress=bars)
    if as_json:
        _emit_json(report.to_dict())
    else:
        for p in report.problems:
            label = "damage " if p.kind.is_damage else "warning"
            out.print(f"{label}  {p.kind}  {p.subject}: {p.message}", markup=False)
        out.print(f"checked {report.versions} versions, {report.blobs} blobs, "
                  f"{report.audit_events} audit events: {len(report.damage)} damaged, "
                  f"{len(report.warnings)} warnings", markup=False)
        if report.warnings and not report.damaged:
            out.print("orphans and unfinished writes are removed by `lockgate gc`",
                      markup=False)
    if report.damaged:
        raise DamageFoundError(f"fsck found {len(report.damage)} damaged entries",
                               hint="restore the named blobs or database rows from a backup, "
                                    "or register the affected versions again")


@cli.command()
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="Only remove what was last written longer ago than this (30s, 5m, 1h, 0).")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def gc(ctx: click.Context, grace: str, dry_run: bool, as_json: bool) -> None:
    """Remove orphan blobs and unfinished writes older than --grace; never a blob a version
    references. Audited as one artifacts.collected event."""
    result = _local(ctx).gc(grace_s=_duration(grace, "--grace"), dry_run=dry_run)
    if as_json:
        _emit_json(result.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for e in result.removed:
        what = "orphan blob" if e.kind is EntryKind.BLOB else "unfinished write"
        out.print(f"{verb} {what} {e.name} ({e.size} bytes)", markup=False)
    out.print(f"{verb} {len(result.removed)} entries, {result.bytes_freed} bytes"
              + (f"; {result.kept} left in place" if result.kept else ""), markup=False)


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo's temporary home and print its path.")
def demo(keep: bool) -> None:
    """Train, register, promote and serve a PyTorch and a scikit-learn model, end to end."""
    from lockgate.cli.demo import run_demo

    run_demo(_DemoPrinter(), keep=keep)


class _DemoPrinter:
    """Renders the demo's steps."""

    def step(self, title: str) -> None:
        out.rule(f"[bold]{title}")

    def say(self, text: str) -> None:
        out.print(text)

    def version(self, v: Version) -> None:
        out.print(f"registered [bold]{v.name}@{v.number}[/] from {v.framework} "
                  f"{v.framework_version} → ONNX opset {v.opset} ({v.digest.value[:19]}…)")
        _print_parity(v)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        t = Table(title=title)
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*r)
        out.print(t)

    def progress(self) -> Any:
        return progress_bars(err.is_terminal)


# -- observability ---------------------------------------------------------------------------
@cli.group()
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
    record = _local(ctx).set_reference(ref, data, sample=sample)
    if as_json:
        _emit_json(record)
        return
    out.print(f"{ref}: reference profile of {record['rows']} rows, "
              f"{len(record['features'])} features ({record['profile'][:19]})")


@reference.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reference_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """The reference profile of REF, feature by feature."""
    profile = _local(ctx).reference_profile(ref)
    if profile is None:
        raise NotFoundError(f"{ref} has no reference profile",
                            hint="lockgate reference set NAME@V DATA")
    if as_json:
        _emit_json({"rows": profile.rows, "source": profile.source,
                    "features": profile.features})
        return
    t = Table(title=f"{ref}: {profile.rows} rows from {profile.source}")
    for c in ("feature", "kind", "count", "mean", "std", "min", "max"):
        t.add_column(c)
    for name, f in profile.features.items():
        t.add_row(name, str(f["kind"]), str(f["count"]),
                  *(f"{f[k]:.4g}" if k in f else "-" for k in ("mean", "std", "min", "max")))
    out.print(t)


def _duration(text: str, flag: str = "--every") -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise InvalidInputError(f"{flag} {text!r}: expected a duration such as 30s, 5m or 1h")


@cli.command()
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

    interval = _duration(every) if every else None
    lg = _local(ctx)
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
            err.print(f"error: {exc.diagnostics()} (trying again in {every})", markup=False)
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
        _emit_json({k: v for k, v in result.items() if k != "drift"} | {
            "drift": {k: v for k, v in result["drift"].items() if k != "current"}})
        return
    drift, slo = result["drift"], result["slo"]
    out.print(f"{result['model']}@{result['version']} on {result['server']}: "
              f"[bold]{result['state']}[/] (rows {drift.get('rows', 0)}, "
              f"requests {slo['requests']})")
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


@cli.command()
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
    model = _load_factory(factory, args)[0] if factory else None
    result = _local(ctx).compare(ref, model, batch=batch, seconds=seconds,
                                compile_=not no_compile)
    if as_json:
        _emit_json(result)
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


@cli.command()
@click.argument("ref")
@click.option("--html", "html_out", type=click.Path(path_type=Path), required=True,
              help="Where to write the self-contained HTML page.")
@click.pass_context
def report(ctx: click.Context, ref: str, html_out: Path) -> None:
    """Write REF's model report: card, lineage, parity, gates, serving latency, drift per
    feature with histograms, and the audit trail — one HTML file, no network fetches."""
    from lockgate.web.report import write_report

    path = write_report(_local(ctx), ref, html_out)
    out.print(f"report written to {path}")


# -- deployment files --------------------------------------------------------------------------
@cli.group()
def k8s() -> None:
    """Kubernetes manifests for lockgate servers."""


@k8s.command("render")
@click.argument("name")
@click.option("--image", default="lockgate:latest", show_default=True)
@click.option("--namespace", default="default", show_default=True)
@click.option("--replicas", type=int, default=2, show_default=True)
@click.option("--max-replicas", type=int, default=10, show_default=True)
@click.option("--cpu-target", type=int, default=70, show_default=True,
              help="HPA target CPU utilisation, percent.")
@click.option("--out", "target", type=click.Path(path_type=Path), default=None,
              help="Write the YAML here instead of printing it.")
@click.pass_context
def k8s_render(ctx: click.Context, name: str, image: str, namespace: str, replicas: int,
               max_replicas: int, cpu_target: int, target: Path | None) -> None:
    """Deployment, Service, HPA, PodDisruptionBudget and ConfigMap serving model NAME from the
    shared registry (database URL and object-store credentials as Secret references)."""
    from lockgate.config.settings import load_settings
    from lockgate.rollout.manifests import K8sOptions, render_manifests, to_yaml

    settings = load_settings(ctx.obj["home"])
    text = to_yaml(render_manifests(name, K8sOptions(
        image=image, namespace=namespace, replicas=replicas, max_replicas=max_replicas,
        cpu_target=cpu_target, artifact_url=settings.artifact_url,
        s3_endpoint_url=settings.s3_endpoint_url)))
    if target is None:
        click.echo(text, nl=False)
        return
    target.write_text(text, encoding="utf-8")
    out.print(f"wrote {target}")


@cli.group()
def docker() -> None:
    """Container images for lockgate servers."""


@docker.command("render")
@click.option("--requirements", type=click.Path(path_type=Path), required=True,
              help="requirements.txt with every package pinned (==) and hashed (--hash).")
@click.option("--python", "python_version", default="3.11", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the Dockerfile here instead of printing it.")
def docker_render(requirements: Path, python_version: str, out: Path | None) -> None:
    """A Dockerfile that installs exactly the pinned, hashed requirements."""
    from lockgate.rollout.manifests import render_dockerfile

    text = render_dockerfile(requirements, python=python_version)
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI, turn lockgate errors into one line and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="lockgate",
                 standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Error as exc:
        if debug:
            traceback.print_exc()
        err.print(f"error: {exc.diagnostics()}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        err.print(f"error: internal error: {type(exc).__name__}: {exc} "
                  "(run with --debug for a traceback)", markup=False)
        sys.exit(EXIT_INTERNAL)


