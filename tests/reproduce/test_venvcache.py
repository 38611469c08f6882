"""Reproduction venvs cached by the lock's digest: a miss builds (with progress), a hit reuses,
a failed build leaves no cache entry. Real venvs and a real pip, from a local folder of wheels
built here (no package index)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from lockgate.errors import InvalidInputError, StorageError
from lockgate.reproduce.venvcache import VenvSpec, cached_venv, lock_requirements

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int | None]] = []

    def start(self, task: str, total: int | None = None) -> None:
        self.events.append(("start", task, total))

    def advance(self, task: str, steps: int = 1) -> None:
        self.events.append(("advance", task, steps))

    def finish(self, task: str) -> None:
        self.events.append(("finish", task, None))


def _wheel(folder: Path, name: str, version: str, value: str) -> Path:
    """A pure-Python wheel of module ``name`` whose ``VALUE`` is ``value``."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


def _local(wheels: Path, *reqs: str) -> VenvSpec:
    return VenvSpec(requirements=reqs, index_args=("--no-index", "--find-links", str(wheels)))


def _value(python: Path, module: str) -> str:
    done = subprocess.run([str(python), "-c", f"import {module}; print({module}.VALUE)"],
                          capture_output=True, text=True, check=True, timeout=120)
    return done.stdout.strip()


def test_a_miss_builds_with_progress_and_a_hit_reuses(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _wheel(wheels, "lgtiny", "1.0", "one")
    _wheel(wheels, "lgtiny", "2.0", "two")
    cache = tmp_path / "cache"
    seen = Recorder()
    python, hit = cached_venv(cache, _local(wheels, "lgtiny==1.0"), progress=seen)
    assert hit is False
    assert _value(python, "lgtiny") == "one"
    assert ("start", "venv", None) in seen.events
    assert ("start", "packages", 1) in seen.events
    assert ("advance", "packages", 1) in seen.events  # pip took up lgtiny
    assert ("finish", "packages", None) in seen.events
    assert ("start", "install", None) in seen.events  # pip's "Installing collected packages"
    (entry,) = [p for p in cache.iterdir()]
    assert entry == python.parent.parent
    assert (entry / "lockgate-venv.json").is_file()

    again = Recorder()
    python2, hit2 = cached_venv(cache, _local(wheels, "lgtiny==1.0"), progress=again)
    assert (python2, hit2) == (python, True)
    assert again.events == []  # nothing built

    python3, hit3 = cached_venv(cache, _local(wheels, "lgtiny==2.0"))
    assert hit3 is False
    assert python3 != python
    assert _value(python3, "lgtiny") == "two"
    assert _value(python, "lgtiny") == "one"  # the first entry is untouched
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [python.parent.parent.name, python3.parent.parent.name])


def test_a_failed_build_leaves_no_cache_entry(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _wheel(wheels, "lgtiny", "1.0", "one")
    cache = tmp_path / "cache"
    with pytest.raises(StorageError, match="building the reproduction environment failed") as e:
        cached_venv(cache, _local(wheels, "lgtiny==1.0", "lgmissing==3.1"))
    assert e.value.hint
    assert "package index" in e.value.hint
    assert list(cache.iterdir()) == []  # neither the entry nor the temporary build folder
    # The same lock once its wheels exist builds normally: nothing half-built was kept.
    _wheel(wheels, "lgmissing", "3.1", "found")
    python, hit = cached_venv(cache, _local(wheels, "lgtiny==1.0", "lgmissing==3.1"))
    assert hit is False
    assert _value(python, "lgmissing") == "found"


def test_the_lock_is_read_without_lockgate_and_pip_options() -> None:
    text = ("# via pip freeze\n--index-url https://example.invalid/simple\n"
            "# Editable Git install with no remote (lockgate==0.1.0)\n-e /work/src/lockgate\n"
            "numpy==2.1.0  # pinned\nLockgate==0.1.0\nonnx==1.17.0 ; python_version >= '3.10'\n")
    assert lock_requirements("requirements.txt", text.encode()) == [
        "numpy==2.1.0", "onnx==1.17.0 ; python_version >= '3.10'"]
    pylock = ('lock-version = "1.0"\n[[packages]]\nname = "numpy"\nversion = "2.1.0"\n'
              '[[packages]]\nname = "lockgate"\nversion = "0.1.0"\n')
    assert lock_requirements("pylock.toml", pylock.encode()) == ["numpy==2.1.0"]
    with pytest.raises(InvalidInputError, match="editable") as e:
        lock_requirements("requirements.txt", b"-e /src/mylib\n")
    assert e.value.hint
    assert "exclude-editable" in e.value.hint


def test_the_digest_follows_the_lock_not_its_order() -> None:
    a = VenvSpec(requirements=("a==1", "b==2"), lockgate_id="x")
    assert a.digest() == VenvSpec(requirements=("b==2", "a==1"), lockgate_id="x").digest()
    assert a.digest() != VenvSpec(requirements=("a==1", "b==3"), lockgate_id="x").digest()
    assert a.digest() != VenvSpec(requirements=("a==1", "b==2"), lockgate_id="y").digest()


def test_an_entry_whose_interpreter_is_gone_is_rebuilt(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _wheel(wheels, "lgtiny", "1.0", "one")
    cache = tmp_path / "cache"
    python, _ = cached_venv(cache, _local(wheels, "lgtiny==1.0"))
    python.unlink()  # as when the base Python of the venv was removed
    again, hit = cached_venv(cache, _local(wheels, "lgtiny==1.0"))
    assert hit is False
    assert again == python
    assert _value(again, "lgtiny") == "one"
