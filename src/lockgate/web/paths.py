"""The console's own URLs, for links and redirects (names are quoted into the path)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

__all__ = ["audit_path", "deployment_path", "model_path", "version_path"]


def model_path(name: str) -> str:
    return f"/ui/models/{quote(name)}"


def version_path(name: str, number: int) -> str:
    return f"/ui/models/{quote(name)}/versions/{number}"


def deployment_path(name: str) -> str:
    return f"/ui/deployments/{quote(name)}"


def audit_path(model: str) -> str:
    """The audit trail filtered to one model."""
    return "/ui/audit?" + urlencode({"model": model})
