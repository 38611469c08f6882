"""Framework policy: which training frameworks, at which versions, may register models.

``[frameworks]`` in lockgate.toml or the policy file maps a framework (as converters name it:
``pytorch``, ``keras``, ``tensorflow``, ``jax``, ``scikit-learn``, ``onnx`` for ready-made ONNX
files) to a PEP 440 version range (``"*"`` for any). An empty table allows everything; once it
lists anything, a framework it does not list is refused. The table is read and checked by
:mod:`lockgate.config.frameworks`; this module applies it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from lockgate.config.frameworks import FRAMEWORKS, check_framework_config, framework_range
from lockgate.errors import InvalidInputError

__all__ = ["FRAMEWORKS", "FrameworkPolicyError", "FrameworkRow", "check_framework",
           "check_framework_config", "framework_table"]


class FrameworkPolicyError(InvalidInputError):
    """Registration from a framework (or version) the platform policy does not allow."""


def check_framework(policy: Mapping[str, str], framework: str, version: str) -> None:
    """Refuse ``framework`` at ``version`` unless the policy allows it (an empty policy allows
    everything). FrameworkPolicyError names the rule."""
    if not policy:
        return
    if framework not in policy:
        raise FrameworkPolicyError(
            f"framework policy: {framework} is not an allowed training framework",
            hint=f"[frameworks] allows {', '.join(f'{k} {v}' for k, v in sorted(policy.items()))}")
    rule = policy[framework]
    try:
        allowed = framework_range(rule, framework).contains(Version(version), prereleases=True)
    except InvalidVersion:
        allowed = False
    if not allowed:
        raise FrameworkPolicyError(
            f"framework policy: [frameworks] {framework} = {rule!r} does not allow "
            f"{framework} {version}",
            hint="train with an allowed version, or change the platform policy")


@dataclass(frozen=True)
class FrameworkRow:
    framework: str
    rule: str
    installed: str
    status: str


def _installed(framework: str) -> str:
    for dist in FRAMEWORKS[framework]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def framework_table(policy: Mapping[str, str]) -> list[FrameworkRow]:
    """Every known framework: its rule, the version installed here and what registration from
    it would do."""
    rows = []
    for name in FRAMEWORKS:
        installed = _installed(name)
        rule = policy.get(name, "*" if not policy else "")
        if not rule:
            status = "refused (not listed)"
        elif not installed:
            status = "not installed"
        else:
            try:
                check_framework(policy, name, installed)
                status = "allowed"
            except FrameworkPolicyError:
                status = "refused (version)"
        rows.append(FrameworkRow(name, rule or "-", installed or "-", status))
    return rows
