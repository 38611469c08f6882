"""The model card: the CycloneDX ``modelCard`` a BOM carries, and the markdown card drawn from
that BOM (signed along with it).

    card = model_card(version, onnx_bytes, dataset_refs, considerations)   # CycloneDX JSON
    text = model_card_markdown(version, bom)                                # the human card

The CycloneDX card holds the task and architecture family (from the tags ``task``,
``architecture_family``, ``model_architecture`` and ``learning_approach``, else inferred from the
outputs and the ONNX graph), the datasets, input and output formats, metrics and parity errors,
and the considerations, one limitation per paragraph. cyclonedx-python-lib has no model-card
class, so the card is JSON inserted into the serialized BOM before validation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import onnx

from lockgate.errors import InvalidInputError
from lockgate.supplychain.components import PREFIX
from lockgate.types import Version

__all__ = ["model_card", "model_card_markdown"]

_LEARNING_TYPES = frozenset({"supervised", "unsupervised", "reinforcement-learning",
                             "semi-supervised", "self-supervised"})
_GENERIC_GRAPH_NAMES = frozenset({"", "graph", "main_graph", "torch_jit", "torch-jit-export",
                                  "linear", "model"})


# -- the CycloneDX modelCard -------------------------------------------------------------------
def model_card(
    version: Version, onnx_bytes: bytes, dataset_refs: Sequence[str], considerations: str
) -> dict[str, Any]:
    """The CycloneDX 1.6 ``modelCard`` of ``version``; ``dataset_refs`` are the bom-refs of its
    dataset components. InvalidInputError for bytes that are not ONNX or a ``learning_approach``
    tag CycloneDX does not know."""
    proto = _load_onnx(onnx_bytes)
    params: dict[str, Any] = {
        "task": version.tags.get("task") or _infer_task(version),
        "architectureFamily": version.tags.get("architecture_family")
        or _infer_family(version.framework, proto),
    }
    if approach := version.tags.get("learning_approach"):
        if approach not in _LEARNING_TYPES:
            raise InvalidInputError(
                f"tag learning_approach={approach!r} is not a CycloneDX learning type",
                hint=f"one of {sorted(_LEARNING_TYPES)}",
            )
        params["approach"] = {"type": approach}
    if arch := version.tags.get("model_architecture") or _graph_name(proto):
        params["modelArchitecture"] = arch
    if dataset_refs:
        params["datasets"] = [{"ref": ref} for ref in dataset_refs]
    params["inputs"] = [{"format": _tensor_format(t.name, t.dtype, t.shape)}
                        for t in version.signature.inputs]
    params["outputs"] = [{"format": _tensor_format(t.name, t.dtype, t.shape)}
                         for t in version.signature.outputs]
    card: dict[str, Any] = {"modelParameters": params}
    metrics = [{"type": k, "value": repr(float(v))} for k, v in sorted(version.metrics.items())]
    if version.parity is not None:
        metrics += [
            {"type": f"parity max abs error vs {version.framework}",
             "value": repr(o.max_abs_error), "slice": o.name}
            for o in version.parity.outputs
        ]
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    limitations = [p.strip() for p in re.split(r"\n\s*\n", considerations) if p.strip()]
    if limitations:
        card["considerations"] = {"technicalLimitations": limitations}
    return card


def _tensor_format(name: str, dtype: str, shape: Sequence[object]) -> str:
    return f"{name}: {dtype}[{', '.join(str(d) for d in shape)}]"


def _infer_task(version: Version) -> str:
    names = [o.name.lower() for o in version.signature.outputs]
    if any("label" in n or "probabilit" in n for n in names):
        return "classification"
    return "unknown"


def _load_onnx(onnx_bytes: bytes) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(onnx_bytes)
    except Exception as exc:  # protobuf DecodeError
        raise InvalidInputError(f"the model bytes are not an ONNX model: {exc}") from None


def _infer_family(framework: str, proto: onnx.ModelProto) -> str:
    ops = frozenset(n.op_type for n in proto.graph.node)
    rules = [
        (any(o.startswith("TreeEnsemble") for o in ops), "tree ensemble"),
        (bool(ops & {"SVMClassifier", "SVMRegressor"}), "support vector machine"),
        (bool(ops & {"LinearClassifier", "LinearRegressor"}), "linear model"),
        (bool(ops & {"Attention", "MultiHeadAttention"})
         or {"Softmax", "LayerNormalization", "MatMul"} <= ops, "transformer"),
        (bool(ops & {"Conv", "ConvTranspose"}), "convolutional neural network"),
        (bool(ops & {"LSTM", "GRU", "RNN"}), "recurrent neural network"),
        (bool(ops & {"MatMul", "Gemm"}), "feed-forward neural network"),
    ]
    for matched, family in rules:
        if matched:
            return family
    return {"pytorch": "neural network", "keras": "neural network",
            "tensorflow": "neural network", "jax": "neural network",
            "scikit-learn": "classical machine learning"}.get(framework, "unknown")


def _graph_name(proto: onnx.ModelProto) -> str:
    name = proto.graph.name.strip()
    return "" if name.lower() in _GENERIC_GRAPH_NAMES else name


# -- the human model card ----------------------------------------------------------------------
def model_card_markdown(version: Version, bom: Mapping[str, Any]) -> str:
    """A markdown model card drawn from the version and its BOM (signed along with the BOM)."""
    model = bom["metadata"]["component"]
    card = model.get("modelCard", {})
    components = {c.get("bom-ref"): c for c in bom.get("components", [])}
    lines = [f"# {model['name']} — version {model['version']}", ""]
    if version.description:
        lines += [version.description, ""]
    lines += _summary(version, model, card.get("modelParameters", {}))
    lines += ["", "## Inputs and outputs", ""]
    lines += _table(("Kind", "Name", "Type", "Shape"),
                    [("input", t.name, t.dtype, _shape(t.shape)) for t in version.signature.inputs]
                    + [("output", t.name, t.dtype, _shape(t.shape))
                       for t in version.signature.outputs])
    lines += ["", "## Metrics", ""]
    lines += _metrics(card)
    lines += ["", "## Parity with the source framework", ""]
    lines += _parity(version)
    lines += ["", "## Datasets", ""]
    lines += _datasets(card.get("modelParameters", {}), components)
    lines += ["", "## Considerations", ""]
    limits = card.get("considerations", {}).get("technicalLimitations", [])
    lines += [f"- {_one_line(t)}" for t in limits] or ["None stated."]
    lines += ["", "## Runtime environment", ""]
    lines += _runtime(bom)
    lines += ["", "## Direct dependencies", ""]
    lines += _dependencies(bom, model, components)
    lines += ["", "---", "",
              f"Derived from CycloneDX {bom.get('specVersion', '')} BOM "
              f"`{bom.get('serialNumber', '')}`; the card and the BOM are signed together.", ""]
    return "\n".join(lines)


def _summary(version: Version, model: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    props = {p["name"].removeprefix(PREFIX): p.get("value", "")
             for p in model.get("properties", [])}
    sha = next((h["content"] for h in model.get("hashes", []) if h["alg"] == "SHA-256"), "")
    rows = [
        ("Model file", f"`model.onnx`, sha256 `{sha}`"),
        ("Framework", f"{version.framework} {version.framework_version}"),
        ("Converter", props.get("converter", "")),
        ("ONNX", f"opset {version.opset}, IR version {version.ir_version}, "
                 f"producer {props.get('onnx:producer', '')}"),
        ("Task", params.get("task", "")),
        ("Architecture", " / ".join(x for x in (params.get("architectureFamily"),
                                                 params.get("modelArchitecture")) if x)),
        ("Registered", f"{version.created_at} by {version.creator}"),
        ("Seeds", ", ".join(f"{k}={v}" for k, v in sorted(version.seeds.items())) or "none"),
        ("Tags", ", ".join(f"{k}={v}" for k, v in sorted(version.tags.items())) or "none"),
    ]
    return _table(("", ""), rows)


def _metrics(card: Mapping[str, Any]) -> list[str]:
    metrics = [m for m in card.get("quantitativeAnalysis", {}).get("performanceMetrics", [])
               if not m["type"].startswith("parity ")]
    return (_table(("Metric", "Value"), [(m["type"], m["value"]) for m in metrics])
            if metrics else ["None reported."])


def _parity(version: Version) -> list[str]:
    if version.parity is None:
        return ["Not checked: the model arrived as ONNX, there was no framework to compare."]
    p = version.parity
    lines = [f"{'Passed' if p.passed else 'FAILED'} on batch sizes "
             f"{', '.join(map(str, p.batch_sizes))} (seed {p.seed}).", ""]
    lines += _table(("Output", "Max abs error", "Max rel error", "atol", "rtol", "Mismatches"),
                    [(o.name, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}",
                      f"{o.atol:g}", f"{o.rtol:g}", f"{o.mismatches}/{o.elements}")
                     for o in p.outputs])
    return lines


def _datasets(params: Mapping[str, Any], components: Mapping[Any, Any]) -> list[str]:
    refs = [components.get(d.get("ref"), {}) for d in params.get("datasets", [])]
    return [f"- {d.get('name', '?')}" + "".join(
        f", {h['alg'].lower()} `{h['content']}`" for h in d.get("hashes", []))
        + (f" — {d['description']}" if d.get("description") else "") for d in refs] \
        or ["None declared."]


def _runtime(bom: Mapping[str, Any]) -> list[str]:
    env = {p["name"].removeprefix(PREFIX + "environment:"): p.get("value", "")
           for p in bom["metadata"].get("properties", [])}
    return _table(("", ""), [
        ("ONNX Runtime", env.get("onnxruntime.version", "")),
        ("Execution providers used", env.get("onnxruntime.session_providers", "")),
        ("Python", env.get("python.version", "")),
        ("OS", env.get("os.platform", "")),
        ("CUDA / cuDNN", f"{env.get('torch.cuda', '')} / {env.get('torch.cudnn', '')}"),
        ("GPU driver", env.get("nvidia_driver", "")),
        ("Git commit", env.get("git.commit", "")),
    ])


def _dependencies(bom: Mapping[str, Any], model: Mapping[str, Any],
                  components: Mapping[Any, Any]) -> list[str]:
    edges = {d["ref"]: d.get("dependsOn", []) for d in bom.get("dependencies", [])}
    direct = [components[r] for r in edges.get(model.get("bom-ref"), []) if r in components]
    lines = _table(("Component", "Version", "License"),
                   [(c["name"], c.get("version", ""), _license_text(c)) for c in direct]) \
        if direct else ["None recorded."]
    libraries = [c for c in components.values() if c.get("type") == "library"]
    by_license = Counter(_license_text(c) or "not declared" for c in libraries)
    lines += ["", f"{len(libraries)} libraries in all; declared licenses:", ""]
    lines += _table(("License", "Libraries"),
                    [(k, str(n)) for k, n in sorted(by_license.items(),
                                                     key=lambda kv: (-kv[1], kv[0]))])
    return lines


def _license_text(component: Mapping[str, Any]) -> str:
    out = []
    for entry in component.get("licenses", []):
        if "expression" in entry:
            out.append(entry["expression"])
        else:
            lic = entry.get("license", {})
            out.append(lic.get("id") or lic.get("name") or "")
    return ", ".join(x for x in out if x)


def _shape(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(value: object) -> str:
    return _one_line(str(value)).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out
