"""scikit-learn models registered from a DataFrame or from texts, served by a real `lockgate
serve` and called with the stock tritonclient.http: one input per column, strings as BYTES,
answers equal to the source model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("pandas")
pytest.importorskip("tritonclient.http")

import pandas as pd
import tritonclient.http as httpclient
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from lockgate.api.facade import Lockgate
from servers import lockgate_server

pytestmark = [pytest.mark.slow, pytest.mark.sklearn]

_TRITON_TYPES = {"float32": "FP32", "int64": "INT64", "bool": "BOOL", "object": "BYTES"}


def _customers(n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.normal(40, 12, n),
        "visits": rng.integers(0, 20, n),
        "city": rng.choice(["paris", "lyon", "nice", "lille"], n),
        "plan": pd.Categorical(rng.choice(["free", "pro"], n)),
        "member": rng.random(n) < 0.3,
    })
    frame.loc[::5, "age"] = np.nan
    return frame


def _tabular_model() -> tuple[Pipeline, Any]:
    train = _customers(300, seed=1)
    churn = np.where((train["visits"] < 6) | (train["plan"] == "free") & ~train["member"],
                     "churn", "stay")
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "visits"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
        ("flag", "passthrough", ["member"]),
    ])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(
        train, churn), train


def _infer(client: Any, model: str, columns: dict[str, np.ndarray],
           dtypes: dict[str, str]) -> tuple[list[str], np.ndarray]:
    inputs = []
    for name, values in columns.items():
        inp = httpclient.InferInput(name, list(values.shape), _TRITON_TYPES[dtypes[name]])
        inp.set_data_from_numpy(values, binary_data=True)
        inputs.append(inp)
    result = client.infer(model, inputs, outputs=[
        httpclient.InferRequestedOutput("label", binary_data=True),
        httpclient.InferRequestedOutput("probabilities", binary_data=True)])
    labels = [bytes(v).decode() for v in result.as_numpy("label").ravel()]
    return labels, result.as_numpy("probabilities")


def test_dataframe_and_text_models_served_by_column(home: Path, tmp_path: Path) -> None:
    tabular, train = _tabular_model()
    train.to_csv(tmp_path / "train.csv", index=False)  # the reference data, one input a column
    texts = ["free shipping today", "meeting moved to friday", "win a free prize now",
             "lunch on friday?", "claim your prize", "notes from the meeting",
             "Gratis café für dich", "réunion vendredi"] * 4
    spam = ["spam", "ham", "spam", "ham", "spam", "ham", "spam", "ham"] * 4
    text_model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, spam)
    with Lockgate.open(home) as lg:
        version = lg.register(tabular, train.head(40), name="churn",
                              reference=str(tmp_path / "train.csv"))
        lg.register(text_model, texts[:8], name="spam")
        signature = {s.name: s for s in version.signature.inputs}
        profile = lg.reference_profile("churn@1")
    assert profile is not None
    assert profile.rows == len(train)
    assert profile.kind("city[0]") == "categorical"
    assert profile.features["age[0]"]["missing"] == int(train["age"].isna().sum())
    assert [s for s in signature] == ["age", "visits", "city", "plan", "member"]
    assert {n: (s.dtype, s.shape) for n, s in signature.items()} == {
        "age": ("float32", ("batch", 1)), "visits": ("int64", ("batch", 1)),
        "city": ("object", ("batch", 1)), "plan": ("object", ("batch", 1)),
        "member": ("bool", ("batch", 1))}

    fresh = _customers(12, seed=7)
    fresh.loc[3, "city"] = "marseille"  # unseen: the encoder ignores it
    columns = {
        "age": fresh[["age"]].to_numpy(np.float32),
        "visits": fresh[["visits"]].to_numpy(np.int64),
        "city": fresh[["city"]].to_numpy(object),
        "plan": fresh[["plan"]].astype(str).to_numpy(object),
        "member": fresh[["member"]].to_numpy(bool),
    }
    news = np.array(["free prize for you", "friday meeting notes", "café gratis"],
                    dtype=object).reshape(-1, 1)
    with lockgate_server(home, "churn@1", "spam@1") as (host, port):
        client = httpclient.InferenceServerClient(url=f"{host}:{port}")
        try:
            labels, proba = _infer(client, "churn", columns,
                                   {n: s.dtype for n, s in signature.items()})
            text_labels, text_proba = _infer(client, "spam", {"input": news},
                                             {"input": "object"})
        finally:
            client.close()

    assert labels == list(tabular.predict(fresh))
    np.testing.assert_allclose(proba, tabular.predict_proba(fresh), atol=1e-5)
    assert text_labels == list(text_model.predict(news.ravel()))
    np.testing.assert_allclose(text_proba, text_model.predict_proba(news.ravel()), atol=1e-5)
