"""Rollout: a model's deployment as state (``state``: stable, canary candidate, shadow, rollback)
and the files that run lockgate servers on existing infrastructure, Kubernetes manifests and a
Dockerfile (``manifests``)."""
