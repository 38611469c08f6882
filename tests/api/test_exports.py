"""The public API: __all__ is complete and sorted (in the manner of httpx's test)."""

from __future__ import annotations

from pathlib import Path

import lockgate


def test_all_is_sorted() -> None:
    assert lockgate.__all__ == sorted(lockgate.__all__)


def test_all_is_complete() -> None:
    public = {
        name for name, value in vars(lockgate).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("lockgate")
    }
    assert public <= set(lockgate.__all__), public - set(lockgate.__all__)
    for name in lockgate.__all__:
        assert hasattr(lockgate, name), name


def test_every_error_is_a_lockgate_error() -> None:
    for name in lockgate.__all__:
        obj = getattr(lockgate, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, lockgate.Error), name
            readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
            assert f"| {obj.exit_code} |" in readme, f"{name}: exit code not in README"
