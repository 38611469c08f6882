"""Samples made of columns: a pandas DataFrame, a dict of columns, or one column of text.

A column becomes one ONNX input named after it, of shape ``["batch", 1]``, typed the way
skl2onnx types it: floats as float32, integers as int64, bools as bool, and strings (object,
``string`` and ``category`` dtypes) as string tensors. A 1-D list (or array, or pandas Series) of
strings is one text column, named ``"input"`` (or after the Series); a 2-D array of strings is
one string input ``"input"`` of shape ``["batch", n]``.

:meth:`Layout.rebuild` turns the ONNX inputs back into what the estimator was fitted on (a
DataFrame with the sample's column names and dtypes, a Series, or an array), so the source model
is given exactly the kind of data it was trained on. pandas is imported only for samples that
need it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from lockgate.convert._common import from_package
from lockgate.errors import ConversionError

__all__ = ["JOINED", "Column", "Layout", "encoder_categories", "is_columnar", "join_columns",
           "joined_input", "layout_of", "walk"]

INPUT = "input"

_KINDS = {"f": "float", "i": "int", "u": "int", "b": "bool", "O": "string", "U": "string",
          "S": "string"}
_ONNX_DTYPES = {"float": np.float32, "int": np.int64, "bool": np.bool_, "string": np.object_}


@dataclass(frozen=True)
class Column:
    """One ONNX input: its name, its kind (float, int, bool, string), its width (1 for a
    column) and the sample's dtype, which :meth:`Layout.rebuild` restores."""

    name: str
    kind: str
    width: int
    dtype: Any

    def initial_type(self) -> tuple[str, Any]:
        """skl2onnx's ``(name, TensorType([None, width]))`` for this column."""
        from skl2onnx.common.data_types import (
            BooleanTensorType,
            FloatTensorType,
            Int64TensorType,
            StringTensorType,
        )

        types = {"float": FloatTensorType, "int": Int64TensorType, "bool": BooleanTensorType,
                 "string": StringTensorType}
        return self.name, types[self.kind]([None, self.width])


@dataclass(frozen=True)
class Layout:
    """How a columnar sample maps to ONNX inputs, and back.

    ``container`` is what the estimator takes: ``"frame"`` (a DataFrame), ``"series"`` (a pandas
    Series) or ``"array"`` (a numpy array: 1-D text, or a 2-D matrix of strings)."""

    columns: tuple[Column, ...]
    container: str
    dropped: tuple[str, ...] = ()

    def describe(self) -> str:
        """How the sample became inputs, for the version's details."""
        if self.container == "frame":
            return (f"{len(self.columns)} columns, one input each, given to the model as a "
                    "DataFrame")
        width = self.columns[0].width
        return "one text column" if width == 1 else f"a matrix of {width} string columns"

    def initial_types(self) -> list[tuple[str, Any]]:
        return [c.initial_type() for c in self.columns]

    def rebuild(self, inputs: Mapping[str, np.ndarray]) -> object:
        """The estimator's input for ONNX inputs keyed by column name."""
        if self.container == "frame":
            return _pandas_module().DataFrame(
                {c.name: _restore(c, np.asarray(inputs[c.name])[:, 0]) for c in self.columns})
        (column,) = self.columns
        values = np.asarray(inputs[column.name])
        if self.container == "series":
            return _pandas_module().Series(_restore(column, values[:, 0]), name=column.name)
        return values[:, 0] if column.width == 1 and values.ndim == 2 else values


def is_columnar(sample: object) -> bool:
    """True for a DataFrame, a Series, a mapping of columns, a 1-D sequence of strings or a 2-D
    array of strings: every sample that is not a plain numeric matrix."""
    if isinstance(sample, Mapping) or _pandas(sample, "DataFrame") or _pandas(sample, "Series"):
        return True
    if isinstance(sample, (list, tuple, np.ndarray)):
        try:
            arr = np.asarray(sample)
        except ValueError:  # ragged
            return False
        return arr.dtype.kind in "OUS" and arr.size > 0 and _all_strings(arr)
    return False


def layout_of(sample: object, model: object) -> tuple[Layout, dict[str, np.ndarray]]:
    """The layout of a columnar sample and the sample as ONNX inputs (each ``[rows, width]``).

    Columns the model was not fitted on are left out (and named in ``Layout.dropped``); a column
    the model needs that the sample lacks is a :class:`ConversionError` naming it.
    """
    if _pandas(sample, "DataFrame"):
        table: Any = sample
        frame = {str(k): table[k] for k in table.columns}
        container = "frame"
    elif isinstance(sample, Mapping):
        frame = {str(k): _one_column(str(k), v) for k, v in sample.items()}
        container = "frame"
    elif _pandas(sample, "Series"):
        name = str(sample.name) if sample.name is not None else INPUT  # type: ignore[attr-defined]
        return _single(name, sample, "series")
    else:
        arr = np.asarray(sample, dtype=object)
        return _single(INPUT, arr, "array")
    wanted = _feature_names(model)
    if wanted is not None:
        frame = _fitted_names(frame, wanted)
        missing = [n for n in wanted if n not in frame]
        if missing:
            raise ConversionError(
                f"the sample has no column {missing[0]!r}" if len(missing) == 1 else
                f"the sample lacks the columns {missing}",
                hint=f"the {type(model).__name__} model was fitted on the columns "
                f"{list(wanted)}: pass a sample with all of them",
            )
        dropped = tuple(n for n in frame if n not in wanted)
        frame = {n: frame[n] for n in wanted}
    else:
        dropped = ()
    if not frame:
        raise ConversionError("the sample has no columns", hint="pass a few rows of features")
    columns, arrays = [], {}
    for name, values in frame.items():
        column, arr = _typed(name, values)
        columns.append(column)
        arrays[name] = arr.reshape(-1, 1)
    _same_rows(arrays)
    return Layout(tuple(columns), container, dropped), arrays


JOINED = "lockgate_columns"
"""The matrix input an estimator that reads one matrix is converted on, before
:func:`join_columns` puts the column inputs in front of it."""


def joined_input(initial_types: Sequence[tuple[str, Any]]) -> tuple[str, Any] | None:
    """One float matrix input as wide as the columns together, or None when a column is a
    string (no estimator reads strings and numbers in one matrix)."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if len(initial_types) < 2 or any(isinstance(t, StringTensorType) for _, t in initial_types):
        return None
    width = sum(int(t.shape[1]) for _, t in initial_types)
    return JOINED, FloatTensorType([None, width])


def join_columns(proto: onnx.ModelProto,
                 initial_types: Sequence[tuple[str, Any]]) -> onnx.ModelProto:
    """``proto`` (converted on :data:`JOINED`) with the column inputs in its place: each cast
    to float32, then concatenated along axis 1 into :data:`JOINED`."""
    from skl2onnx.common.data_types import FloatTensorType

    helper, graph = onnx.helper, proto.graph
    nodes, parts, inputs = [], [], []
    for name, tensor_type in initial_types:
        elem = {"BooleanTensorType": onnx.TensorProto.BOOL,
                "Int64TensorType": onnx.TensorProto.INT64}.get(type(tensor_type).__name__,
                                                                onnx.TensorProto.FLOAT)
        inputs.append(helper.make_tensor_value_info(name, elem, [None, tensor_type.shape[1]]))
        if isinstance(tensor_type, FloatTensorType):
            parts.append(name)
            continue
        parts.append(f"{JOINED}_{name}")
        nodes.append(helper.make_node("Cast", [name], [parts[-1]], to=onnx.TensorProto.FLOAT,
                                      name=f"{JOINED}_cast_{name}"))
    nodes.append(helper.make_node("Concat", parts, [JOINED], axis=1, name=f"{JOINED}_concat"))
    kept = [v for v in graph.input if v.name != JOINED]
    del graph.input[:]
    graph.input.extend([*inputs, *kept])
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    return proto


def walk(model: object, path: str = "") -> Iterator[tuple[str, object]]:
    """Every estimator inside ``model`` (itself first) with its step path, such as
    ``"pre/num/scale"``: Pipeline steps, ColumnTransformer and FeatureUnion parts, and the
    estimators held in parameters (a meta-estimator's ``estimator``)."""
    yield path or type(model).__name__, model
    est: Any = model
    parts: list[tuple[str, object]] = []
    if hasattr(est, "steps"):
        parts = [(n, s) for n, s in est.steps]
    elif hasattr(est, "transformers_") or hasattr(est, "transformers"):
        fitted = getattr(est, "transformers_", None) or est.transformers
        parts = [(n, t) for n, t, _ in fitted]
    elif hasattr(est, "transformer_list"):
        parts = list(est.transformer_list)
    else:
        for key in ("estimator", "base_estimator", "regressor", "classifier"):
            inner = getattr(model, key + "_", None) or getattr(model, key, None)
            if inner is not None and hasattr(inner, "get_params"):
                parts.append((key, inner))
    for name, part in parts:
        if hasattr(part, "get_params"):  # not "drop" / "passthrough"
            yield from walk(part, f"{path}/{name}" if path else name)


def encoder_categories(model: object, inputs: Sequence[str]) -> dict[str, tuple[object, ...]]:
    """The categories a fitted OneHotEncoder or OrdinalEncoder knows, by the input they read.

    An encoder reads named inputs when it was fitted on DataFrame columns (``feature_names_in_``)
    or when it follows only SimpleImputers at the start of a Pipeline fitted on columns.
    """
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    known = set(inputs)
    found: dict[str, list[object]] = {}
    for _, est in walk(model):
        for encoder, names in _encoders_and_names(est, (OneHotEncoder, OrdinalEncoder)):
            for name, cats in zip(names, encoder.categories_, strict=False):
                if name not in known:
                    continue
                seen = found.setdefault(name, [])
                for value in np.asarray(cats).tolist():
                    if not _missing(value) and value not in seen:
                        seen.append(value)
    return {name: tuple(values) for name, values in found.items() if values}


def _encoders_and_names(est: object, kinds: tuple[type, ...]) -> Iterator[tuple[Any, list[str]]]:
    from sklearn.impute import SimpleImputer

    if isinstance(est, kinds) and hasattr(est, "feature_names_in_"):
        yield est, [str(n) for n in est.feature_names_in_]
    steps = getattr(est, "steps", None)
    names = getattr(est, "feature_names_in_", None)
    if steps is None or names is None:
        return
    for _, step in steps:
        if isinstance(step, kinds) and not hasattr(step, "feature_names_in_"):
            yield step, [str(n) for n in names]
        if not (isinstance(step, SimpleImputer) and not step.add_indicator):
            return


def _single(name: str, values: Any, container: str) -> tuple[Layout, dict[str, np.ndarray]]:
    arr = np.asarray(values)
    if arr.ndim == 1:
        column, typed = _typed(name, values)
        if column.kind != "string":
            raise ConversionError(
                f"a 1-D sample of {column.kind}s is not a table",
                hint="pass a 2-D array of rows by features, a DataFrame, or a list of texts",
            )
        return Layout((column,), container), {name: typed.reshape(-1, 1)}
    if arr.ndim != 2 or not _all_strings(arr):
        raise ConversionError(
            f"the sample has shape {list(arr.shape)} and mixed values",
            hint="pass a DataFrame (one column per feature) or a 2-D numeric array",
        )
    strings = np.vectorize(_text, otypes=[object])(arr) if arr.size else arr.astype(object)
    column = Column(name, "string", int(arr.shape[1]), np.dtype(object))
    return Layout((column,), container), {name: strings}


def _typed(name: str, values: Any) -> tuple[Column, np.ndarray]:
    """The column's kind and its values as the ONNX input's dtype."""
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        values = np.asarray(values)
        dtype = values.dtype
    kind = _kind(name, dtype)
    if kind == "string":
        raw = np.asarray(values, dtype=object)
        missing = [i for i, v in enumerate(raw.tolist()) if _missing(v)]
        if missing:
            raise ConversionError(
                f"the string column {name!r} has missing values (row {missing[0]})",
                hint=f"ONNX string tensors cannot hold NaN: fill them before fitting, e.g. "
                f"df[{name!r}] = df[{name!r}].fillna('missing')",
            )
        return Column(name, kind, 1, dtype), np.asarray([_text(v) for v in raw], dtype=object)
    arr: np.ndarray
    try:
        if kind == "float" and hasattr(values, "to_numpy"):  # pandas NA becomes NaN
            arr = values.to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            arr = np.asarray(values, dtype=_ONNX_DTYPES[kind])
    except (TypeError, ValueError) as exc:
        raise ConversionError(
            f"the column {name!r} is not {kind}: {exc}",
            hint="give the column one dtype; an integer column with missing values must be "
            "float (NaN) for ONNX",
        ) from exc
    return Column(name, kind, 1, dtype), arr


def _kind(name: str, dtype: Any) -> str:
    if str(dtype) in ("category", "string") or str(dtype).startswith("string"):
        if str(dtype) == "category" and dtype.categories.dtype.kind not in "OUS":
            raise ConversionError(
                f"the categorical column {name!r} has {dtype.categories.dtype} categories",
                hint="categories become ONNX strings: use string categories, or a plain "
                "integer column",
            )
        return "string"
    if str(dtype) == "boolean":
        return "bool"
    np_dtype = getattr(dtype, "numpy_dtype", dtype)  # pandas nullable Int64, Float64 ...
    kind = _KINDS.get(getattr(np_dtype, "kind", ""))
    if kind is None:
        raise ConversionError(
            f"the column {name!r} has dtype {dtype}, which has no ONNX input type",
            hint="convert it to numbers, bools or strings before fitting (dates: e.g. to "
            "the day of the year)",
        )
    return kind


def _restore(column: Column, values: np.ndarray) -> Any:
    """A column's ONNX values in the sample's dtype."""
    dtype = column.dtype
    if not isinstance(dtype, np.dtype):  # pandas: category, string, boolean, Int64, Float64
        return _pandas_module().array(values.tolist(), dtype=dtype)
    if column.kind == "string" and isinstance(dtype, np.dtype):
        return values.astype(dtype) if dtype.kind in "US" else values.astype(object)
    try:
        return values.astype(dtype)
    except (TypeError, ValueError):
        return values


def _one_column(name: str, values: Any) -> Any:
    if _pandas(values, "Series"):
        return values
    arr: np.ndarray = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        return arr[:, 0]
    if arr.ndim != 1:
        raise ConversionError(
            f"the column {name!r} has shape {list(arr.shape)}, not one value per row",
            hint="give each column as a 1-D list or array (or an [rows, 1] array)",
        )
    return arr


def _same_rows(arrays: Mapping[str, np.ndarray]) -> None:
    rows = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise ConversionError(f"the columns have different numbers of rows: {rows}",
                              hint="give every column one value per row")
    if not next(iter(rows.values())):
        raise ConversionError("the sample has no rows", hint="pass a few rows of features")


def _fitted_names(frame: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    """The frame with columns renamed to the names the model was fitted with where those are
    the column's name with whitespace as ``_`` (LightGBM renames ``"mean radius"`` so)."""
    spelled = {re.sub(r"\s", "_", name): name for name in frame if name not in wanted}
    renamed = {n: spelled[n] for n in wanted if n not in frame and n in spelled}
    if not renamed:
        return frame
    back = {old: new for new, old in renamed.items()}
    return {back.get(name, name): values for name, values in frame.items()}


def _feature_names(model: object) -> list[str] | None:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _pandas_module() -> Any:
    """pandas, imported for samples that come from it (or dicts rebuilt as DataFrames)."""
    return importlib.import_module("pandas")


def _pandas(obj: object, cls: str) -> bool:
    return from_package(obj, "pandas") and type(obj).__name__ == cls


def _all_strings(arr: np.ndarray) -> bool:
    return all(isinstance(v, (str, bytes, np.str_)) for v in arr.ravel().tolist())


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)
