"""Kubernetes manifests and the Dockerfile: validated against the Kubernetes API models (no
cluster runs here: the `kubernetes` client's models check required fields and types)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.cli.main import main

kubernetes = pytest.importorskip("kubernetes")

MODELS = {"ConfigMap": "V1ConfigMap", "Deployment": "V1Deployment", "Service": "V1Service",
          "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
          "PodDisruptionBudget": "V1PodDisruptionBudget"}


def _validate(doc: dict[str, Any]) -> Any:
    """Deserialize into the API model for its kind (required fields and types checked)."""
    client = kubernetes.client.ApiClient()
    return client.deserialize(json.dumps(doc), MODELS[doc["kind"]], "application/json")


def test_rendered_manifests_are_valid_kubernetes_objects(
        home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_DATABASE_URL", "postgresql+psycopg://app:s3cr3t@db/registry")
    monkeypatch.setenv("LOCKGATE_ARTIFACT_URL", "s3://models/registry")
    main(["--home", str(home), "k8s", "render", "fraud", "--image", "registry.example/lg:1",
          "--replicas", "3", "--namespace", "ml"])
    text = capsys.readouterr().out
    assert "s3cr3t" not in text  # the database URL is a Secret reference, never a value
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service",
                                         "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    objs = {d["kind"]: _validate(d) for d in docs}
    dep = objs["Deployment"]
    assert dep.metadata.namespace == "ml"
    assert dep.spec.replicas == 3
    (c,) = dep.spec.template.spec.containers
    assert c.image == "registry.example/lg:1"
    assert c.args[:3] == ["serve", "--model", "fraud"]
    assert c.readiness_probe.http_get.path == "/v2/health/ready"
    assert c.liveness_probe.http_get.path == "/v2/health/live"
    assert c.security_context.run_as_non_root is True
    assert c.security_context.read_only_root_filesystem is True
    db = next(e for e in c.env if e.name == "LOCKGATE_DATABASE_URL")
    assert db.value is None
    assert db.value_from.secret_key_ref.name == "lockgate-fraud-database"
    annotations = dep.spec.template.metadata.annotations
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert objs["ConfigMap"].data["LOCKGATE_ARTIFACT_URL"] == "s3://models/registry"
    assert objs["ConfigMap"].data["ORT_DISABLE_TELEMETRY"] == "1"
    assert objs["Service"].spec.selector == dep.spec.selector.match_labels
    hpa = objs["HorizontalPodAutoscaler"]
    assert hpa.spec.scale_target_ref.name == dep.metadata.name
    assert hpa.spec.min_replicas == 3
    assert objs["PodDisruptionBudget"].spec.min_available == 1
    broken = json.loads(json.dumps(docs[1]))
    del broken["spec"]["template"]["spec"]["containers"]
    with pytest.raises(ValueError, match="containers"):  # the validation can fail
        _validate(broken)


def test_bad_render_options_are_refused(home: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "k8s", "render", "fraud", "--replicas", "5",
              "--max-replicas", "2"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "k8s", "render", "../etc"])
    assert exc.value.code == 2


def test_dockerfile_installs_only_pinned_hashed_requirements(tmp_path: Path) -> None:
    good = tmp_path / "requirements.txt"
    good.write_text("lockgate==0.1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
                    "onnxruntime==1.32.0 --hash=sha256:" + "b" * 64 + "\n")
    out = tmp_path / "Dockerfile"
    main(["docker", "render", "--requirements", str(good), "--out", str(out)])
    text = out.read_text()
    assert "pip install --require-hashes --no-deps" in text
    assert "USER 10001" in text
    assert "ORT_DISABLE_TELEMETRY=1" in text
    assert "/v2/health/live" in text
    loose = tmp_path / "loose.txt"
    loose.write_text("lockgate>=0.1\nnumpy==2.0 --hash=sha256:" + "c" * 64 + "\n")
    with pytest.raises(SystemExit) as exc:
        main(["docker", "render", "--requirements", str(loose)])
    assert exc.value.code == 2


@pytest.mark.slow
def test_serve_model_serves_only_that_model(home: Path) -> None:
    from lockgate.api.facade import Lockgate
    from onnx_models import linear_onnx
    from servers import http_get, lockgate_server

    (home / "lockgate.toml").write_text('[gates]\n"*" = ["seeds_recorded"]\n')
    with Lockgate.open(home) as lg:
        for name in ("a", "b"):
            lg.register(linear_onnx(), name=name, seed=1)
            lg.promote(f"{name}@1", "production")
    with lockgate_server(home, "--model", "a") as (_, port):
        assert http_get(port, "/v2/models/a/ready")[0] == 200
        status, body = http_get(port, "/v2/models/b/ready")
        assert status == 404  # not a model this server follows (yet): the client's error
        assert "unknown model 'b'" in body["error"]
