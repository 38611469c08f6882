"""Supply chain: signing keys, the offline vulnerability data, scan, and evidence packs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from lockgate.cli.context import local_home, open_registry
from lockgate.cli.render import emit_json, err, out, progress_bars
from lockgate.errors import NotFoundError, SupplyChainError
from lockgate.types import VulnSnapshot


@click.group()
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


@click.group()
def vulndb() -> None:
    """Offline vulnerability data (OSV)."""


@vulndb.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def vulndb_import(ctx: click.Context, source: Path, as_json: bool) -> None:
    """Import an OSV snapshot: osv.dev's PyPI all.zip, or a folder of OSV JSON files."""
    snap = local_home(ctx).import_vulns(source)
    if as_json:
        emit_json(snap.to_dict())
        return
    out.print(f"imported {snap.records} PyPI records, snapshot of {snap.snapshot_date[:10]} "
              f"(sha256 {snap.sha256[:16]}), {_shape(snap)}", markup=False)


def _shape(snap: VulnSnapshot) -> str:
    return ("shaped as a whole PyPI export" if snap.export else
            "not a whole PyPI export (the vulnerabilities gate refuses it unless "
            "allow_partial is set)")


@vulndb.command("update")
@click.option("--url", default=None, metavar="URL",
              help="Where to download the OSV export (default: osv.dev's PyPI all.zip).")
@click.option("--sha256", default=None, metavar="HEX",
              help="The export's expected sha256 (default: the checksum published next to it, "
                   "if any; the zip's CRCs are always checked).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def vulndb_update(ctx: click.Context, url: str | None, sha256: str | None,
                  as_json: bool) -> None:
    """Download the OSV PyPI export (resumable, verified) and import it; a failed download
    leaves the current snapshot in force."""
    from lockgate.supplychain.vulns.download import DEFAULT_URL

    lg = local_home(ctx)
    with progress_bars(not as_json and err.is_terminal) as bars:
        snap, fetched = lg.vulnerabilities.update_vulns(url or DEFAULT_URL, sha256=sha256,
                                                        progress=bars)
    if as_json:
        emit_json({**snap.to_dict(), "download": {
            "url": fetched.url, "bytes": fetched.size, "sha256": fetched.sha256,
            "resumed_from": fetched.resumed_from, "checks": list(fetched.checks),
            "path": str(fetched.target)}})
        return
    resumed = f", resumed at byte {fetched.resumed_from}" if fetched.resumed_from else ""
    out.print(f"downloaded {fetched.size} bytes from {fetched.url}{resumed}; verified by "
              f"{', '.join(fetched.checks)}", markup=False)
    out.print(f"imported {snap.records} PyPI records, snapshot of {snap.snapshot_date[:10]} "
              f"(sha256 {snap.sha256[:16]}), {_shape(snap)}", markup=False)


@vulndb.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def vulndb_status(ctx: click.Context, as_json: bool) -> None:
    """Show the current snapshot and its age."""
    from datetime import UTC, datetime

    from lockgate.supplychain.vulns.policy import snapshot_age_days

    lg = local_home(ctx)
    snap = lg.vuln_snapshot()
    if snap is None:
        raise NotFoundError("no vulnerability data imported",
                            hint="lockgate vulndb update (or vulndb import FILE offline)")
    age = snapshot_age_days(snap, datetime.now(UTC).date())
    if as_json:
        emit_json({**snap.to_dict(), "age_days": age,
                    "max_age_days": lg.settings.vuln_max_age_days})
        return
    out.print(f"snapshot {snap.snapshot_date[:10]} ({age} days old, limit "
              f"{lg.settings.vuln_max_age_days}), {snap.records} records, sha256 "
              f"{snap.sha256[:16]}, imported {snap.imported_at[:19]} from {snap.source}, "
              f"{_shape(snap)}", markup=False)


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def scan(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Match a version's packages against the imported OSV data; exit 10 when the policy
    would block it."""
    lg = local_home(ctx)
    v = lg.get(ref)
    report = lg.vulnerability_report(v.ref)
    if as_json:
        emit_json(report.to_dict())
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


@click.command()
@click.argument("ref")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.pass_context
def evidence(ctx: click.Context, ref: str, out_dir: Path) -> None:
    """Write a version's evidence pack (model, BOM, card, signature, gate results, audit
    events, SHA256SUMS, VERIFY.md) into a new folder."""
    folder = open_registry(ctx).export_evidence(ref, out_dir)
    out.print(f"evidence written to {folder}; see {folder / 'VERIFY.md'}")


COMMANDS: tuple[click.Command, ...] = (keys, vulndb, scan, evidence)
