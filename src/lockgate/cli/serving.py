"""The servers: serve (inference over OIP v2), server (the registry HTTP API) and ui (the web
console), with the bind and authentication rules they share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lockgate.api.facade import Lockgate
from lockgate.cli.context import local_home
from lockgate.cli.render import err
from lockgate.config.providers import FALLBACKS, parse_providers_text
from lockgate.errors import InvalidInputError

if TYPE_CHECKING:
    from lockgate.config.values import Settings
    from lockgate.serve import HTTPLimits


@click.command()
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
@click.option("--grpc-port", type=int, default=None,
              help="Also serve OIP v2 over gRPC on this port, same host and tokens (0 picks a "
                   "free one; -1: off; default [serve] grpc_port, off unless set).")
@click.option("--providers", default=None, metavar="NAME[:KEY=VALUE...],...",
              help="Execution providers to load on, in order (cuda,cpu): for the versions "
                   "named, or without REFS for the deployments that name none (overrides "
                   "[serve] providers).")
@click.option("--provider-fallback", type=click.Choice(FALLBACKS), default=None,
              help="When a provider cannot load: refuse the version (none) or serve it on "
                   "the CPU (cpu); overrides [serve] provider_fallback.")
@click.option("--workers", type=int, default=None,
              help="Worker processes on the one port (default [serve] workers: one per core "
                   "the container is given; 1: this process alone).")
@click.pass_context
def serve(ctx: click.Context, refs: tuple[str, ...], host: str | None, port: int | None,
          poll_s: float, grace_s: float, only: tuple[str, ...], request_log: Path | None,
          request_log_rate: float | None, with_ui: bool, no_auth: bool,
          insecure_no_auth: bool, http_layer: str, inline_below_us: float | None,
          providers: str | None, provider_fallback: str | None,
          grpc_port: int | None, workers: int | None) -> None:
    """Serve models over the Open Inference Protocol v2: the versions named, or else every
    model's deployment (its production version unless `lockgate deploy` says otherwise),
    following changes without a restart."""
    from lockgate.serve import run_server

    if poll_s <= 0 or grace_s < 0:
        raise InvalidInputError("--poll must be positive and --grace not negative")
    if inline_below_us is not None and inline_below_us < 0:
        raise InvalidInputError("--inline-below-us cannot be negative")
    specs = parse_providers_text(providers, "--providers") if providers is not None else None
    lg = local_home(ctx)
    if specs is not None or provider_fallback is not None:
        from dataclasses import replace

        lg.settings = replace(
            lg.settings, serve_providers=specs or lg.settings.serve_providers,
            serve_provider_fallback=provider_fallback or lg.settings.serve_provider_fallback)
    h = host or lg.settings.serve_host
    from lockgate.serve.supervisor import worker_context

    part = worker_context()
    _check_data_plane_bind(lg, h, insecure_no_auth, quiet=part is not None)
    if request_log is not None or request_log_rate is not None:
        from dataclasses import replace

        lg.settings = replace(
            lg.settings, request_log=request_log or lg.settings.request_log,
            request_log_rate=(lg.settings.request_log_rate if request_log_rate is None
                              else request_log_rate))
    count = _worker_count(lg.settings, workers) if part is None else 1
    p = lg.settings.serve_port if port is None else port
    g = lg.settings.serve_grpc_port if grpc_port is None else grpc_port
    auth = _auth_on(lg, h, no_auth) if with_ui else False
    app = None if count > 1 else lg.create_app(
        refs, poll_s=poll_s, grace_s=grace_s, models=only,
        inline_below_s=None if inline_below_us is None else inline_below_us / 1e6)
    if with_ui and app is not None:
        from lockgate.web import attach_console

        metrics = app.state.metrics
        attach_console(app, lg, auth=auth,
                       metrics_source=lambda: metrics.render().decode("utf-8"))
    names = ", ".join(f"{v.name}@{v.number}" for v in lg.serve_refs(refs)) if refs else \
        ", ".join(f"{n}@{d.stable}" for n, d in lg.deployments().items()
                  if not only or n in only) or "no deployment yet (following the store)"

    def started(bound_host: str, bound_port: int) -> None:
        several = f"{count} workers; " if count > 1 else ""
        err.print(f"serving {names} on http://{bound_host}:{bound_port}/v2 ({several}Ctrl-C "
                  "stops)")

    def grpc_started(bound_host: str, bound_port: int) -> None:
        err.print(f"gRPC (OIP v2) on {bound_host}:{bound_port} (inference.GRPCInferenceService, "
                  "grpc.health.v1.Health)")

    try:
        if app is None:
            _supervise(count, h, p, None if g == -1 else g, started, grpc_started)
        else:
            run_server(app, host=h, port=p, on_started=started, http=http_layer,
                       limits=_http_limits(lg), allowed_hosts=_local_names(lg, h),
                       grpc_port=None if g == -1 else g, on_grpc_started=grpc_started,
                       worker=part)
    except KeyboardInterrupt:
        err.print("stopped")


def _worker_count(settings: Settings, workers: int | None) -> int:
    """--workers, else [serve] workers; 0 is one per core the container is given, or one
    when the server loads on an accelerator (each worker would hold its own device session)."""
    from lockgate.serve.supervisor import default_workers

    count = settings.serve_workers if workers is None else workers
    if count < 0:
        raise InvalidInputError("--workers cannot be negative",
                                hint="0 runs one worker per core, 1 a single process")
    if count == 0 and not settings.serve_provider_set.is_cpu_only:
        return 1
    return count or default_workers()


def _supervise(count: int, host: str, port: int, grpc_port: int | None,
               started: Callable[[str, int], None],
               grpc_started: Callable[[str, int], None]) -> None:
    """Run this same command line as ``count`` workers on one port."""
    import sys

    from lockgate.serve.supervisor import Supervisor

    args = sys.argv[1:]
    if "serve" not in args:
        raise InvalidInputError("several workers need the `lockgate serve` command line",
                                hint="pass --workers 1 to serve in this process")
    Supervisor([sys.executable, "-m", "lockgate", *args], count, host, port,
               grpc_port=grpc_port, on_started=started, on_grpc_started=grpc_started,
               log=err.print).run()


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


def _check_data_plane_bind(lg: Lockgate, host: str, insecure: bool, *,
                           quiet: bool = False) -> None:
    """Off loopback, a server must be able to check tokens: the home needs users (capture
    then needs the monitoring role) unless the operator insists; infer stays open unless
    serve.auth = "token", which is said (``quiet``: not by a worker, its supervisor did)."""
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
        if not quiet:
            err.print(f"warning: serving on {host} without authentication "
                      "(--insecure-no-auth)")
    elif lg.settings.serve_auth != "token" and not quiet:
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


@click.command("server")
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
    lg = local_home(ctx)
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


@click.command()
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

    lg = local_home(ctx)
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


COMMANDS: tuple[click.Command, ...] = (serve, server, ui)
