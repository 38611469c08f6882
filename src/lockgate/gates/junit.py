"""Gate results as JUnit XML, so CI systems show each gate as a test."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from lockgate.types import GateResult, GateStatus

__all__ = ["junit_xml", "write_junit"]


def junit_xml(results: Sequence[GateResult], *, suite: str, classname: str) -> str:
    """One ``<testsuite>`` with a ``<testcase>`` per gate: FAIL is a ``<failure>``, ERROR an
    ``<error>``, SKIPPED ``<skipped>``; a WAIVED gate passes and says why in ``<system-out>``."""
    counts = {s: sum(1 for r in results if r.status is s) for s in GateStatus}
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", {
        "name": suite, "tests": str(len(results)), "failures": str(counts[GateStatus.FAIL]),
        "errors": str(counts[GateStatus.ERROR]), "skipped": str(counts[GateStatus.SKIPPED]),
    })
    for r in results:
        case = ET.SubElement(ts, "testcase", {"classname": classname, "name": r.gate})
        if r.status is GateStatus.FAIL:
            ET.SubElement(case, "failure", {"message": r.message, "type": "GateFailed"}).text = \
                _details(r)
        elif r.status is GateStatus.ERROR:
            ET.SubElement(case, "error", {"message": r.message, "type": "GateError"}).text = \
                _details(r)
        elif r.status is GateStatus.SKIPPED:
            ET.SubElement(case, "skipped", {"message": r.message})
        else:
            ET.SubElement(case, "system-out").text = (
                f"{r.status.value}: {r.message}\n{_details(r)}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _details(r: GateResult) -> str:
    import json

    return json.dumps({"measured": dict(r.measured), "thresholds": dict(r.thresholds)},
                      indent=2, sort_keys=True, default=str)


def write_junit(path: Path, results: Sequence[GateResult], *, suite: str,
                classname: str) -> None:
    path.write_text(junit_xml(results, suite=suite, classname=classname), encoding="utf-8")
