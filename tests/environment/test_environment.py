"""capture_environment: every field present, unreadable ones say why, git state, speed."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lockgate.environment.fingerprint import capture_environment, installed_distributions

_GIT = shutil.which("git")


def _is_unavailable(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("unavailable: ") and len(value) > 14


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_fields_present_and_json_ready(tmp_path: Path) -> None:
    env = capture_environment(
        seeds={"torch": 7, "numpy": 1}, providers=["CPUExecutionProvider"], cwd=tmp_path
    )
    assert set(env) == {
        "python", "os", "libc", "cpu", "packages", "torch", "onnxruntime",
        "tensorrt", "nvidia_driver", "gpu", "git", "seeds",
    }  # fmt: skip
    assert env["python"]["version"] == platform.python_version()
    assert env["python"]["implementation"] == platform.python_implementation()
    assert env["os"]["system"] == platform.system()
    assert isinstance(env["cpu"]["count"], int) or _is_unavailable(env["cpu"]["count"])
    assert env["cpu"]["model"]
    assert env["cpu"]["machine"]
    assert env["seeds"] == {"torch": 7, "numpy": 1}
    ort = env["onnxruntime"]
    assert ort["session_providers"] == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in ort["available_providers"]
    assert ort["version"][0].isdigit()
    driver = env["nvidia_driver"]
    assert _is_unavailable(driver) or driver[0].isdigit()
    json.dumps(env)


def test_packages_are_sorted_and_include_the_basics() -> None:
    packages = installed_distributions()
    names = list(packages)
    assert names == sorted(names, key=str.lower)
    lowered = {n.lower(): v for n, v in packages.items()}
    assert "onnx" in lowered
    assert "numpy" in lowered
    packages["onnx"] = "tampered"
    assert installed_distributions().get("onnx") != "tampered"  # the cache is not shared


def test_unreadable_fields_say_why(tmp_path: Path) -> None:
    env = capture_environment(seeds=None, providers=None, cwd=tmp_path)
    assert _is_unavailable(env["seeds"])
    assert _is_unavailable(env["onnxruntime"]["session_providers"])
    if _GIT is not None:
        assert _is_unavailable(env["git"]["commit"])
        assert "git" in env["git"]["commit"]
        assert _is_unavailable(env["git"]["dirty"])
    missing = capture_environment(seeds={}, providers=[], cwd=tmp_path / "absent")
    assert _is_unavailable(missing["git"]["commit"])
    for value in _leaves(env):
        if isinstance(value, str) and value.startswith("unavailable"):
            assert _is_unavailable(value)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    return [value]


@pytest.mark.skipif(_GIT is None, reason="git is not installed")
def test_git_commit_and_dirty_flag(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")

    clean = capture_environment(seeds=None, providers=None, cwd=repo)["git"]
    assert clean == {"commit": head, "dirty": False}

    (repo / "a.txt").write_text("two\n")
    dirty = capture_environment(seeds=None, providers=None, cwd=repo / ".")["git"]
    assert dirty == {"commit": head, "dirty": True}


@pytest.mark.skipif(_GIT is None, reason="git is not installed")
def test_repository_without_commits(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    git = capture_environment(seeds=None, providers=None, cwd=tmp_path)["git"]
    assert _is_unavailable(git["commit"])
    assert _is_unavailable(git["dirty"])


def test_fast_once_warm(tmp_path: Path) -> None:
    capture_environment(seeds=None, providers=None, cwd=tmp_path)
    start = time.perf_counter()
    capture_environment(seeds={"a": 1}, providers=None, cwd=Path.cwd())
    assert time.perf_counter() - start < 1.0


def test_torch_is_not_imported_to_read_its_version() -> None:
    code = (
        "import json, sys\n"
        "from lockgate.environment.fingerprint import capture_environment\n"
        "env = capture_environment(seeds=None, providers=None, cwd=None)\n"
        "print(json.dumps({'imported': 'torch' in sys.modules, 'torch': env['torch']}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(done.stdout)
    assert result["imported"] is False
    facts = result["torch"]
    assert set(facts) == {"version", "cuda", "cudnn"}
    assert _is_unavailable(facts["cudnn"])
    assert facts["version"][0].isdigit() or _is_unavailable(facts["version"])
    assert facts["cuda"]
    assert (facts["cuda"][0].isdigit() or _is_unavailable(facts["cuda"]))
