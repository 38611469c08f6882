"""``python -m lockgate.rebuild ENTRY OPSET OUT [ARGS...]``: the child side of
``lockgate reproduce``. Imports ``module:function`` from the working directory, calls it with the
recorded arguments, converts the returned model with lockgate's converter at the recorded opset
and writes the ONNX bytes to OUT. Runs in the reproduction's environment, not the registry's."""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: python -m lockgate.rebuild MODULE:FUNCTION OPSET OUT [ARGS...]",
              file=sys.stderr)
        return 2
    entry, opset, out, *args = argv
    module_name, _, fn_name = entry.partition(":")
    sys.path.insert(0, os.getcwd())
    fn = getattr(importlib.import_module(module_name), fn_name)
    model, sample = fn(*args)
    from lockgate.convert import converter_for
    from lockgate.progress import NullProgress

    converted = converter_for(model).convert(model, sample, opset=int(opset),
                                             progress=NullProgress())
    Path(out).write_bytes(converted.model.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
