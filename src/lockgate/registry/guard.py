"""What the registry API and the console check before any handler runs, against pages of
other sites that a browser on the same machine visits.

- :func:`loopback_host`: without login, a request is served only when its ``Host`` names a
  loopback address (``localhost``, ``127.0.0.0/8``, ``::1`` in brackets or not), so a page
  whose own name was re-pointed at 127.0.0.1 (DNS rebinding) reads and changes nothing: such
  a request is :class:`MisdirectedRequestError` (HTTP 421).
- :func:`foreign_origin`: a state-changing request is refused when ``Sec-Fetch-Site`` says
  ``cross-site`` or ``same-site``, or when ``Origin`` is present and is not the server's own
  ``scheme://host[:port]`` (``Origin: null``, which a privacy setting may send, passes only
  beside ``Sec-Fetch-Site: same-origin``). Clients that send neither header (scripts, the CLI)
  are not browsers and pass.
"""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from lockgate.errors import MisdirectedRequestError

__all__ = ["check_loopback_host", "foreign_origin", "loopback_host"]

_ALLOWED_FETCH_SITES = ("same-origin", "none")


def _host_name(host: str) -> str:
    """``host`` without its port; an IPv6 literal without its brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host  # no port, or a bare IPv6 literal


def loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine's loopback interface."""
    if not host:
        return False
    name = _host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_loopback_host(request: Request) -> None:
    """Raise :class:`MisdirectedRequestError` unless the request's ``Host`` is loopback."""
    host = request.headers.get("host")
    if not loopback_host(host):
        shown = repr((host or "")[:64]) if host else "no Host"
        raise MisdirectedRequestError(
            f"refused a request for {shown}: without login this server answers only to "
            "localhost, 127.0.0.1 and [::1]",
            hint="open it as http://127.0.0.1:PORT/ or http://localhost:PORT/")


def foreign_origin(request: Request) -> str | None:
    """Why the browser says this request comes from another site, or None."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        site = site.strip().lower()
        if site not in _ALLOWED_FETCH_SITES:
            return f"a {site[:32]!r} request (Sec-Fetch-Site)"
    origin = request.headers.get("origin")
    if origin is not None:
        origin = origin.strip().lower()
        own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
        if origin != own and not (origin == "null" and site == "same-origin"):
            return f"a request from origin {origin[:128]!r}"
    return None
