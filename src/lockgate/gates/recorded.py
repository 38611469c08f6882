"""Gates on what was recorded at registration: seeds, pinned dependencies, a reproduction."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

from lockgate.errors import Error
from lockgate.gates.base import Configurable, GateContext
from lockgate.gates.params import Param
from lockgate.seal.folder import LOCK_FILES
from lockgate.types import GateResult, GateStatus

__all__ = ["PinnedDependenciesGate", "ReproducibleGate", "SeedsRecordedGate"]



class SeedsRecordedGate(Configurable):
    name = "seeds_recorded"

    def evaluate(self, ctx: GateContext) -> GateResult:
        seeds = dict(ctx.version.seeds)
        if not seeds:
            return GateResult(self.name, GateStatus.FAIL,
                              "no seeds were recorded at registration (register with --seed, or "
                              "seed=/seeds= in the API)")
        return GateResult(self.name, GateStatus.PASS,
                          "seeds recorded: " + ", ".join(f"{k}={v}" for k, v in seeds.items()),
                          {"seeds": seeds})


class PinnedDependenciesGate(Configurable):
    """The lock file recorded with the version pins every requirement to one exact version."""

    name = "pinned_dependencies"
    PARAMS = {"require_hashes": Param(bool, False, "every requirement must carry a hash")}

    def evaluate(self, ctx: GateContext) -> GateResult:
        name = next((n for n in LOCK_FILES if n in ctx.version.files), None)
        if name is None or ctx.evidence is None:
            return GateResult(self.name, GateStatus.FAIL,
                              "no lock file was recorded at registration (register with "
                              "--lock-file requirements.txt or pylock.toml)")
        try:
            text = ctx.evidence.file(name).decode("utf-8")
        except (Error, UnicodeDecodeError) as exc:
            return GateResult(self.name, GateStatus.FAIL, f"cannot read {name}: {exc}")
        try:
            entries = _pylock(text) if name == "pylock.toml" else _requirements(text)
        except ValueError as exc:
            return GateResult(self.name, GateStatus.FAIL, f"{name}: {exc}")
        need_hashes = bool(self.params["require_hashes"])
        problems = []
        for req_name, pinned, hashed, why in entries:
            if not pinned:
                problems.append(f"{req_name}: {why}")
            elif need_hashes and not hashed:
                problems.append(f"{req_name}: no hash")
        measured = {"file": name, "requirements": len(entries), "problems": problems}
        thresholds = {"require_hashes": need_hashes}
        if not entries:
            return GateResult(self.name, GateStatus.FAIL, f"{name} lists no requirements",
                              measured, thresholds)
        if problems:
            return GateResult(self.name, GateStatus.FAIL,
                              f"{len(problems)} of {len(entries)} requirements in {name} not "
                              "pinned: " + "; ".join(problems[:10]), measured, thresholds)
        return GateResult(self.name, GateStatus.PASS,
                          f"all {len(entries)} requirements in {name} pinned to one version"
                          + (" with hashes" if need_hashes else ""), measured, thresholds)


def _requirements(text: str) -> list[tuple[str, bool, bool, str]]:
    from lockgate.errors import InvalidInputError
    from lockgate.supplychain.lockfiles import parse_requirements

    out = []
    try:
        lines = parse_requirements(text, "requirements.txt")
    except InvalidInputError as exc:
        raise ValueError(exc.message) from None
    for line in lines:
        req, hashed = line.requirement, bool(line.hashes)
        if req is None:
            if line.option.startswith(("-r", "--requirement", "-c", "--constraint")):
                raise ValueError(f"includes another file ({line.option.split()[0]}); record "
                                 "a flat lock")
            continue  # index and pip options
        if req.url:
            out.append((req.name, hashed, hashed, "a direct URL without a hash"))
            continue
        specs = list(req.specifier)
        exact = len(specs) == 1 and specs[0].operator in ("==", "===") \
            and "*" not in specs[0].version
        out.append((req.name, exact, hashed,
                    "not pinned" if not specs else f"{req.specifier} is not one exact version"))
    return out


def _pylock(text: str) -> list[tuple[str, bool, bool, str]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(str(exc)) from None
    out = []
    for pkg in data.get("packages", []):
        name = str(pkg.get("name", "?"))
        hashed = _pylock_hashed(pkg)
        if "vcs" in pkg:
            pinned = bool(pkg["vcs"].get("commit-id"))
            out.append((name, pinned, pinned, "a VCS requirement without a commit id"))
        elif "directory" in pkg:
            out.append((name, False, False, "a local directory"))
        else:
            out.append((name, bool(pkg.get("version")), hashed, "no version"))
    return out


def _pylock_hashed(pkg: dict[str, Any]) -> bool:
    files = [*pkg.get("wheels", []), *([pkg["sdist"]] if "sdist" in pkg else []),
             *([pkg["archive"]] if "archive" in pkg else [])]
    return bool(files) and all(f.get("hashes") for f in files)


class ReproducibleGate(Configurable):
    """A stored `lockgate reproduce` result that passed, no older than ``max_age_days``."""

    name = "reproducible"
    PARAMS = {"max_age_days": Param(int, 30, "oldest reproduction result accepted", 0)}

    def evaluate(self, ctx: GateContext) -> GateResult:
        if ctx.evidence is None:
            return GateResult(self.name, GateStatus.ERROR, "no evidence store")
        runs = [d for d in ctx.evidence.decisions() if d.kind == "reproduction"]
        ref = f"{ctx.version.name}@{ctx.version.number}"
        if not runs:
            return GateResult(self.name, GateStatus.FAIL,
                              f"no reproduction recorded; run `lockgate reproduce {ref}`")
        last = runs[-1]
        max_age = int(self.params["max_age_days"])
        age = datetime.now(UTC) - datetime.fromisoformat(last.created_at)
        measured = {"at": last.created_at, **dict(last.detail)}
        thresholds = {"max_age_days": max_age}
        if age > timedelta(days=max_age):
            return GateResult(self.name, GateStatus.FAIL,
                              f"the last reproduction is {age.days} days old (limit {max_age}); "
                              f"run `lockgate reproduce {ref}` again", measured, thresholds)
        if not last.detail.get("passed"):
            return GateResult(self.name, GateStatus.FAIL,
                              f"the last reproduction failed: {last.detail.get('message', '')}",
                              measured, thresholds)
        return GateResult(self.name, GateStatus.PASS,
                          f"reproduced {last.created_at[:19]}: {last.detail.get('message', '')}",
                          measured, thresholds)
