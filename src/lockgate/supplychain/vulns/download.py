"""Download an OSV ecosystem export (osv.dev's ``PyPI/all.zip``) into a home, safely.

    fetched = download_export(url, folder, sha256=None, progress=None)
    ...  # import fetched.path; then
    fetched.install()  # atomic swap: folder/all.zip is the verified download

The bytes go to ``folder/all.zip.part``; an interrupted download is resumed with an HTTP
``Range`` request (``If-Range`` with the server's ETag or Last-Modified, so a changed file
restarts from zero), up to ``attempts`` times in one call and again on the next call. The
finished file is verified before anything uses it:

- its size against the server's ``Content-Length`` / ``Content-Range``;
- its sha256 against ``sha256`` when given, else against a checksum file published next to it
  (``<url>.sha256``) when the server offers one;
- its MD5 against the ``x-goog-hash`` header when the server (Google Cloud Storage, where
  osv.dev publishes) sends one;
- every member's CRC-32 (the zip's own check), always.

A file that fails any check is deleted and :class:`SupplyChainError` raised; the snapshot in
force and ``folder/all.zip`` are left as they were. Errors: :class:`InvalidInputError` for a
bad URL or digest, :class:`SupplyChainError` for a network or integrity failure.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from lockgate.errors import InvalidInputError, SupplyChainError
from lockgate.progress import NullProgress, Progress

__all__ = ["DEFAULT_URL", "Download", "download_export"]

DEFAULT_URL = "https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip"
"""osv.dev's export of every PyPI record."""

_CHUNK = 1 << 16
_TASK = "download"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class Download:
    """A verified download waiting in ``path`` until :meth:`install` moves it to ``target``.

    ``checks`` names what verified it (``"sha256 given"``, ``"published sha256"``,
    ``"server md5"``, ``"zip CRCs"``); ``resumed_from`` is the byte the last attempt started at.
    """

    url: str
    path: Path
    target: Path
    sha256: str
    size: int
    resumed_from: int
    checks: tuple[str, ...] = field(default=())

    def install(self) -> Path:
        """Swap the download in place of ``target`` (one rename) and forget the resume state."""
        os.replace(self.path, self.target)
        _sidecar(self.path).unlink(missing_ok=True)
        return self.target

    def discard(self) -> None:
        """Drop the download (and its resume state) without touching ``target``."""
        self.path.unlink(missing_ok=True)
        _sidecar(self.path).unlink(missing_ok=True)


def download_export(url: str, folder: Path, *, sha256: str | None = None,
                    progress: Progress | None = None, attempts: int = 3,
                    timeout: float = 60.0) -> Download:
    """Fetch ``url`` into ``folder/all.zip.part`` (resuming what an earlier call left) and
    verify it (see the module docstring)."""
    if not url.startswith(("https://", "http://")):
        raise InvalidInputError(f"cannot download {url!r}: only http(s) URLs are supported",
                                hint="for a local copy use `lockgate vulndb import FILE`")
    if sha256 is not None:
        sha256 = sha256.lower().removeprefix("sha256:")
        if not _HEX64.match(sha256):
            raise InvalidInputError(f"--sha256 {sha256!r} is not 64 hex digits")
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / "all.zip.part"
    bar = progress or NullProgress()
    state: dict[str, Any] = {}
    start = 0
    for attempt in range(max(1, attempts)):
        start = _resume_point(part, url)
        try:
            state = _fetch(url, part, start, timeout, bar)
            break
        except _Interrupted as exc:
            if attempt + 1 >= attempts:
                raise SupplyChainError(
                    f"download of {url} interrupted at {exc.got} of {exc.total or '?'} bytes: "
                    f"{exc.reason}",
                    hint="run the same command again: it resumes where this one stopped") from None
    try:
        return _verified(url, part, folder / "all.zip", sha256, state,
                         int(state.get("start", start)), timeout)
    except SupplyChainError:
        part.unlink(missing_ok=True)
        _sidecar(part).unlink(missing_ok=True)
        raise


class _Interrupted(Exception):
    def __init__(self, got: int, total: int | None, reason: str) -> None:
        super().__init__(reason)
        self.got, self.total, self.reason = got, total, reason


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _resume_point(part: Path, url: str) -> int:
    """Bytes already in ``part`` for this ``url``; a part of another URL is dropped."""
    try:
        meta = json.loads(_sidecar(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("url") != url or not part.exists():
        part.unlink(missing_ok=True)
        return 0
    return part.stat().st_size


def _request(url: str, headers: dict[str, str], timeout: float) -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": "lockgate", **headers})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc
        raise SupplyChainError(f"cannot download {url}: HTTP {exc.code} {exc.reason}",
                               hint="check the URL, or pass --url") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SupplyChainError(f"cannot download {url}: {exc}",
                               hint="check the network, or download the file elsewhere and "
                                    "run `lockgate vulndb import FILE`") from exc


def _fetch(url: str, part: Path, start: int, timeout: float,
           bar: Progress) -> dict[str, Any]:
    """Write ``url`` from byte ``start`` into ``part``; the response's validators and size."""
    meta: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if start:
        meta = json.loads(_sidecar(part).read_text(encoding="utf-8"))
        headers["Range"] = f"bytes={start}-"
        if meta.get("validator"):
            headers["If-Range"] = str(meta["validator"])
    resp = _request(url, headers, timeout)
    if isinstance(resp, urllib.error.HTTPError):  # 416: nothing left, or a changed file
        with resp:
            whole = _range_total(resp.headers.get("Content-Range", ""))
        if whole == start:
            return {**meta, "total": whole, "start": start}
        part.unlink(missing_ok=True)
        return _fetch(url, part, 0, timeout, bar)
    total: int | None
    with resp:
        h: Message = resp.headers
        status = resp.status
        if status == 206:
            m = _RANGE.match(h.get("Content-Range", ""))
            if m is None or int(m.group(1)) != start:
                raise SupplyChainError(f"{url}: the server answered a resume with "
                                       f"Content-Range {h.get('Content-Range')!r}")
            total = None if m.group(3) == "*" else int(m.group(3))
        else:  # 200: the whole file (a server without ranges, or a changed file)
            start = 0
            length = h.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        meta = {"url": url, "validator": h.get("ETag") or h.get("Last-Modified") or "",
                "goog_hash": ",".join(h.get_all("x-goog-hash") or ()) or meta.get("goog_hash")
                or "",
                "total": total}
        _sidecar(part).write_text(json.dumps(meta), encoding="utf-8")
        got = start
        bar.start(_TASK, total)
        if start:
            bar.advance(_TASK, start)
        with part.open("r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    raise _Interrupted(got, total, str(exc) or type(exc).__name__) from exc
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.advance(_TASK, len(chunk))
        bar.finish(_TASK)
    if total is not None and got != total:
        raise _Interrupted(got, total, "the connection closed early")
    return {**meta, "start": start}


def _range_total(content_range: str) -> int | None:
    m = re.match(r"^bytes \*/(\d+)$", content_range)
    return int(m.group(1)) if m else None


def _verified(url: str, part: Path, target: Path, sha256: str | None, meta: dict[str, Any],
              start: int, timeout: float) -> Download:
    size = part.stat().st_size
    total = meta.get("total")
    if isinstance(total, int) and size != total:
        raise SupplyChainError(f"{url}: downloaded {size} bytes, the server announced {total}")
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with part.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
    digest = sha.hexdigest()
    checks: list[str] = []
    expected, origin = (sha256, "sha256 given") if sha256 else (_published(url, timeout),
                                                                "published sha256")
    if expected is not None:
        if digest != expected:
            raise SupplyChainError(f"{url}: sha256 {digest} does not match the {origin} "
                                   f"{expected}", hint="the download is corrupt or was "
                                   "tampered with; the snapshot in force is unchanged")
        checks.append(origin)
    goog = re.search(r"md5=([A-Za-z0-9+/=]+)", str(meta.get("goog_hash") or ""))
    if goog:
        if base64.b64decode(goog.group(1)) != md5.digest():
            raise SupplyChainError(f"{url}: the MD5 the server published does not match the "
                                   "download", hint="run the command again")
        checks.append("server md5")
    _check_crcs(url, part)
    checks.append("zip CRCs")
    return Download(url, part, target, digest, size, start, tuple(checks))


def _published(url: str, timeout: float) -> str | None:
    """The sha256 in ``<url>.sha256`` when the server publishes one (``None`` on a 404)."""
    parts = urllib.parse.urlsplit(url)
    where = urllib.parse.urlunsplit(parts._replace(path=parts.path + ".sha256"))
    req = urllib.request.Request(where, headers={"User-Agent": "lockgate"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):
            return None
        raise SupplyChainError(f"cannot read {url}.sha256: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SupplyChainError(f"cannot read {url}.sha256: {exc}") from exc
    word = text.split()[0].lower() if text.split() else ""
    if not _HEX64.match(word):
        raise SupplyChainError(f"{url}.sha256 does not start with a sha256 digest")
    return word


def _check_crcs(url: str, part: Path) -> None:
    try:
        with zipfile.ZipFile(part) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, NotImplementedError, RuntimeError,
            EOFError) as exc:
        raise SupplyChainError(f"{url}: the download is not a readable zip file: {exc}",
                               hint="the snapshot in force is unchanged; run the command "
                                    "again") from exc
    if bad is not None:
        raise SupplyChainError(f"{url}: member {bad} fails its CRC check",
                               hint="the download is corrupt; the snapshot in force is "
                                    "unchanged")
