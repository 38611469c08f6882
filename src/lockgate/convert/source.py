"""The source of an ONNX file: a callable that computes what the file's model should output.

A model that arrives as ONNX has no framework to compare against. Given its source (the code
that computes the same function: numpy, the training framework, a service's client), parity is
proven as for a converted model::

    def source(inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray] | Mapping[str, ...]:
        ...

``inputs`` are keyed by the ONNX input names; the result is the outputs in ONNX output order
(a sequence, or one array for a one-output model) or a mapping keyed by the ONNX output names.
A ``"package.module:function"`` string names such a callable, imported from the current
directory like ``--from``'s factories.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from lockgate.convert._common import first_line
from lockgate.convert.base import Converted, ReferenceRunner
from lockgate.errors import InvalidInputError

__all__ = ["Source", "is_source_spec", "load_source", "with_source"]

Source = Callable[[Mapping[str, np.ndarray]], object] | str
"""A source callable, or ``"package.module:function"`` naming one."""

_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def is_source_spec(text: str) -> bool:
    """True when ``text`` reads as ``package.module:function``."""
    return _SPEC.fullmatch(text) is not None


def load_source(spec: str) -> Callable[..., object]:
    """The callable ``package.module:function`` names, imported from the current directory."""
    if not is_source_spec(spec):
        raise InvalidInputError(
            f"source {spec!r} is not package.module:function",
            hint="name the callable that computes the model's outputs, e.g. mypkg.model:predict")
    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, and whatever the module raises while importing
        raise InvalidInputError(
            f"cannot import {mod_name!r} for the source {spec}: {type(exc).__name__}: "
            f"{first_line(exc)}",
            hint="run from the folder the module is in, or install its package") from exc
    target: object = getattr(module, attr, None)
    if target is None:
        raise InvalidInputError(f"{mod_name} has no {attr!r} (source {spec})")
    if not callable(target):
        raise InvalidInputError(
            f"source {spec} is a {type(target).__name__}, not a callable",
            hint="name a function taking the inputs by ONNX input name")
    return target


def with_source(converted: Converted, source: Source, output_names: Sequence[str]) -> Converted:
    """``converted`` with a reference that runs ``source``: parity then compares ONNX Runtime
    with it on the sample and the random inputs, as for a converted model."""
    fn = load_source(source) if isinstance(source, str) else source
    if not callable(fn):
        raise InvalidInputError(
            f"source must be a callable or 'package.module:function', not "
            f"{type(source).__name__}")
    name = source if isinstance(source, str) else getattr(fn, "__qualname__", repr(fn))
    details = {**converted.details, "source_callable": str(name)}
    return replace(converted, reference=_runner(fn, tuple(output_names)), details=details)


def _runner(fn: Callable[[Mapping[str, np.ndarray]], object],
            names: tuple[str, ...]) -> ReferenceRunner:
    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = fn({k: np.array(v, copy=True) for k, v in inputs.items()})
        return _outputs(result, names)

    return run


def _outputs(result: object, names: tuple[str, ...]) -> list[np.ndarray]:
    """The source's result as arrays in ONNX output order."""
    if isinstance(result, Mapping):
        missing = [n for n in names if n not in result]
        unexpected = sorted(str(k) for k in result if k not in names)
        if missing or unexpected:
            raise InvalidInputError(
                f"the source returned outputs {sorted(str(k) for k in result)}; the ONNX model's "
                f"outputs are {list(names)} (missing {missing}, unexpected {unexpected})",
                hint="key the source's result by the ONNX output names, or return a list in "
                     "ONNX output order")
        return [np.asarray(result[n]) for n in names]
    if isinstance(result, np.ndarray) or np.isscalar(result):
        return [np.asarray(result)]
    if isinstance(result, Sequence) and not isinstance(result, str | bytes):
        return [np.asarray(x) for x in result]
    raise InvalidInputError(
        f"the source returned a {type(result).__name__}; expected numpy arrays",
        hint=f"return a list in ONNX output order {list(names)} or a mapping by output name")
