"""What every service of the facade shares: one home's settings, its two stores, and the
recorder that folds repeated refusals into one audit row."""

from __future__ import annotations

from dataclasses import dataclass

from lockgate.audit import DenialRecorder
from lockgate.config.settings import Settings
from lockgate.store.artifacts import ArtifactStore
from lockgate.store.metadata import MetadataStore

__all__ = ["Home", "HomeView"]


@dataclass
class Home:
    """One lockgate home as its services see it. Every service holds the same instance, so
    settings replaced after opening (``lg.settings = replace(lg.settings, ...)``, as the CLI
    does for flags) are the ones every service reads from then on."""

    settings: Settings
    meta: MetadataStore
    artifacts: ArtifactStore
    denials: DenialRecorder

    def actor(self, actor: str | None) -> str:
        """``actor``, or the configured user when None."""
        return actor or self.settings.user

    @property
    def serving_stage(self) -> str:
        """The stage that serves: ``production`` when configured, else the one before last."""
        st = self.settings.stages
        return "production" if "production" in st else st[-2]


@dataclass(frozen=True)
class HomeView:
    """A home's settings and stores, read through to the one :class:`Home`: the base of the
    narrow views the facade hands to domain parts (evidence packs, monitor runs)."""

    home: Home

    @property
    def settings(self) -> Settings:
        return self.home.settings

    @property
    def meta(self) -> MetadataStore:
        return self.home.meta

    @property
    def artifacts(self) -> ArtifactStore:
        return self.home.artifacts
