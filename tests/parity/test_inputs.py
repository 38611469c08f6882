"""Random parity inputs: each input drawn inside its domain, every free dimension varied."""

from __future__ import annotations

import numpy as np

from lockgate.parity.inputs import BATCH_SIZES, parity_inputs, random_inputs
from lockgate.types import TensorSpec


def _strings(*values: str) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _all(draws_inputs: list[dict[str, np.ndarray]], name: str) -> list[np.ndarray]:
    return [x[name] for x in draws_inputs[1:]]


def test_categories_are_drawn_among_the_known_values() -> None:
    sample = {"color": _strings("red", "red", "blue").reshape(3, 1)}
    specs = [TensorSpec("color", "object", ("N", 1))]
    draws = parity_inputs(sample, specs, 16, 0, categories={"color": ("red", "blue", "green")})
    seen = {v for x in _all(draws.inputs, "color") for v in x.reshape(-1)}
    assert seen == {"red", "blue", "green"}  # green is known to the model, absent from the sample
    assert all(x.dtype == object and x.shape[1] == 1 for x in _all(draws.inputs, "color"))
    assert draws.how["color"] == "categories (3 values)"


def test_strings_are_drawn_per_column_from_the_seen_values_and_the_pool() -> None:
    sample = {"s": np.array([["a", "x"], ["b", "y"], ["a", "y"]], dtype=object)}
    specs = [TensorSpec("s", "object", ("N", 2))]
    draws = parity_inputs(sample, specs, 12, 1)
    drawn = np.concatenate(_all(draws.inputs, "s"))
    assert set(drawn[:, 0]) == {"a", "b"}
    assert set(drawn[:, 1]) == {"x", "y"}
    assert draws.how["s"] == "strings from 4 seen values"

    pooled = parity_inputs(sample, specs, 24, 1, pool={"s": _strings("c")})
    drawn = np.concatenate(_all(pooled.inputs, "s"))
    assert set(drawn[:, 0]) == {"a", "b", "c"}
    assert set(drawn[:, 1]) == {"x", "y", "c"}
    assert pooled.how["s"] == "strings from 5 values (4 seen, 1 more from the pool)"


def test_unicode_strings_keep_their_kind_and_are_not_truncated() -> None:
    sample = {"s": np.array(["ab", "cd"])}
    specs = [TensorSpec("s", "str", ("N",))]
    draws = parity_inputs(sample, specs, 10, 0, pool={"s": np.array(["longer"])})
    drawn = np.concatenate(_all(draws.inputs, "s"))
    assert drawn.dtype.kind == "U"
    assert set(drawn) == {"ab", "cd", "longer"}


def test_whole_number_floats_with_few_values_are_drawn_among_them() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, 40).astype(np.float32)
    spread = rng.normal(5.0, 2.0, 40).astype(np.float32)
    counts = np.arange(40, dtype=np.float32)  # whole numbers, but all distinct: continuous
    sample = {"x": np.stack([codes, spread, counts], axis=1)}
    specs = [TensorSpec("x", "float32", ("N", 3))]
    draws = parity_inputs(sample, specs, 10, 0)
    drawn = np.concatenate(_all(draws.inputs, "x"))
    assert drawn.dtype == np.float32
    assert set(np.unique(drawn[:, 0])) == {0.0, 1.0, 2.0}
    assert len(np.unique(drawn[:, 1])) == len(drawn)
    assert not np.all(drawn[:, 2] == np.round(drawn[:, 2]))
    assert draws.how["x"] == "normal per feature (2), seen values (1)"


def test_nan_is_drawn_at_the_sample_rate_per_column() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    x[rng.random(200) < 0.25, 0] = np.nan  # a quarter missing in the first column only
    sample = {"x": x}
    specs = [TensorSpec("x", "float64", ("N", 2))]
    drawn = random_inputs(sample, specs, 4000, np.random.default_rng(1))["x"]
    rate = float(np.isnan(drawn[:, 0]).mean())
    assert abs(rate - np.isnan(x[:, 0]).mean()) < 0.03
    assert not np.isnan(drawn[:, 1]).any()
    finite = drawn[:, 0][~np.isnan(drawn[:, 0])]
    assert abs(finite.mean() - np.nanmean(x[:, 0])) < 0.1  # NaN does not poison the mean

    draws = parity_inputs(sample, specs, 3, 0)
    assert draws.how["x"] == "normal per feature, NaN 20% in 1 of 2 features"


def test_a_rare_nan_shows_up_at_least_once() -> None:
    x = np.arange(100, dtype=np.float64).reshape(50, 2) / 7
    x[3, 1] = np.nan  # 1 in 50
    draws = parity_inputs({"x": x}, [TensorSpec("x", "float64", ("N", 2))], 2, 0)
    drawn = _all(draws.inputs, "x")  # batch 1 and 2: three rows in all
    assert sum(int(np.isnan(d[:, 1]).sum()) for d in drawn) >= 1
    assert not any(np.isnan(d[:, 0]).any() for d in drawn)


def test_one_row_of_whole_numbers_still_varies() -> None:
    sample = {"x": np.full((1, 3), 4.0, dtype=np.float32)}
    drawn = random_inputs(sample, [TensorSpec("x", "float32", ("N", 3))], 50,
                          np.random.default_rng(0))["x"]
    assert drawn.std() > 0.1


def test_sequence_lengths_vary_together_and_integers_stay_in_range() -> None:
    rng = np.random.default_rng(0)
    sample = {
        "input_ids": rng.integers(100, 200, size=(2, 8)),
        "attention_mask": np.ones((2, 8), dtype=np.int64),
    }
    specs = [TensorSpec("input_ids", "int64", ("batch", "sequence")),
             TensorSpec("attention_mask", "int64", ("batch", "sequence"))]
    draws = parity_inputs(sample, specs, 8, 0)
    lengths = [x["input_ids"].shape[1] for x in draws.inputs]
    assert lengths[0] == 8
    assert set(lengths) == {1, 4, 8, 16}
    for x in draws.inputs:
        assert x["input_ids"].shape == x["attention_mask"].shape
        assert x["input_ids"].dtype == np.int64
        assert x["input_ids"].min() >= sample["input_ids"].min()
        assert x["input_ids"].max() <= sample["input_ids"].max()
        assert np.all(x["attention_mask"] == 1)  # a constant input stays constant
    assert draws.dims == {"batch": (2, *(BATCH_SIZES * 2)[:8]), "sequence": tuple(lengths)}
    assert draws.varied == [False] + [n != 8 for n in lengths[1:]]
    assert draws.how["attention_mask"] == "constant 1"
    assert draws.how["input_ids"].startswith("ints in [")


def test_integers_are_drawn_per_column_when_the_width_is_kept() -> None:
    sample = {"i": np.array([[0, 100], [1, 101], [2, 100]], dtype=np.int32)}
    drawn = random_inputs(sample, [TensorSpec("i", "int32", ("N", 2))], 300,
                          np.random.default_rng(0))["i"]
    assert set(np.unique(drawn[:, 0])) == {0, 1, 2}
    assert set(np.unique(drawn[:, 1])) == {100, 101}


def test_unnamed_batch_dims_of_one_input_per_column_share_the_batch() -> None:
    sample = {"age": np.array([[30.0], [40.0]], dtype=np.float32),
              "city": np.array([["Oslo"], ["Rome"]], dtype=object)}
    specs = [TensorSpec("age", "float32", ("age_d0", 1)),
             TensorSpec("city", "object", ("city_d0", 1))]
    draws = parity_inputs(sample, specs, 5, 0)
    for x in draws.inputs[1:]:
        assert x["age"].shape[0] == x["city"].shape[0]
    assert [x["age"].shape[0] for x in draws.inputs[1:]] == list(BATCH_SIZES)
    assert draws.dims == {"batch": (2, *BATCH_SIZES)}
    assert not any(draws.varied)


def test_fixed_and_empty_inputs_keep_their_shape() -> None:
    sample = {"x": np.zeros((0, 3), dtype=np.float32), "b": np.array([True, False])}
    specs = [TensorSpec("x", "float32", (0, 3)), TensorSpec("b", "bool", (2,))]
    draws = parity_inputs(sample, specs, 3, 0)
    for x in draws.inputs[1:]:
        assert x["x"].shape == (0, 3)
        assert x["b"].shape == (2,)
        assert x["b"].dtype == np.bool_
    assert draws.dims == {}
    assert draws.how == {"x": "empty in the sample", "b": "bools (fair coin)"}


def test_same_seed_same_inputs() -> None:
    sample = {"x": np.random.default_rng(0).normal(size=(4, 3))}
    specs = [TensorSpec("x", "float64", ("N", 3))]
    one = parity_inputs(sample, specs, 4, 7).inputs
    two = parity_inputs(sample, specs, 4, 7).inputs
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(one, two, strict=True))


def test_known_categories_keep_to_themselves_and_the_pool_keeps_to_strings() -> None:
    sample = {"c": _strings("a", "b"), "s": _strings("x", "y")}
    specs = [TensorSpec("c", "object", ("N",)), TensorSpec("s", "object", ("N",))]
    pool = {"c": _strings("zzz"), "s": np.array(["w", None, 3.5, "x"], dtype=object)}
    draws = parity_inputs(sample, specs, 20, 0, categories={"c": ("a", "b", "q")}, pool=pool)
    assert {v for x in _all(draws.inputs, "c") for v in x} == {"a", "b", "q"}
    assert {v for x in _all(draws.inputs, "s") for v in x} == {"x", "y", "w"}
    assert draws.how["s"] == "strings from 3 values (2 seen, 1 more from the pool)"
