"""The policy sections: ``[gates]``, ``[gate.<name>]``, ``[roles]``, ``[vulnerabilities]``
allow-list, ``[licenses]``, ``[monitor]`` and ``[frameworks]``: how each is read, in
lockgate.toml and in the policy file applied over it.

Gate names and parameters are checked by :func:`lockgate.gates.check_policy`, which knows the
gates; everything else is checked here, when the file is read.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from lockgate.config.frameworks import check_framework_config
from lockgate.config.kinds import Found, Kind
from lockgate.config.monitor import check_monitor_config
from lockgate.config.spdx import license_lists, parse_expression
from lockgate.config.values import GateSpec, LicenseDecision, Settings, VulnAllow
from lockgate.errors import ConfigError, InvalidInputError

__all__ = ["FRAMEWORK_TABLE", "GATES", "GATE_PARAMS", "LICENSE_DECISIONS", "LICENSE_IDS",
           "MONITOR", "ROLES", "VULN_ALLOW", "check_licenses"]


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


def _date(value: Any, key: str) -> date:
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{key}: not a date: {value!r}",
                              hint="write the date as YYYY-MM-DD") from None
    if isinstance(value, datetime):
        return value.date()
    if not isinstance(value, date):
        raise ConfigError(f"{key}: not a date: {value!r}", hint="write the date as YYYY-MM-DD")
    return value


_DECISION_KEYS = frozenset({"package", "license", "accept", "reason", "expires", "by",
                            "version"})
_DECISION_HINT = ("write { package = \"name\", license = \"SPDX expression\" or accept = true, "
                  "reason = \"why\", expires = YYYY-MM-DD, by = \"who\" }")


def _decision(item: Any, index: int) -> LicenseDecision:
    key = f"licenses.decisions[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{key}: expected a table", hint=_DECISION_HINT)
    unknown = sorted(set(item) - _DECISION_KEYS)
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}", hint=_DECISION_HINT)
    package = item.get("package")
    if not isinstance(package, str) or not package.strip():
        raise ConfigError(f"{key}.package: name the distribution the decision is about",
                          hint=_DECISION_HINT)
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(f"{key}.reason: say why the decision about {package!r} was taken",
                          hint=_DECISION_HINT)
    license_text, accept = item.get("license"), item.get("accept", False)
    if not isinstance(accept, bool):
        raise ConfigError(f"{key}.accept: expected true or false", hint=_DECISION_HINT)
    if (license_text is None) == (not accept):
        raise ConfigError(f"{key}: give either license = \"SPDX expression\" or accept = true",
                          hint=_DECISION_HINT)
    if license_text is not None:
        if not isinstance(license_text, str):
            raise ConfigError(f"{key}.license: expected an SPDX expression", hint=_DECISION_HINT)
        try:
            license_text = str(parse_expression(license_text.strip()).render())
        except InvalidInputError as exc:
            raise ConfigError(f"{key}.license: {exc.message}",
                              hint="use SPDX ids such as MIT or LGPL-3.0-only") from None
    by = item.get("by", "")
    if not isinstance(by, str):
        raise ConfigError(f"{key}.by: expected the name of who decided", hint=_DECISION_HINT)
    expires = _date(item["expires"], f"{key}.expires") if "expires" in item else None
    return LicenseDecision(package.strip(), reason.strip(), license_text, accept, expires,
                           by.strip(), _versions(item.get("version", ""), f"{key}.version"))


def _versions(value: Any, key: str) -> str:
    """A PEP 440 specifier (``3.3.9`` is ``==3.3.9``); empty: every version."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a version or specifier such as \">=3,<4\"")
    text = value.strip()
    if text and text[0].isdigit():
        text = f"=={text}"
    try:
        return str(SpecifierSet(text))
    except InvalidSpecifier:
        raise ConfigError(f"{key}: {value!r} is not a version specifier",
                          hint="write a version (3.3.9) or a PEP 440 specifier (>=3,<4)"
                          ) from None


def _license_decisions(value: Any, at: Found) -> tuple[LicenseDecision, ...]:
    from packaging.utils import canonicalize_name

    if not isinstance(value, list):
        raise ConfigError(f"{at.key}: expected a list of tables ([[licenses.decisions]])",
                          hint=_DECISION_HINT)
    decisions = tuple(_decision(x, i) for i, x in enumerate(value))
    names = [canonicalize_name(d.package) for d in decisions]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{at.key}: more than one decision for {twice}",
                          hint="keep one decision per distribution")
    return decisions


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
LICENSE_DECISIONS = Kind("list of { package, license or accept, reason, expires, by } tables",
                         _license_decisions)
MONITOR = Kind("[monitor] tables", lambda table, at: check_monitor_config(table, str(at.path)))
FRAMEWORK_TABLE = Kind("table of framework = \"range\"",
                       lambda table, at: check_framework_config(table, str(at.path)))
