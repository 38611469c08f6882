"""Monitor policy: when a window counts, when drift triggers retraining, what an SLO breach
does, for one model. :class:`MonitorPolicy` is read from ``[monitor]`` and
``[monitor.models.<name>]`` by :mod:`lockgate.config.monitor`, which documents every key; the
monitor judges windows with it.
"""

from __future__ import annotations

from lockgate.config.monitor import MonitorPolicy, check_monitor_config

__all__ = ["MonitorPolicy", "check_monitor_config"]
