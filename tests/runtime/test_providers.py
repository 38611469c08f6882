"""Execution providers: the configuration forms and their checks, and real ONNX Runtime sessions
on the providers this machine's wheel carries (the CPU, Azure), on the OpenVINO wheel or plugin
where installed, and on CUDA where there is a GPU."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from lockgate.config.providers import (
    ProviderSet,
    ProviderSpec,
    check_fallback,
    parse_providers,
    parse_providers_text,
)
from lockgate.errors import ConfigError, ServeError
from lockgate.runtime import providers as runtime_providers
from lockgate.runtime.predictor import Predictor
from lockgate.runtime.providers import ProviderUnavailableError, open_session, wheel_clash
from onnx_models import linear_onnx

AVAILABLE = ort.get_available_providers()
HAS_CUDA = "CUDAExecutionProvider" in AVAILABLE
HAS_AZURE = "AzureExecutionProvider" in AVAILABLE
HAS_OPENVINO_WHEEL = "OpenVINOExecutionProvider" in AVAILABLE
HAS_OPENVINO_PLUGIN = importlib.util.find_spec("onnxruntime_ep_openvino") is not None
INTEL_CPU = any(d.device.vendor_id == 0x8086 for d in ort.get_ep_devices()
                if str(d.device.type).endswith("CPU"))


def text(value: str) -> ProviderSet:
    return ProviderSet(parse_providers_text(value, "providers"))


@pytest.fixture
def model() -> bytes:
    return linear_onnx(n_in=4, n_out=3).SerializeToString()


@pytest.fixture
def rows() -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)}


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(("written", "ort_name"), [
    ("cuda", "CUDAExecutionProvider"),
    ("CUDAExecutionProvider", "CUDAExecutionProvider"),
    ("cudaexecutionprovider", "CUDAExecutionProvider"),
    ("trt", "TensorrtExecutionProvider"),
    ("dml", "DmlExecutionProvider"),
    ("ov", "OpenVINOExecutionProvider"),
    ("directml", "DmlExecutionProvider"),
])
def test_short_names_and_aliases_mean_onnx_runtime_names(written: str, ort_name: str) -> None:
    (spec, cpu) = parse_providers_text(f"{written},cpu", "p")
    assert spec.name == ort_name
    assert cpu.name == "CPUExecutionProvider"


def test_an_unknown_provider_is_refused_with_the_known_ones_named() -> None:
    with pytest.raises(ConfigError, match="unknown execution provider 'cudda'") as err:
        parse_providers_text("cudda,cpu", "serve.providers")
    assert "tensorrt" in (err.value.hint or "")
    assert "library=PATH" in (err.value.hint or "")


def test_option_aliases_are_ort_options_and_booleans_are_ort_text() -> None:
    (trt, _cuda, _cpu) = parse_providers_text("tensorrt:fp16=true:device_id=0,cuda,cpu", "p")
    assert dict(trt.options) == {"trt_fp16_enable": "1", "device_id": "0"}
    (cuda, _) = parse_providers_text("cuda:memory_limit=0x100000:use_tf32=off,cpu", "p")
    assert dict(cuda.options) == {"gpu_mem_limit": str(0x100000), "use_tf32": "0"}


@pytest.mark.parametrize(("value", "message"), [
    ("cuda:device_id=first,cpu", "expected an integer, got 'first'"),
    ("cuda:device_id=-1,cpu", "must not be negative"),
    ("tensorrt:trt_fp16_enable=maybe,cpu", "expected true or false"),
    ("cuda:cudnn_conv_algo_search=FASTEST,cpu", "expected one of"),
    ("cuda:fp16=true,cpu", "cuda has no option 'fp16'"),
    ("cuda:device_id,cpu", "is not key=value"),
    ("cuda,,cpu", "empty provider"),
])
def test_options_are_checked_by_name_and_type(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_providers_text(value, "p")


def test_an_unknown_option_names_the_providers_options() -> None:
    with pytest.raises(ConfigError) as err:
        parse_providers_text("cuda:fp16=true,cpu", "p")
    assert "device_id" in (err.value.hint or "")


def test_cpu_must_come_last() -> None:
    with pytest.raises(ConfigError, match="cpu must come last"):
        parse_providers_text("cpu,cuda", "p")


@pytest.mark.parametrize("value", ["cuda,cuda,cpu", "cuda,CUDAExecutionProvider,cpu",
                                   "tensorrt,trt"])
def test_a_provider_listed_twice_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        parse_providers_text(value, "p")


def test_a_plugin_provider_needs_its_library() -> None:
    with pytest.raises(ConfigError, match="not a provider lockgate knows") as err:
        parse_providers_text("AcmeExecutionProvider,cpu", "p")
    assert "library=PATH" in (err.value.hint or "")
    (plugin, _) = parse_providers_text(
        "AcmeExecutionProvider:library=/opt/acme/libacme.so:mode=fast,cpu", "p")
    assert (plugin.name, plugin.library, dict(plugin.options)) == (
        "AcmeExecutionProvider", "/opt/acme/libacme.so", {"mode": "fast"})


def test_toml_and_text_forms_give_the_same_set() -> None:
    doc = tomllib.loads('''
        [serve]
        providers = [{name = "tensorrt", trt_fp16_enable = true, device_id = 1}, "cuda", "cpu"]
    ''')
    from_toml = parse_providers(doc["serve"]["providers"], "serve.providers")
    from_text = parse_providers_text("tensorrt:trt_fp16_enable=true:device_id=1,cuda,cpu", "p")
    assert from_toml == from_text
    assert dict(from_toml[0].options) == {"trt_fp16_enable": "1", "device_id": "1"}


def test_toml_tables_are_checked_too() -> None:
    doc = tomllib.loads('providers = [{name = "cuda", device_id = "x"}, "cpu"]')
    with pytest.raises(ConfigError, match=r"providers\[0\]\.device_id: expected an integer"):
        parse_providers(doc["providers"], "providers")
    with pytest.raises(ConfigError, match="needs name"):
        parse_providers([{"device_id": 0}], "providers")
    with pytest.raises(ConfigError, match="non-empty list"):
        parse_providers([], "providers")


@pytest.mark.parametrize(("value", "key", "precision"), [
    ("cpu", "cpu", "fp32"),
    ("cuda,cpu", "cuda+cpu", "fp32"),
    ("tensorrt:trt_fp16_enable=true,cuda,cpu", "tensorrt[fp16]+cuda+cpu", "fp16"),
    ("tensorrt:trt_fp16_enable=true:trt_int8_enable=true,cuda,cpu",
     "tensorrt[int8]+cuda+cpu", "int8"),
    ("tensorrt:trt_fp16_enable=false,cuda,cpu", "tensorrt+cuda+cpu", "fp32"),
    ("openvino:precision=FP16,cpu", "openvino[fp16]+cpu", "fp16"),
])
def test_the_key_names_the_set_and_its_precision(value: str, key: str, precision: str) -> None:
    providers = text(value)
    assert providers.key == key
    assert providers.precision == precision


def test_the_record_form_round_trips() -> None:
    providers = ProviderSet(parse_providers_text(
        "tensorrt:trt_fp16_enable=true:trt_engine_cache_path=/var/cache/trt,"
        "OpenVINOExecutionProvider:library=/opt/ov/libov.so:device_type=CPU,cpu", "p"), "cpu")
    record = providers.to_dict()
    assert record["fallback"] == "cpu"
    assert record["providers"][1] == {"name": "OpenVINOExecutionProvider",
                                      "options": {"device_type": "CPU"},
                                      "library": "/opt/ov/libov.so"}
    assert ProviderSet.from_dict(record) == providers
    assert ProviderSet.from_dict(None) == ProviderSet()
    assert ProviderSet().is_cpu_only
    assert not providers.is_cpu_only


def test_equal_sets_hash_alike() -> None:
    """Sets are values: a key of a dict or a member of a set (settings hold one)."""
    first = text("tensorrt:trt_fp16_enable=true:device_id=0,cuda,cpu")
    second = ProviderSet(parse_providers(
        [{"name": "tensorrt", "device_id": 0, "trt_fp16_enable": True}, "cuda", "cpu"], "p"))
    assert first == second
    assert len({first, second, text("cuda,cpu")}) == 2


def test_the_text_form_parses_back() -> None:
    providers = text("tensorrt:trt_fp16_enable=true:device_id=0,cuda,cpu")
    assert str(providers) == "tensorrt:trt_fp16_enable=1:device_id=0,cuda,cpu"
    assert text(str(providers)) == providers


def test_fallback_is_none_or_cpu() -> None:
    assert check_fallback("cpu", "f") == "cpu"
    with pytest.raises(ConfigError, match="expected one of"):
        check_fallback("gpu", "serve.provider_fallback")


# --- sessions ----------------------------------------------------------------------------------


def cpu_answer(model: bytes, rows: dict[str, np.ndarray]) -> np.ndarray:
    return Predictor(model)(rows)["output"]


def test_the_default_is_the_cpu_and_plain_runs(model: bytes,
                                                rows: dict[str, np.ndarray]) -> None:
    predictor = Predictor(model)
    assert predictor.providers == ["CPUExecutionProvider"]
    assert not predictor.placement.fell_back
    assert not predictor.io_binding
    assert predictor(rows)["output"].shape == (5, 3)


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime carries CUDA")
def test_cuda_is_refused_on_the_cpu_wheel_with_the_wheel_named(model: bytes) -> None:
    with pytest.raises(ProviderUnavailableError, match="install onnxruntime-gpu") as err:
        Predictor(model, providers=text("cuda,cpu"))
    assert "fallback" in (err.value.hint or "")
    assert isinstance(err.value, ServeError)


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime carries CUDA")
def test_tensorrt_is_refused_naming_what_it_needs(model: bytes) -> None:
    with pytest.raises(ProviderUnavailableError, match=r"pip install tensorrt"):
        Predictor(model, providers=text("tensorrt,cuda,cpu"))


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime carries CUDA")
def test_fallback_cpu_serves_on_the_cpu_and_says_so(model: bytes,
                                                     rows: dict[str, np.ndarray]) -> None:
    providers = ProviderSet(parse_providers_text("cuda:device_id=0,cpu", "p"), "cpu")
    predictor = Predictor(model, providers=providers)
    placement = predictor.placement
    assert placement.fell_back
    assert placement.missing == ("CUDAExecutionProvider",)
    assert placement.used == ("CPUExecutionProvider",)
    assert placement.requested == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert "onnxruntime-gpu" in placement.reasons[0]
    assert placement.to_dict()["fell_back"] is True
    np.testing.assert_array_equal(predictor(rows)["output"], cpu_answer(model, rows))


@pytest.mark.skipif(not HAS_AZURE, reason="this onnxruntime has no AzureExecutionProvider")
def test_a_real_non_cpu_provider_answers_the_cpus_numbers(model: bytes,
                                                          rows: dict[str, np.ndarray]) -> None:
    predictor = Predictor(model, providers=text("azure,cpu"))
    assert predictor.providers == ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert not predictor.placement.fell_back
    assert not predictor.io_binding
    np.testing.assert_array_equal(predictor(rows)["output"], cpu_answer(model, rows))


@pytest.mark.skipif(not HAS_AZURE, reason="this onnxruntime has no AzureExecutionProvider")
def test_azure_takes_no_ordinary_node(model: bytes) -> None:
    """The Azure provider only runs its remote-call operator: the session lists it, every
    node of an ordinary model still runs on the CPU."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    session, placement = open_session(model, opts, text("azure,cpu"))
    assert placement.used == ("AzureExecutionProvider", "CPUExecutionProvider")
    assigned = {sub.ep_name for sub in session.get_provider_graph_assignment_info()}
    assert assigned == {"CPUExecutionProvider"}


def test_a_plugin_whose_library_is_missing_is_refused(model: bytes, tmp_path: Path) -> None:
    lib = tmp_path / "libacme_ep.so"
    providers = text(f"AcmeExecutionProvider:library={lib},cpu")
    with pytest.raises(ProviderUnavailableError, match=r"its library .*libacme_ep\.so does not "
                                                       r"exist"):
        Predictor(model, providers=providers)


def test_a_plugin_library_that_does_not_load_is_refused(model: bytes, tmp_path: Path) -> None:
    lib = tmp_path / "libbroken_ep.so"
    lib.write_bytes(b"not a shared library")
    with pytest.raises(ProviderUnavailableError, match="its library did not load"):
        Predictor(model, providers=text(f"BrokenExecutionProvider:library={lib},cpu"))


def test_a_missing_plugin_falls_back_only_when_allowed(model: bytes, tmp_path: Path) -> None:
    specs = parse_providers_text(f"AcmeExecutionProvider:library={tmp_path / 'x.so'},cpu", "p")
    predictor = Predictor(model, providers=ProviderSet(specs, "cpu"))
    assert predictor.placement.missing == ("AcmeExecutionProvider",)
    assert predictor.providers == ["CPUExecutionProvider"]


def test_a_plugin_registered_from_another_path_is_refused(
        model: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin is registered once per process; another library under the same name would be
    a different provider than the one the deployment names."""
    first = tmp_path / "a" / "libacme_ep.so"
    monkeypatch.setitem(runtime_providers._registered, "AcmeExecutionProvider", str(first))
    other = tmp_path / "b" / "libacme_ep.so"
    with pytest.raises(ProviderUnavailableError, match="already registered from") as err:
        Predictor(model, providers=text(f"AcmeExecutionProvider:library={other},cpu"))
    assert str(first) in str(err.value)
    assert str(other) in str(err.value)


# --- two ONNX Runtime wheels -----------------------------------------------------------------


def fake_wheel(site: Path, name: str, version: str) -> None:
    """The metadata pip leaves for an installed wheel (what importlib.metadata reads)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_two_onnx_runtime_wheels_in_one_place_are_reported(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    fake_wheel(site, "onnxruntime", "1.32.0")
    assert wheel_clash([str(site)]) is None
    fake_wheel(site, "onnxruntime-gpu", "1.31.1")
    clash = wheel_clash([str(site)])
    assert clash is not None
    assert "onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1" in clash
    assert str(site) in clash


def test_wheels_in_separate_places_do_not_clash(tmp_path: Path) -> None:
    """The first directory on the path is the one imported; nothing was overwritten."""
    fake_wheel(tmp_path / "venv", "onnxruntime", "1.32.0")
    fake_wheel(tmp_path / "user", "onnxruntime-openvino", "1.24.1")
    assert wheel_clash([str(tmp_path / "venv"), str(tmp_path / "user")]) is None


def test_this_environment_has_one_onnx_runtime() -> None:
    assert wheel_clash() is None


def test_a_clash_refuses_non_cpu_providers_and_leaves_the_cpu(
        model: bytes, rows: dict[str, np.ndarray], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site-packages"
    fake_wheel(site, "onnxruntime", "1.32.0")
    fake_wheel(site, "onnxruntime-gpu", "1.31.1")
    monkeypatch.syspath_prepend(str(site))
    for fallback in ("none", "cpu"):
        with pytest.raises(ProviderUnavailableError, match="side by side") as err:
            Predictor(model, providers=ProviderSet(parse_providers_text("cuda,cpu", "p"),
                                                   fallback))
        assert "uninstall" in (err.value.hint or "")
    assert Predictor(model)(rows)["output"].shape == (5, 3)


# --- OpenVINO, where installed ---------------------------------------------------------------


@pytest.mark.skipif(not HAS_OPENVINO_WHEEL,
                    reason="the onnxruntime-openvino wheel is not the installed onnxruntime")
def test_openvino_wheel_on_the_cpu_answers_the_cpus_numbers(
        model: bytes, rows: dict[str, np.ndarray]) -> None:
    predictor = Predictor(model, providers=text("openvino:device_type=CPU,cpu"))
    assert predictor.providers[0] == "OpenVINOExecutionProvider"
    assert not predictor.placement.fell_back
    reference = Predictor(model, providers=text("cpu"))(rows)["output"]
    np.testing.assert_allclose(predictor(rows)["output"], reference, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAS_OPENVINO_WHEEL,
                    reason="the onnxruntime-openvino wheel is not the installed onnxruntime")
def test_openvino_wheel_refuses_a_device_it_does_not_have(model: bytes) -> None:
    """OpenVINO asked for a device it lacks quietly gives the session to the CPU: refused."""
    with pytest.raises(ProviderUnavailableError, match="does not use it"):
        Predictor(model, providers=text("openvino:device_type=NPU,cpu"))


@pytest.mark.skipif(not HAS_OPENVINO_PLUGIN, reason="onnxruntime-ep-openvino is not installed")
def test_openvino_plugin(model: bytes, rows: dict[str, np.ndarray], tmp_path: Path) -> None:
    """The plugin lists devices of Intel's only: on an Intel CPU it runs the model, elsewhere
    it is refused for listing no device."""
    import onnxruntime_ep_openvino as plugin

    lib = plugin.get_library_path()
    providers = text(f"OpenVINOExecutionProvider:library={lib}:device_type=CPU,cpu")
    if INTEL_CPU:
        predictor = Predictor(model, providers=providers)
        assert predictor.providers[0] == "OpenVINOExecutionProvider"
        np.testing.assert_allclose(predictor(rows)["output"], cpu_answer(model, rows),
                                   rtol=1e-5, atol=1e-6)
    else:
        with pytest.raises(ProviderUnavailableError, match="lists no device of type CPU"):
            Predictor(model, providers=providers)
    copy = tmp_path / Path(lib).name
    copy.write_bytes(Path(lib).read_bytes())
    with pytest.raises(ProviderUnavailableError, match="already registered from"):
        Predictor(model, providers=text(
            f"OpenVINOExecutionProvider:library={copy}:device_type=CPU,cpu"))


def test_the_io_binding_run_answers_as_a_plain_run(model: bytes,
                                                   rows: dict[str, np.ndarray]) -> None:
    """The bound run CUDA and ROCm sessions take (outputs bound to host memory here, as for
    ROCm), on the CPU: the same answers as a plain run, for every output and for a subset;
    non-contiguous inputs are bound too."""
    plain = Predictor(model)
    bound = Predictor(model)
    bound._binding = ("cpu", 0)
    assert bound.io_binding
    np.testing.assert_array_equal(bound(rows)["output"], plain(rows)["output"])
    strided = {"input": np.asfortranarray(rows["input"])}
    np.testing.assert_array_equal(bound.run(strided, outputs=["output"])["output"],
                                  plain(rows)["output"])


# --- CUDA, where there is a GPU --------------------------------------------------------------


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDAExecutionProvider in this onnxruntime")
def test_cuda_runs_through_io_binding_and_answers_the_cpus_numbers(
        model: bytes, rows: dict[str, np.ndarray]) -> None:
    predictor = Predictor(model, providers=text("cuda,cpu"))
    assert predictor.providers[0] == "CUDAExecutionProvider"
    assert predictor.io_binding
    out = predictor(rows)
    assert list(out) == ["output"]
    np.testing.assert_allclose(out["output"], cpu_answer(model, rows), rtol=1e-4, atol=1e-5)
    again = predictor.run(rows, outputs=["output"])["output"]
    np.testing.assert_array_equal(again, out["output"])


def test_spec_str_names_a_plugins_library() -> None:
    spec = ProviderSpec("AcmeExecutionProvider", {"mode": "fast"}, "/opt/libacme.so")
    assert str(spec) == "AcmeExecutionProvider:mode=fast:library=/opt/libacme.so"
