"""A monitor window judged and stored as `lockgate monitor` would, from rows shaped as the
server's capture endpoint returns them (for tests and benchmarks that need drift history)."""

from __future__ import annotations

import numpy as np

from lockgate.api.facade import Lockgate
from lockgate.monitor.features import columns
from lockgate.monitor.policy import MonitorPolicy
from lockgate.monitor.service import reference_profile
from lockgate.monitor.window import evaluate
from lockgate.store.metadata import Change
from lockgate.store.metadata.interface import Observation


def store_window(lg: Lockgate, ref: str, x: np.ndarray, at: str) -> dict[str, object]:
    """Run the version on ``x`` (its one input), judge the window against the version's
    reference profile, store the result as a monitor observation and return it."""
    v = lg.get(ref)
    profile = reference_profile(lg, v)
    assert profile is not None, f"{ref} has no reference profile"
    name = v.signature.inputs[0].name
    y = lg.load(ref)({name: x})
    feats = {k: {"kind": kind, "values": vals.tolist()}
             for k, (kind, vals) in columns({name: x}, y).items()}
    snap = {"rows": {"from": 0, "to": len(x), "features": feats},
            "requests": {"from": 0, "to": 30, "count": 30, "errors": 0,
                         "latencies": [0.002] * 30}}
    result = evaluate(profile, snap, MonitorPolicy())
    result.update(model=v.name, version=v.number, at=at, server="test")
    lg.meta.apply(Change(observations=[Observation("monitor", v.name, v.number, at, result)]))
    return result
