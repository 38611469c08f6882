"""lockgate: train in any framework, ship one way, promote only through gates you can prove.

The short path, on the home in ``$LOCKGATE_HOME`` (default ``./.lockgate``)::

    import lockgate
    v = lockgate.register(model, sample_input, name="churn", metrics={"auc": 0.91}, seed=0)
    lockgate.promote(f"churn@{v.number}", to="production")
    predictor = lockgate.load("churn@production")
    predictor.run({"input": batch})

For more than one call, hold a :class:`Lockgate` instead of reopening the home each time.
A shared registry server is reached with ``lockgate.connect(url, token)``: the same registry
methods, over HTTP.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from pathlib import Path
from typing import Unpack

from lockgate.api.facade import Lockgate, ModelSummary, init_home
from lockgate.api.protocol import RegisterOptions, Registry
from lockgate.audit import AuditRecord, ChainReport, EventType
from lockgate.config.settings import Settings, load_settings
from lockgate.convert.frameworks import FrameworkPolicyError
from lockgate.convert.jax import JaxFunction
from lockgate.errors import (
    AccessDeniedError,
    AuditChainError,
    AuthenticationError,
    ConfigError,
    ConversionError,
    DamageFoundError,
    Error,
    GateFailedError,
    IntegrityError,
    InvalidInputError,
    MisdirectedRequestError,
    NotFoundError,
    ParityError,
    PromotionError,
    ReproductionError,
    ServeError,
    SignatureError,
    StorageError,
    SupplyChainError,
    UnsafePathError,
    UnsupportedModelError,
)
from lockgate.gates.promotion import PromotionResult
from lockgate.registry.client import RemoteRegistry, connect
from lockgate.rollout.state import Deployment
from lockgate.runtime.predictor import Predictor
from lockgate.types import (
    Digest,
    GateResult,
    GateStatus,
    ModelRef,
    OutputParity,
    ParityReport,
    Signature,
    TensorSpec,
    Version,
)

__all__ = [
    "AccessDeniedError",
    "AuditChainError",
    "AuditRecord",
    "AuthenticationError",
    "ChainReport",
    "ConfigError",
    "ConversionError",
    "DamageFoundError",
    "Deployment",
    "Digest",
    "Error",
    "EventType",
    "FrameworkPolicyError",
    "GateFailedError",
    "GateResult",
    "GateStatus",
    "IntegrityError",
    "InvalidInputError",
    "JaxFunction",
    "Lockgate",
    "MisdirectedRequestError",
    "ModelRef",
    "ModelSummary",
    "NotFoundError",
    "OutputParity",
    "ParityError",
    "ParityReport",
    "Predictor",
    "PromotionError",
    "PromotionResult",
    "RegisterOptions",
    "Registry",
    "RemoteRegistry",
    "ReproductionError",
    "ServeError",
    "Settings",
    "Signature",
    "SignatureError",
    "StorageError",
    "SupplyChainError",
    "TensorSpec",
    "UnsafePathError",
    "UnsupportedModelError",
    "Version",
    "connect",
    "init_home",
    "load",
    "load_settings",
    "promote",
    "register",
]


def register(
    model: object,
    sample_input: object = None,
    *,
    name: str,
    home: Path | str | None = None,
    **options: Unpack[RegisterOptions],
) -> Version:
    """Register ``model`` as a new parity-checked ONNX version of ``name`` in the home at
    ``home`` (``$LOCKGATE_HOME`` by default). Takes every option of :meth:`Lockgate.register`
    (``description``, ``tags``, ``metrics``, ``seed``, ...; see
    :class:`~lockgate.api.protocol.RegisterOptions`)."""
    with Lockgate.open(home) as lg:
        return lg.register(model, sample_input, name=name, **options)


def promote(ref: str, to: str, *, home: Path | str | None = None) -> PromotionResult:
    """Promote ``ref`` (``name@3``) to stage ``to`` through the configured gates."""
    with Lockgate.open(home) as lg:
        return lg.promote(ref, to)


def load(ref: str, *, home: Path | str | None = None) -> Predictor:
    """An ONNX Runtime predictor for ``ref`` (``name@production``, ``name@3``, ``name@champion``),
    loaded only after its digest is verified."""
    with Lockgate.open(home) as lg:
        return lg.load(ref)
