"""Reading the settings, in order (later wins): defaults, ``<home>/lockgate.toml``, the
``LOCKGATE_*`` environment, the policy file (``[lockgate] policy`` or ``LOCKGATE_POLICY``), then
flags. Every source is read through the rows of :data:`~lockgate.config.table.SETTINGS`; a
section or key no row defines is refused with the closest one that exists.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lockgate.config.kinds import Found
from lockgate.config.names import closest, unknown_key, unknown_name
from lockgate.config.table import POLICY_SECTIONS, SECTIONS, SETTINGS, Setting
from lockgate.config.values import CONFIG_FILE, DEFAULT_STAGES, Settings, default_gates
from lockgate.errors import ConfigError

__all__ = ["load_settings", "read_toml"]

_READ_FIRST = "home"
"""The setting read before any other: it says where lockgate.toml is."""

_POLICY_ROWS = tuple(row for row in SETTINGS if row.policy)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; ConfigError naming the file when it cannot be read."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _refuse_unknown(data: Mapping[str, Any], path: Path) -> None:
    """Every section and every key of a keyed section is one a row defines."""
    for section, table in data.items():
        if section not in SECTIONS:
            raise unknown_name(f"{path}: unknown section [{section}]", section, SECTIONS,
                               show=lambda name: f"[{name}]")
        keys = SECTIONS[section]
        if not keys:
            continue  # the whole table is one setting; its reader checks it
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key in table:
            if key not in keys:
                raise unknown_key(key, section, keys, prefix=f"{path}: ")


def _from_file(s: Settings, data: Mapping[str, Any], path: Path,
               rows: Sequence[Setting]) -> Settings:
    _refuse_unknown(data, path)
    changes: dict[str, Any] = {}
    for row in rows:
        if row.file == "-" or row.section not in data:
            continue
        table = data[row.section]
        if row.name and row.name not in table:
            continue
        value = table[row.name] if row.name else table
        at = Found(row.file, path, s.home, changes.get(row.key, getattr(s, row.key)))
        changes[row.key] = row.kind.toml(value, at)
    return replace(s, **changes)


def _from_env(s: Settings, env: Mapping[str, str]) -> Settings:
    changes: dict[str, Any] = {}
    for row in SETTINGS:
        if row.env != "-" and row.key != _READ_FIRST and (text := env.get(row.env)):
            changes[row.key] = row.kind.env(text, row.env)
    return replace(s, **changes)


def _from_policy_file(s: Settings, path: Path) -> Settings:
    if not path.is_file():
        raise ConfigError(f"policy file {path} does not exist")
    data = read_toml(path)
    unknown = sorted(set(data) - POLICY_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: a policy file holds only {sorted(POLICY_SECTIONS)}; "
                          f"found {unknown}")
    for section, table in data.items():
        allowed = {row.name for row in _POLICY_ROWS if row.section == section}
        if "" in allowed or not isinstance(table, dict):
            continue  # the whole table is a policy setting
        if extra := sorted(set(table) & SECTIONS[section] - allowed):
            raise ConfigError(
                f"{path}: {section}.{extra[0]} is not a policy setting",
                hint=f"a policy file sets only {', '.join(sorted(allowed))} in [{section}]; "
                     "set it in lockgate.toml")
    return _from_file(s, data, path, _POLICY_ROWS)


def _from_flags(s: Settings, flags: Mapping[str, Any]) -> Settings:
    given = {k: v for k, v in flags.items() if v is not None}
    keys = [row.key for row in SETTINGS]
    for name in given:
        if name not in keys:
            best = closest(name, keys)
            raise TypeError(f"load_settings() got an unknown setting {name!r}"
                            + (f"; did you mean {best!r}?" if best else ""))
    return replace(s, **given) if given else s


def _validate(s: Settings) -> Settings:
    for row in SETTINGS:
        if row.check is not None:
            row.check(getattr(s, row.key), s)
    return s


def load_settings(
    home: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Build settings from defaults, ``<home>/lockgate.toml``, the environment and ``flags``
    (values by setting name, already typed; None means not given)."""
    env = os.environ if env is None else env
    home_path = Path(home) if home is not None else Path(env.get("LOCKGATE_HOME", ".lockgate"))
    s = Settings.for_home(home_path)
    cfg = s.home / CONFIG_FILE
    if cfg.is_file():
        s = _from_file(s, read_toml(cfg), cfg, SETTINGS)
    s = _from_env(s, env)
    if s.policy_file is not None:
        s = _from_policy_file(s, s.policy_file)
    s = _from_flags(s, flags)
    if s.stages != DEFAULT_STAGES and s.gates == default_gates(DEFAULT_STAGES):
        s = replace(s, gates=default_gates(s.stages))  # the default policy, for these stages
    return _validate(s)
