"""What gates read beyond a version's record (see :class:`lockgate.gates.Evidence`): its
verified files, its decisions, vulnerability data, another version's loadability, and one
child server serving it per execution provider set, started on first use and stopped on
close."""

from __future__ import annotations

from collections.abc import Sequence

from lockgate.api.files import VersionFiles
from lockgate.api.home import Home
from lockgate.api.vulnerabilities import Vulnerabilities
from lockgate.config.providers import ProviderSet
from lockgate.errors import Error
from lockgate.gates import ServerHandle
from lockgate.gates.probe import ChildServer
from lockgate.runtime.predictor import Predictor
from lockgate.types import Decision, Version, VulnSnapshot

__all__ = ["VersionEvidence"]


class VersionEvidence:
    """The evidence of one version for one gate evaluation; use it as a context manager."""

    def __init__(self, home: Home, files: VersionFiles, vulns: Vulnerabilities,
                 version: Version) -> None:
        self._home = home
        self._files = files
        self._vulns = vulns
        self._version = version
        self._servers: dict[str, ServerHandle | Error] = {}
        self._children: list[ChildServer] = []

    def file(self, name: str) -> bytes:
        return self._files.file_bytes(self._version, name)

    def verify_signature(self) -> str | None:
        return self._files.verify(self._version)

    def decisions(self) -> list[Decision]:
        return self._home.meta.decisions(self._version.name, self._version.number)

    def check_loadable(self, version: Version) -> str:
        key = self._files.verify(version)
        Predictor(self._files.model_bytes(version))
        return f"signed by {key[:16]}" if key else "unsigned, allowed by policy"

    def vulnerability_data(self, packages: Sequence[str]) -> tuple[VulnSnapshot | None,
                                                                   list[str]]:
        return self._vulns.vulnerability_data(packages)

    def server(self, max_loading_time_s: float,
               providers: ProviderSet | None = None) -> ServerHandle:
        key = "" if providers is None else f"{providers}|{providers.fallback}"
        found = self._servers.get(key)
        if isinstance(found, Error):
            raise found
        if found is None:
            child = ChildServer(self._home.settings.home, str(self._version.ref),
                                max_loading_time_s=max_loading_time_s, providers=providers)
            self._children.append(child)
            try:
                found = self._servers[key] = child.start()
            except Error as exc:
                self._servers[key] = exc
                raise
        return found

    def close(self) -> None:
        for child in self._children:
            child.stop()
        self._children.clear()

    def __enter__(self) -> VersionEvidence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
