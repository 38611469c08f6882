"""The policy sections: ``[gates]``, ``[gate.<name>]``, ``[roles]``, ``[vulnerabilities]``
allow-list, ``[licenses]``, ``[monitor]`` and ``[frameworks]``: how each is read, in
lockgate.toml and in the policy file applied over it.

Gate names and parameters are checked by :func:`lockgate.gates.check_policy`, which knows the
gates; everything else is checked here, when the file is read.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from lockgate.config.frameworks import check_framework_config
from lockgate.config.kinds import Found, Kind
from lockgate.config.monitor import check_monitor_config
from lockgate.config.spdx import license_lists
from lockgate.config.values import GateSpec, Settings, VulnAllow
from lockgate.errors import ConfigError, InvalidInputError

__all__ = ["FRAMEWORK_TABLE", "GATES", "GATE_PARAMS", "LICENSE_IDS", "MONITOR", "ROLES",
           "VULN_ALLOW", "check_licenses"]


def _gate_entry(entry: Any, where: str) -> GateSpec:
    if isinstance(entry, str):
        return GateSpec(entry)
    if isinstance(entry, dict) and isinstance(entry.get("gate"), str):
        return GateSpec(entry["gate"], {k: v for k, v in entry.items() if k != "gate"})
    raise ConfigError(f"{where}: expected a gate name or a table with gate = \"name\", got "
                      f"{entry!r}")


def _gates(table: Any, at: Found) -> Any:
    """[gates] replaces the whole default policy; an empty table (as the commented default file
    has) changes nothing."""
    if not table:
        return at.current
    if not isinstance(table, dict):
        raise ConfigError(f"{at.path}: [gates] must be a table of \"from->to\" = [gates]")
    gates: dict[str, tuple[GateSpec, ...]] = {}
    for key, entries in table.items():
        where = f"{at.path}: gates.\"{key}\""
        if not isinstance(entries, list):
            raise ConfigError(f"{where}: expected a list of gate names or "
                              "{ gate = \"name\", ... } tables")
        gates[str(key)] = tuple(_gate_entry(e, f"{where}[{i}]") for i, e in enumerate(entries))
    return gates


def _gate_params(table: Any, at: Found) -> dict[str, dict[str, Any]]:
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"{at.path}: [gate.<name>] sections must be tables of parameters")
    return {**at.current, **{str(k): dict(v) for k, v in table.items()}}


def _roles(table: Any, at: Found) -> dict[str, frozenset[str]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{at.path}: [roles] must be a table of role = [users]")
    out: dict[str, frozenset[str]] = dict(at.current)
    for role, users in table.items():
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise ConfigError(f"{at.path}: roles.{role}: expected a list of user names")
        out[str(role)] = frozenset(users)
    return out


def _allow_entry(item: Any, index: int) -> VulnAllow:
    key = f"vulnerabilities.allow[{index}]"
    if not isinstance(item, dict) or set(item) != {"id", "expires", "reason"}:
        raise ConfigError(f"{key}: expected {{ id = ..., expires = YYYY-MM-DD, reason = ... }}")
    expires = item["expires"]
    if isinstance(expires, str):
        try:
            expires = date.fromisoformat(expires)
        except ValueError:
            raise ConfigError(f"{key}.expires: not a date: {expires!r}") from None
    if not isinstance(expires, date):
        raise ConfigError(f"{key}.expires: not a date: {expires!r}")
    if not str(item["reason"]).strip():
        raise ConfigError(f"{key}.reason: say why the vulnerability is accepted")
    return VulnAllow(str(item["id"]), expires, str(item["reason"]))


def _vuln_allow(value: Any, at: Found) -> tuple[VulnAllow, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{at.key}: expected a list of tables")
    return tuple(_allow_entry(x, i) for i, x in enumerate(value))


def _license_ids(value: Any, at: Found) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"{at.key}: expected a list of SPDX license ids")
    return frozenset(value)


def check_licenses(value: Any, s: Settings) -> None:
    """Every listed id is one SPDX license id, and none is both allowed and denied."""
    try:
        license_lists(s.license_allow or (), s.license_deny or ())
    except InvalidInputError as exc:
        raise ConfigError(f"[licenses]: {exc.message}", hint=exc.hint) from None


GATES = Kind("table of \"from->to\" = [gate, ...]", _gates)
GATE_PARAMS = Kind("[gate.<name>] tables of parameters", _gate_params)
ROLES = Kind("table of role = [users]", _roles)
VULN_ALLOW = Kind("list of { id, expires, reason } tables", _vuln_allow)
LICENSE_IDS = Kind("list of SPDX license ids", _license_ids)
MONITOR = Kind("[monitor] tables", lambda table, at: check_monitor_config(table, str(at.path)))
FRAMEWORK_TABLE = Kind("table of framework = \"range\"",
                       lambda table, at: check_framework_config(table, str(at.path)))
