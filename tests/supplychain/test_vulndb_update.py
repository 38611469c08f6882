"""vulndb update: an OSV export downloaded from a real HTTP server on 127.0.0.1 (resumed after an
interruption, verified by checksum and CRCs, swapped in only when whole), and the
vulnerabilities gate refusing data that is not a whole ecosystem export."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import onnx
import pytest

from lockgate.api.facade import Lockgate
from lockgate.errors import ConfigError, GateFailedError, SupplyChainError
from lockgate.supplychain.vulns.download import download_export
from lockgate.types import GateStatus

RECORDS = 5


def _record(i: int, package: str = "") -> dict[str, object]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": f"PYSEC-2099-{i}", "modified": stamp, "summary": f"issue {i}",
        "affected": [{"package": {"ecosystem": "PyPI", "name": package or f"absent-pkg-{i}"},
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
        "database_specific": {"severity": "HIGH"},
    }


def _export(count: int = RECORDS, *, padding: int = 0, stored: bool = False) -> bytes:
    """An export shaped as osv.dev's PyPI/all.zip: top-level ``<id>.json`` members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as z:
        for i in range(1, count + 1):
            rec = _record(i)
            rec["details"] = os.urandom(padding).hex()  # incompressible: a file of some size
            z.writestr(f"{rec['id']}.json", json.dumps(rec))
    return buf.getvalue()


def _corrupt(blob: bytes) -> bytes:
    """The same zip with one byte of a member's data flipped (its CRC no longer matches)."""
    data = bytearray(blob)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        info = z.infolist()[0]
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 3
    data[at] ^= 0xFF
    return bytes(data)


@dataclass
class _Site:
    """What the server serves and what it saw."""

    body: bytes = b""
    checksum: str | None = None
    cut_after: int | None = None  # the next full answer stops after this many bytes
    md5: bytes | None = None  # sent as Google Cloud Storage does, in x-goog-hash
    ranges: list[str | None] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/PyPI/all.zip"


def _handler(site: _Site) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            if self.path == "/PyPI/all.zip.sha256":
                if site.checksum is None:
                    self.send_error(404)
                    return
                self._send(200, f"{site.checksum}  all.zip\n".encode(), {})
                return
            if self.path != "/PyPI/all.zip":
                self.send_error(404)
                return
            wanted = self.headers.get("Range")
            site.ranges.append(wanted)
            etag = '"' + hashlib.sha256(site.body).hexdigest()[:16] + '"'
            start = 0
            if wanted and self.headers.get("If-Range") in (None, etag):
                start = int(wanted.removeprefix("bytes=").split("-")[0])
            size = len(site.body)
            extra = {"ETag": etag, "Accept-Ranges": "bytes"}
            if start:
                extra["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
            body = site.body[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra.items():
                self.send_header(k, v)
            if site.md5 is not None:
                self.send_header("x-goog-hash", "crc32c=AAAAAA==")
                self.send_header("x-goog-hash", "md5=" + base64.b64encode(site.md5).decode())
            self.end_headers()
            if site.cut_after is not None:
                body, site.cut_after = body[:site.cut_after], None
            self.wfile.write(body)
            self.close_connection = True

        def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def site() -> Iterator[_Site]:
    s = _Site(body=_export())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(s))
    s.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield s
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _policy(home: Path, gate: str = "") -> Path:
    (home / "lockgate.toml").write_text(
        '[gates]\n"prototype->stabilized" = ["vulnerabilities"]\n'
        f"[gate.vulnerabilities]\nscope = \"all\"\n{gate}", encoding="utf-8")
    return home


def _cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                       text=True, env=env, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_update_downloads_verifies_and_imports_a_whole_export(
    home: Path, site: _Site, linear_model: onnx.ModelProto
) -> None:
    site.checksum = hashlib.sha256(site.body).hexdigest()
    _policy(home, f"min_records = {RECORDS}\n")
    code, out, err = _cli("vulndb", "update", "--url", site.url, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["records"] == RECORDS
    assert doc["export"] is True
    assert doc["ecosystem"] == "PyPI"
    assert doc["source"] == site.url
    assert doc["download"]["checks"] == ["published sha256", "zip CRCs"]
    assert (home / "vulndb" / "all.zip").read_bytes() == site.body
    assert not (home / "vulndb" / "all.zip.part").exists()
    code, out, _ = _cli("vulndb", "status")
    assert code == 0
    assert site.url in out
    assert "shaped as a whole PyPI export" in out
    with Lockgate.open(home) as lg:
        lg.register(linear_model, name="m")
        result = lg.promote("m@1", "stabilized")
    gate = result.results[0]
    assert gate.status is GateStatus.PASS
    assert gate.measured["whole_export"] is True
    assert gate.thresholds["min_records"] == RECORDS


def test_a_one_record_snapshot_fails_the_gate_saying_why(
    home: Path, site: _Site, tmp_path: Path, linear_model: onnx.ModelProto
) -> None:
    folder = tmp_path / "hand-made"
    folder.mkdir()
    (folder / "PYSEC-2099-1.json").write_text(json.dumps(_record(1)), encoding="utf-8")
    with Lockgate.open(_policy(home)) as lg:
        lg.register(linear_model, name="m")
        assert lg.import_vulns(folder).export is False
        with pytest.raises(GateFailedError, match="not a whole PyPI export") as info:
            lg.promote("m@1", "stabilized")
        assert "allow_partial" in info.value.message
        assert lg.gate_runs("m@1")[-1].results[0]["measured"]["whole_export"] is False
        site.body = _export(1)  # shaped as an export, but one record is not a whole one
        snap, _ = lg.vulnerabilities.update_vulns(site.url)
        assert snap.export is True
        with pytest.raises(GateFailedError, match="holds 1 current records, fewer than the 1000"):
            lg.promote("m@1", "stabilized")
    _policy(home, 'allow_partial = true\nreason = "curated mirror for the air-gapped lab"\n')
    with Lockgate.open(home) as lg:
        result = lg.promote("m@1", "stabilized")
    assert result.results[0].status is GateStatus.PASS
    assert "partial data accepted by the policy: curated mirror" in result.results[0].message


def test_allow_partial_needs_a_reason(home: Path) -> None:
    _policy(home, "allow_partial = true\n")
    with pytest.raises(ConfigError, match="allow_partial = true needs a reason"):
        Lockgate.open(home)
    code, _, err = _cli("vulndb", "status")
    assert code != 0
    assert "allow_partial = true needs a reason" in err


def test_an_interrupted_download_resumes_where_it_stopped(home: Path, site: _Site) -> None:
    site.body = _export(padding=4000)
    site.cut_after = 10_000
    folder = home / "vulndb"
    with pytest.raises(SupplyChainError, match="interrupted at 10000 of") as info:
        download_export(site.url, folder, attempts=1)
    assert "run the same command again" in (info.value.hint or "")
    assert (folder / "all.zip.part").stat().st_size == 10_000
    fetched = download_export(site.url, folder, attempts=1)
    assert site.ranges == [None, "bytes=10000-"]
    assert fetched.resumed_from == 10_000
    assert fetched.sha256 == hashlib.sha256(site.body).hexdigest()
    assert fetched.install().read_bytes() == site.body


def test_update_resumes_within_one_call(home: Path, site: _Site) -> None:
    site.body = _export(padding=4000)
    site.cut_after = 7_000
    with Lockgate.open(_policy(home)) as lg:
        snap, fetched = lg.vulnerabilities.update_vulns(site.url)
    assert site.ranges == [None, "bytes=7000-"]
    assert fetched.resumed_from == 7_000
    assert snap.records == RECORDS
    assert snap.sha256 == hashlib.sha256(site.body).hexdigest()


def test_a_corrupted_download_leaves_the_old_snapshot_in_place(home: Path, site: _Site) -> None:
    good = site.body
    with Lockgate.open(_policy(home)) as lg:
        first, _ = lg.vulnerabilities.update_vulns(site.url)
        site.body = _corrupt(_export(padding=100, stored=True))
        with pytest.raises(SupplyChainError, match=r"PYSEC-2099-1\.json fails its CRC check"):
            lg.vulnerabilities.update_vulns(site.url)
        site.body = _export()
        with pytest.raises(SupplyChainError, match="does not match the sha256 given"):
            lg.vulnerabilities.update_vulns(site.url, sha256="0" * 64)
        site.checksum = "1" * 64
        with pytest.raises(SupplyChainError, match="does not match the published sha256"):
            lg.vulnerabilities.update_vulns(site.url)
        current = lg.vuln_snapshot()
    assert current == first
    assert (home / "vulndb" / "all.zip").read_bytes() == good
    assert not (home / "vulndb" / "all.zip.part").exists()


def test_update_refuses_a_url_it_cannot_fetch(home: Path, site: _Site) -> None:
    _policy(home)
    code, _, err = _cli("vulndb", "update", "--url", site.url.replace("all.zip", "none.zip"))
    assert code != 0
    assert "HTTP 404" in err
    assert "Traceback" not in err
    code, _, err = _cli("vulndb", "update", "--url", "file:///etc/passwd")
    assert code != 0
    assert "only http(s) URLs" in err


def test_a_file_changed_on_the_server_is_fetched_again_from_the_start(
    home: Path, site: _Site
) -> None:
    site.body = _export(padding=4000)
    site.cut_after = 10_000
    folder = home / "vulndb"
    with pytest.raises(SupplyChainError, match="interrupted"):
        download_export(site.url, folder, attempts=1)
    site.body = _export(RECORDS + 1, padding=4000)  # a newer export: the ETag changes
    fetched = download_export(site.url, folder, attempts=1)
    assert site.ranges == [None, "bytes=10000-"]  # asked to resume, answered with the new file
    assert fetched.resumed_from == 0
    assert fetched.sha256 == hashlib.sha256(site.body).hexdigest()


def test_the_md5_google_cloud_storage_publishes_is_checked(home: Path, site: _Site) -> None:
    folder = home / "vulndb"
    site.md5 = hashlib.md5(site.body).digest()
    fetched = download_export(site.url, folder)
    assert fetched.checks == ("server md5", "zip CRCs")
    site.md5 = hashlib.md5(b"another file").digest()
    with pytest.raises(SupplyChainError, match="MD5 the server published does not match"):
        download_export(site.url, folder)
    assert not (folder / "all.zip.part").exists()


def _zip(path: Path, members: dict[str, object]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, doc in members.items():
            z.writestr(name, doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.mark.parametrize(("members", "export"), [
    ({"PYSEC-2099-1.json": _record(1), "PYSEC-2099-2.json": _record(2)}, True),
    ({"PyPI/PYSEC-2099-1.json": _record(1), "PYSEC-2099-2.json": _record(2)}, False),
    ({"renamed.json": _record(1), "PYSEC-2099-2.json": _record(2)}, False),
    ({"PYSEC-2099-1.json": _record(1), "README.txt": "hand-made"}, False),
    ({"PYSEC-2099-1.json": _record(1),
      "NPM-1.json": {**_record(9), "id": "NPM-1",
                     "affected": [{"package": {"ecosystem": "npm", "name": "left-pad"}}]}},
     False),
], ids=["export", "sub-folder", "name-is-not-the-id", "other-file", "other-ecosystem"])
def test_the_shape_of_an_export_is_read_from_its_members(
    tmp_path: Path, members: dict[str, object], export: bool
) -> None:
    from lockgate.supplychain.vulns.snapshots import load_snapshot

    assert load_snapshot(_zip(tmp_path / "all.zip", members)).export is export
