"""JSON tensor data to numpy arrays, checked element by element where numpy alone would not
(booleans, integers in their type's range, strings, regular nesting), and JSON text to Python
values (:func:`loads`). Every problem raises InvalidInputError naming the tensor."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import numpy as np
import orjson

from lockgate.errors import InvalidInputError
from lockgate.serve.oip.datatypes import MAX_DEPTH, MAX_DIMS

__all__ = ["loads", "numeric", "strings"]

# numpy kinds of the array json/numpy infer from the data, accepted per target kind
_ACCEPTED_KINDS: dict[str, str] = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "O": ""}


def _out_of_range(name: str, datatype: str, value: int, info: np.iinfo[Any]) -> InvalidInputError:
    return InvalidInputError(
        f"input {name!r}: value {value} is out of range for {datatype} [{info.min}, {info.max}]"
    )


def _check_ints(name: str, datatype: str, arr: np.ndarray[Any, Any], dt: np.dtype[Any]) -> None:
    info = np.iinfo(dt)
    lo, hi = arr.min(), arr.max()
    if lo < info.min:
        raise _out_of_range(name, datatype, int(lo), info)
    if hi > info.max:
        raise _out_of_range(name, datatype, int(hi), info)


def numeric(name: str, datatype: str, data: Any, dt: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Tensor ``name``'s numeric or boolean JSON ``data`` as an array of ``dt`` (its OIP
    ``datatype``), flat or of the nesting it has: booleans only for BOOL, integers within the
    type's range for integer types, any number for float types."""
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, RuntimeError):  # RuntimeError: nested past numpy's dims
        raise InvalidInputError(
            f"input {name!r}: data is ragged; nested lists must be regular"
        ) from None
    if arr.ndim > MAX_DIMS:
        _too_deep(name, arr)
    if arr.size == 0:
        return arr.astype(dt)
    if dt.kind in "iu" and arr.dtype.kind in "fO":
        # numpy turns a mix of ints beyond int64 and other ints into float64 (or object):
        # check such data element by element rather than lose precision.
        return _exact_ints(name, datatype, data, dt)
    if arr.dtype.kind not in _ACCEPTED_KINDS[dt.kind]:
        want = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers"}[dt.kind]
        raise InvalidInputError(
            f"input {name!r}: {datatype} data must be JSON {want}, got elements of type "
            f"{_describe(arr)}"
        )
    if arr.dtype == dt:
        return arr
    if dt.kind in "iu":
        _check_ints(name, datatype, arr, dt)
    with np.errstate(over="ignore"):  # FP16/FP32 overflow becomes inf, as in any float cast
        return arr.astype(dt)


def _objects(name: str, data: Any) -> np.ndarray[Any, Any]:
    """JSON data as a regular numpy array of Python objects (a 400 when it is ragged or nested
    deeper than :data:`MAX_DIMS`)."""
    try:
        arr = np.asarray(data, dtype=object)
    except (ValueError, TypeError, RuntimeError):
        raise InvalidInputError(
            f"input {name!r}: data is ragged; nested lists must be regular"
        ) from None
    if arr.ndim > MAX_DIMS:
        _too_deep(name, arr)
    return arr


def _exact_ints(name: str, datatype: str, data: Any, dt: np.dtype[Any]) -> np.ndarray[Any, Any]:
    arr = _objects(name, data)
    for x in arr.flat:
        if type(x) is not int:
            if isinstance(x, list):
                raise InvalidInputError(
                    f"input {name!r}: data is ragged; nested lists must be regular"
                )
            raise InvalidInputError(
                f"input {name!r}: {datatype} data must be JSON integers, got elements of type "
                f"{_json_type(x)}"
            )
    info = np.iinfo(dt)
    for x in arr.flat:
        if not info.min <= x <= info.max:
            raise _out_of_range(name, datatype, x, info)
    return arr.astype(dt)


def _too_deep(name: str, arr: np.ndarray[Any, Any]) -> NoReturn:
    raise InvalidInputError(f"input {name!r}: data nests {arr.ndim} lists deep, at most "
                            f"{MAX_DIMS} are supported")


def _json_type(x: object) -> str:
    if x is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "float", str: "string"}.get(
        type(x), type(x).__name__
    )


def _describe(arr: np.ndarray[Any, Any]) -> str:
    kinds = {"b": "boolean", "i": "integer", "u": "integer", "f": "float", "U": "string"}
    if arr.dtype.kind in kinds:
        return kinds[arr.dtype.kind]
    return "/".join(sorted({_json_type(x) for x in arr.flat}))


def strings(name: str, data: Any) -> np.ndarray[Any, Any]:
    """Tensor ``name``'s BYTES data (JSON strings, a lone one taken as a list of one) as an
    array of ``str`` objects."""
    if isinstance(data, str):
        data = [data]
    arr = _objects(name, data)
    for x in arr.flat:
        if not isinstance(x, str):
            if isinstance(x, list):
                raise InvalidInputError(
                    f"input {name!r}: data is ragged; nested lists must be regular"
                )
            raise InvalidInputError(
                f"input {name!r}: BYTES data must be JSON strings, got {_json_type(x)}"
            )
    return arr


def loads(body: bytes | str) -> Any:
    """JSON, by orjson; NaN and Infinity (which Triton's clients may send) by the stdlib.
    Nesting deeper than :data:`MAX_DEPTH` is refused."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise InvalidInputError(f"request body nests deeper than {MAX_DEPTH} levels"
                                    ) from None
        try:
            doc = json.loads(body)
            # the stdlib, unlike orjson, reads lone surrogates ("\udfff"), which no answer
            # or error message could then carry
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
            return doc
        except UnicodeEncodeError:
            raise InvalidInputError("request body holds a string that is not valid Unicode "
                                    "(a lone surrogate)") from None
        except RecursionError:
            raise InvalidInputError(f"request body nests deeper than {MAX_DEPTH} levels"
                                    ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"request body is not valid JSON: {exc}") from None
