"""Files to run lockgate servers on infrastructure teams already have: Kubernetes manifests and
a Dockerfile. Rendering only: nothing here talks to a cluster or a Docker engine.

Manifests for ``lockgate k8s render NAME``: a Deployment of ``lockgate serve --model NAME``
replicas (each with ``--workers`` processes, one per whole core of the container's CPU limit,
else of its request: see :func:`workers_for`; readiness on ``/v2/health/ready``, liveness on
``/v2/health/live``, Prometheus scrape annotations, a locked-down security context), a
Service, a HorizontalPodAutoscaler (autoscaling/v2, CPU), a PodDisruptionBudget and a
ConfigMap with the non-secret settings. The database URL and the object-store credentials are
Secret references only: their values never enter a manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.errors import InvalidInputError
from lockgate.types import validate_name

__all__ = ["K8sOptions", "cpu_cores", "render_dockerfile", "render_manifests", "to_yaml",
           "workers_for"]

PORT = 8080


@dataclass(frozen=True)
class K8sOptions:
    image: str = "lockgate:latest"
    namespace: str = "default"
    replicas: int = 2
    max_replicas: int = 10
    cpu_target: int = 70
    cpu_request: str = "500m"
    cpu_limit: str | None = None
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"
    artifact_url: str | None = None
    s3_endpoint_url: str | None = None
    poll_s: float = 0.5


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "lockgate-serve", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "lockgate"}


def render_manifests(name: str, opts: K8sOptions) -> list[dict[str, Any]]:
    """The manifests for serving model ``name``, in apply order."""
    validate_name(name)
    if opts.replicas < 1 or opts.max_replicas < opts.replicas:
        raise InvalidInputError("replicas must be at least 1 and at most --max-replicas")
    if not 1 <= opts.cpu_target <= 100:
        raise InvalidInputError("the CPU target must be a percentage (1-100)")
    app = f"lockgate-{name}"
    labels = _labels(name)
    meta = {"name": app, "namespace": opts.namespace, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {**meta, "name": f"{app}-config"}, "data": _config(opts)},
        _deployment(name, app, meta, labels, opts),
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"type": "ClusterIP", "selector": labels,
                  "ports": [{"name": "http", "port": 80, "targetPort": "http",
                             "protocol": "TCP"}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta,
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": app},
                  "minReplicas": opts.replicas, "maxReplicas": opts.max_replicas,
                  "metrics": [{"type": "Resource", "resource": {
                      "name": "cpu", "target": {"type": "Utilization",
                                                "averageUtilization": opts.cpu_target}}}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
         "spec": {"minAvailable": 1 if opts.replicas > 1 else 0,
                  "selector": {"matchLabels": labels}}},
    ]


def _config(opts: K8sOptions) -> dict[str, str]:
    """The ConfigMap's non-secret settings."""
    config = {"ORT_DISABLE_TELEMETRY": "1", "LOCKGATE_HOME": "/var/lib/lockgate",
              "LOCKGATE_PUBLIC_KEYS": "/etc/lockgate/keys/signing.pub",
              "LOCKGATE_SERVE_HOST": "0.0.0.0", "LOCKGATE_SERVE_PORT": str(PORT)}
    if opts.artifact_url:
        config["LOCKGATE_ARTIFACT_URL"] = opts.artifact_url
    if opts.s3_endpoint_url:
        config["LOCKGATE_S3_ENDPOINT_URL"] = opts.s3_endpoint_url
    return config


def _container(name: str, app: str, opts: K8sOptions) -> dict[str, Any]:
    """The ``lockgate serve`` container: probes, resources, Secret references, locked down."""
    probe = {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10,
             "timeoutSeconds": 2, "failureThreshold": 3}
    return {
        "name": "serve", "image": opts.image, "imagePullPolicy": "IfNotPresent",
        "args": ["serve", "--model", name, "--host", "0.0.0.0", "--port", str(PORT),
                 "--poll", str(opts.poll_s), "--workers", str(workers_for(opts))],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": f"{app}-config"}},
                    {"secretRef": {"name": f"{app}-object-store", "optional": True}}],
        "env": [{"name": "LOCKGATE_DATABASE_URL",
                 "valueFrom": {"secretKeyRef": {"name": f"{app}-database", "key": "url"}}}],
        "readinessProbe": {**probe, "httpGet": {"path": "/v2/health/ready", "port": "http"},
                           "periodSeconds": 5},
        "livenessProbe": probe,
        "startupProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                         "periodSeconds": 2, "failureThreshold": 60},
        "resources": {"requests": {"cpu": opts.cpu_request, "memory": opts.memory_request},
                      "limits": {"memory": opts.memory_limit,
                                 **({"cpu": opts.cpu_limit} if opts.cpu_limit else {})}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "keys", "mountPath": "/etc/lockgate/keys", "readOnly": True},
                         {"name": "home", "mountPath": "/var/lib/lockgate"},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity in cores: ``"500m"`` is 0.5, ``"2"`` is 2."""
    text = quantity.strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise InvalidInputError(f"{quantity!r} is not a CPU quantity",
                                hint="cores (2, 1.5) or millicores (500m)") from None
    if not cores > 0:
        raise InvalidInputError(f"the CPU quantity {quantity!r} must be positive")
    return cores


def workers_for(opts: K8sOptions) -> int:
    """``lockgate serve --workers`` for the container: its CPU limit (else its request) in
    whole cores, at least 1. Set explicitly because a container without a CPU limit has no
    cgroup quota, and the default (one per core) would count the node's cores."""
    return max(1, int(cpu_cores(opts.cpu_limit or opts.cpu_request)))


def _deployment(name: str, app: str, meta: Mapping[str, Any], labels: Mapping[str, str],
                opts: K8sOptions) -> dict[str, Any]:
    """The Deployment: rolling updates that never drop below the wanted replicas."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_container(name, app, opts)],
                    "volumes": [
                        {"name": "keys", "secret": {"secretName": "lockgate-signing-public-keys"}},
                        {"name": "home", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}}]}}}}


def to_yaml(docs: Sequence[Mapping[str, Any]]) -> str:
    import yaml

    class _Plain(yaml.SafeDumper):  # type: ignore[misc]
        def ignore_aliases(self, data: Any) -> bool:  # no &anchors: plain, kubectl-friendly
            return True

    return "---\n".join(yaml.dump(dict(d), Dumper=_Plain, sort_keys=False) for d in docs)


def render_dockerfile(requirements: Path, *, python: str = "3.11") -> str:
    """A Dockerfile installing exactly the pinned, hashed requirements (``pip install
    --require-hashes --no-deps``). InvalidInputError unless every requirement is pinned with
    ``==`` and carries a ``--hash``, and lockgate itself is among them."""
    from lockgate.supplychain.lockfiles import parse_requirements

    try:
        text = requirements.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {requirements}: {exc.strerror}") from None
    lines = [x for x in parse_requirements(text, str(requirements)) if x.requirement]
    if not lines:
        raise InvalidInputError(f"{requirements}: no requirements")
    problems = []
    for line in lines:
        req = line.requirement
        assert req is not None
        pinned = len(req.specifier) == 1 and next(iter(req.specifier)).operator == "=="
        if not pinned:
            problems.append(f"line {line.lineno}: {req.name} is not pinned with ==")
        if not line.hashes:
            problems.append(f"line {line.lineno}: {req.name} has no --hash")
    if problems:
        raise InvalidInputError(f"{requirements}: the image installs only pinned, hashed "
                                f"requirements; {'; '.join(problems[:5])}",
                                hint="pip-compile --generate-hashes, or uv pip compile "
                                     "--generate-hashes")
    if not any(x.requirement and x.requirement.name.lower() == "lockgate" for x in lines):
        raise InvalidInputError(f"{requirements}: lockgate itself is not in the requirements")
    return f"""\
# syntax=docker/dockerfile:1
# lockgate server image: pinned, hashed requirements only (rendered by `lockgate docker render`).
FROM python:{python}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 ORT_DISABLE_TELEMETRY=1 LOCKGATE_HOME=/var/lib/lockgate
RUN useradd --uid 10001 --create-home --home-dir /var/lib/lockgate lockgate
COPY {requirements.name} /tmp/requirements.txt
RUN pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.txt \\
    && rm /tmp/requirements.txt
USER 10001
EXPOSE {PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD ["python", "-c", \\
  "import urllib.request as u; u.urlopen('http://127.0.0.1:{PORT}/v2/health/live', timeout=2)"]
ENTRYPOINT ["lockgate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "{PORT}"]
"""
