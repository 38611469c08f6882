"""License texts recognised by their wording, and the license files a distribution ships.

Not a full SPDX matcher: a text is normalised (casefolded, punctuation and comment marks
dropped, whitespace collapsed) and searched for a few phrases that only one common license has
(MIT, BSD-2/3/4-Clause, ISC, 0BSD, Apache-2.0, PSF-2.0, MPL-2.0, the LGPL, GPL and AGPL, BSL-1.0,
Unlicense, Zlib). Texts of the GNU licenses cannot say "only" or "or later"; they are read as
``-only``. Nothing here reaches the network.

:func:`first_license` is the license whose wording comes first (a ``License`` metadata field that
holds a text, followed by bundled notices); :func:`licenses_in` is every license a file's text
holds (a license file that bundles several licenses binds by all of them).
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["LicenseFile", "first_license", "license_files", "licenses_in", "without_implied"]

_TEXTS: tuple[tuple[str, str, str], ...] = (
    # (phrase that starts the recognition, phrase that must follow soon after, SPDX id). The
    # GNU licenses by their title lines: their texts name each other, and other licenses
    # (MPL-2.0) name them, without the date.
    ("gnu affero general public license version 3, 19 november 2007", "", "AGPL-3.0-only"),
    ("gnu lesser general public license version 3, 29 june 2007", "", "LGPL-3.0-only"),
    ("gnu lesser general public license version 2.1, february 1999", "", "LGPL-2.1-only"),
    ("gnu library general public license version 2, june 1991", "", "LGPL-2.0-only"),
    ("gnu general public license version 3, 29 june 2007", "", "GPL-3.0-only"),
    ("gnu general public license version 2, june 1991", "", "GPL-2.0-only"),
    ("mozilla public license", "2.0", "MPL-2.0"),
    ("apache license", "version 2.0", "Apache-2.0"),
    ("boost software license", "version 1.0", "BSL-1.0"),
    ("this is free and unencumbered software released into the public domain", "", "Unlicense"),
    ("python software foundation license version 2", "", "PSF-2.0"),
    ("psf license agreement for python", "", "PSF-2.0"),
    ("this license agreement is between the python software foundation", "", "PSF-2.0"),
    ("permission is hereby granted, free of charge, to any person obtaining a copy",
     "shall be included in all copies or substantial portions", "MIT"),
    ("permission to use, copy, modify, and/or distribute this software for any purpose with or "
     "without fee is hereby granted", "provided that the above copyright notice", "ISC"),
    ("permission to use, copy, modify, and distribute this software for any purpose with or "
     "without fee is hereby granted", "provided that the above copyright notice", "ISC"),
    ("permission to use, copy, modify, and/or distribute this software for any purpose with or "
     "without fee is hereby granted", "", "0BSD"),
    ("altered source versions must be plainly marked as such", "", "Zlib"),
)
_BSD = "redistribution and use in source and binary forms"
_NEAR = 2000  # characters within which the confirming phrase must follow
_LIMIT = 400_000  # characters of one text that are read

# A license text names other GNU licenses (the LGPL builds on the GPL, the GPL names the LGPL):
# where the more specific one is found, the one it refers to is not a license of its own.
_IMPLIED = {"LGPL-3.0-only": ("GPL-3.0-only",), "LGPL-2.1-only": ("GPL-2.0-only",),
            "LGPL-2.0-only": ("GPL-2.0-only",), "AGPL-3.0-only": ("GPL-3.0-only",),
            "LGPL-3.0-or-later": ("GPL-3.0-only", "GPL-3.0-or-later"),
            "LGPL-2.1-or-later": ("GPL-2.0-only", "GPL-2.0-or-later"),
            "LGPL-2.0-or-later": ("GPL-2.0-only", "GPL-2.0-or-later"),
            "AGPL-3.0-or-later": ("GPL-3.0-only", "GPL-3.0-or-later"), "ISC": ("0BSD",)}


# The notice a GNU-licensed project puts in its files: "... under the terms of the GNU Lesser
# General Public License as published by the Free Software Foundation; either version 3 of the
# License, or (at your option) any later version."
_GNU_NOTICE = re.compile(
    r"(?:under|terms of) the (?:gnu )?(?P<kind>lesser |library |affero )?general public "
    r"licen[cs]e,?(?: \(\w+\))?,? (?:as published by the free software foundation[,;]? )?"
    r"(?:either )?(?:version|v) ?(?P<ver>[123](?:\.[01])?)\b(?P<later>[^.]{0,60}?"
    r"(?:any later version|or later))?")
_GNU_BASE = {"": "GPL", "lesser": "LGPL", "library": "LGPL", "affero": "AGPL"}
_GNU_KNOWN = frozenset({"GPL-1.0", "GPL-2.0", "GPL-3.0", "LGPL-2.0", "LGPL-2.1", "LGPL-3.0",
                        "AGPL-3.0"})


def _gnu_id(match: re.Match[str]) -> str | None:
    base = _GNU_BASE[(match.group("kind") or "").strip()]
    ver = match.group("ver")
    ver = ver if "." in ver else f"{ver}.0"
    if base == "LGPL" and ver == "2.0" and (match.group("kind") or "").strip() == "lesser":
        ver = "2.1"  # the Lesser GPL starts at 2.1
    if f"{base}-{ver}" not in _GNU_KNOWN:
        return None
    return f"{base}-{ver}-{'or-later' if match.group('later') else 'only'}"


def _flat(text: str) -> str:
    text = text[:_LIMIT].casefold()
    text = re.sub(r"[\u2018\u2019\u201c\u201d\"'`*#|>]", " ", text)
    return " ".join(text.split())


def _found(flat: str) -> dict[str, int]:
    """Each license recognised in ``flat``, with where its wording starts."""
    found: dict[str, int] = {}
    for start, confirm, spdx in _TEXTS:
        at = flat.find(start)
        while at >= 0:
            if not confirm or confirm in flat[at:at + len(start) + _NEAR]:
                found.setdefault(spdx, at)
                break
            at = flat.find(start, at + 1)
    titles = dict(found)
    for match in _GNU_NOTICE.finditer(flat):
        notice = _gnu_id(match)
        if notice is None:
            continue
        only = notice.replace("-or-later", "-only")
        if titles.get(only, len(flat)) < match.start():
            continue  # the "how to apply" notice at the end of the license's own text
        found.setdefault(notice, match.start())
        if only != notice and only in titles:
            found.pop(only)  # a notice before the text says "or later"
    at = flat.find(_BSD)
    if at >= 0:
        window = flat[at:at + 3 * _NEAR]
        if "all advertising materials mentioning" in window:
            spdx = "BSD-4-Clause"
        elif "endorse or promote products" in window:
            spdx = "BSD-3-Clause"
        else:
            spdx = "BSD-2-Clause"
        found.setdefault(spdx, at)
    kept = set(without_implied(found))
    return {k: v for k, v in found.items() if k in kept}


def without_implied(ids: list[str] | dict[str, int]) -> list[str]:
    """``ids`` less the licenses a more specific one among them builds on (the GPL text an LGPL
    project ships beside the LGPL's)."""
    dropped = {g for specific, general in _IMPLIED.items() if specific in ids for g in general}
    return [i for i in ids if i not in dropped]


def first_license(text: str) -> str | None:
    """The SPDX id of the license whose wording comes first in ``text``, or None."""
    found = _found(_flat(text))
    return min(found, key=found.__getitem__) if found else None


def licenses_in(text: str) -> list[str]:
    """Every SPDX id whose wording ``text`` holds, in the order they appear."""
    found = _found(_flat(text))
    return sorted(found, key=found.__getitem__)


@dataclass(frozen=True)
class LicenseFile:
    """One license file of a distribution: its path inside the ``.dist-info`` folder and the
    SPDX ids its text holds (empty: not recognised)."""

    path: str
    ids: tuple[str, ...]


_NAMES = re.compile(r"^(licen[cs]e|copying|copyright|notice|unlicense)", re.IGNORECASE)


def _candidates(dist: importlib.metadata.Distribution) -> list[str]:
    """Paths, relative to the ``.dist-info`` folder, of the license files ``dist`` ships:
    ``License-File`` entries (PEP 639 puts them under ``licenses/``) and files of the folder
    whose names say license, copying or notice."""
    paths: list[str] = []
    try:
        declared = dist.metadata.get_all("License-File", None) or []
    except (OSError, TypeError, ValueError):
        declared = []
    for entry in declared:
        if ".." in PurePosixPath(str(entry)).parts or str(entry).startswith(("/", "\\")):
            continue  # names a file outside the .dist-info folder
        paths += [f"licenses/{entry}", str(entry)]
    try:
        files = dist.files or []
    except (OSError, ValueError):
        files = []
    for file in files:
        parts = PurePosixPath(str(file)).parts
        if len(parts) < 2 or not parts[0].endswith(".dist-info"):
            continue
        inner = "/".join(parts[1:])
        if parts[1] == "licenses" or (len(parts) == 2 and _NAMES.match(parts[1])):
            paths.append(inner)
    return list(dict.fromkeys(paths))


def license_files(dist: importlib.metadata.Distribution) -> list[LicenseFile]:
    """The license files ``dist`` ships that can be read, each with the licenses it holds."""
    out: list[LicenseFile] = []
    read: set[str] = set()
    for path in _candidates(dist):
        try:
            text = dist.read_text(path)
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if text is None or text in read:
            continue
        read.add(text)
        out.append(LicenseFile(path, tuple(licenses_in(text))))
    return out
