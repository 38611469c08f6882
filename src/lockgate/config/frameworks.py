"""The ``[frameworks]`` table: which training frameworks, at which PEP 440 version ranges, may
register models.

Keys are frameworks as converters name them (``pytorch``, ``keras``, ``tensorflow``, ``jax``,
``scikit-learn``, ``xgboost``, ``lightgbm``, ``catboost`` for a bare booster (a scikit-learn
Pipeline ending in one is ``scikit-learn``), ``onnx`` for ready-made ONNX files); values are
version ranges (``"*"`` for any). :mod:`lockgate.convert.frameworks` applies the table at
registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from lockgate.config.names import unknown_name
from lockgate.errors import ConfigError

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

__all__ = ["FRAMEWORKS", "check_framework_config", "framework_range"]

FRAMEWORKS: Mapping[str, tuple[str, ...]] = {
    "pytorch": ("torch",), "keras": ("keras",), "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "jax": ("jax",), "scikit-learn": ("scikit-learn",), "onnx": ("onnx",),
    "xgboost": ("xgboost",), "lightgbm": ("lightgbm",), "catboost": ("catboost",),
}
"""Framework names and the distributions that carry their version."""


def framework_range(text: str, key: str) -> SpecifierSet:
    """``text`` as a version range (``"*"``: any); ConfigError naming ``frameworks.<key>``."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    if text.strip() == "*":
        return SpecifierSet()
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise ConfigError(f"frameworks.{key}: {text!r} is not a version range",
                          hint='use PEP 440, e.g. ">=2.4,<3", or "*" for any') from None


def check_framework_config(table: object, where: str) -> dict[str, str]:
    """A ``[frameworks]`` table read from ``where``, checked: known names, valid ranges."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [frameworks] must be a table of name = \"range\"")
    out = {}
    for name, value in table.items():
        if name not in FRAMEWORKS:
            raise unknown_name(f"{where}: frameworks.{name}: unknown framework", name,
                               FRAMEWORKS)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: frameworks.{name}: expected a version range string")
        framework_range(value, name)
        out[str(name)] = value
    return out
