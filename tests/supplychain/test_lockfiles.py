"""Lock files: golden hashes from a PEP 751 ``pylock.toml``, checked against ``packaging.pylock``
(the reference reader) on a document the specification accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lockgate.errors import InvalidInputError
from lockgate.supplychain.lockfiles import lock_key, normalize_hash, parse_lock_hashes

H1, H2, H3, H4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 128)

PYLOCK = f"""\
lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11"

[[packages]]
name = "numpy"
version = "2.1.0"
sdist = {{ url = "https://files.example.org/numpy-2.1.0.tar.gz", hashes = {{ sha256 = "{H1}" }} }}

[[packages.wheels]]
url = "https://files.example.org/numpy-2.1.0-cp311-cp311-linux_x86_64.whl"
hashes = {{ sha256 = "{H2}" }}

[[packages.wheels]]
url = "https://files.example.org/numpy-2.1.0-cp312-cp312-linux_x86_64.whl"
hashes = {{ sha256 = "{H2}", sha512 = "{H4}" }}

[[packages]]
name = "onnx"
version = "1.17.0.post0"
archive = {{ url = "https://files.example.org/onnx.zip", hashes = {{ sha256 = "{H3}" }} }}

[[packages]]
name = "local-thing"
directory = {{ path = "." }}
"""

GOLDEN = {
    "local-thing": [],
    "numpy==2.1.0": [f"sha256:{H1}", f"sha256:{H2}", f"sha512:{H4}"],
    "onnx==1.17.0.post0": [f"sha256:{H3}"],
}


def test_pylock_hashes_golden(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text(PYLOCK)
    assert parse_lock_hashes(lock) == GOLDEN


def test_pylock_hashes_agree_with_packaging_pylock(tmp_path: Path) -> None:
    pylock = pytest.importorskip("packaging.pylock")
    doc = pylock.Pylock.from_dict(tomllib.loads(PYLOCK))  # the document is valid PEP 751
    reference: dict[str, list[str]] = {}
    for pkg in doc.packages:
        tables = [*(pkg.wheels or ()), pkg.sdist, pkg.archive]
        key = lock_key(pkg.name, str(pkg.version)) if pkg.version else str(pkg.name)
        reference[key] = sorted({f"{alg}:{digest}" for t in tables if t is not None
                                 for alg, digest in t.hashes.items()})
    lock = tmp_path / "pylock.toml"
    lock.write_text(PYLOCK)
    assert parse_lock_hashes(lock) == reference


def test_hashes_are_normalised_and_checked() -> None:
    assert normalize_hash(f"SHA-256:{H1.upper()}", "x") == ("sha256", H1)
    assert lock_key("Py_Torch", "2.0") == "py-torch==2.0"
    with pytest.raises(InvalidInputError, match="where: 'sha256:12'"):
        normalize_hash("sha256:12", "where")
    with pytest.raises(InvalidInputError) as info:
        normalize_hash(f"blake2b:{H1}", "where")
    assert info.value.hint == "algorithms: md5, sha1, sha256, sha384, sha512"
