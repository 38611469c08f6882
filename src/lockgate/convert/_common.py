"""Small helpers shared by the converter modules."""

from __future__ import annotations

import importlib.metadata
import re

__all__ = ["BATCH", "dist_version", "first_line", "from_package"]

BATCH = "batch"
"""The name converters give the symbolic batch dim (dim 0) of inputs and outputs."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def from_package(model: object, package: str) -> bool:
    """True when a class in ``type(model).__mro__`` is defined in ``package`` or below it.

    Lets ``accepts`` decide without importing the framework.
    """
    for cls in type(model).__mro__:
        module = getattr(cls, "__module__", None) or ""
        if module == package or module.startswith(package + "."):
            return True
    return False


def first_line(obj: object) -> str:
    """The first line of ``str(obj)`` without terminal colour codes."""
    text = strip_ansi(str(obj)).strip()
    return text.splitlines()[0] if text else type(obj).__name__


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def dist_version(dist: str) -> str:
    """An installed distribution's version, or ``"unknown"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
