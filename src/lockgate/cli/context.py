"""The registry a command works on: the server named by --server, or the local home."""

from __future__ import annotations

import click

from lockgate.api.facade import Lockgate
from lockgate.api.protocol import Registry
from lockgate.errors import InvalidInputError


def open_registry(ctx: click.Context) -> Registry:
    """The registry: the server named by --server / LOCKGATE_SERVER, else the local home."""
    reg: Registry | None = ctx.obj.get("lg")
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


def local_home(ctx: click.Context) -> Lockgate:
    """The local home, for commands that run models or read local files."""
    if ctx.obj.get("server"):
        raise InvalidInputError(
            f"`lockgate {ctx.command_path.partition(' ')[2]}` works on a home or database, "
            "not through --server",
            hint="unset LOCKGATE_SERVER, or point LOCKGATE_DATABASE_URL at the shared database")
    reg = open_registry(ctx)
    assert isinstance(reg, Lockgate)
    return reg
