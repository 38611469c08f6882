"""Option values the CLI parses: KEY=VALUE pairs, durations, --dynamic specs and --from
MODULE:FUNCTION."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lockgate.errors import InvalidInputError, NotFoundError


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    """KEY=VALUE items as a dict; ``what`` names the option in the error."""
    pairs = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InvalidInputError(f"{what} must look like key=value, got {item!r}")
        pairs[k] = v
    return pairs


_DYNAMIC_FORM = ("expected NAME:AXIS=DIM[,AXIS=DIM] (input_ids:0=batch,1=sequence) or a JSON "
                 'object ({"input_ids": {"0": "batch", "1": "sequence"}})')


def parse_dynamic(items: Sequence[str]) -> dict[str, dict[int, str]] | None:
    """--dynamic items (``NAME:AXIS=DIM[,AXIS=DIM]`` or a JSON object) as one spec; None when
    there are none. The converter checks the names against the model."""
    if not items:
        return None
    spec: dict[str, dict[int, str]] = {}
    for item in items:
        for name, axes in _dynamic_item(item.strip()):
            merged = spec.setdefault(name, {})
            for axis, dim in axes.items():
                if axis in merged:
                    raise InvalidInputError(f"--dynamic names axis {axis} of {name!r} twice")
                merged[axis] = dim
    return spec


def _dynamic_item(item: str) -> list[tuple[str, dict[int, str]]]:
    if item.startswith("{"):
        try:
            doc = json.loads(item)
        except ValueError as exc:
            raise InvalidInputError(f"--dynamic {item!r}: not valid JSON ({exc})",
                                    hint=_DYNAMIC_FORM) from None
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise InvalidInputError(f"--dynamic {item!r}: {_DYNAMIC_FORM}")
        return [(str(k), {_axis(item, a): _dim(item, d) for a, d in v.items()})
                for k, v in doc.items()]
    name, sep, rest = item.rpartition(":")
    if not sep or not name or not rest:
        raise InvalidInputError(f"--dynamic {item!r}: {_DYNAMIC_FORM}")
    axes: dict[int, str] = {}
    for pair in rest.split(","):
        axis, eq, dim = pair.partition("=")
        if not eq:
            raise InvalidInputError(f"--dynamic {item!r}: {pair!r} is not AXIS=DIM",
                                    hint=_DYNAMIC_FORM)
        key = _axis(item, axis.strip())
        if key in axes:
            raise InvalidInputError(f"--dynamic {item!r} names axis {key} twice")
        axes[key] = _dim(item, dim.strip())
    return [(name.strip(), axes)]


def _axis(item: str, text: object) -> int:
    try:
        return int(str(text))
    except ValueError:
        raise InvalidInputError(f"--dynamic {item!r}: axis {text!r} is not an integer",
                                hint=_DYNAMIC_FORM) from None


def _dim(item: str, dim: object) -> str:
    if not isinstance(dim, str) or not dim:
        raise InvalidInputError(f"--dynamic {item!r}: a dimension name is a non-empty string",
                                hint=_DYNAMIC_FORM)
    return dim


def load_factory(spec: str, args: Sequence[str] = ()) -> tuple[object, object]:
    """Call the MODULE:FUNCTION of --from with ``args``: its (model, sample input)."""
    from lockgate.parity.benchmark import load_factory as call_factory

    return call_factory(spec, args)


def reference_option(value: str | None, data: Path | None) -> tuple[str | None, Path | None]:
    """``--reference`` read as the source callable (``MODULE:FUNCTION`` naming no file) or,
    as before, as reference data; then the source and the reference data."""
    from lockgate.convert.source import is_source_spec

    if value is None:
        return None, data
    if is_source_spec(value) and not Path(value).exists():
        return value, data
    if data is not None:
        raise InvalidInputError(
            f"--reference {value} and --reference-data {data} both give reference data",
            hint="give the data once, with --reference-data")
    return None, Path(value)


def load_sample(path: Path) -> object:
    """``--sample``: arrays by input name from a ``.npz``, or one array from a ``.npy``."""
    import numpy as np

    from lockgate.parity.expected import load_arrays

    if path.suffix == ".npy":
        if not path.is_file():
            raise NotFoundError(f"--sample: no file at {path}")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"--sample: {path} is not a readable .npy file: {exc}",
                                    hint="save it with numpy.save") from exc
    return load_arrays(path, "--sample")


def parse_duration(text: str, flag: str = "--every") -> float:
    """Seconds in a duration such as 500ms, 30s, 5m, 1h, 2d or a bare number of seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise InvalidInputError(f"{flag} {text!r}: expected a duration such as 30s, 5m or 1h")
