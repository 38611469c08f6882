"""Option values the CLI parses: KEY=VALUE pairs, durations, and --from MODULE:FUNCTION."""

from __future__ import annotations

from collections.abc import Sequence

from lockgate.errors import InvalidInputError


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    """KEY=VALUE items as a dict; ``what`` names the option in the error."""
    pairs = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InvalidInputError(f"{what} must look like key=value, got {item!r}")
        pairs[k] = v
    return pairs


def load_factory(spec: str, args: Sequence[str] = ()) -> tuple[object, object]:
    """Call the MODULE:FUNCTION of --from with ``args``: its (model, sample input)."""
    from lockgate.parity.benchmark import load_factory as call_factory

    return call_factory(spec, args)


def parse_duration(text: str, flag: str = "--every") -> float:
    """Seconds in a duration such as 500ms, 30s, 5m, 1h, 2d or a bare number of seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise InvalidInputError(f"{flag} {text!r}: expected a duration such as 30s, 5m or 1h")
