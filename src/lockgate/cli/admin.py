"""Commands that keep a home: init, users and tokens, whoami, the audit log, history, fsck and
gc."""

from __future__ import annotations

from collections.abc import Sequence

import click
from rich.table import Table

from lockgate.api.facade import Lockgate, init_home
from lockgate.cli.context import local_home, open_registry
from lockgate.cli.parse import parse_duration
from lockgate.cli.render import emit_json, err, out, progress_bars
from lockgate.errors import AuditChainError, DamageFoundError, InvalidInputError
from lockgate.types import EntryKind


@click.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the home folder with a commented lockgate.toml and an empty registry."""
    settings = init_home(ctx.obj["home"])
    out.print(f"initialised {settings.home} (config: {settings.home / 'lockgate.toml'})")


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(ctx: click.Context, name: str, as_json: bool) -> None:
    """Which version held each stage and alias when, who moved it, which gates passed."""
    h = open_registry(ctx).history(name)
    if as_json:
        emit_json(h)
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


@click.group()
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
    reg = open_registry(ctx)
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
    users = open_registry(ctx).users()
    if as_json:
        emit_json([u.to_dict() for u in users])
        return
    t = Table()
    for col in ("user", "roles", "grants", "state"):
        t.add_column(col)
    for u in users:
        t.add_row(u.name, ", ".join(u.roles), ", ".join(f"{m}={r}" for m, r in u.grants),
                  "disabled" if u.disabled else "active")
    out.print(t)


@click.group()
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
    row, text = open_registry(ctx).create_token(user_name, description=description, days=days)
    _print_token(row.id, text)


@token.command("ls")
@click.option("--user", "user_name", default=None, help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_ls(ctx: click.Context, user_name: str | None, as_json: bool) -> None:
    """List tokens (ids, never secrets)."""
    rows = open_registry(ctx).tokens(user_name)
    if as_json:
        emit_json([r.to_dict() for r in rows])
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
    row = open_registry(ctx).revoke_token(token_id)
    out.print(f"token {row.id} of {row.user} revoked at {row.revoked_at}")


@click.command()
@click.pass_context
def whoami(ctx: click.Context) -> None:
    """Who the registry server takes this token for, and the roles it holds."""
    reg = open_registry(ctx)
    if isinstance(reg, Lockgate):
        out.print(f"{reg.settings.user} (local home {reg.settings.home}: no server, no tokens)")
        return
    from lockgate.registry.client import RemoteRegistry

    assert isinstance(reg, RemoteRegistry)
    me = reg.whoami()
    grants = ", ".join(f"{g['model']}={g['role']}" for g in me["grants"])
    out.print(f"{me['name']} at {reg.url}: roles {', '.join(me['roles']) or '-'}"
              + (f"; grants {grants}" if grants else ""))


@click.group()
def audit() -> None:
    """Read and verify the hash-chained audit log."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_verify(ctx: click.Context, as_json: bool) -> None:
    """Recompute the hash chain; exit 8 naming the first broken row if it does not hold."""
    report = open_registry(ctx).audit_verify()
    if as_json:
        emit_json(report.to_dict())
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
    records = open_registry(ctx).audit_log(model=model)
    if as_json:
        emit_json([r.to_dict() for r in records])
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


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fsck(ctx: click.Context, as_json: bool) -> None:
    """Verify every version (blobs, signature, manifest), the audit chain and the artifact
    store. Exit 0 when nothing is damaged (orphans and unfinished writes are warnings), 13
    when something is."""
    with progress_bars(not as_json and err.is_terminal) as bars:
        report = local_home(ctx).fsck(progress=bars)
    if as_json:
        emit_json(report.to_dict())
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


@click.command()
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="Only remove what was last written longer ago than this (30s, 5m, 1h, 0).")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def gc(ctx: click.Context, grace: str, dry_run: bool, as_json: bool) -> None:
    """Remove orphan blobs and unfinished writes older than --grace; never a blob a version
    references. Audited as one artifacts.collected event."""
    result = local_home(ctx).gc(grace_s=parse_duration(grace, "--grace"), dry_run=dry_run)
    if as_json:
        emit_json(result.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for e in result.removed:
        what = "orphan blob" if e.kind is EntryKind.BLOB else "unfinished write"
        out.print(f"{verb} {what} {e.name} ({e.size} bytes)", markup=False)
    out.print(f"{verb} {len(result.removed)} entries, {result.bytes_freed} bytes"
              + (f"; {result.kept} left in place" if result.kept else ""), markup=False)


COMMANDS: tuple[click.Command, ...] = (init, history, user, token, whoami, audit, fsck, gc)
