"""Reading the registry: a reference resolved to its version, a model's versions and aliases,
every model at a glance, and what gates and people recorded about a version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lockgate.api.home import Home
from lockgate.errors import NotFoundError
from lockgate.types import Decision, GateRun, ModelRef, Version, VersionRow, validate_name

__all__ = ["Lookup", "ModelSummary"]


@dataclass(frozen=True)
class ModelSummary:
    """One model at a glance: how many versions, the latest, who holds each stage and alias."""

    name: str
    versions: int
    latest: int
    stages: Mapping[str, list[int]]
    aliases: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "versions": self.versions, "latest": self.latest,
                "stages": dict(self.stages), "aliases": dict(self.aliases)}


def _version(row: VersionRow) -> Version:
    return Version.from_record(row.name, row.number, row.stage, row.record)


class Lookup:
    """Reads of versions, models and their records; nothing here writes."""

    def __init__(self, home: Home) -> None:
        self._home = home

    def get(self, ref: str | ModelRef) -> Version:
        """Resolve ``name``, ``name@3``, ``name@<stage>`` or ``name@<alias>`` to a version."""
        r = ModelRef.parse(ref) if isinstance(ref, str) else ref
        return _version(self._resolve(r))

    def _resolve(self, r: ModelRef) -> VersionRow:
        meta = self._home.meta
        if isinstance(r.selector, int):
            return self._numbered(r.name, r.selector)
        rows = meta.list_versions(r.name)
        if not rows:
            raise NotFoundError(f"no model named {r.name!r}",
                                hint="`lockgate models` lists registered models")
        if r.selector is None:
            return rows[-1]
        stages = self._home.settings.stages
        if r.selector in stages:
            in_stage = [v for v in rows if v.stage == r.selector]
            if not in_stage:
                raise NotFoundError(f"model {r.name} has no version in stage {r.selector!r}")
            return in_stage[-1]
        number = meta.aliases(r.name).get(r.selector)
        if number is None:
            raise NotFoundError(
                f"{r.selector!r} is neither a stage nor an alias of model {r.name}",
                hint=f"stages: {list(stages)}",
            )
        row = meta.get_version(r.name, number)
        if row is None:
            raise NotFoundError(f"alias {r.name}@{r.selector} points at a missing version")
        return row

    def _numbered(self, name: str, number: int) -> VersionRow:
        if not 0 < number < 2**31:
            raise NotFoundError(f"model {name} has no version {number}")
        row = self._home.meta.get_version(name, number)
        if row is not None:
            return row
        if not self._home.meta.list_versions(name):
            raise NotFoundError(f"no model named {name!r}",
                                hint="`lockgate models` lists registered models")
        raise NotFoundError(f"model {name} has no version {number}")

    def versions(self, name: str) -> list[Version]:
        rows = self._home.meta.list_versions(validate_name(name))
        if not rows:
            raise NotFoundError(f"no model named {name!r}")
        return [_version(r) for r in rows]

    def models(self) -> list[ModelSummary]:
        """Every model: version count, latest, versions per stage, aliases (two queries, no
        version record read)."""
        index: dict[str, dict[str, list[int]]] = {}
        counts: dict[str, tuple[int, int]] = {}
        for name, number, stage in self._home.meta.version_index():
            index.setdefault(name, {}).setdefault(stage, []).append(number)
            seen, top = counts.get(name, (0, 0))
            counts[name] = (seen + 1, max(top, number))
        all_aliases = self._home.meta.all_aliases()
        return [ModelSummary(name, counts[name][0], counts[name][1], stages,
                             all_aliases.get(name, {})) for name, stages in index.items()]

    def aliases(self, name: str) -> dict[str, int]:
        return self._home.meta.aliases(validate_name(name))

    def gate_runs(self, ref: str | ModelRef) -> list[GateRun]:
        v = self.get(ref)
        return self._home.meta.gate_runs(v.name, v.number)

    def decisions(self, ref: str | ModelRef) -> list[Decision]:
        v = self.get(ref)
        return self._home.meta.decisions(v.name, v.number)

    def version_runs(self, v: Version) -> tuple[list[GateRun], list[Decision]]:
        """The gate runs and decisions of a version already looked up."""
        meta = self._home.meta
        return meta.gate_runs(v.name, v.number), meta.decisions(v.name, v.number)

    def latest_monitor_run(self, name: str, number: int) -> dict[str, Any] | None:
        """The newest monitor result of ``name@number``, or None."""
        runs = self._home.meta.observations(name, "monitor", number=number, limit=1)
        return dict(runs[0].record) if runs else None

    def holders(self, name: str, stage: str) -> list[Version]:
        """The model's versions now in ``stage``, by number."""
        return [_version(r) for r in self._home.meta.versions_in_stage(name, stage)]

    def champion(self, name: str, stage: str) -> Version | None:
        """The version the stage's alias (``champion`` for production) points at, if any."""
        alias = self._home.settings.stage_aliases.get(stage)
        if alias and alias in self._home.meta.aliases(name):
            return self.get(ModelRef(name, alias))
        return None

    def serve_refs(self, refs: Sequence[str] = ()) -> list[Version]:
        """The versions ``serve`` would load: ``refs``, or every model's serving-stage version."""
        if refs:
            return [self.get(r) for r in refs]
        stage = self._home.serving_stage
        out = []
        for name in self._home.meta.list_models():
            in_stage = [r for r in self._home.meta.list_versions(name) if r.stage == stage]
            if in_stage:
                out.append(_version(in_stage[-1]))
        return out
