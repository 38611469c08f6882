"""A version's files read back from the artifact store: the signature and manifest checked
first, every blob against its digest, and each refusal audited."""

from __future__ import annotations

from lockgate.api.home import Home
from lockgate.audit import AuditEvent, EventType
from lockgate.errors import Error, IntegrityError, NotFoundError, SignatureError
from lockgate.seal import folder as sealing
from lockgate.types import Version

__all__ = ["VersionFiles"]


class VersionFiles:
    """Verified reads of a version's folder."""

    def __init__(self, home: Home) -> None:
        self._home = home

    def verify(self, version: Version) -> str | None:
        """Check the version's signature (every file, no extra file, a trusted key) and that
        the signed manifest is its record; return the key id, or None for an unsigned version
        that policy allows. Refusals raise SignatureError or IntegrityError and are audited."""
        try:
            return sealing.verify(version, self._home.artifacts, self._home.settings)
        except SignatureError as exc:
            self._refused(EventType.SIGNATURE_REFUSED, version, exc)
            raise
        except (IntegrityError, NotFoundError) as exc:
            self._refused(EventType.ARTIFACT_REFUSED, version, exc)
            raise

    def model_bytes(self, version: Version) -> bytes:
        """The version's ONNX bytes after :meth:`verify`, checked against their digest."""
        self.verify(version)
        try:
            return self._home.artifacts.get(version.digest)
        except (IntegrityError, NotFoundError) as exc:
            self._refused(EventType.ARTIFACT_REFUSED, version, exc)
            raise

    def file_bytes(self, version: Version, name: str) -> bytes:
        """One file of the version's folder (``bom.cdx.json``, ...), checked against its
        digest. NotFoundError when the version has no such file."""
        digest = version.files.get(name)
        if digest is None:
            raise NotFoundError(f"{version.ref} has no file {name!r}",
                                hint=f"files: {sorted(version.files)}")
        return self._home.artifacts.get(digest)

    def _refused(self, kind: EventType, version: Version, exc: Error) -> None:
        self._home.meta.append_event(AuditEvent(
            kind, self._home.settings.user, version.name, version.number,
            {"digest": str(version.digest), "reason": exc.message},
        ))
