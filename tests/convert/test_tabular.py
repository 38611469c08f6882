"""scikit-learn from DataFrames and dicts of columns: one typed input per column, the source model
given a DataFrame again, encoder categories, missing values, refusals that name the step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("pandas")

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from lockgate.convert import Converted, converter_for
from lockgate.convert.columns import Layout, encoder_categories, is_columnar, layout_of
from lockgate.errors import ConversionError
from lockgate.parity.check import assert_parity, check_parity
from lockgate.progress import NullProgress
from lockgate.runtime.predictor import Predictor
from lockgate.types import ParityReport

pytestmark = pytest.mark.sklearn


def _frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "income": rng.normal(50_000, 15_000, n),
        "children": rng.integers(0, 5, n).astype(np.int32),
        "region": rng.choice(["north", "south", "east"], n),
        "tier": pd.Categorical(rng.choice(["gold", "silver", "bronze"], n)),
        "member": rng.random(n) < 0.4,
    })
    frame.loc[::6, "income"] = np.nan
    return frame


def _target(frame: pd.DataFrame) -> np.ndarray:
    return np.where((frame["children"] > 2) | (frame["tier"] == "gold"), "yes", "no")


def _convert(model: object, sample: object) -> Converted:
    return converter_for(model).convert(model, sample, opset=None, progress=NullProgress())


def _parity(converted: Converted) -> tuple[Predictor, ParityReport]:
    predictor = Predictor(converted.model.SerializeToString())
    report = check_parity(converted, predictor, n_random=6)
    assert_parity(report)
    return predictor, report


# -- the column mapping ------------------------------------------------------------------------

def test_columns_are_typed_the_way_skl2onnx_types_them() -> None:
    frame = _frame(8)
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression())
    model.fit(frame, _target(frame))
    layout, arrays = layout_of(frame, model)

    assert [(c.name, c.kind, c.width) for c in layout.columns] == [
        ("income", "float", 1), ("children", "int", 1), ("region", "string", 1),
        ("tier", "string", 1), ("member", "bool", 1)]
    assert {n: (a.dtype, a.shape) for n, a in arrays.items()} == {
        "income": (np.float32, (8, 1)), "children": (np.int64, (8, 1)),
        "region": (object, (8, 1)), "tier": (object, (8, 1)), "member": (bool, (8, 1))}
    assert arrays["tier"][0, 0] == str(frame["tier"].iloc[0])


def test_rebuild_gives_back_the_sample_dtypes() -> None:
    frame = _frame(6)
    layout, arrays = layout_of(frame, object())
    rebuilt = layout.rebuild(arrays)

    assert isinstance(rebuilt, pd.DataFrame)
    assert list(rebuilt.columns) == list(frame.columns)
    assert rebuilt.dtypes.to_dict() == frame.dtypes.to_dict()
    pd.testing.assert_frame_equal(rebuilt.drop(columns="income"), frame.drop(columns="income"))
    np.testing.assert_allclose(rebuilt["income"], frame["income"].astype(np.float32), rtol=0)


def test_rebuild_keeps_pandas_extension_dtypes() -> None:
    frame = pd.DataFrame({
        "s": pd.array(["a", "b"], dtype="string"), "b": pd.array([True, False], dtype="boolean"),
        "i": pd.array([1, 2], dtype="Int64"), "f": pd.array([1.5, None], dtype="Float64"),
        "u": np.array([1, 2], np.uint8)})
    layout, arrays = layout_of(frame, object())
    assert [c.kind for c in layout.columns] == ["string", "bool", "int", "float", "int"]
    assert np.isnan(arrays["f"][1, 0])
    rebuilt = layout.rebuild(arrays)
    assert rebuilt.dtypes.to_dict() == frame.dtypes.to_dict()
    assert rebuilt["f"].isna().tolist() == [False, True]


def test_dict_of_columns_and_one_wide_columns() -> None:
    sample = {"a": [1.5, 2.5], "b": np.array([[3], [4]]), "c": ["x", "y"]}
    layout, arrays = layout_of(sample, object())
    assert [(c.name, c.kind) for c in layout.columns] == [("a", "float"), ("b", "int"),
                                                         ("c", "string")]
    assert arrays["b"].tolist() == [[3], [4]]
    with pytest.raises(ConversionError, match=r"'b' has shape \[2, 2\]"):
        layout_of({"b": np.zeros((2, 2))}, object())
    with pytest.raises(ConversionError, match="different numbers of rows"):
        layout_of({"a": [1.0, 2.0], "c": ["x"]}, object())


def test_what_counts_as_columns() -> None:
    assert is_columnar(_frame(3))
    assert is_columnar({"a": [1.0]})
    assert is_columnar(["some text", "more text"])
    assert is_columnar(np.array([["a", "b"]], dtype=object))
    assert not is_columnar(np.zeros((3, 2)))
    assert not is_columnar([[1.0, 2.0]])


def test_missing_and_extra_columns() -> None:
    frame = _frame(40)
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression())
    model.fit(frame[["region", "tier"]], _target(frame))

    with pytest.raises(ConversionError, match="no column 'tier'") as exc:
        _convert(model, frame[["region", "income"]])
    assert "['region', 'tier']" in (exc.value.hint or "")

    converted = _convert(model, frame)  # extra columns are left out, and said so
    assert list(converted.sample) == ["region", "tier"]
    assert converted.details["unused_columns"] == "income, children, member"


def test_refused_columns_say_what_to_do() -> None:
    with pytest.raises(ConversionError, match="'city' has missing values") as exc:
        layout_of(pd.DataFrame({"city": ["a", None]}), object())
    assert "fillna" in (exc.value.hint or "")
    with pytest.raises(ConversionError, match="'when' has dtype datetime64"):
        layout_of(pd.DataFrame({"when": pd.to_datetime(["2024-01-01"])}), object())
    with pytest.raises(ConversionError, match="1-D sample of floats is not a table"):
        _convert(LinearRegression().fit([[1.0], [2.0]], [1.0, 2.0]), pd.Series([1.0, 2.0]))


def test_encoder_categories_follow_imputers_and_column_transformers() -> None:
    frame = _frame(60)
    pre = ColumnTransformer([
        ("region", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                 OneHotEncoder(handle_unknown="ignore")), ["region"]),
        ("tier", OrdinalEncoder(), ["tier"]),
        ("kids", OneHotEncoder(handle_unknown="ignore"), ["children"]),
    ])
    model = make_pipeline(pre, LogisticRegression()).fit(frame, _target(frame))
    cats = encoder_categories(model, ["region", "tier", "children", "income"])
    assert cats == {"region": ("east", "north", "south"), "tier": ("bronze", "gold", "silver"),
                    "children": (0, 1, 2, 3, 4)}


# -- conversion and parity ---------------------------------------------------------------------

def _column_transformer() -> ColumnTransformer:
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["income", "children"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region", "tier"]),
        ("flag", "passthrough", ["member"]),
    ])


def test_column_transformer_logistic_regression_keeps_parity() -> None:
    frame = _frame()
    model = Pipeline([("pre", _column_transformer()),
                      ("clf", LogisticRegression(max_iter=1000))]).fit(frame, _target(frame))
    converted = _convert(model, frame.head(30))
    predictor, report = _parity(converted)

    assert predictor.input_names == ["income", "children", "region", "tier", "member"]
    assert predictor.signature.outputs[0].dtype == "object"  # string labels
    assert converted.categories["region"] == ("east", "north", "south")
    assert "income" not in converted.categories
    assert converted.details["inputs"].startswith("5 columns")
    draws = dict(report.inputs)
    assert "NaN" in draws["income"]  # missing values drawn where the sample has them
    assert report.outputs[0].mismatches == 0


def test_ordinal_encoder_imputer_random_forest_keeps_parity() -> None:
    frame = _frame()
    pre = ColumnTransformer([
        ("num", SimpleImputer(strategy="median"), ["income", "children"]),
        ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
         ["region", "tier"]),
    ])
    model = make_pipeline(pre, RandomForestClassifier(15, max_depth=5, random_state=0))
    model.fit(frame, _target(frame))
    converted = _convert(model, {c: frame[c].to_numpy() for c in frame.columns})
    predictor, _ = _parity(converted)
    assert predictor.output_names == ["label", "probabilities"]
    unseen = {name: arr[:3].copy() for name, arr in converted.sample.items()}
    unseen["region"][:] = "west"
    expected = model.predict(pd.DataFrame({n: a[:, 0] for n, a in unseen.items()}).astype(
        {"children": np.int64}))
    assert list(predictor.run(unseen)["label"]) == list(expected)


@pytest.mark.parametrize("fit_on_frame", [True, False], ids=["fitted-on-frame", "on-array"])
def test_a_lone_estimator_reads_the_numeric_columns_together(fit_on_frame: bool) -> None:
    frame = _frame(80)[["income", "children", "member"]].fillna(50_000.0)
    model = RandomForestClassifier(8, max_depth=4, random_state=0)
    model.fit(frame if fit_on_frame else frame.to_numpy(np.float64), _target(_frame(80)))
    converted = _convert(model, frame.head(20))
    predictor, _ = _parity(converted)
    assert predictor.input_names == ["income", "children", "member"]
    assert [s.dtype for s in predictor.signature.inputs] == ["float32", "int64", "bool"]


def test_function_transformer_is_refused_by_name() -> None:
    frame = _frame(40)
    pre = ColumnTransformer([("log", FunctionTransformer(np.log1p), ["children"])])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(frame, _target(frame))
    with pytest.raises(ConversionError, match=r"'pre/log' is a FunctionTransformer calling "
                                              r"log1p: arbitrary Python") as exc:
        _convert(model, frame)
    assert "--reference" in (exc.value.hint or "")


def test_identity_function_transformer_converts() -> None:
    frame = _frame(40)
    model = make_pipeline(
        ColumnTransformer([("same", FunctionTransformer(), ["income", "children"])]),
        SimpleImputer(), LogisticRegression()).fit(frame, _target(frame))
    _parity(_convert(model, frame.head(10)))


def test_unsupported_step_is_named() -> None:
    class Doubler(StandardScaler):
        pass

    frame = _frame(40)
    model = Pipeline([("pre", ColumnTransformer([("twice", Doubler(), ["children"])])),
                      ("clf", LogisticRegression())]).fit(frame, _target(frame))
    with pytest.raises(ConversionError, match=r"at the step 'pre/twice' \(Doubler\)"):
        _convert(model, frame)


def _layout_of_text(sample: Any) -> Layout:
    return layout_of(sample, object())[0]


def test_series_and_string_matrices() -> None:
    series = pd.Series(["a b", "c d"], name="review")
    assert [(c.name, c.kind) for c in _layout_of_text(series).columns] == [("review", "string")]
    matrix = _layout_of_text(np.array([["a", "b"], ["c", "d"]]))
    assert [(c.name, c.width) for c in matrix.columns] == [("input", 2)]


def test_recorded_sample_leaves_out_rows_with_missing_values() -> None:
    from lockgate.gates.probe import sample_document, sample_feeds

    frame = _frame(10)  # income is NaN in rows 0 and 6
    _, arrays = layout_of(frame, object())
    doc = sample_document(arrays, {"label": np.arange(10)}, max_rows=4)
    feeds = sample_feeds(doc)
    assert feeds["region"][:, 0].tolist() == frame["region"].iloc[[1, 2, 3, 4]].tolist()
    assert np.isfinite(feeds["income"]).all()
    assert [o["data"] for o in doc["outputs"]] == [[1, 2, 3, 4]]
    assert {t["name"]: t["datatype"] for t in doc["request"]["inputs"]} == {
        "income": "FP32", "children": "INT64", "region": "BYTES", "tier": "BYTES",
        "member": "BOOL"}
