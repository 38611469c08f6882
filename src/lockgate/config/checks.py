"""Checks of a setting's final value, once every source is read: a :data:`Check` raises
ConfigError naming the setting. Each row of :data:`lockgate.config.table.SETTINGS` may carry one.

Some checks share a message, so a group of related limits is described in one sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lockgate.config.names import unknown_name
from lockgate.config.values import SEVERITIES, Settings
from lockgate.errors import ConfigError

__all__ = [
    "Check",
    "at_least",
    "check_gate_keys",
    "check_port",
    "check_severity",
    "check_stages",
    "in_stages",
    "one_of",
    "positive",
]

Check = Callable[[Any, Settings], None]
"""Checks one setting's value; the whole settings are given for checks across settings."""


def at_least(low: float, message: str) -> Check:
    """Refuse a value under ``low`` with ``message``."""
    def check(value: Any, s: Settings) -> None:
        if value < low:
            raise ConfigError(message)
    return check


def positive(message: str) -> Check:
    """Refuse a value that is zero or less with ``message``."""
    def check(value: Any, s: Settings) -> None:
        if value <= 0:
            raise ConfigError(message)
    return check


def one_of(key: str, *choices: str) -> Check:
    """Refuse anything but ``choices``: ``serve.auth: expected 'none' or 'token', got 'x'``."""
    expected = " or ".join(repr(c) for c in choices)

    def check(value: Any, s: Settings) -> None:
        if value not in choices:
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return check


def check_severity(value: Any, s: Settings) -> None:
    if value not in SEVERITIES:
        raise ConfigError(f"vulnerabilities.max_severity: {value!r} is not one of "
                          f"{list(SEVERITIES)}")


def check_port(value: Any, s: Settings) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"serve port {value} is out of range")


def check_stages(value: Any, s: Settings) -> None:
    if len(value) < 2 or len(set(value)) != len(value):
        raise ConfigError(f"stages must be at least two distinct names, got {list(value)}")


def in_stages(value: Any, s: Settings) -> None:
    """Every stage a setting names (a list, or a table's keys) is a configured stage."""
    for name in value:
        if name not in s.stages:
            raise ConfigError(f"stage {name!r} is configured but not in stages {list(s.stages)}")


def check_gate_keys(value: Any, s: Settings) -> None:
    """Each ``[gates]`` key is ``*`` or ``from->to`` over configured stages (or ``*``)."""
    for key in value:
        if key == "*":
            continue
        src, sep, dst = key.partition("->")
        if not sep:
            raise ConfigError(f"gates key {key!r} must look like 'from->to' or '*'")
        for st in (src, dst):
            if st != "*" and st not in s.stages:
                raise unknown_name(f"gates key {key!r} names unknown stage {st!r}", st,
                                   s.stages)
