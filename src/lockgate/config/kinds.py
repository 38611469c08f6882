"""How a setting's value is read: a :class:`Kind` turns a TOML value, and the text of an
environment variable, into the typed value :class:`~lockgate.config.values.Settings` holds.

A reader gets a :class:`Found` saying where the value came from, so each error names the key
(``parity.atol: expected a float, got 'x'``) or the variable (``LOCKGATE_PARITY_ATOL: ...``).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.config.providers import parse_providers, parse_providers_text
from lockgate.errors import ConfigError

__all__ = [
    "BOOL",
    "COMMAND",
    "FILE",
    "FILES",
    "FLOAT",
    "FOLDER",
    "INT",
    "NAMES",
    "PAIRS",
    "POLICY_FILE",
    "PROVIDERS",
    "TEXT",
    "UPPER",
    "Found",
    "Kind",
    "home_path",
    "split",
]


@dataclass(frozen=True)
class Found:
    """Where a TOML value was found: its key (``section.name``, or the section of a whole
    table), the file, the home relative paths start from, and the setting's value so far (a
    table merges into it, the policy file over lockgate.toml)."""

    key: str
    path: Path
    home: Path
    current: Any


TomlReader = Callable[[Any, Found], Any]
EnvReader = Callable[[str, str], Any]
"""Reads a variable's text; the second argument is the variable's name, for errors."""


def _no_env(text: str, name: str) -> Any:
    raise ConfigError(f"{name}: this setting is not read from the environment")


@dataclass(frozen=True)
class Kind:
    """One way of reading a setting: from lockgate.toml and from the environment."""

    name: str
    toml: TomlReader
    env: EnvReader = _no_env


def split(text: str) -> tuple[str, ...]:
    """A comma list: ``"a, b,,c"`` is ``("a", "b", "c")``."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _number(value: Any, key: str, kind: type[float] | type[int]) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a {kind.__name__}, got {value!r}") from None


def home_path(value: Any, key: str, home: Path) -> Path:
    """A path from a file: ``~`` expanded, relative ones taken from the home."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path")
    p = Path(value).expanduser()
    return p if p.is_absolute() else home / p


def _bool_toml(value: Any, at: Found) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{at.key}: expected true or false")
    return value


def _bool_env(text: str, name: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise ConfigError(f"{name}: expected true or false, got {text!r}")
    return text.lower() in ("true", "1")


def _names_toml(value: Any, at: Found) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{at.key}: expected a list of names")
    return tuple(str(x) for x in value)


def _pairs_toml(value: Any, at: Found) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{at.key}: expected a table of stage = \"alias\"")
    return {str(k): str(v) for k, v in value.items()}


def _pairs_env(text: str, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in split(text):
        k, sep, v = item.partition("=")
        if not sep:
            raise ConfigError(f"{name}: expected stage=alias pairs, got {item!r}")
        out[k.strip()] = v.strip()
    return out


def _folder_toml(value: Any, at: Found) -> Path:
    root = Path(str(value))
    return root if root.is_absolute() else at.home / root


def _files_toml(value: Any, at: Found) -> tuple[Path, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{at.key}: expected a list of paths")
    return tuple(home_path(k, at.key, at.home) for k in value)


def _command_toml(value: Any, at: Found) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise ConfigError(f"{at.path}: {at.key} must be a list of strings, e.g. "
                          '["/usr/local/bin/page-oncall", "--team", "ml"]')
    return tuple(value)


TEXT = Kind("text", lambda v, at: str(v), lambda text, name: text)
UPPER = Kind("text, upper-cased", lambda v, at: str(v).upper(), lambda text, name: text.upper())
INT = Kind("integer", lambda v, at: _number(v, at.key, int),
           lambda text, name: _number(text, name, int))
FLOAT = Kind("number", lambda v, at: _number(v, at.key, float),
             lambda text, name: _number(text, name, float))
BOOL = Kind("true or false", _bool_toml, _bool_env)
NAMES = Kind("list of names (comma list in the environment)", _names_toml,
             lambda text, name: split(text))
PAIRS = Kind("table of stage = alias (stage=alias,... in the environment)", _pairs_toml,
             _pairs_env)
FOLDER = Kind("folder, relative to the home in a file", _folder_toml,
              lambda text, name: Path(text))
FILE = Kind("path, relative to the home in a file",
            lambda v, at: home_path(v, at.key, at.home),
            lambda text, name: Path(text).expanduser())
POLICY_FILE = Kind("path, relative to the home in a file",
                   lambda v, at: home_path(v, at.key, at.home),
                   lambda text, name: Path(text).expanduser().resolve())
FILES = Kind("list of paths (comma list in the environment)", _files_toml,
             lambda text, name: tuple(Path(p).expanduser() for p in split(text)))
COMMAND = Kind("command as a list of words (shell words in the environment)", _command_toml,
               lambda text, name: tuple(shlex.split(text)))
PROVIDERS = Kind("list of providers, names or tables (name:key=value,... in the environment)",
                 lambda v, at: parse_providers(v, at.key),
                 lambda text, name: parse_providers_text(text, name))
