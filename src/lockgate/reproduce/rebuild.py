"""The child side of ``lockgate reproduce``, run as the hidden ``lockgate _rebuild`` command in
the reproduction's environment (not the registry's): import ``module:function`` from the
working directory, call it with the recorded arguments, convert the returned model with
lockgate's converter at the recorded opset, and write the ONNX bytes."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lockgate.errors import InvalidInputError

__all__ = ["rebuild"]


def rebuild(entry: str, opset: int, out: Path, args: Sequence[str] = ()) -> None:
    module_name, sep, fn_name = entry.partition(":")
    if not sep or not module_name or not fn_name:
        raise InvalidInputError(f"recipe entry must be module:function, got {entry!r}")
    sys.path.insert(0, os.getcwd())
    fn = getattr(importlib.import_module(module_name), fn_name)
    model, sample = fn(*args)
    from lockgate.convert import converter_for
    from lockgate.progress import NullProgress

    converted = converter_for(model).convert(model, sample, opset=opset,
                                             progress=NullProgress())
    out.write_bytes(converted.model.SerializeToString())
