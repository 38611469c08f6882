"""Monitor policy: when a window counts, when drift triggers retraining, what an SLO breach
does. Read from ``[monitor]`` (defaults for every model) and ``[monitor.models.<name>]``
(overrides for one model) in lockgate.toml or the policy file::

    [monitor]
    min_rows = 200            # a window with fewer rows is not judged
    drift_share = 0.5         # dataset drift when this share of features drifted
    consecutive = 3           # K: windows of dataset drift in a row before a trigger
    method = "psi"            # optional: one method for every feature (default: Evidently's)
    threshold = 0.2           # optional: that method's threshold

    [monitor.slo]
    max_error_rate = 0.05     # failed infer requests / requests in the window
    max_p99_ms = 250
    min_requests = 20

    [monitor.trigger]
    webhook = "https://ci.example.com/hooks/retrain"
    secret_env = "LOCKGATE_WEBHOOK_SECRET"   # whsec_… (Standard Webhooks)
    command = ["/usr/local/bin/start-retraining"]
    attempts = 3

    [monitor.rollback]
    on_slo_breach = true      # roll back to the previous production version

:mod:`lockgate.monitor` judges windows with the :class:`MonitorPolicy` built here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lockgate.config.names import unknown_key
from lockgate.errors import ConfigError

__all__ = ["DRIFT_METHODS", "MonitorPolicy", "check_monitor_config"]

DRIFT_METHODS = ("ks", "chisquare", "z", "wasserstein", "psi", "jensenshannon")
"""The drift methods ``method`` may name (those of :mod:`lockgate.monitor.stats`)."""

_TOP: dict[str, type] = {"min_rows": int, "drift_share": float, "consecutive": int, "method": str,
                         "threshold": float}
_SLO: dict[str, type] = {"max_error_rate": float, "max_p99_ms": float, "min_requests": int}
_TRIGGER: dict[str, type] = {"webhook": str, "secret_env": str, "command": list, "attempts": int}
_ROLLBACK: dict[str, type] = {"on_slo_breach": bool}
_TABLES: dict[str, dict[str, type]] = {"slo": _SLO, "trigger": _TRIGGER, "rollback": _ROLLBACK}


@dataclass(frozen=True)
class MonitorPolicy:
    """One model's monitor policy: ``[monitor]`` with its ``[monitor.models.<name>]`` over it."""

    min_rows: int = 100
    drift_share: float = 0.5
    consecutive: int = 3
    method: str | None = None
    threshold: float | None = None
    max_error_rate: float | None = 0.05
    max_p99_ms: float | None = None
    min_requests: int = 20
    webhook: str | None = None
    secret_env: str = "LOCKGATE_WEBHOOK_SECRET"
    command: tuple[str, ...] = ()
    attempts: int = 3
    rollback_on_slo_breach: bool = False

    @classmethod
    def for_model(cls, config: Mapping[str, Any], model: str) -> MonitorPolicy:
        """The policy for ``model``: ``[monitor]`` under ``[monitor.models.<model>]``."""
        base = {k: v for k, v in config.items() if k != "models"}
        override = dict(config.get("models", {}).get(model, {}))
        merged: dict[str, Any] = {**base}
        for key, value in override.items():
            if key in _TABLES and isinstance(value, dict):
                merged[key] = {**dict(base.get(key, {})), **value}
            else:
                merged[key] = value
        return _build(merged, f"monitor.models.{model}" if override else "monitor")

    def to_dict(self) -> dict[str, Any]:
        return {"min_rows": self.min_rows, "drift_share": self.drift_share,
                "consecutive": self.consecutive, "method": self.method,
                "threshold": self.threshold,
                "slo": {"max_error_rate": self.max_error_rate, "max_p99_ms": self.max_p99_ms,
                        "min_requests": self.min_requests},
                "trigger": {"webhook": self.webhook, "secret_env": self.secret_env,
                            "command": list(self.command), "attempts": self.attempts},
                "rollback": {"on_slo_breach": self.rollback_on_slo_breach}}


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is list:
        if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{where}: expected a non-empty list of strings")
        return tuple(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _fields(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The MonitorPolicy fields a merged ``[monitor]`` table gives, each checked."""
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            spec = _TABLES[key]
            for sub, v in value.items():
                if sub not in spec:
                    raise unknown_key(sub, f"{where}.{key}", spec)
                name = "rollback_on_slo_breach" if sub == "on_slo_breach" else sub
                kw[name] = _typed(v, spec[sub], f"{where}.{key}.{sub}")
        elif key in _TOP:
            kw[key] = _typed(value, _TOP[key], f"{where}.{key}")
        else:
            raise unknown_key(key, where, [*_TOP, *_TABLES, "models"])
    return kw


def _build(data: Mapping[str, Any], where: str) -> MonitorPolicy:
    policy = MonitorPolicy(**_fields(data, where))
    if policy.method is not None and policy.method not in DRIFT_METHODS:
        raise ConfigError(f"{where}.method: unknown drift method {policy.method!r}",
                          hint=f"known: {list(DRIFT_METHODS)}")
    if not 0 < policy.drift_share <= 1:
        raise ConfigError(f"{where}.drift_share: must be in (0, 1]")
    if policy.consecutive < 1 or policy.min_rows < 1 or policy.attempts < 1:
        raise ConfigError(f"{where}: consecutive, min_rows and attempts must be at least 1")
    if policy.webhook is not None and not policy.webhook.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.trigger.webhook: expected an http(s) URL")
    return policy


def check_monitor_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate a ``[monitor]`` table (and every model override) at load time."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: [monitor] must be a table")
    models = config.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise ConfigError(f"{where}: [monitor.models.<name>] must be tables")
    try:
        MonitorPolicy.for_model(config, "")
        for name in models:
            MonitorPolicy.for_model(config, str(name))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None
    return dict(config)
