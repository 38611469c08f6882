"""`lockgate reproduce`: rebuild from the recorded recipe (entry point, arguments, git commit,
lock) and compare; bit-identical for a deterministic script, a diff for a nondeterministic one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from binaries import needs
from lockgate.api.facade import Lockgate
from lockgate.types import GateStatus

RECIPES = Path(__file__).parent / "recipes"
pytestmark = [pytest.mark.sklearn, pytest.mark.slow, needs("git")]


def run(*args: str, cwd: Path) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                       text=True, cwd=cwd, timeout=1200,
                       env={**os.environ, "ORT_DISABLE_TELEMETRY": "1", "COLUMNS": "200"})
    return p.returncode, p.stdout, p.stderr


def _repo(tmp_path: Path, script: str) -> Path:
    """A git repository holding one training script, committed (a clean tree)."""
    repo = tmp_path / "repo"
    (repo / "train").mkdir(parents=True)
    shutil.copy(RECIPES / script, repo / "train" / "recipe.py")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "recipe"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env, capture_output=True)
    return repo


def test_deterministic_recipe_rebuilds_bit_identical(home: Path, tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    repo = _repo(tmp_path, "train_det.py")
    (home / "lockgate.toml").write_text('[gates]\n"*" = ["reproducible"]\n')
    code, _, err = run("register", "--from", "recipe:train", "--name", "det", "--seed", "3",
                       cwd=repo / "train")
    assert code == 0, err
    with Lockgate.open(home) as lg:
        recipe = json.loads(lg.file_bytes(lg.get("det@1"), "recipe.json"))
        assert recipe["entry"] == "recipe:train"
        assert recipe["workdir"] == "train"
        assert len(recipe["git_commit"]) == 40
        (before,) = lg.check_gates("det@1", "stabilized")
        assert before.status is GateStatus.FAIL
        assert "no reproduction recorded" in before.message
    # Rebuilt from the commit, not the working tree: a later edit does not matter.
    (repo / "train" / "recipe.py").write_text("raise SystemExit('edited after the commit')\n")
    code, out, err = run("reproduce", "det@1", "--env", "current", "--json", cwd=tmp_path)
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] is True
    assert result["bit_identical"] is True
    assert result["original_sha256"] == result["rebuilt_sha256"]
    with Lockgate.open(home) as lg:
        (after,) = lg.check_gates("det@1", "stabilized")
        assert after.status is GateStatus.PASS
        assert "bit-identical ONNX" in after.message
        assert [r.type for r in lg.audit_log()][-1] == "version.reproduced"


def test_nondeterministic_recipe_fails_with_the_diff(home: Path, tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    repo = _repo(tmp_path, "train_nondet.py")
    code, _, err = run("register", "--from", "recipe:train", "--name", "nd", cwd=repo / "train")
    assert code == 0, err
    code, out, err = run("reproduce", "nd@1", "--env", "current", cwd=tmp_path)
    assert code == 1
    assert "NOT reproduced" in out
    assert "not bit-identical" in err
    assert "coefficients" in err  # what differs is named
    assert "outputs differ" in err
    with Lockgate.open(home) as lg:
        (decision,) = [d for d in lg.decisions("nd@1") if d.kind == "reproduction"]
        assert decision.detail["passed"] is False
        assert decision.detail["changed_nodes"]


def test_a_version_without_recipe_cannot_be_reproduced(home: Path, tmp_path: Path) -> None:
    import onnx

    from onnx_models import linear_onnx

    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    assert run("register", str(tmp_path / "m.onnx"), "--name", "m", cwd=tmp_path)[0] == 0
    code, _, err = run("reproduce", "m@1", cwd=tmp_path)
    assert code == 2
    assert "has no recorded recipe" in err


def _lock_for_sklearn(path: Path) -> Path:
    """Exact pins of lockgate[sklearn]'s dependency closure as installed here: the lock a
    team would record for this recipe."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}

    def walk(name: str, extras: tuple[str, ...] = ()) -> None:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            return
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": e})
                                               for e in ("", *extras))
            dep = canonicalize_name(req.name)
            if wanted and dep not in pins and dep != "lockgate":
                try:
                    pins[dep] = md.version(dep)
                except md.PackageNotFoundError:
                    continue
                walk(dep, tuple(req.extras))

    walk("lockgate", ("sklearn",))
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())), encoding="utf-8")
    return path


def test_fresh_environment_from_the_recorded_lock(home: Path, tmp_path: Path) -> None:
    """The full recipe: a new venv with exactly the recorded lock (pip, from the configured
    package index) and this lockgate, the recorded commit, bit-identical ONNX."""
    pytest.importorskip("skl2onnx")
    repo = _repo(tmp_path, "train_det.py")
    lock = _lock_for_sklearn(tmp_path / "requirements.txt")
    code, _, err = run("register", "--from", "recipe:train", "--name", "det",
                       "--lock-file", str(lock), cwd=repo / "train")
    assert code == 0, err
    code, out, err = run("reproduce", "det@1", "--json", cwd=tmp_path)
    assert code == 0, err
    result = json.loads(out)
    assert result["env"] == "fresh"
    assert result["bit_identical"] is True
    assert result["venv"]["cache_hit"] is False
    assert f"installing the recorded lock ({result['venv']['packages']} packages)" in err
    assert (home / "cache" / "venvs" / result["venv"]["digest"][:32]).is_dir()
    # The second reproduction of the same lock reuses the cached environment.
    code, out, err = run("reproduce", "det@1", "--json", cwd=tmp_path)
    assert code == 0, err
    again = json.loads(out)
    assert again["venv"] == {**result["venv"], "cache_hit": True}
    assert again["bit_identical"] is True
    assert "installing the recorded lock" not in err
