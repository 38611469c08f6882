"""scikit-learn → ONNX: pipelines, a regressor and string labels keep parity."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.decomposition import PCA
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from lockgate.convert import Converted, SklearnConverter, converter_for
from lockgate.convert.sklearn import default_opset
from lockgate.errors import ConversionError
from lockgate.parity.check import assert_parity, check_parity
from lockgate.progress import NullProgress
from lockgate.runtime.predictor import Predictor
from lockgate.types import ParityReport

pytestmark = pytest.mark.sklearn

X_IRIS, Y_IRIS = load_iris(return_X_y=True)


def _convert(model: object, sample: object) -> Converted:
    return converter_for(model).convert(model, sample, opset=None, progress=NullProgress())


def _parity(converted: Converted) -> tuple[Predictor, ParityReport]:
    predictor = Predictor(converted.model.SerializeToString())
    report = check_parity(converted, predictor, n_random=5)
    assert_parity(report)
    return predictor, report


def test_scaler_logistic_regression() -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X_IRIS, Y_IRIS)
    converted = _convert(model, X_IRIS[:20])
    predictor, report = _parity(converted)

    assert converted.framework == "scikit-learn"
    assert converted.converter.startswith("skl2onnx==")
    assert predictor.input_names == ["input"]
    assert predictor.output_names == ["label", "probabilities"]
    inp = predictor.signature.inputs[0]
    assert (inp.dtype, inp.shape) == ("float32", ("batch", 4))
    label, proba = predictor.signature.outputs
    assert (label.dtype, label.shape) == ("int64", ("batch",))
    assert (proba.dtype, proba.shape) == ("float32", ("batch", 3))
    assert report.outputs[0].atol == 0.0
    assert report.outputs[0].rtol == 0.0
    assert converted.sample["input"].dtype == np.float32


def test_scaler_pca_random_forest() -> None:
    model = make_pipeline(
        StandardScaler(), PCA(n_components=3), RandomForestClassifier(20, random_state=0)
    ).fit(X_IRIS, Y_IRIS)
    _, report = _parity(_convert(model, X_IRIS[::10]))
    assert [o.name for o in report.outputs] == ["label", "probabilities"]


def test_string_labels_come_out_exact() -> None:
    labels = np.array(["setosa", "versicolor", "virginica"])[Y_IRIS]
    model = LogisticRegression(max_iter=500).fit(X_IRIS, labels)
    predictor, _ = _parity(_convert(model, X_IRIS[:10]))
    assert predictor.signature.outputs[0].dtype == "object"


def test_classifier_without_probabilities_in_a_pipeline() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LinearSVC()).fit(x, y)
    predictor, _ = _parity(_convert(model, x[:16]))
    assert predictor.output_names == ["label", "probabilities"]


@pytest.mark.parametrize(
    "model",
    [make_pipeline(StandardScaler(), Ridge()), GradientBoostingRegressor(n_estimators=20)],
    ids=["ridge", "gradient-boosting"],
)
def test_regressors(model: Pipeline) -> None:
    model.fit(X_IRIS[:, 1:], X_IRIS[:, 0])
    predictor, report = _parity(_convert(model, X_IRIS[:12, 1:]))
    (out,) = predictor.signature.outputs
    assert (out.name, out.dtype, out.shape) == ("variable", "float32", ("batch", 1))
    assert report.batch_sizes[0] == 12


def test_default_opset_is_loadable_and_recorded() -> None:
    opset = default_opset()
    assert opset >= 18
    model = make_pipeline(StandardScaler(), Ridge()).fit(X_IRIS, Y_IRIS)
    converted = _convert(model, X_IRIS[:3])
    assert converted.details["target_opset"] == str(opset)
    domains = [imp.domain for imp in converted.model.opset_import]
    assert len(domains) == len(set(domains))


def test_unfitted_model() -> None:
    with pytest.raises(ConversionError, match="not fitted"):
        _convert(LogisticRegression(), X_IRIS[:3])


def test_wrong_feature_count() -> None:
    model = LogisticRegression(max_iter=500).fit(X_IRIS, Y_IRIS)
    with pytest.raises(ConversionError, match="3 features"):
        _convert(model, X_IRIS[:5, :3])


def test_sample_must_be_two_dimensional() -> None:
    model = LogisticRegression(max_iter=500).fit(X_IRIS, Y_IRIS)
    with pytest.raises(ConversionError, match="2-D"):
        SklearnConverter().convert(model, X_IRIS[0], opset=None, progress=NullProgress())
