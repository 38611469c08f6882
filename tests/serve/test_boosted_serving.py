"""Boosted trees served by a real `lockgate serve`, called with the stock tritonclient.http: the
answers are the source models' (XGBoost, LightGBM, CatBoost; a classifier's label and plain
probabilities, a regressor's value)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("onnxmltools")
pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("catboost")
pytest.importorskip("tritonclient.http")

import catboost  # type: ignore[import-untyped]
import lightgbm
import tritonclient.http as httpclient
import xgboost
from sklearn.datasets import load_diabetes, load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lockgate.api.facade import Lockgate
from servers import lockgate_server

pytestmark = [pytest.mark.slow, pytest.mark.sklearn]

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_DIAB, Y_DIAB = load_diabetes(return_X_y=True)
X_DIAB, Y_DIAB = X_DIAB[:200], Y_DIAB[:200]


def _infer(client: httpclient.InferenceServerClient, model: str, x: np.ndarray,
           outputs: list[str], *, binary: bool) -> dict[str, np.ndarray]:
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(model, [inp], outputs=[
        httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs])
    answers = {o: result.as_numpy(o) for o in outputs}
    assert all(a is not None for a in answers.values())
    return answers  # type: ignore[return-value]


def test_boosted_models_served_over_oip(home: Path) -> None:
    xgb = make_pipeline(StandardScaler(), xgboost.XGBClassifier(n_estimators=15, max_depth=3))
    xgb.fit(X_IRIS, Y_IRIS)
    lgbm = lightgbm.LGBMRegressor(n_estimators=15, max_depth=3, verbose=-1).fit(X_DIAB, Y_DIAB)
    cat = catboost.CatBoostClassifier(iterations=15, depth=3, verbose=0,
                                      allow_writing_files=False).fit(X_IRIS, Y_IRIS)
    with Lockgate.open(home) as lg:
        lg.register(xgb, X_IRIS[:20], name="xgb")
        lg.register(lgbm, X_DIAB[:20], name="lgbm")
        lg.register(cat, X_IRIS[:20], name="cat")
    x_iris = X_IRIS[::7].astype(np.float32)  # 22 rows from every class
    x_diab = X_DIAB[::9].astype(np.float32)
    with lockgate_server(home, "xgb@1", "lgbm@1", "cat@1") as (host, port):
        client = httpclient.InferenceServerClient(url=f"{host}:{port}")
        try:
            for name in ("xgb", "lgbm", "cat"):
                assert client.is_model_ready(name)
            meta = client.get_model_metadata("xgb")
            assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
            for binary in (False, True):
                for name, model in (("xgb", xgb), ("cat", cat)):
                    got = _infer(client, name, x_iris, ["label", "probabilities"],
                                 binary=binary)
                    # a pipeline answers as scikit-learn does on these values in float64 (the
                    # scaler's float32 rounding would move rows that sit on a split value)
                    source = x_iris.astype(np.float64)
                    np.testing.assert_array_equal(got["label"],
                                                  np.asarray(model.predict(source)).ravel())
                    np.testing.assert_allclose(got["probabilities"], model.predict_proba(source),
                                               rtol=1e-3, atol=1e-5)
                got = _infer(client, "lgbm", x_diab, ["variable"], binary=binary)
                np.testing.assert_allclose(got["variable"].ravel(), lgbm.predict(x_diab),
                                           rtol=1e-5, atol=1e-3)
        finally:
            client.close()
