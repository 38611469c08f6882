"""Settings: defaults < lockgate.toml < LOCKGATE_* environment < flags, read once at the edge.

The names callers import, from the modules that hold them: the values (:mod:`.values`), the
table of every setting (:mod:`.table`), reading them (:mod:`.load`) and the commented default
file (:mod:`.default_file`).
"""

from __future__ import annotations

from lockgate.config.default_file import DEFAULT_CONFIG, write_default_config
from lockgate.config.load import load_settings
from lockgate.config.table import POLICY_SECTIONS, SETTINGS, Setting
from lockgate.config.values import (
    CONFIG_FILE,
    DEFAULT_STAGES,
    SEED_POLICY,
    SEVERITIES,
    GateSpec,
    Settings,
    VulnAllow,
    default_gates,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_CONFIG",
    "DEFAULT_STAGES",
    "POLICY_SECTIONS",
    "SEED_POLICY",
    "SETTINGS",
    "SEVERITIES",
    "GateSpec",
    "Setting",
    "Settings",
    "VulnAllow",
    "default_gates",
    "load_settings",
    "write_default_config",
]
