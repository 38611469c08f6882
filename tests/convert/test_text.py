"""scikit-learn text pipelines: a string column in, words of any script tokenized as scikit-learn
does, a StringNormalizer locale ONNX Runtime can build everywhere, tokenizers it cannot refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("pandas")

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from lockgate.convert import Converted, converter_for
from lockgate.convert.sklearn_text import WORDS, re2_pattern
from lockgate.errors import ConversionError
from lockgate.parity.check import assert_parity, check_parity
from lockgate.progress import NullProgress
from lockgate.runtime.predictor import Predictor

pytestmark = pytest.mark.sklearn

TEXTS = [
    "the cat sat on the mat", "A dog ran FAST", "cats and dogs", "fast red cars",
    "the car is red", "dogs chase cats", "Straße und Café", "über große Autos",
    "le café est fermé", "ÉTÉ À PARIS", "red cars race", "the dog sat",
]
TOPICS = ["pets", "pets", "pets", "cars", "cars", "pets", "cars", "cars", "pets", "pets",
          "cars", "pets"]


def _convert(model: object, sample: object) -> Converted:
    return converter_for(model).convert(model, sample, opset=None, progress=NullProgress())


def _parity(converted: Converted) -> Predictor:
    predictor = Predictor(converted.model.SerializeToString())
    assert_parity(check_parity(converted, predictor, n_random=5))
    return predictor


def _normalizer_locales(proto: onnx.ModelProto) -> list[str]:
    return [onnx.helper.get_attribute_value(a).decode()
            for n in proto.graph.node if n.op_type == "StringNormalizer"
            for a in n.attribute if a.name == "locale"]


@pytest.mark.parametrize("vectorizer", [
    TfidfVectorizer(), CountVectorizer(ngram_range=(1, 2)), TfidfVectorizer(stop_words=["the"]),
    TfidfVectorizer(token_pattern=r"(?u)\b\w+\b"),
], ids=["tfidf", "count-bigrams", "stop-words", "custom-pattern"])
def test_text_pipelines_keep_parity_on_accented_words(vectorizer: CountVectorizer) -> None:
    model = make_pipeline(vectorizer, LogisticRegression(max_iter=500)).fit(TEXTS, TOPICS)
    converted = _convert(model, TEXTS)
    predictor = _parity(converted)

    (inp,) = predictor.signature.inputs
    assert (inp.name, inp.dtype, inp.shape) == ("input", "object", ("batch", 1))
    assert predictor.signature.outputs[0].dtype == "object"
    assert _normalizer_locales(converted.model) == [converted.details[
        "string_normalizer_locale"]]
    assert converted.details["inputs"] == "one text column"
    accented = np.array([["große café straße"], ["the cat"]], dtype=object)
    labels = predictor.run({"input": accented})["label"]
    assert list(labels) == list(model.predict(accented[:, 0]))


def test_the_default_pattern_tokenizes_words_of_any_script() -> None:
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, TOPICS)
    converted = _convert(model, TEXTS[:4])
    patterns = [onnx.helper.get_attribute_value(a).decode()
                for n in converted.model.graph.node if n.op_type == "Tokenizer"
                for a in n.attribute if a.name == "tokenexp"]
    assert patterns == [WORDS]
    assert converted.details["string_normalizer_locale"] in ("C.UTF-8", "C")
    predictor = Predictor(converted.model.SerializeToString())
    words = np.array([["café"], ["große"]], dtype=object)
    np.testing.assert_allclose(predictor.run({"input": words})["probabilities"],
                               model.predict_proba(words[:, 0]), atol=1e-5)


def test_a_text_column_of_a_dataframe() -> None:
    frame = pd.DataFrame({"review": TEXTS, "shop": ["a", "b", "c"] * 4})
    pre = ColumnTransformer([("words", TfidfVectorizer(), "review"),
                             ("shop", OneHotEncoder(handle_unknown="ignore"), ["shop"])])
    model = make_pipeline(pre, LogisticRegression()).fit(frame, TOPICS)
    converted = _convert(model, frame)
    predictor = _parity(converted)
    assert predictor.input_names == ["review", "shop"]
    assert converted.categories == {"shop": ("a", "b", "c")}
    assert _normalizer_locales(converted.model)


def test_a_series_of_texts_is_named_after_it() -> None:
    model = make_pipeline(CountVectorizer(), LogisticRegression()).fit(TEXTS, TOPICS)
    predictor = _parity(_convert(model, pd.Series(TEXTS, name="body")))
    assert predictor.input_names == ["body"]


def test_a_pattern_re2_cannot_compile_is_refused() -> None:
    model = make_pipeline(TfidfVectorizer(token_pattern=r"\w+(?=\s)"),
                          LogisticRegression()).fit(TEXTS, TOPICS)
    with pytest.raises(ConversionError, match=r"tokenizer \(RE2\) cannot use the token_pattern "
                                              r"'\\w\+\(\?=\\s\)'") as exc:
        _convert(model, TEXTS)
    assert "look-around" in (exc.value.hint or "")


@pytest.mark.parametrize(("vectorizer", "why"), [
    (TfidfVectorizer(tokenizer=str.split, token_pattern=None), "Custom tokenizer"),
    (TfidfVectorizer(strip_accents="unicode"), "strip_accents"),
    (CountVectorizer(analyzer="char_wb"), "tokenizer='word'"),
], ids=["callable-tokenizer", "strip-accents", "char-wb"])
def test_options_skl2onnx_refuses_name_the_vectorizer(vectorizer: CountVectorizer,
                                                      why: str) -> None:
    model = make_pipeline(vectorizer, LogisticRegression()).fit(TEXTS, TOPICS)
    name = type(vectorizer).__name__.lower()
    with pytest.raises(ConversionError, match=rf"at the step '{name}' .*{why}"):
        _convert(model, TEXTS)


@pytest.mark.parametrize(("pattern", "re2"), [
    (r"(?u)\b\w\w+\b", WORDS),
    (r"(?u)\b\w+\b", r"[\p{L}\p{N}_]+"),
    (r"\w{3,}", r"[\p{L}\p{N}_]{3,}"),
    (r"(?u)[a-z]+", "[a-z]+"),
    (r"\b\w\w\b", r"\b\w\w\b"),
])
def test_word_run_patterns_become_unicode_re2(pattern: str, re2: str) -> None:
    assert re2_pattern(pattern) == re2
