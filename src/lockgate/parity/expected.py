"""Recorded outputs as the reference: ONNX Runtime on recorded inputs against the outputs the
source model gave for them.

``expect=(inputs, outputs)`` holds two sets of arrays, each a ``.npz`` file or a mapping by
name: the inputs keyed by the ONNX input names, the outputs keyed by the ONNX output names.
The comparison runs on those inputs alone (no random inputs: nothing could say what the source
gives for them); the report's batch sizes are the recorded arrays' dim 0. A name, dtype or
shape that does not fit the model is refused before anything runs.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lockgate.convert.base import Converted
from lockgate.errors import InvalidInputError, NotFoundError
from lockgate.types import OutputParity, ParityReport, Signature, TensorSpec

__all__ = ["Arrays", "as_recorded", "load_arrays", "merge_reports", "recorded_case"]

Arrays = Path | str | Mapping[str, Any]
"""A ``.npz`` file (``numpy.savez``) or arrays by name."""

_MAX_ROWS = 20
"""Rows that disagree a report keeps per output, as the parity check does."""
_SAVEZ = "save the arrays by name with numpy.savez(path, **{name: array})"
_KINDS = {"f": "fiub", "i": "iub", "u": "iub", "b": "b", "O": "OUS"}
"""The array kinds a recorded value may have for a tensor of each dtype kind."""


def load_arrays(value: Arrays, what: str) -> dict[str, np.ndarray]:
    """Arrays by name from a ``.npz`` file or a mapping; ``what`` names them in errors."""
    if isinstance(value, Mapping):
        return {str(k): np.asarray(v) for k, v in value.items()}
    if not isinstance(value, str | os.PathLike):
        raise InvalidInputError(
            f"{what} must be a .npz file or a mapping of arrays by name, not "
            f"{type(value).__name__}")
    path = Path(os.fspath(value))
    if not path.is_file():
        raise NotFoundError(f"{what}: no file at {path}")
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise InvalidInputError(f"{what}: {path} is not a .npz file (not a zip archive)",
                                    hint=_SAVEZ)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InvalidInputError(
                    f"{what}: {path} holds one array, not arrays by name",
                    hint=_SAVEZ)
            return {name: np.asarray(data[name]) for name in data.files}
    except InvalidInputError:
        raise
    except ValueError as exc:  # object arrays, which would need pickle
        raise InvalidInputError(
            f"{what}: {path} holds Python objects, which lockgate does not unpickle",
            hint="save strings as a unicode array (dtype str), not dtype object") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(
            f"{what}: {path} is not a .npz file: {type(exc).__name__}: {exc}",
            hint=_SAVEZ) from exc


def recorded_case(converted: Converted, signature: Signature, inputs: Arrays,
                  outputs: Arrays) -> Converted:
    """``converted`` whose sample is the recorded inputs and whose reference answers them with
    the recorded outputs: :func:`~lockgate.parity.check.check_parity` with ``n_random=0``
    compares ONNX Runtime with the recording."""
    given = load_arrays(inputs, "recorded inputs")
    expected = load_arrays(outputs, "recorded outputs")
    _same_names("inputs", given, [s.name for s in signature.inputs], "takes")
    _same_names("outputs", expected, [s.name for s in signature.outputs], "returns")
    sample = {s.name: _conform("input", s, given[s.name]) for s in signature.inputs}
    batch = _batch(signature.inputs, sample)
    answers = [_checked_output(s, expected[s.name], batch) for s in signature.outputs]

    def recorded(_inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return answers

    return replace(converted, sample=sample, reference=recorded,
                   details={**converted.details, "parity_inputs": "recorded"})


def as_recorded(report: ParityReport) -> ParityReport:
    """The report of a comparison on recorded inputs, saying so input by input."""
    rows = report.batch_sizes[0] if report.batch_sizes else 0
    how = f"recorded: the {rows} rows given with their outputs, no random inputs"
    return replace(report, inputs={name: how for name in report.inputs} or {"*": how})


def merge_reports(first: ParityReport, second: ParityReport) -> ParityReport:
    """One report over both reports' inputs, ``second``'s after ``first``'s: per output, the
    worst errors, every mismatch and the rows that disagree (numbered across both)."""
    offset = sum(first.batch_sizes)
    by_name = {o.name: o for o in second.outputs}
    merged: list[OutputParity] = []
    for a in first.outputs:
        b = by_name.get(a.name)
        if b is None:
            merged.append(a)
            continue
        worst = b if (not b.passed, b.max_abs_error) > (not a.passed, a.max_abs_error) else a
        merged.append(replace(
            worst, max_abs_error=max(a.max_abs_error, b.max_abs_error),
            max_rel_error=max(a.max_rel_error, b.max_rel_error),
            mismatches=a.mismatches + b.mismatches, elements=a.elements + b.elements,
            rows=(*a.rows, *(r + offset for r in b.rows))[:_MAX_ROWS],
            borderline=a.borderline + b.borderline,
            borderline_rows=(*a.borderline_rows,
                             *(r + offset for r in b.borderline_rows))[:_MAX_ROWS]))
    inputs = dict(first.inputs)
    for name, how in second.inputs.items():
        inputs[name] = f"{inputs[name]}; then {how}" if name in inputs else how
    dims = {k: (*first.dims.get(k, ()), *second.dims.get(k, ()))
            for k in (*first.dims, *(k for k in second.dims if k not in first.dims))}
    return replace(first, outputs=tuple(merged),
                   batch_sizes=(*first.batch_sizes, *second.batch_sizes),
                   inputs=inputs, dims=dims, skipped=(*first.skipped, *second.skipped))


def _same_names(what: str, given: Mapping[str, np.ndarray], names: Sequence[str],
                verb: str) -> None:
    missing = [n for n in names if n not in given]
    unexpected = sorted(set(given) - set(names))
    if missing or unexpected:
        raise InvalidInputError(
            f"the recorded {what} do not match the model's {what}: missing {missing}, "
            f"unexpected {unexpected}",
            hint=f"the model {verb} {list(names)}; key the arrays by those names")


def _fits(spec: TensorSpec, arr: np.ndarray) -> bool:
    want = np.dtype(spec.dtype) if spec.dtype != "object" else np.dtype(object)
    return arr.dtype.kind in _KINDS.get(want.kind, want.kind)


def _conform(what: str, spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    if not _fits(spec, arr):
        raise InvalidInputError(
            f"recorded {what} {spec.name!r} is {arr.dtype}, the model's is {spec.dtype}",
            hint=f"record {spec.name!r} as {spec.dtype}")
    _check_shape(what, spec, arr)
    return arr.astype(object if spec.dtype == "object" else spec.dtype, copy=False)


def _shape_fits(dims: Sequence[object], shape: Sequence[int]) -> bool:
    return len(dims) == len(shape) and all(
        not isinstance(d, int) or d == n for d, n in zip(dims, shape, strict=True))


def _check_shape(what: str, spec: TensorSpec, arr: np.ndarray) -> None:
    if not _shape_fits(spec.shape, arr.shape):
        raise InvalidInputError(
            f"recorded {what} {spec.name!r} has shape {list(arr.shape)}, the model's is "
            f"{list(spec.shape)}")


def _batch(specs: Sequence[TensorSpec], sample: Mapping[str, np.ndarray]) -> tuple[str, int]:
    """The symbolic dim 0 and its size in the recorded inputs (``("", 0)`` when fixed)."""
    symbol, size = "", 0
    for spec in specs:
        if not spec.shape or not isinstance(spec.shape[0], str):
            continue
        n = int(sample[spec.name].shape[0])
        if not symbol:
            symbol, size = spec.shape[0], n
        elif spec.shape[0] == symbol and n != size:
            raise InvalidInputError(
                f"recorded input {spec.name!r} has {n} rows, the others {size}",
                hint=f"inputs sharing dim {symbol!r} must have the same size there")
    if symbol and size == 0:
        raise InvalidInputError("the recorded inputs have no rows")
    return symbol, size


def _checked_output(spec: TensorSpec, arr: np.ndarray, batch: tuple[str, int]) -> np.ndarray:
    if not _fits(spec, arr):
        raise InvalidInputError(
            f"recorded output {spec.name!r} is {arr.dtype}, the model returns {spec.dtype}",
            hint=f"record what the source gives for {spec.name!r}")
    if spec.shape and not (_shape_fits(spec.shape, arr.shape) or _shape_fits(
            tuple(d for d in spec.shape if d != 1), tuple(n for n in arr.shape if n != 1))):
        _check_shape("output", spec, arr)  # raises, naming both shapes
    symbol, size = batch
    if symbol and spec.shape and spec.shape[0] == symbol and arr.ndim and (
            arr.shape[0] != size):
        raise InvalidInputError(
            f"recorded output {spec.name!r} has {arr.shape[0]} rows, the recorded inputs "
            f"{size}", hint="record the outputs of these very inputs")
    return arr
