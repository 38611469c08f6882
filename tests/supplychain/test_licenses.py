"""License reading, normalisation and policy outcomes, on hand-made and real distributions."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from lockgate.errors import InvalidInputError
from lockgate.supplychain.licenses import (
    DEFAULT_LICENSE_POLICY,
    LicenseInfo,
    LicenseOutcome,
    LicensePolicy,
    LicenseSource,
    assess,
    evaluate,
    license_of,
    normalize_expression,
    scan_licenses,
)

MIT_TEXT = """Copyright (c) 2024 Example Authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software."""

BSD_TEXT = """Copyright (c) 2024, Example Authors
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.
{third}
THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"."""

THIRD_CLAUSE = """3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from
   this software without specific prior written permission.
"""

APACHE_TEXT = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"""

ISC_TEXT = """Copyright (c) 2024 Example

Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies."""

UNLICENSE_TEXT = """This is free and unencumbered software released into the public domain.

Anyone is free to copy, modify, publish, use, compile, sell, or
distribute this software."""

GPL3_TEXT = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>"""


def make_dist(
    root: Path,
    name: str,
    version: str = "1.0",
    *,
    expression: str | None = None,
    classifiers: Sequence[str] = (),
    license_field: str | None = None,
) -> importlib.metadata.Distribution:
    """A real ``*.dist-info/METADATA`` in ``root``, loaded the way importlib loads any other."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}"]
    if expression is not None:
        lines.append(f"License-Expression: {expression}")
    lines += [f"Classifier: {c}" for c in classifiers]
    if license_field is not None:
        first, *rest = license_field.splitlines() or [""]
        lines.append(f"License: {first}")
        lines += [f"        {line}" for line in rest]  # setuptools' continuation indent
    (info / "METADATA").write_text("\n".join(lines) + "\n\nLong description.\n")
    return importlib.metadata.PathDistribution(info)


POLICY = LicensePolicy(
    allowed=frozenset({"MIT", "Apache-2.0", "BSD-3-Clause"}),
    denied=frozenset({"AGPL-3.0-only", "GPL-3.0-only"}),
)


def info_for(expression: str) -> LicenseInfo:
    return LicenseInfo("pkg", "1.0", normalize_expression(expression), LicenseSource.EXPRESSION)


# -- reading -------------------------------------------------------------------------------


def test_license_expression_wins(tmp_path: Path) -> None:
    gpl = "License :: OSI Approved :: GNU General Public License v3 (GPLv3)"
    dist = make_dist(tmp_path, "pkg", expression="mit or apache-2.0", classifiers=[gpl],
                     license_field="GPLv3")
    info = license_of(dist)
    assert (info.name, info.version) == ("pkg", "1.0")
    assert info.expression == "MIT OR Apache-2.0"
    assert info.source is LicenseSource.EXPRESSION
    assert evaluate(info) is LicenseOutcome.ALLOWED


def test_invalid_license_expression_needs_review_without_falling_back(tmp_path: Path) -> None:
    dist = make_dist(tmp_path, "pkg", expression="MIT OR",
                     classifiers=["License :: OSI Approved :: MIT License"])
    info = license_of(dist)
    assert info.source is LicenseSource.EXPRESSION
    assert info.expression is None
    assert "License-Expression" in (info.problem or "")
    finding = assess(info)
    assert finding.outcome is LicenseOutcome.NEEDS_REVIEW
    assert finding.reason.startswith("needs review: License-Expression")


def test_license_ref_is_kept_and_judged_by_policy(tmp_path: Path) -> None:
    info = license_of(make_dist(tmp_path, "pkg", expression="LicenseRef-Proprietary"))
    assert info.expression == "LicenseRef-Proprietary"
    assert evaluate(info) is LicenseOutcome.NEEDS_REVIEW
    strict = LicensePolicy(frozenset({"MIT"}), frozenset({"LicenseRef-Proprietary"}))
    assert evaluate(info, strict) is LicenseOutcome.DENIED


@pytest.mark.parametrize(
    ("classifiers", "license_field", "expected"),
    [
        (["License :: OSI Approved :: MIT License"], None, "MIT"),
        (["License :: OSI Approved :: Apache Software License"], None, "Apache-2.0"),
        (["License :: OSI Approved :: Python Software Foundation License"], None, "PSF-2.0"),
        (["License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)"], None, "MPL-2.0"),
        (["License :: OSI Approved :: ISC License (ISCL)"], "UNKNOWN", "ISC"),
        (["License :: OSI Approved :: Zope Public License"], None, "ZPL-2.1"),
        (["License :: OSI Approved :: GNU General Public License v2 (GPLv2)"], None,
         "GPL-2.0-only"),
        (["License :: OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+)"],
         None, "LGPL-3.0-or-later"),
        (["License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication"], None, "CC0-1.0"),
        (["License :: OSI Approved :: MIT License", "License :: OSI Approved :: Apache Software "
          "License"], "MIT License", "MIT AND Apache-2.0"),
        (["License :: OSI Approved", "License :: OSI Approved :: MIT License"], None, "MIT"),
        (["License :: DFSG approved", "License :: OSI Approved :: MIT License"], "MIT", "MIT"),
        (["License :: OSI Approved"], "Apache 2.0", "Apache-2.0"),
        (["License :: OSI Approved :: BSD License"], "BSD-3-Clause", "BSD-3-Clause"),
        (["License :: OSI Approved :: BSD License"], "3-Clause BSD License", "BSD-3-Clause"),
        (["License :: OSI Approved :: BSD License"], BSD_TEXT.format(third=""), "BSD-2-Clause"),
        (["License :: OSI Approved :: BSD License"], BSD_TEXT.format(third=THIRD_CLAUSE),
         "BSD-3-Clause"),
        (["License :: OSI Approved :: GNU General Public License (GPL)"], "GPL-2.0-or-later",
         "GPL-2.0-or-later"),
        (["License :: OSI Approved :: Apache Software License",
          "License :: OSI Approved :: BSD License"], "BSD-2-Clause or Apache-2.0",
         "BSD-2-Clause OR Apache-2.0"),
        (["License :: OSI Approved :: Apache Software License",
          "License :: OSI Approved :: BSD License"], "BSD-3-Clause",
         "Apache-2.0 AND BSD-3-Clause"),
    ],
)
def test_classifiers(
    tmp_path: Path, classifiers: list[str], license_field: str | None, expected: str
) -> None:
    info = license_of(make_dist(tmp_path, "pkg", classifiers=classifiers,
                                license_field=license_field))
    assert info.source is LicenseSource.CLASSIFIER
    assert info.expression == expected
    assert info.problem is None


@pytest.mark.parametrize(
    ("classifiers", "license_field", "problem"),
    [
        (["License :: OSI Approved :: BSD License"], None, "'BSD License'"),
        (["License :: OSI Approved :: BSD License"], "BSD", "'BSD License'"),
        (["License :: OSI Approved :: BSD License"], "MIT", "'BSD License'"),  # not a BSD
        (["License :: OSI Approved :: BSD License"], "BSD-3-Clause OR MIT", "'BSD License'"),
        (["License :: OSI Approved :: GNU General Public License (GPL)"], None, "'GNU General"),
        (["License :: OSI Approved"], None, "'OSI Approved'"),
        (["License :: Freeware"], "MIT", "'Freeware' has no SPDX id"),
        (["License :: Other/Proprietary License"], None, "'Other/Proprietary License'"),
        (["License :: OSI Approved :: MIT License", "License :: Public Domain"], None,
         "'Public Domain'"),
    ],
)
def test_classifiers_that_need_review(
    tmp_path: Path, classifiers: list[str], license_field: str | None, problem: str
) -> None:
    info = license_of(make_dist(tmp_path, "pkg", classifiers=classifiers,
                                license_field=license_field))
    assert info.source is LicenseSource.CLASSIFIER
    assert info.expression is None
    assert problem in (info.problem or "")
    assert evaluate(info) is LicenseOutcome.NEEDS_REVIEW


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MIT", "MIT"),
        ("mit", "MIT"),
        ("The MIT License (MIT)", "MIT"),
        ("MIT license", "MIT"),
        ("BSD-3-Clause", "BSD-3-Clause"),
        ("Apache 2.0", "Apache-2.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("Apache License v2.0", "Apache-2.0"),
        ("3-Clause BSD License", "BSD-3-Clause"),
        ("Simplified BSD", "BSD-2-Clause"),
        ("PSFL", "PSF-2.0"),
        ("MPL-2.0", "MPL-2.0"),
        ("GPLv3+", "GPL-3.0-or-later"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("mit or apache-2.0", "MIT OR Apache-2.0"),
        ("CC0-1.0 OR Apache-2.0", "CC0-1.0 OR Apache-2.0"),
        (MIT_TEXT, "MIT"),
        ("MIT License\n\n" + MIT_TEXT, "MIT"),
        (APACHE_TEXT, "Apache-2.0"),
        (BSD_TEXT.format(third=THIRD_CLAUSE), "BSD-3-Clause"),
        (BSD_TEXT.format(third=THIRD_CLAUSE) + "\n\nBundled:\n" + GPL3_TEXT, "BSD-3-Clause"),
        (ISC_TEXT, "ISC"),
        (UNLICENSE_TEXT, "Unlicense"),
        (GPL3_TEXT, "GPL-3.0-only"),
    ],
)
def test_license_field(tmp_path: Path, text: str, expected: str) -> None:
    info = license_of(make_dist(tmp_path, "pkg", license_field=text))
    assert info.source is LicenseSource.LICENSE_FIELD
    assert info.expression == expected
    assert len(info.declared) <= 200


@pytest.mark.parametrize("text", ["BSD", "Public Domain", "Dual License", "Copyright 2024 Me\n"
                                  "All rights reserved.\nDo not copy."])
def test_license_field_not_understood_needs_review(tmp_path: Path, text: str) -> None:
    info = license_of(make_dist(tmp_path, "pkg", license_field=text))
    assert info.source is LicenseSource.LICENSE_FIELD
    assert info.expression is None
    assert info.problem
    assert evaluate(info) is LicenseOutcome.NEEDS_REVIEW


@pytest.mark.parametrize("license_field", [None, "UNKNOWN", "", "see LICENSE"])
def test_missing_metadata(tmp_path: Path, license_field: str | None) -> None:
    info = license_of(make_dist(tmp_path, "pkg", license_field=license_field))
    assert info.source is LicenseSource.NONE
    assert info.expression is None
    finding = assess(info)
    assert finding.outcome is LicenseOutcome.NEEDS_REVIEW
    assert "no License-Expression" in finding.reason


def test_pipe_continuation_lines_are_unfolded(tmp_path: Path) -> None:
    info = tmp_path / "pkg-1.0.dist-info"
    info.mkdir()
    body = "\n".join(f"       |{line}" for line in MIT_TEXT.splitlines()[1:])
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\nLicense: {MIT_TEXT.splitlines()[0]}\n"
        f"{body}\n\n")
    assert license_of(importlib.metadata.PathDistribution(info)).expression == "MIT"


# -- policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "outcome"),
    [
        ("MIT", LicenseOutcome.ALLOWED),
        ("mit", LicenseOutcome.ALLOWED),
        ("LGPL-2.1-only", LicenseOutcome.NEEDS_REVIEW),
        ("AGPL-3.0-only", LicenseOutcome.DENIED),
        ("MIT OR GPL-3.0-only", LicenseOutcome.ALLOWED),
        ("GPL-3.0-only OR AGPL-3.0-only", LicenseOutcome.DENIED),
        ("GPL-3.0-only OR LGPL-2.1-only", LicenseOutcome.NEEDS_REVIEW),
        ("MIT AND Apache-2.0", LicenseOutcome.ALLOWED),
        ("MIT AND LGPL-2.1-only", LicenseOutcome.NEEDS_REVIEW),
        ("MIT AND GPL-3.0-only", LicenseOutcome.DENIED),
        ("LGPL-2.1-only AND AGPL-3.0-only", LicenseOutcome.DENIED),
        ("Apache-2.0 WITH LLVM-exception", LicenseOutcome.ALLOWED),
        ("GPL-3.0-only WITH GCC-exception-3.1", LicenseOutcome.DENIED),
        ("LGPL-2.1-only WITH LLVM-exception OR MIT", LicenseOutcome.ALLOWED),
        ("(MIT OR AGPL-3.0-only) AND BSD-3-Clause", LicenseOutcome.ALLOWED),
        ("MIT AND (LGPL-2.1-only OR AGPL-3.0-only)", LicenseOutcome.NEEDS_REVIEW),
        ("MIT AND (GPL-3.0-only OR AGPL-3.0-only)", LicenseOutcome.DENIED),
        ("LicenseRef-Internal", LicenseOutcome.NEEDS_REVIEW),
    ],
)
def test_expression_semantics(expression: str, outcome: LicenseOutcome) -> None:
    assert evaluate(info_for(expression), POLICY) is outcome


def test_reasons_name_the_deciding_ids() -> None:
    assert assess(info_for("MIT AND GPL-3.0-only"), POLICY).reason == "denied: GPL-3.0-only"
    assert assess(info_for("MIT AND LGPL-2.1-only"), POLICY).reason == (
        "needs review: LGPL-2.1-only in neither list")
    assert assess(info_for("Apache-2.0 WITH LLVM-exception"), POLICY).reason == (
        "allowed: Apache-2.0 WITH LLVM-exception")


def test_policy_ids_are_normalised_and_checked() -> None:
    policy = LicensePolicy(frozenset({"apache-2.0", "GPL-2.0", "LicenseRef-Ours"}),
                           frozenset({"agpl-3.0"}))
    assert policy.allowed == {"Apache-2.0", "GPL-2.0-only", "LicenseRef-Ours"}
    assert policy.denied == {"AGPL-3.0-only"}
    assert evaluate(info_for("GPL-2.0-only"), policy) is LicenseOutcome.ALLOWED
    with pytest.raises(InvalidInputError, match="both allowed and denied"):
        LicensePolicy(frozenset({"MIT"}), frozenset({"mit"}))
    with pytest.raises(InvalidInputError, match="not an SPDX"):
        LicensePolicy(frozenset({"Not-A-License"}), frozenset())
    with pytest.raises(InvalidInputError, match="single SPDX license id"):
        LicensePolicy(frozenset({"MIT OR Apache-2.0"}), frozenset())


def test_default_policy() -> None:
    allowed = {"MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "ISC", "PSF-2.0",
               "Python-2.0", "MPL-2.0", "Unlicense", "Zlib", "0BSD", "CC0-1.0", "HPND"}
    assert allowed <= DEFAULT_LICENSE_POLICY.allowed
    assert {"AGPL-3.0-only", "AGPL-3.0-or-later", "SSPL-1.0"} <= DEFAULT_LICENSE_POLICY.denied
    for copyleft in ("GPL-2.0-only", "GPL-3.0-or-later", "LGPL-2.1-only", "EPL-2.0"):
        assert evaluate(info_for(copyleft)) is LicenseOutcome.NEEDS_REVIEW


@pytest.mark.parametrize("text", ["", "MIT OR", "MIT License", "Apache 2.0", "LLVM-exception",
                                  "MIT WITH Apache-2.0"])
def test_normalize_expression_rejects_non_expressions(text: str) -> None:
    with pytest.raises(InvalidInputError):
        normalize_expression(text)


# -- scanning ------------------------------------------------------------------------------


def test_scan_dedupes_by_normalised_name_and_sorts(tmp_path: Path) -> None:
    dists = [
        make_dist(tmp_path / "a", "Zeta_Pkg", expression="AGPL-3.0-or-later"),
        make_dist(tmp_path / "b", "alpha", classifiers=["License :: OSI Approved :: MIT License"]),
        make_dist(tmp_path / "c", "zeta-pkg", "2.0", expression="MIT"),  # shadowed: first wins
        make_dist(tmp_path / "d", "middle", license_field="GPLv2"),
    ]
    findings = scan_licenses(dists)
    assert [(f.info.name, f.outcome) for f in findings] == [
        ("alpha", LicenseOutcome.ALLOWED),
        ("middle", LicenseOutcome.NEEDS_REVIEW),
        ("Zeta_Pkg", LicenseOutcome.DENIED),
    ]
    as_json = json.loads(json.dumps([f.to_dict() for f in findings]))
    assert as_json[2]["outcome"] == "denied"
    assert as_json[2]["source"] == "expression"
    assert {f.outcome for f in findings} == set(LicenseOutcome)


def test_scan_of_the_real_environment() -> None:
    findings = scan_licenses()
    by_name = {canonicalize_name(f.info.name): f for f in findings}
    assert len(by_name) == len(findings)
    numpy = by_name["numpy"]
    assert numpy.info.expression
    assert numpy.info.version == importlib.metadata.version("numpy")
    assert numpy.outcome is not LicenseOutcome.DENIED
    for f in findings:
        assert (f.info.expression is None) == (f.info.problem is not None)
        assert f.reason.startswith(f.outcome.value.replace("-", " "))
