"""build_bom: a strict-valid CycloneDX 1.6 BOM of a real environment; model card; lock hashes."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import pytest

from lockgate.audit import now
from lockgate.environment.fingerprint import capture_environment, installed_distributions
from lockgate.errors import IntegrityError, InvalidInputError, SupplyChainError
from lockgate.runtime.onnxmeta import signature_of
from lockgate.supplychain.bom import build_bom, validate_bom
from lockgate.supplychain.lockfiles import parse_lock_hashes
from lockgate.supplychain.modelcard import model_card_markdown
from lockgate.types import Digest, OutputParity, ParityReport, Signature, TensorSpec, Version
from onnx_models import linear_onnx

H1, H2, H3 = ("1" * 64, "2" * 64, "3" * 64)


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return linear_onnx().SerializeToString()


@pytest.fixture(scope="module")
def version(onnx_bytes: bytes) -> Version:
    """A version as registration records it, with the environment of this very process."""
    model = onnx.load_from_string(onnx_bytes)
    env = capture_environment(seeds={"seed": 7}, providers=["CPUExecutionProvider"])
    env["converter"] = f"onnx=={onnx.__version__} (checked, shapes inferred)"
    return Version(
        name="churn", number=3, digest=Digest.of_bytes(onnx_bytes), framework="onnx",
        framework_version=onnx.__version__, opset=17, ir_version=8,
        signature=signature_of(model),
        parity=ParityReport((OutputParity("output", 2.5e-7, 1e-6, 1e-5, 1e-4, 0, 96),),
                            (1, 2, 5), 7),
        environment=env, creator="tester", created_at=now(), description="Churn scorer.",
        tags={"team": "growth"}, metrics={"auc": 0.91, "f1": 0.75}, seeds={"seed": 7},
    )


@pytest.fixture(scope="module")
def bom(version: Version, onnx_bytes: bytes) -> dict[str, Any]:
    return build_bom(
        version, onnx_bytes=onnx_bytes, producer="lockgate-tests 1.0",
        considerations="Trained on 2024 data only.\n\nNot calibrated for new markets.",
        datasets=[{"name": "churn-2024", "fingerprint": f"sha256:{H1}",
                   "url": "https://data.example.org/churn-2024.parquet",
                   "description": "training split"}],
    )


def _component(bom: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in bom["components"] if c["name"].lower() == name.lower())


def _depends_on(bom: dict[str, Any], ref: str) -> list[str]:
    return next(d.get("dependsOn", []) for d in bom["dependencies"] if d["ref"] == ref)


def _props(component: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p.get("value", "") for p in component.get("properties", [])}


def test_bom_passes_the_strict_16_validator(bom: dict[str, Any]) -> None:
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["specVersion"] == "1.6"
    validate_bom(bom)
    validate_bom(json.dumps(bom))


def test_model_component_carries_digest_properties_and_model_card(
    bom: dict[str, Any], onnx_bytes: bytes
) -> None:
    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    assert (model["name"], model["version"]) == ("churn", "3")
    assert model["hashes"] == [{"alg": "SHA-256",
                                "content": hashlib.sha256(onnx_bytes).hexdigest()}]
    props = _props(model)
    assert props["lockgate:onnx:opset"] == "17"
    assert props["lockgate:onnx:ir_version"] == "8"
    assert props["lockgate:onnx:producer"] == "lockgate-tests 1.0"
    assert props["lockgate:framework"] == "onnx"
    assert props["lockgate:parity:passed"] == "true"

    card = model["modelCard"]
    params = card["modelParameters"]
    assert params["task"] == "unknown"
    assert params["architectureFamily"] == "feed-forward neural network"
    assert params["inputs"] == [{"format": "input: float32[batch, 4]"}]
    assert params["outputs"] == [{"format": "output: float32[batch, 3]"}]
    metrics = card["quantitativeAnalysis"]["performanceMetrics"]
    assert {"type": "auc", "value": "0.91"} in metrics
    assert {"type": "parity max abs error vs onnx", "value": "2.5e-07",
            "slice": "output"} in metrics
    assert card["considerations"]["technicalLimitations"] == [
        "Trained on 2024 data only.", "Not calibrated for new markets."]


def test_datasets_are_data_components_referenced_by_the_card(bom: dict[str, Any]) -> None:
    (ref,) = bom["metadata"]["component"]["modelCard"]["modelParameters"]["datasets"]
    data = next(c for c in bom["components"] if c.get("bom-ref") == ref["ref"])
    assert data["type"] == "data"
    assert data["name"] == "churn-2024"
    assert data["hashes"] == [{"alg": "SHA-256", "content": H1}]


def test_every_distribution_is_a_library_with_purl_and_the_graph_is_wired(
    bom: dict[str, Any], version: Version
) -> None:
    libraries = [c for c in bom["components"] if c["type"] == "library"]
    assert len(libraries) == len(version.environment["packages"])
    assert all(c["purl"].startswith("pkg:pypi/") and c["bom-ref"] == c["purl"]
               for c in libraries)
    ort = _component(bom, "onnxruntime")
    assert ort["purl"] == f"pkg:pypi/onnxruntime@{ort['version']}"
    assert _props(ort)["lockgate:onnxruntime:session_providers"] == "CPUExecutionProvider"
    assert ort["licenses"]  # read from the installed distribution's metadata

    model_deps = _depends_on(bom, bom["metadata"]["component"]["bom-ref"])
    assert ort["bom-ref"] in model_deps
    assert _component(bom, "onnx")["bom-ref"] in model_deps
    # library -> library edges come from installed Requires-Dist
    cdx = _component(bom, "cyclonedx-python-lib")
    assert _component(bom, "packageurl-python")["bom-ref"] in _depends_on(bom, cdx["bom-ref"])
    # PEP 639 License-Expression becomes an SPDX expression
    crypto = _component(bom, "cryptography")
    assert crypto["licenses"] == [{"expression": "Apache-2.0 OR BSD-3-Clause",
                                   "acknowledgement": "declared"}]


def test_environment_facts_are_bom_properties(bom: dict[str, Any], version: Version) -> None:
    props = _props(bom["metadata"])
    assert props["lockgate:environment:python.version"] == version.environment["python"][
        "version"]
    assert props["lockgate:environment:seeds.seed"] == "7"
    assert bom["metadata"]["tools"]["components"][0]["name"] == "lockgate"


def test_the_same_version_gives_the_same_bom(
    bom: dict[str, Any], version: Version, onnx_bytes: bytes
) -> None:
    again = build_bom(
        version, onnx_bytes=onnx_bytes, producer="lockgate-tests 1.0",
        considerations="Trained on 2024 data only.\n\nNot calibrated for new markets.",
        datasets=[{"name": "churn-2024", "fingerprint": f"sha256:{H1}",
                   "url": "https://data.example.org/churn-2024.parquet",
                   "description": "training split"}],
    )
    assert again == bom


def test_gpu_pieces_become_components_when_the_environment_names_them(
    version: Version, onnx_bytes: bytes
) -> None:
    env = copy.deepcopy(dict(version.environment))
    env["torch"] = {"version": "2.13.0", "cuda": "12.8", "cudnn": "91002"}
    env["nvidia_driver"] = "570.86.15"
    env["onnxruntime"]["session_providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    doc = build_bom(replace(version, environment=env), onnx_bytes=onnx_bytes, producer="x")
    cuda, driver = _component(doc, "cuda"), _component(doc, "nvidia-driver")
    assert (cuda["version"], driver["type"]) == ("12.8", "device-driver")
    assert _component(doc, "cudnn")["version"] == "91002"
    ort_deps = _depends_on(doc, _component(doc, "onnxruntime")["bom-ref"])
    assert {cuda["bom-ref"], driver["bom-ref"]} <= set(ort_deps)


@pytest.mark.parametrize(
    ("corrupt", "where"),
    [
        (lambda d: d["metadata"]["component"].__setitem__("type", "bogus"),
         "$.metadata.component"),
        (lambda d: d["components"][0].__setitem__("hashes", [{"alg": "SHA-999",
                                                              "content": H1}]),
         "$.components[0]"),
        (lambda d: d["metadata"]["component"]["modelCard"].__setitem__("notes", "x"),
         "$.metadata.component.modelCard"),
    ],
    ids=["component-type", "hash-alg", "unknown-model-card-field"],
)
def test_schema_errors_surface_as_supply_chain_errors(
    bom: dict[str, Any], corrupt: Any, where: str
) -> None:
    doc = copy.deepcopy(bom)
    corrupt(doc)
    with pytest.raises(SupplyChainError, match=r"CycloneDX 1\.6 schema at") as info:
        validate_bom(doc)
    assert where in info.value.message
    assert len(info.value.message) < 800  # the validator's message, not the whole schema


def test_documents_that_are_not_16_boms_are_refused(bom: dict[str, Any]) -> None:
    with pytest.raises(SupplyChainError, match="not JSON"):
        validate_bom("{nope")
    with pytest.raises(SupplyChainError, match=r"CycloneDX 1\.6"):
        validate_bom({**bom, "specVersion": "1.5"})


def test_bytes_of_another_model_are_refused(version: Version) -> None:
    other = linear_onnx(seed=1).SerializeToString()
    with pytest.raises(IntegrityError, match="are not model churn@3"):
        build_bom(version, onnx_bytes=other, producer="x")


def test_bad_dataset_specs_are_refused(version: Version, onnx_bytes: bytes) -> None:
    with pytest.raises(InvalidInputError, match="unknown keys"):
        build_bom(version, onnx_bytes=onnx_bytes, producer="x",
                  datasets=[{"name": "d", "sha": H1}])
    with pytest.raises(InvalidInputError, match="fingerprint"):
        build_bom(version, onnx_bytes=onnx_bytes, producer="x",
                  datasets=[{"name": "d", "fingerprint": "sha256:xyz"}])


def test_task_comes_from_tags_or_classifier_outputs(
    version: Version, onnx_bytes: bytes
) -> None:
    outputs = (TensorSpec("output_label", "int64", ("N",)),
               TensorSpec("output_probability", "float32", ("N", 2)))
    clf = replace(version, signature=Signature(version.signature.inputs, outputs))
    doc = build_bom(clf, onnx_bytes=onnx_bytes, producer="x")
    assert doc["metadata"]["component"]["modelCard"]["modelParameters"]["task"] == (
        "classification")
    tagged = replace(version, tags={"task": "regression", "model_architecture": "Linear-4x3"})
    params = build_bom(tagged, onnx_bytes=onnx_bytes, producer="x")["metadata"]["component"][
        "modelCard"]["modelParameters"]
    assert (params["task"], params["modelArchitecture"]) == ("regression", "Linear-4x3")


# -- lock files --------------------------------------------------------------------------------
def _pinned(name: str) -> str:
    return next(v for n, v in installed_distributions().items() if n.lower() == name)


def test_pylock_toml_hashes(tmp_path: Path) -> None:
    numpy = _pinned("numpy")
    lock = tmp_path / "pylock.toml"
    lock.write_text(f"""\
lock-version = "1.0"
created-by = "hand"

[[packages]]
name = "NumPy"
version = "{numpy}"
sdist = {{ name = "numpy.tar.gz", hashes = {{ sha256 = "{H1}" }} }}
wheels = [
  {{ name = "numpy-a.whl", hashes = {{ sha256 = "{H2}" }} }},
  {{ name = "numpy-b.whl", hashes = {{ sha256 = "{H2}", sha512 = "{'4' * 128}" }} }},
]

[[packages]]
name = "local-thing"
directory = {{ path = "." }}
""")
    assert parse_lock_hashes(lock) == {
        f"numpy=={numpy}": [f"sha256:{H1}", f"sha256:{H2}", f"sha512:{'4' * 128}"],
        "local-thing": [],
    }


def test_requirements_txt_hashes(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text(f"""\
# generated by pip-compile
--index-url https://pypi.example.org/simple
onnxruntime==1.32.0 \\
    --hash=sha256:{H1} \\
    --hash=sha256:{H2.upper()}
    # via lockgate
Jinja2==3.1.6 ; python_version >= "3.8" --hash=sha256:{H3}
requests>=2  # unpinned
""")
    assert parse_lock_hashes(req) == {
        "jinja2==3.1.6": [f"sha256:{H3}"],
        "onnxruntime==1.32.0": [f"sha256:{H1}", f"sha256:{H2}"],
        "requests": [],
    }


def test_lock_hashes_land_on_matching_components_only(
    tmp_path: Path, version: Version, onnx_bytes: bytes
) -> None:
    numpy, ort = _pinned("numpy"), _pinned("onnxruntime")
    (tmp_path / "pylock.toml").write_text(f"""\
lock-version = "1.0"
[[packages]]
name = "numpy"
version = "{numpy}"
wheels = [{{ name = "n.whl", hashes = {{ sha256 = "{H1}" }} }}]
[[packages]]
name = "protobuf"
version = "0.0.1"
wheels = [{{ name = "p.whl", hashes = {{ sha256 = "{H3}" }} }}]
""")
    (tmp_path / "requirements.txt").write_text(
        f"onnxruntime=={ort} \\\n    --hash=sha256:{H2}\n")
    hashes = {**parse_lock_hashes(tmp_path / "pylock.toml"),
              **parse_lock_hashes(tmp_path / "requirements.txt")}
    doc = build_bom(version, onnx_bytes=onnx_bytes, producer="x", lock_hashes=hashes)
    assert _component(doc, "numpy")["hashes"] == [{"alg": "SHA-256", "content": H1}]
    assert _component(doc, "onnxruntime")["hashes"] == [{"alg": "SHA-256", "content": H2}]
    assert "hashes" not in _component(doc, "protobuf")  # locked at another version


def test_unusable_lock_files_are_refused(tmp_path: Path) -> None:
    bad_hash = tmp_path / "requirements.txt"
    bad_hash.write_text("numpy==2.0 --hash=sha256:abc\n")
    with pytest.raises(InvalidInputError, match="not '<algorithm>:<hex digest>'"):
        parse_lock_hashes(bad_hash)
    bad_req = tmp_path / "r2.txt"
    bad_req.write_text("numpy===\n")
    with pytest.raises(InvalidInputError, match=r"r2.txt:1"):
        parse_lock_hashes(bad_req)
    not_lock = tmp_path / "pylock.toml"
    not_lock.write_text("[tool]\nx = 1\n")
    with pytest.raises(InvalidInputError, match="no \\[\\[packages\\]\\]"):
        parse_lock_hashes(not_lock)
    with pytest.raises(InvalidInputError, match="cannot read"):
        parse_lock_hashes(tmp_path / "missing.txt")


# -- the human card ----------------------------------------------------------------------------
def test_model_card_markdown_is_drawn_from_the_bom(
    bom: dict[str, Any], version: Version, onnx_bytes: bytes
) -> None:
    text = model_card_markdown(version, bom)
    assert text.startswith("# churn — version 3\n")
    assert hashlib.sha256(onnx_bytes).hexdigest() in text
    assert "| auc | 0.91 |" in text
    assert "| output | 2.5e-07 | 1e-06 | 1e-05 | 0.0001 | 0/96 |" in text
    assert "- Not calibrated for new markets." in text
    assert f"- churn-2024, sha-256 `{H1}` — training split" in text
    assert "| onnxruntime |" in text
    assert bom["serialNumber"] in text
    assert text == model_card_markdown(version, bom)
