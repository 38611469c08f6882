"""Configuration: the settings of one home, read once at the edge from defaults, lockgate.toml,
the ``LOCKGATE_*`` environment, the policy file and flags.

    values        Settings, GateSpec, VulnAllow and the default gate policy
    table         SETTINGS: one row per setting (file key, variable, kind, default, help, check)
    kinds         how a value is read from TOML and from the environment
    checks        checks of final values
    policy        the policy sections ([gates], [gate.*], [roles], [licenses], ...)
    monitor       the [monitor] tables and MonitorPolicy
    frameworks    the [frameworks] table
    spdx          SPDX license ids
    names         unknown keys, refused with the closest known one
    load          load_settings: every source, in order
    default_file  the commented lockgate.toml
    settings      the names callers import
"""

from lockgate.config.settings import (
    SETTINGS,
    GateSpec,
    Setting,
    Settings,
    VulnAllow,
    load_settings,
    write_default_config,
)

__all__ = [
    "SETTINGS",
    "GateSpec",
    "Setting",
    "Settings",
    "VulnAllow",
    "load_settings",
    "write_default_config",
]
