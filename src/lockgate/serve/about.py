"""What a lockgate server says about itself: the installed lockgate version, as the OIP server
metadata (``GET /v2``) and the OpenAPI documents show it."""

from __future__ import annotations

import importlib.metadata

__all__ = ["lockgate_version"]


def lockgate_version() -> str:
    """The installed lockgate's version, or ``0+unknown`` when it is not installed."""
    try:
        return importlib.metadata.version("lockgate")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
