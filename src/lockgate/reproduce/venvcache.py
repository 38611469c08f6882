"""Reproduction environments built from a recorded lock, cached by digest.

A venv holding exactly the lock's pins (and the lockgate that rebuilds the model) is built once
under ``<home>/cache/venvs/<digest>`` and reused by every later ``reproduce`` of any version with
the same lock. The digest covers what makes the venv: the lock's requirements, the interpreter
(implementation, version, platform), the lockgate installed and the installer's index options.

The venv gets the whole recorded lock, lockgate itself aside: what the model was built with is
the claim being checked, and which of the lock's packages a recipe imports is only known by
running it, so the lock is not narrowed. A lock of the training environment (``uv export
--no-dev``, ``pip freeze`` of that venv) rather than of a development one keeps the first build
short; later ones reuse the cache.

The build goes into a temporary folder next to the cache entry and is renamed into place only
once every install step succeeded, so a failed or interrupted build leaves no entry and a
half-built venv is never used. ``uv`` builds it when on ``PATH`` (much faster), ``pip`` otherwise.
Progress is reported by phase (``venv``, ``packages`` with one step per requirement pip takes
up, ``install`` while pip unpacks them, ``lockgate``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockgate.errors import InvalidInputError, StorageError
from lockgate.progress import NullProgress, Progress

__all__ = ["VenvSpec", "cached_venv", "lock_requirements"]

META_FILE = "lockgate-venv.json"
"""Written into a finished venv: what it was built from (and proof the build completed)."""


def lock_requirements(name: str, data: bytes) -> list[str]:
    """The requirement lines of a recorded lock (``requirements.txt`` or ``pylock.toml``), with
    lockgate itself left out (the reproduction installs the lockgate that rebuilds), comments,
    blank lines and pip options dropped. A ``-e`` line of another project is refused: an editable
    checkout cannot be rebuilt from a lock."""
    text = data.decode("utf-8", errors="replace")
    if name.endswith(".toml"):
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(f"the recorded {name} is not valid TOML: {exc}") from None
        reqs = [f"{p['name']}=={p['version']}" for p in doc.get("packages", [])
                if isinstance(p, dict) and p.get("name") and p.get("version")]
        return [r for r in reqs if _project(r) != "lockgate"]
    reqs = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-e ", "--editable")):
            target = line.split(None, 1)[-1]
            if "lockgate" in Path(target.rstrip("/")).name.lower():
                continue
            raise InvalidInputError(
                f"the recorded lock installs {target!r} in editable mode",
                hint="record a lock of released packages (pip freeze --exclude-editable, "
                     "uv export, pip lock)")
        if line.startswith("-"):
            continue  # index / hash options: the installer's configuration decides those
        if _project(line) != "lockgate":
            reqs.append(line)
    return reqs


def _project(requirement: str) -> str:
    """The canonical project name a requirement line names (``Foo_Bar[x]==1`` -> foo-bar)."""
    name = requirement
    for sep in ("[", "=", "<", ">", "!", "~", ";", "@", " "):
        name = name.split(sep, 1)[0]
    return name.strip().lower().replace("_", "-").replace(".", "-")


@dataclass(frozen=True)
class VenvSpec:
    """What goes into a reproduction venv: the lock's ``requirements``, then ``lockgate``
    (a pip spec or a source folder, installed without dependencies: the lock has them) whose
    identity ``lockgate_id`` enters the digest; ``index_args`` are extra installer options
    (``--no-index``, ``--find-links DIR``)."""

    requirements: tuple[str, ...]
    lockgate: str | None = None
    lockgate_id: str = ""
    index_args: tuple[str, ...] = field(default_factory=tuple)

    def digest(self) -> str:
        """The cache key: the lock, lockgate, the index options and this interpreter."""
        h = hashlib.sha256()
        for part in (json.dumps(sorted(self.requirements)), self.lockgate_id,
                     json.dumps(list(self.index_args)), sys.implementation.name,
                     platform.python_version(), platform.machine(), sys.platform):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()


def cached_venv(cache: Path, spec: VenvSpec, *, progress: Progress | None = None,
                timeout_s: float = 3600) -> tuple[Path, bool]:
    """The python of the venv for ``spec`` under ``cache`` and whether it was already there
    (a cache hit); built atomically when missing."""
    progress = progress or NullProgress()
    entry = cache / spec.digest()[:32]
    python = entry / "bin" / "python"
    if (entry / META_FILE).is_file() and python.exists():
        return python, True
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        _build(building, spec, progress, timeout_s)
        (building / META_FILE).write_text(json.dumps(
            {"digest": spec.digest(), "requirements": list(spec.requirements),
             "lockgate": spec.lockgate_id, "index_args": list(spec.index_args),
             "python": platform.python_version(), "installer": _installer()},
            indent=2), encoding="utf-8")
        if entry.exists() and not python.exists():
            # Unusable (its base interpreter is gone, or an older layout): replaced.
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(building, entry)
        except OSError:
            if not (entry / META_FILE).is_file():  # not a concurrent build that won the race
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return python, False


def _installer() -> str:
    return "uv" if shutil.which("uv") else "pip"


def _build(where: Path, spec: VenvSpec, progress: Progress, timeout_s: float) -> None:
    uv = shutil.which("uv")
    progress.start("venv", None)
    if uv:
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(where)], timeout_s)
        install: list[str] = [uv, "pip", "install", "--python", str(where / "bin" / "python")]
    elif importlib.util.find_spec("pip") is not None:
        # This interpreter's pip installs into a venv without its own pip: no ensurepip run,
        # and the venv holds only the lock.
        _run([sys.executable, "-m", "venv", "--without-pip", str(where)], timeout_s)
        install = [sys.executable, "-m", "pip", "--python", str(where / "bin" / "python"),
                   "install", "--no-input", "--progress-bar", "off"]
    else:
        _run([sys.executable, "-m", "venv", str(where)], timeout_s)
        install = [str(where / "bin" / "python"), "-m", "pip", "install", "--no-input",
                   "--progress-bar", "off"]
    progress.finish("venv")
    if spec.requirements:
        lock = where / "lock-requirements.txt"
        lock.write_text("".join(f"{r}\n" for r in spec.requirements), encoding="utf-8")
        progress.start("packages", len(spec.requirements))
        _run([*install, *spec.index_args, "-r", str(lock)], timeout_s,
             progress=progress, task="packages")
        progress.finish("packages")
    if spec.lockgate:
        progress.start("lockgate", None)
        _run([*install, *spec.index_args, "--no-deps", spec.lockgate], timeout_s)
        progress.finish("lockgate")


_PIP_STEPS = ("Collecting ", "Processing ", "Requirement already satisfied: ")


def _run(cmd: Sequence[str], timeout_s: float, *, progress: Progress | None = None,
         task: str = "") -> None:
    """Run an installer step; each requirement pip takes up advances ``task``."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    lines: list[str] = []
    installing = False
    try:
        with subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if progress is not None and line.startswith(_PIP_STEPS):
                    progress.advance(task)
                elif progress is not None and line.startswith("Installing collected"):
                    progress.finish(task)
                    progress.start("install", None)
                    installing = True
            code = proc.wait(timeout=timeout_s)
            if progress is not None and installing:
                progress.finish("install")
    except OSError as exc:
        raise StorageError(f"cannot run {cmd[0]}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise StorageError(f"building the reproduction environment took over {timeout_s} s",
                           hint="check the package index is reachable") from None
    if code != 0:
        errors = [x for x in lines if "error" in x.lower()] or lines or ["no output"]
        raise StorageError(
            f"building the reproduction environment failed: {errors[-1].strip()}",
            hint="check that every pin of the recorded lock exists on the configured package "
                 "index for this Python and platform")
