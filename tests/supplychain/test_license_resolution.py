"""Licenses resolved from the metadata as far as it allows (License-Expression, classifiers that
name one license, then the license files shipped), with the evidence used; and per-package
decisions of the policy, applied in the licenses gate and shown in its result and the evidence
pack."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import onnx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.config.settings import load_settings
from lockgate.config.values import LicenseDecision
from lockgate.errors import ConfigError, GateFailedError
from lockgate.supplychain.license_decisions import apply_decisions
from lockgate.supplychain.license_texts import first_license, licenses_in
from lockgate.supplychain.licenses import (
    DEFAULT_LICENSE_POLICY,
    LicenseOutcome,
    LicenseSource,
    assess,
    license_of,
    scan_licenses,
)

MIT = """MIT License

Copyright (c) 2024 Someone

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
"""
BSD2 = """Copyright (c) 2024, Someone
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
"""
BSD3 = BSD2.replace("THIS SOFTWARE", """3. Neither the name of the copyright holder nor the names
   of its contributors may be used to endorse or promote products derived from
   this software without specific prior written permission.

THIS SOFTWARE""")
ISC = """ISC License

Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies.
"""
APACHE = """                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/
   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION
"""
GPL3 = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007
 Everyone is permitted to copy and distribute verbatim copies
"""
LGPL3 = """                   GNU LESSER GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007
  This version of the GNU Lesser General Public License incorporates
the terms and conditions of version 3 of the GNU General Public
License, supplemented by the additional permissions listed below.
"""
MPL2 = "Mozilla Public License Version 2.0\n==================================\n1. Definitions\n"
PSF = ("PSF LICENSE AGREEMENT FOR PYTHON 3.12\n\n1. This LICENSE AGREEMENT is between the "
       "Python Software Foundation (\"PSF\"), and the Individual or Organization\n")


def _dist(root: Path, name: str, headers: list[str], files: dict[str, str]
          ) -> importlib.metadata.Distribution:
    """A real installed-distribution folder (METADATA, RECORD, license files) read by
    importlib.metadata."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    meta = ["Metadata-Version: 2.4", f"Name: {name}", "Version: 1.0", *headers]
    (info / "METADATA").write_text("\n".join(meta) + "\n\n", encoding="utf-8")
    for path, text in files.items():
        (info / path).parent.mkdir(parents=True, exist_ok=True)
        (info / path).write_text(text, encoding="utf-8")
    record = [f"{info.name}/{p},," for p in [*files, "METADATA", "RECORD"]]
    (info / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")
    return importlib.metadata.PathDistribution(info)


@pytest.mark.parametrize(("text", "spdx"), [
    (MIT, "MIT"), (BSD2, "BSD-2-Clause"), (BSD3, "BSD-3-Clause"), (ISC, "ISC"),
    (APACHE, "Apache-2.0"), (GPL3, "GPL-3.0-only"), (LGPL3, "LGPL-3.0-only"),
    (MPL2, "MPL-2.0"), (PSF, "PSF-2.0"),
    ("# Licensed under the Apache License, Version 2.0 (the \"License\");", "Apache-2.0"),
])
def test_common_license_texts_are_recognised(text: str, spdx: str) -> None:
    assert licenses_in(text) == [spdx]
    assert first_license("Some project\n\n" + text) == spdx


COMMON = Path("/usr/share/common-licenses")


@pytest.mark.parametrize(("name", "spdx"), [
    pytest.param(name, spdx, marks=pytest.mark.skipif(
        not (COMMON / name).is_file(), reason=f"{COMMON / name} (Debian's base-files) is missing"))
    for name, spdx in [
        ("Apache-2.0", "Apache-2.0"), ("BSD", "BSD-3-Clause"), ("GPL-2", "GPL-2.0-only"),
        ("GPL-3", "GPL-3.0-only"), ("LGPL-2.1", "LGPL-2.1-only"), ("LGPL-3", "LGPL-3.0-only"),
        ("MPL-2.0", "MPL-2.0")]
])
def test_full_license_texts_name_one_license_though_they_mention_others(
    name: str, spdx: str,
) -> None:
    """The texts a Debian system ships: the GPL-3 names the AGPL, the MPL-2.0 the GNU licenses,
    each ends with a sample "or later" notice; none of that counts."""
    text = (COMMON / name).read_text(encoding="utf-8", errors="replace")
    assert licenses_in(text) == [spdx]


def test_gnu_notices_say_only_or_or_later() -> None:
    notice = ("This program is free software; you can redistribute it and/or modify it under "
              "the terms of the GNU Lesser General Public License as published by the Free "
              "Software Foundation; either version 3 of the License, or (at your option) any "
              "later version.")
    assert licenses_in(notice) == ["LGPL-3.0-or-later"]
    assert licenses_in(notice + "\n\n" + LGPL3) == ["LGPL-3.0-or-later"]
    assert licenses_in("Licensed under the terms of the GNU General Public License version 2.") \
        == ["GPL-2.0-only"]
    assert licenses_in("MPL: 'Secondary License' means either the GNU General Public License, "
                       "Version 2.0, or the GNU Lesser General Public License, Version 2.1") == []


def test_unrelated_text_matches_nothing() -> None:
    assert licenses_in("Authors:\n  Jane Doe\n  John Roe\n") == []
    assert first_license("This package is great.") is None


def test_a_file_holding_several_licenses_binds_by_all_but_lgpl_not_by_the_gpl_it_builds_on(
) -> None:
    assert licenses_in(APACHE + "\n----\n" + BSD3) == ["Apache-2.0", "BSD-3-Clause"]
    assert licenses_in(LGPL3) == ["LGPL-3.0-only"]


@pytest.mark.parametrize("name", ["Jinja2", "python-dateutil", "mpmath", "itsdangerous"])
def test_venv_distributions_with_only_a_bsd_classifier_resolve_from_their_license_files(
    name: str,
) -> None:
    dist = importlib.metadata.distribution(name)  # all four are in the test venv
    info = license_of(dist)
    finding = assess(info)
    assert finding.outcome is LicenseOutcome.ALLOWED, finding.reason
    assert info.expression is not None
    assert "BSD-3-Clause" in info.expression
    assert any(e.startswith("license file ") and "BSD-3-Clause" in e for e in info.evidence)


def test_every_venv_finding_lists_its_evidence() -> None:
    findings = scan_licenses()
    assert len(findings) > 20
    for f in findings:
        if f.info.source is not LicenseSource.NONE:
            assert f.info.evidence, f.info.name
        assert f.to_dict()["evidence"] == list(f.info.evidence)


def test_license_expression_comes_before_classifiers_and_files(tmp_path: Path) -> None:
    dist = _dist(tmp_path, "exprpkg", ["License-Expression: mit",
                                       "Classifier: License :: OSI Approved :: BSD License"],
                 {"licenses/LICENSE": GPL3})
    info = license_of(dist)
    assert (info.expression, info.source) == ("MIT", LicenseSource.EXPRESSION)
    assert info.evidence == ("License-Expression: mit",)


def test_a_family_classifier_goes_on_to_the_license_file(tmp_path: Path) -> None:
    dist = _dist(tmp_path, "bsdpkg", ["Classifier: License :: OSI Approved :: BSD License",
                                      "License-File: LICENSE"], {"licenses/LICENSE": BSD2})
    info = license_of(dist)
    assert (info.expression, info.source) == ("BSD-2-Clause", LicenseSource.LICENSE_FILE)
    assert "license file licenses/LICENSE: BSD-2-Clause" in info.evidence
    assert "Classifier: OSI Approved :: BSD License" in info.evidence


def test_a_classifier_naming_one_license_is_kept_beside_the_file(tmp_path: Path) -> None:
    dist = _dist(tmp_path, "duo", ["Classifier: License :: OSI Approved :: BSD License",
                                   "Classifier: License :: OSI Approved :: Apache Software "
                                   "License", "License: Dual License"],
                 {"LICENSE": "Licensed under the Apache License, Version 2.0\n" + BSD3})
    info = license_of(dist)
    assert info.expression == "Apache-2.0 AND BSD-3-Clause"
    assert assess(info).outcome is LicenseOutcome.ALLOWED


def test_a_file_outside_the_classifiers_family_needs_review(tmp_path: Path) -> None:
    dist = _dist(tmp_path, "gplpkg", ["Classifier: License :: OSI Approved :: GNU General "
                                      "Public License (GPL)"], {"COPYING": MIT})
    info = license_of(dist)
    finding = assess(info)
    assert finding.outcome is LicenseOutcome.NEEDS_REVIEW
    assert info.problem is not None
    assert "does not name" in info.problem
    assert "license file COPYING: MIT" in info.evidence


def test_no_metadata_at_all_reads_the_files_and_says_what_it_could_not(
    tmp_path: Path,
) -> None:
    lgpl = _dist(tmp_path / "a", "lgplpkg", [],
                 {"licenses/COPYING": GPL3, "licenses/COPYING.LESSER": LGPL3})
    assert license_of(lgpl).expression == "LGPL-3.0-only"
    odd = _dist(tmp_path / "b", "oddpkg", [], {"LICENSE": "All rights reserved by nobody."})
    info = license_of(odd)
    assert info.expression is None
    assert info.source is LicenseSource.NONE
    assert info.problem is not None
    assert "LICENSE" in info.problem
    assert info.evidence == ("license file LICENSE: not recognised",)
    bare = _dist(tmp_path / "c", "barepkg", [], {})
    assert "ships no license file" in (license_of(bare).problem or "")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "MIT.txt").write_text(MIT, encoding="utf-8")
    outside = _dist(tmp_path / "d", "outpkg", ["License-File: ../MIT.txt"], {})
    assert license_of(outside).expression is None  # a License-File outside .dist-info is not read


# -- decisions ---------------------------------------------------------------------------------


def _policy(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "lockgate.toml").write_text(text, encoding="utf-8")
    return home


def test_decisions_are_read_from_the_policy(home: Path) -> None:
    s = load_settings(_policy(home, """
[[licenses.decisions]]
package = "psycopg"
license = "lgpl-3.0-only"
reason = "client library, linked dynamically"
expires = 2099-01-31T12:00:00
by = "legal@example.com"

version = ">=3.3,<4"

[[licenses.decisions]]
package = "namex"
accept = true
reason = "reviewed the Apache-2.0 text by hand"
version = "0.1.0"
"""))
    assert s.license_decisions == (
        LicenseDecision("psycopg", "client library, linked dynamically", "LGPL-3.0-only",
                        False, date(2099, 1, 31), "legal@example.com", "<4,>=3.3"),
        LicenseDecision("namex", "reviewed the Apache-2.0 text by hand", None, True,
                        version="==0.1.0"),
    )


@pytest.mark.parametrize(("entry", "message"), [
    ('package = "x"\nlicense = "MIT"', "reason"),
    ('package = "x"\nlicense = "MIT"\nreason = "  "', "reason"),
    ('package = "x"\nreason = "r"', "either license"),
    ('package = "x"\nlicense = "MIT"\naccept = true\nreason = "r"', "either license"),
    ('package = "x"\nlicense = "Not-A-License-9"\nreason = "r"', "not an SPDX"),
    ('package = "x"\naccept = true\nreason = "r"\nexpires = "soon"', "not a date"),
    ('package = "x"\naccept = true\nreason = "r"\nwhy = "r"', "unknown keys"),
    ('license = "MIT"\nreason = "r"', "package"),
    ('package = "x"\naccept = true\nreason = "r"\nversion = "latest"', "not a version"),
])
def test_bad_decisions_are_refused(home: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(_policy(home, f"[[licenses.decisions]]\n{entry}\n"))
    assert info.value.hint


def test_two_decisions_for_one_package_are_refused(home: Path) -> None:
    one = '[[licenses.decisions]]\npackage = "{}"\naccept = true\nreason = "r"\n'
    with pytest.raises(ConfigError, match="more than one decision"):
        load_settings(_policy(home, one.format("Foo_Bar") + one.format("foo-bar")))


def test_decisions_assert_accept_expire_and_report_unused(tmp_path: Path) -> None:
    today = date(2026, 6, 1)
    findings = [assess(license_of(_dist(tmp_path / n, n, [], {})))
                for n in ("a", "b", "c", "d", "e")]
    assert all(f.outcome is LicenseOutcome.NEEDS_REVIEW for f in findings)
    decisions = [
        LicenseDecision("a", "upstream says MIT in its README", "MIT", by="ann"),
        LicenseDecision("b", "vendored, reviewed", accept=True, expires=today),
        LicenseDecision("c", "old review", accept=True, expires=today - timedelta(days=1)),
        LicenseDecision("d", "claims AGPL", "AGPL-3.0-only"),
        LicenseDecision("e", "reviewed 0.x", accept=True, version="<1"),
        LicenseDecision("gone", "no longer used", accept=True),
    ]
    out, reports = apply_decisions(findings, decisions, DEFAULT_LICENSE_POLICY, today=today)
    a, b, c, d, e = out
    assert a.outcome is LicenseOutcome.ALLOWED
    assert a.info.source is LicenseSource.DECISION
    assert a.decision == "license MIT by ann: upstream says MIT in its README"
    assert any(e.startswith("decision: license MIT") for e in a.info.evidence)
    assert b.outcome is LicenseOutcome.ALLOWED
    assert "accepted by decision" in b.reason
    assert c.outcome is LicenseOutcome.NEEDS_REVIEW
    assert "decision expired on 2026-05-31, not applied" in c.reason
    assert d.outcome is LicenseOutcome.DENIED  # an asserted license is judged like any other
    assert e.outcome is LicenseOutcome.NEEDS_REVIEW
    assert "decision covers e <1, not 1.0: not applied" in e.reason
    assert [r.status for r in reports] == ["applied", "applied", "expired", "applied",
                                           "other version", "unused"]


# -- the gate on a real registered version -----------------------------------------------------


def test_gate_result_and_evidence_pack_list_every_finding_and_decision(
    home: Path, linear_model: onnx.ModelProto, tmp_path: Path
) -> None:
    toml = """[gates]
"prototype->stabilized" = ["licenses"]

[licenses]
deny = ["Apache-2.0"]

[[licenses.decisions]]
package = "onnx"
accept = true
reason = "reviewed: the model format library"
by = "legal"
"""
    with Lockgate.open(_policy(home, toml)) as lg:
        lg.register(linear_model, name="m")
        with pytest.raises(GateFailedError) as info:
            lg.promote("m@1", "stabilized")
        result = lg.gate_runs("m@1")[-1].results[0]
        lg.export_evidence("m@1", tmp_path / "pack")
    measured = result["measured"]
    findings = {f["name"].lower(): f for f in measured["findings"]}
    assert len(findings) == measured["libraries"]
    onnx_row = findings["onnx"]
    assert onnx_row["outcome"] == "allowed"
    assert onnx_row["decision"] == "accepted by legal: reviewed: the model format library"
    assert onnx_row["evidence"]
    assert "onnx" not in {f["name"].lower() for f in measured["not_allowed"]}
    assert measured["decisions"] == [{
        "package": "onnx", "license": None, "accept": True,
        "reason": "reviewed: the model format library", "expires": None, "by": "legal",
        "version": None, "status": "applied"}]
    # every library not allowed is named in the message, none cut
    for row in measured["not_allowed"]:
        assert f"{row['name']} {row['version']}: " in info.value.message
    assert "1 by decision" in info.value.message
    pack = json.loads((tmp_path / "pack" / "gate_runs.json").read_text(encoding="utf-8"))
    text = json.dumps(pack)
    assert "reviewed: the model format library" in text
    assert all(f["name"] in text for f in measured["findings"])


def test_promote_json_holds_every_finding_with_evidence(
    home: Path, linear_model: onnx.ModelProto
) -> None:
    toml = """[gates]
"prototype->stabilized" = ["licenses"]

[[licenses.decisions]]
package = "no-such-distribution"
accept = true
reason = "kept from an older environment"
"""
    with Lockgate.open(_policy(home, toml)) as lg:
        lg.register(linear_model, name="m")
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    p = subprocess.run([sys.executable, "-m", "lockgate", "--home", str(home), "promote", "m@1",
                        "--to", "stabilized", "--json"], capture_output=True, text=True,
                       env=env, timeout=300, check=False)
    doc = json.loads(p.stdout)
    gate = next(g for g in doc["gates"] if g["gate"] == "licenses")
    measured = gate["measured"]
    assert len(measured["findings"]) == measured["libraries"] > 0
    assert all("evidence" in f and "decision" in f for f in measured["findings"])
    assert measured["decisions"][0]["status"] == "unused"
    assert "decisions for no-such-distribution match no distribution" in gate["message"]
    assert p.returncode == (0 if gate["status"] == "pass" else 1)
