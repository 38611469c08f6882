"""Gate parameters: each gate declares what it takes; the policy file is checked against that on
load, with errors naming the key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lockgate.config.names import closest
from lockgate.errors import ConfigError

__all__ = ["REQUIRED", "Param", "bind"]

REQUIRED: Any = object()


@dataclass(frozen=True)
class Param:
    """One parameter: its type (``float`` also takes integers), default and meaning."""

    kind: type
    default: Any = REQUIRED
    help: str = ""
    minimum: float | None = None
    choices: tuple[Any, ...] = ()
    """The values it takes, when only some do."""

    def describe(self) -> str:
        default = "required" if self.default is REQUIRED else f"default {self.default!r}"
        among = f" (one of {list(self.choices)})" if self.choices else ""
        return f"{self.kind.__name__}, {default}{among}: {self.help}"


def check_value(value: Any, param: Param, where: str) -> Any:
    kind = param.kind
    ok = (isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))) \
        or (kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    if param.minimum is not None and value < param.minimum:
        raise ConfigError(f"{where}: must be at least {param.minimum}, got {value!r}")
    if param.choices and value not in param.choices:
        raise ConfigError(f"{where}: must be one of {list(param.choices)}, got {value!r}")
    return float(value) if kind is float else value


def bind(declared: Mapping[str, Param], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``given`` checked against ``declared``, defaults filled in; ConfigError naming the key."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        best = closest(unknown[0], declared)
        raise ConfigError(f"{where}: unknown parameter(s) {unknown}"
                          + (f"; did you mean {best!r}?" if best else ""),
                          hint=f"known: {sorted(declared)}" if declared else "it takes none")
    out: dict[str, Any] = {}
    for key, param in declared.items():
        if key in given:
            out[key] = check_value(given[key], param, f"{where}.{key}")
        elif param.default is REQUIRED:
            raise ConfigError(f"{where}: missing parameter {key!r} ({param.help})")
        else:
            out[key] = param.default
    return out
