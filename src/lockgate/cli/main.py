"""The command line: parse → api → render. The only place that prints, exits or draws progress.

This module holds the root group, which gathers the commands of one module per part of the
product (register, lookup, promotion, deploy, serving, monitoring, supplychain, reproduce,
report, admin, infra, demo), and ``main``, which turns errors into one line and an exit code.

Exit codes (also in README.md): 0 ok, 1 a gate or check failed (promote, gates, reproduce),
2 usage/configuration/invalid input, 3 not found, 4 storage or integrity failure, 5 conversion
failed, 6 parity failed, 7 a concurrent change won, 8 audit chain broken, 9 serving failed,
10 supply-chain check failed, 11 access denied, 12 no valid API token, 13 fsck found damage,
70 internal error.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from lockgate.cli import (
    admin,
    demo,
    deploy,
    infra,
    lookup,
    monitoring,
    optimize,
    promotion,
    register,
    report,
    reproduce,
    serving,
    supplychain,
)
from lockgate.cli.render import err, error_line
from lockgate.errors import Error

EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, not a verdict (1 means a gate or check failed)


@click.group(epilog="Global options (--home, --server, --json, --debug) may also follow the "
                     "command: `lockgate show NAME@V --home H` is `lockgate --home H show NAME@V`.")
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="lockgate home (default: $LOCKGATE_HOME or ./.lockgate).")
@click.option("--server", envvar="LOCKGATE_SERVER", default=None, metavar="URL",
              help="Use the registry server at URL (token from $LOCKGATE_TOKEN or "
                   "$LOCKGATE_TOKEN_FILE) instead of a local home.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the command's result as JSON (for commands that have JSON output).")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="lockgate")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, server: str | None, as_json: bool,
        debug: bool) -> None:
    """lockgate: register models as parity-checked ONNX, promote them through gates, serve them."""
    ctx.ensure_object(dict)
    ctx.obj["home"] = home
    ctx.obj["server"] = server or None
    ctx.obj["json"] = as_json
    ctx.obj["debug"] = debug


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    """A global option given after the command: it replaces what was given before it."""
    if value is not None and value is not False:
        ctx.obj[str(param.name)] = value
    return value


def _json_wanted(ctx: click.Context, param: click.Parameter, value: object) -> bool:
    """A command's own --json, or the global one given before the command."""
    return bool(value) or bool(ctx.obj.get("json"))


def _no_json(ctx: click.Context, param: click.Parameter, value: object) -> None:
    if value or ctx.obj.get("json"):
        raise click.UsageError(f"`{ctx.command_path}` has no JSON output; drop --json", ctx)


def _global_options(command: click.Command) -> None:
    """Let ``command`` (and every command under it) take the global options after its name,
    and make its --json, if it has one, follow the global --json too."""
    taken = {o for p in command.params for o in p.opts}
    hidden: list[click.Parameter] = []
    for opts, extra in ((["--home"], {"type": click.Path(path_type=Path), "default": None}),
                        (["--server"], {"default": None, "metavar": "URL"}),
                        (["--debug"], {"is_flag": True})):
        if opts[0] not in taken:
            hidden.append(click.Option(opts, hidden=True, expose_value=False,
                                       callback=_remember, **extra))
    own_json = [p for p in command.params if "--json" in p.opts]
    for p in own_json:
        p.callback = _json_wanted
    if isinstance(command, click.Group):
        if not own_json:
            hidden.append(click.Option(["--json", "json"], is_flag=True, hidden=True,
                                       expose_value=False, callback=_remember))
        for sub in command.commands.values():
            _global_options(sub)
    elif not own_json:
        hidden.append(click.Option(["--json", "json"], is_flag=True, hidden=True,
                                   expose_value=False, callback=_no_json))
    command.params.extend(hidden)


for _part in (register, optimize, lookup, promotion, reproduce, deploy, serving, admin, supplychain,
              monitoring, report, infra, demo):
    for _command in _part.COMMANDS:
        cli.add_command(_command)
        _global_options(_command)


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
        error_line(exc.diagnostics())
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        error_line(f"internal error: {type(exc).__name__}: {exc} "
                   "(run with --debug for a traceback)")
        sys.exit(EXIT_INTERNAL)
