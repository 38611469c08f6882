"""``lockgate reproduce NAME@V``: rebuild a version from its recorded recipe and compare.

The recipe (``recipe.json``, signed with the version) names the entry point (``module:function``
returning ``(model, sample_input)``), its arguments, the working directory inside the git
repository and the commit. Reproduction exports that commit into a temporary folder, builds the
environment (``fresh``: a venv with the recorded lock file and lockgate installed, built once
and cached by the lock's digest, see :mod:`~lockgate.reproduce.venvcache`; lockgate run from a
source checkout is put on the child's path instead of into the venv; ``current``: this
interpreter, for a quick check), runs the entry point there with the recorded
seeds in ``LOCKGATE_SEEDS``, converts the result at the recorded opset, and compares:

* bit-identical ONNX bytes pass;
* otherwise the outputs on the recorded sample request must agree within the parity tolerance,
  and the result lists what differs (initializers, nodes, outputs, and the first difference in
  file order, see :mod:`~lockgate.reproduce.diff`) either way.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lockgate.errors import InvalidInputError, NotFoundError, StorageError
from lockgate.progress import NullProgress, Progress
from lockgate.seal.folder import LOCK_FILES, RECIPE_FILE, SAMPLES_FILE
from lockgate.types import Version

if TYPE_CHECKING:
    from lockgate.config.settings import Settings

__all__ = ["ReproducibleHome", "compare_models", "make_recipe", "reproduce"]


class ReproducibleHome(Protocol):
    """The home a version is reproduced from: its settings (parity tolerances), the version's
    verified files, and where the result is recorded."""

    @property
    def settings(self) -> Settings: ...

    def verify(self, version: Version, /) -> str | None: ...

    def model_bytes(self, version: Version, /) -> bytes: ...

    def file_bytes(self, version: Version, name: str, /) -> bytes: ...

    def record_reproduction(self, version: Version, detail: Mapping[str, Any], /) -> object: ...


def make_recipe(entry: str, args: list[str], cwd: Path) -> dict[str, Any]:
    """The recipe for ``entry`` run from ``cwd``: the git top level, ``cwd`` relative to it and
    the commit, when the tree is clean (a dirty tree records no commit: it cannot be
    rebuilt from history, and the ``reproducible`` gate will say so)."""
    recipe: dict[str, Any] = {"entry": entry, "args": list(args), "workdir": ".",
                              "root": str(cwd.resolve())}

    def git(*a: str) -> str | None:
        try:
            done = subprocess.run(["git", *a], cwd=cwd, capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top:
        recipe["root"] = top
        recipe["workdir"] = cwd.resolve().relative_to(Path(top).resolve()).as_posix() or "."
        commit = git("rev-parse", "--verify", "HEAD")
        if commit and git("status", "--porcelain") == "":
            recipe["git_commit"] = commit
    return recipe


def reproduce(lg: ReproducibleHome, version: Version, *, source: Path | None = None,
              env: str = "fresh", lockgate_spec: str | None = None,
              timeout_s: float = 3600, progress: Progress | None = None) -> dict[str, Any]:
    """Rebuild ``version`` and return the comparison (``passed``, ``message``, details).

    ``progress`` hears the phases: ``venv``, ``packages`` (one step per requirement),
    ``install`` and ``lockgate`` while a fresh environment is built (skipped on a cache hit),
    then ``rebuild`` and ``compare``."""
    progress = progress or NullProgress()
    if env not in ("fresh", "current"):
        raise InvalidInputError(f"env must be 'fresh' or 'current', got {env!r}")
    lg.verify(version)
    try:
        recipe = json.loads(lg.file_bytes(version, RECIPE_FILE))
    except NotFoundError:
        raise InvalidInputError(
            f"{version.ref} has no recorded recipe",
            hint="register it with `lockgate register --from module:function` (or recipe= in "
                 "the API) to make it reproducible") from None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lockgate-reproduce-") as tmp_name:
        tmp = Path(tmp_name)
        workdir = _checkout(recipe, source, tmp / "src")
        venv: dict[str, Any] = {}
        if env == "current":
            python = sys.executable
        else:
            python, venv = _venv(lg, version, lockgate_spec, timeout_s, progress)
        out = tmp / "rebuilt.onnx"
        child_env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PYTHONHASHSEED": "0",
                     "LOCKGATE_SEEDS": json.dumps(dict(version.seeds)),
                     "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        child_env.pop("PYTHONPATH", None)
        if venv.get("lockgate_source"):
            child_env["PYTHONPATH"] = str(venv["lockgate_source"])
        progress.start("rebuild", None)
        done = subprocess.run(
            [python, "-m", "lockgate", "_rebuild", str(recipe["entry"]), str(version.opset),
             str(out), *[str(a) for a in recipe.get("args", [])]],
            cwd=workdir, env=child_env, capture_output=True, text=True, timeout=timeout_s,
            check=False)
        progress.finish("rebuild")
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            detail: dict[str, Any] = {
                "passed": False, "env": env, "message": f"the recipe failed: {tail}"}
        else:
            progress.start("compare", None)
            rebuilt = out.read_bytes()
            original = lg.model_bytes(version)
            samples = json.loads(lg.file_bytes(version, SAMPLES_FILE))
            detail = {**compare_models(original, rebuilt, samples,
                                       atol=lg.settings.parity_atol,
                                       rtol=lg.settings.parity_rtol), "env": env}
            progress.finish("compare")
    if venv:
        detail["venv"] = venv
    detail["recipe"] = recipe
    detail["seconds"] = round(time.monotonic() - started, 2)
    lg.record_reproduction(version, detail)
    return detail


def _checkout(recipe: dict[str, Any], source: Path | None, dest: Path) -> Path:
    commit = recipe.get("git_commit")
    root = source or (Path(recipe["root"]) if recipe.get("root") else Path.cwd())
    workdir = str(recipe.get("workdir", "."))
    if Path(workdir).is_absolute() or ".." in Path(workdir).parts:
        raise InvalidInputError(f"recipe workdir {workdir!r} must be relative to the repository")
    if commit:
        done = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", commit],
                              capture_output=True, timeout=300, check=False)
        if done.returncode != 0:
            raise StorageError(
                f"cannot export commit {commit[:12]} from {root}: "
                f"{done.stderr.decode(errors='replace').strip()}",
                hint="run reproduce inside the repository, or pass --source PATH")
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
            tar.extractall(dest, filter="data")
    else:
        # No clean commit was recorded: rebuild from the working tree as it is now.
        import shutil

        shutil.copytree(root, dest, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"))
    return dest / workdir


def _venv(lg: ReproducibleHome, version: Version, lockgate_spec: str | None,
          timeout_s: float, progress: Progress | None) -> tuple[str, dict[str, Any]]:
    """The cached venv of the version's recorded lock (built when missing): its python and
    what the result records about it (digest, cache hit, packages)."""
    from lockgate.reproduce.venvcache import VenvSpec, cached_venv, lock_requirements

    lock_name = next((n for n in LOCK_FILES if n in version.files), None)
    if lock_name is None:
        raise InvalidInputError(
            f"{version.ref} has no recorded lock file to build a fresh environment from",
            hint="register with --lock-file, or reproduce with --env current")
    reqs = lock_requirements(lock_name, lg.file_bytes(version, lock_name))
    spec_text = lockgate_spec or _own_spec()
    source = Path(spec_text) / "src"
    if (source / "lockgate" / "__init__.py").is_file():
        # A source checkout (pure Python) is put on the child's path, not into the venv: the
        # cached venv stays the lock's alone, and an edit of the source needs no new venv.
        spec = VenvSpec(requirements=tuple(reqs), lockgate_id="source")
    else:
        spec = VenvSpec(requirements=tuple(reqs), lockgate=spec_text, lockgate_id=spec_text)
        source = Path()
    python, hit = cached_venv(lg.settings.home / "cache" / "venvs", spec, progress=progress,
                              timeout_s=timeout_s)
    info = {"digest": spec.digest(), "cache_hit": hit, "packages": len(reqs),
            "lock": lock_name}
    if spec.lockgate is None:
        info["lockgate_source"] = str(source.resolve())
    return str(python), info


def _own_spec() -> str:
    """This lockgate: its source project when run from a checkout, else its release."""
    root = Path(__file__).resolve().parents[3]  # src/lockgate/reproduce/recipe.py
    if (root / "pyproject.toml").is_file() and 'name = "lockgate"' in (
            root / "pyproject.toml").read_text(encoding="utf-8"):
        return str(root)
    from importlib.metadata import version

    return f"lockgate=={version('lockgate')}"


def compare_models(original: bytes, rebuilt: bytes, samples: dict[str, Any], *, atol: float,
                   rtol: float) -> dict[str, Any]:
    """Bit-identical, or outputs on the recorded sample within tolerance; with the diff."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    from lockgate.runtime.predictor import Predictor

    result: dict[str, Any] = {
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "rebuilt_sha256": hashlib.sha256(rebuilt).hexdigest(),
    }
    if original == rebuilt:
        return {**result, "passed": True, "bit_identical": True,
                "message": "bit-identical ONNX"}
    a, b = onnx.load_from_string(original), onnx.load_from_string(rebuilt)
    init_a = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    init_b = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    changed = sorted(n for n in set(init_a) & set(init_b)
                     if init_a[n].shape != init_b[n].shape
                     or not np.array_equal(init_a[n], init_b[n]))
    only = sorted(set(init_a) ^ set(init_b))
    changed_nodes = []
    for i, (na, nb) in enumerate(zip(a.graph.node, b.graph.node, strict=False)):
        if na != nb:
            attrs = sorted({x.name for x in na.attribute} | {x.name for x in nb.attribute})
            diff = [n for n in attrs
                    if [x for x in na.attribute if x.name == n]
                    != [x for x in nb.attribute if x.name == n]]
            changed_nodes.append(f"{na.name or na.op_type or i}({', '.join(diff)})")
    if len(a.graph.node) != len(b.graph.node):
        changed_nodes.append(f"node count {len(a.graph.node)} != {len(b.graph.node)}")
    from lockgate.gates.probe import sample_feeds

    feeds = sample_feeds(samples)
    out_a, out_b = Predictor(original)(feeds), Predictor(rebuilt)(feeds)
    diffs: dict[str, Any] = {}
    ok = set(out_a) == set(out_b)
    for name in sorted(set(out_a) & set(out_b)):
        x, y = np.asarray(out_a[name]), np.asarray(out_b[name])
        if x.shape != y.shape:
            diffs[name] = f"shape {list(x.shape)} != {list(y.shape)}"
            ok = False
        elif x.dtype.kind in "fc":
            err = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) \
                if x.size else 0.0
            diffs[name] = err
            ok = ok and bool(np.allclose(x, y, atol=atol, rtol=rtol, equal_nan=True))
        elif not np.array_equal(x, y):
            diffs[name] = "values differ"
            ok = False
    from lockgate.reproduce.diff import first_difference, metadata_only

    first = first_difference(a, b)
    only_metadata = metadata_only(a, b)
    summary = (f"not bit-identical ({len(changed)} initializer(s) differ"
               + (f": {', '.join(changed[:5])}" if changed else "")
               + (f"; nodes differ: {', '.join(changed_nodes[:5])}" if changed_nodes else "")
               + f"; first difference: {first['where']} {first['name']}: {first['detail']})")
    worst = ", ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}"
                      for k, v in diffs.items())
    message = (f"{summary}; outputs within tolerance ({worst})" if ok
               else f"{summary}; outputs differ ({worst})")
    if only_metadata:
        message += (f"; only node metadata differs ({', '.join(only_metadata)}): the graph "
                    "and the weights are identical")
    return {**result, "passed": ok, "bit_identical": False, "message": message,
            "changed_initializers": changed, "initializers_only_in_one": only,
            "changed_nodes": changed_nodes, "first_difference": first,
            "only_node_metadata_differs": only_metadata,
            "output_max_abs_error": diffs}
