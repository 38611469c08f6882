"""Refusing a name the configuration does not know, with the closest one it does.

Every table of lockgate.toml and of the policy file refuses a key it does not define; the error
names the key, the section it was found in and, when one is close enough, the key that was
probably meant (:func:`difflib.get_close_matches`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

from lockgate.errors import ConfigError

__all__ = ["closest", "unknown_key", "unknown_name"]


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like ``name``, or None when none is close."""
    found = difflib.get_close_matches(name, list(known), n=1)
    return found[0] if found else None


def _did_you_mean(name: str, known: Iterable[str], show: Callable[[str], str] = repr) -> str:
    best = closest(name, known)
    return f"; did you mean {show(best)}?" if best is not None else ""


def unknown_key(key: str, section: str, known: Iterable[str], *, prefix: str = "") -> ConfigError:
    """``unknown key 'atoll' in [parity]; did you mean 'atol'?``, after ``prefix`` (the file)."""
    known = sorted(known)
    return ConfigError(f"{prefix}unknown key {key!r} in [{section}]{_did_you_mean(key, known)}",
                       hint=f"known: {known}")


def unknown_name(message: str, name: str, known: Iterable[str],
                 show: Callable[[str], str] = repr) -> ConfigError:
    """``message`` followed by the closest known name (as ``show`` writes it), with every known
    one as the hint."""
    known = sorted(known)
    return ConfigError(f"{message}{_did_you_mean(name, known, show)}", hint=f"known: {known}")
