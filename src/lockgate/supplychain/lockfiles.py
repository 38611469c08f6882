"""Lock files: the hashes a ``pylock.toml`` (PEP 751) or a hashed ``requirements.txt`` pins.

    hashes = parse_lock_hashes(Path("pylock.toml"))   # {"numpy==2.1.0": ["sha256:…"], ...}
    lines = parse_requirements(text, "requirements.txt")   # RequirementLine per logical line

Keys are ``name==version`` (PEP 503 name, PEP 440 normalised version) where the lock pins one
version, else the name; :func:`lock_key` builds them, so the BOM finds a library's hashes with
the same key. A hash is ``"<algorithm>:<hex>"`` for md5, sha1, sha256, sha384 or sha512.

A ``pylock.toml`` is read for what the BOM needs (each package's name, version and the hashes of
its wheels, sdist and archive), not validated as a whole: ``packaging.pylock`` refuses documents
that lack ``created-by``, spell a name unnormalised or give a wheel no ``url``/``path``, and such a
lock file still states its hashes.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import Version as PyVersion

from lockgate.errors import InvalidInputError

__all__ = ["HASH_LENGTHS", "RequirementLine", "canonical_version", "lock_key", "normalize_hash",
           "parse_lock_hashes", "parse_requirements"]

HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}
"""Hex digits of each hash algorithm a lock file may name."""

_PIN = re.compile(r"^(?:===?)$")
_HASH_OPTION = re.compile(r"--hash(?:=|\s+)(\S+)")
_COMMENT = re.compile(r"(?:^|\s)#.*$")


def canonical_version(v: str) -> str:
    """The PEP 440 normal form of ``v``; a version that is not PEP 440, stripped and lowered."""
    try:
        return str(PyVersion(v))
    except InvalidVersion:
        return v.strip().lower()


def lock_key(name: str, version: str) -> str:
    """``name==version`` with the PEP 503 name and the normalised version."""
    return f"{canonicalize_name(name)}=={canonical_version(version)}"


def normalize_hash(text: str, where: str) -> tuple[str, str]:
    """``(algorithm, lower-case hex)`` of ``"<algorithm>:<hex>"`` (``SHA-256:`` reads as
    ``sha256``); InvalidInputError naming ``where`` for anything else."""
    alg, sep, hexpart = text.strip().partition(":")
    name = alg.lower().replace("-", "")
    length = HASH_LENGTHS.get(name)
    hexpart = hexpart.lower()
    if not sep or length is None or len(hexpart) != length or not _is_hex(hexpart):
        raise InvalidInputError(
            f"{where}: {text!r} is not '<algorithm>:<hex digest>'",
            hint=f"algorithms: {', '.join(HASH_LENGTHS)}",
        )
    return name, hexpart


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def parse_lock_hashes(path: Path) -> dict[str, list[str]]:
    """Hashes per distribution from a ``pylock.toml`` (PEP 751) or a requirements file.

    Keys are ``name==version`` (canonical name and version) where the lock pins a version,
    else the canonical name; values are sorted ``"<algorithm>:<hex>"`` strings. Raises
    InvalidInputError for a file that cannot be read or parsed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read lock file {path}: {exc}") from None
    entries = _pylock(text, path) if path.suffix == ".toml" else _requirements_txt(text, path)
    out: dict[str, set[str]] = {}
    for key, values in entries:
        bucket = out.setdefault(key, set())
        for value in values:
            alg, digest = normalize_hash(value, str(path))
            bucket.add(f"{alg}:{digest}")
    return {k: sorted(v) for k, v in sorted(out.items())}


def _pylock(text: str, path: Path) -> list[tuple[str, list[str]]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{path} is not TOML: {exc}") from None
    packages = data.get("packages")
    if not isinstance(packages, list):
        raise InvalidInputError(f"{path} has no [[packages]] array; is it a pylock.toml?")
    out = []
    for i, pkg in enumerate(packages):
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            raise InvalidInputError(f"{path}: packages[{i}] has no name")
        tables: list[Any] = [*pkg.get("wheels", []), pkg.get("sdist"), pkg.get("archive")]
        values = [
            f"{alg}:{digest}"
            for t in tables if isinstance(t, dict) and isinstance(t.get("hashes"), dict)
            for alg, digest in t["hashes"].items()
        ]
        ver = pkg.get("version")
        key = lock_key(pkg["name"], str(ver)) if ver else canonicalize_name(pkg["name"])
        out.append((key, values))
    return out


@dataclass(frozen=True)
class RequirementLine:
    """One logical line of a requirements file: a requirement with its ``--hash`` values, or
    an option line (``-r``, ``--index-url``, ...) in ``option``."""

    lineno: int
    requirement: Requirement | None
    hashes: tuple[str, ...] = ()
    option: str = ""


def parse_requirements(text: str, where: str) -> list[RequirementLine]:
    """The requirements and option lines of a ``requirements.txt`` (comments dropped, lines
    joined across trailing backslashes); InvalidInputError naming ``where:line``."""
    out = []
    for lineno, line in _logical_lines(text):
        line = _COMMENT.sub("", line).strip()
        if not line:
            continue
        if line.startswith("-"):
            out.append(RequirementLine(lineno, None, option=line))
            continue
        values = tuple(_HASH_OPTION.findall(line))
        spec = _HASH_OPTION.sub("", line).strip()
        try:
            out.append(RequirementLine(lineno, Requirement(spec), values))
        except InvalidRequirement as exc:
            raise InvalidInputError(f"{where}:{lineno}: {exc}") from None
    return out


def _requirements_txt(text: str, path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for entry in parse_requirements(text, str(path)):
        req, values = entry.requirement, list(entry.hashes)
        if req is None:  # -r, -c, --index-url, -e and friends
            continue
        pins = [s for s in req.specifier if _PIN.match(s.operator) and "*" not in s.version]
        key = (lock_key(req.name, pins[0].version) if len(pins) == 1 and len(req.specifier) == 1
               else canonicalize_name(req.name))
        out.append((key, values))
    return out


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Lines joined across trailing backslashes, each with the number of its first line."""
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if raw.rstrip().endswith("\\"):
            buf.append(raw.rstrip()[:-1])
            continue
        buf.append(raw)
        yield start, " ".join(buf)
        buf = []
    if buf:
        yield start, " ".join(buf)
