from __future__ import annotations

import re
from pathlib import Path

import pytest

from lockgate.config.settings import SETTINGS, load_settings, write_default_config
from lockgate.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(tmp_path, env={})
    assert s.stages == ("prototype", "stabilized", "production", "archived")
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'lockgate.db'}"
    assert [g.name for g in s.gates_for("prototype", "stabilized")] == [
        "parity", "pinned_dependencies", "seeds_recorded", "reproducible"]
    assert [g.name for g in s.gates_for("stabilized", "production")][-2:] == [
        "approval", "rollback_ready"]
    assert [g.name for g in s.gates_for("production", "archived")] == ["parity"]


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    (tmp_path / "lockgate.toml").write_text(
        "[parity]\natol = 0.5\nrtol = 0.25\n[serve]\nport = 1\n"
    )
    s = load_settings(tmp_path, env={"LOCKGATE_PARITY_ATOL": "0.75"}, serve_port=9)
    assert (s.parity_atol, s.parity_rtol, s.serve_port) == (0.75, 0.25, 9)


def test_default_file_is_all_comments_and_valid(tmp_path: Path) -> None:
    path = write_default_config(tmp_path)
    text = path.read_text()
    assert all(not line.strip() or line.startswith(("#", "[")) for line in text.splitlines())
    assert load_settings(tmp_path, env={}).stages[0] == "prototype"


@pytest.mark.parametrize(
    ("toml", "message"),
    [("[bogus]\n", "unknown section"),
     ("[lockgate]\nnope = 1\n", "unknown key"),
     ('[stages]\norder = ["only"]\n', "at least two"),
     ('[gates]\n"a->b" = ["parity"]\n', "unknown stage"),
     ('[gates]\n"*" = "parity"\n', "list of gate names"),
     ('[gates]\n"*" = [3]\n', "expected a gate name"),
     ('[roles]\napprover = "alice"\n', "list of user names"),
     ("[parity]\natol = 'x'\n", "expected a float"),
     ("[lockgate\n", "lockgate.toml")],
)
def test_bad_config_is_a_config_error(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "lockgate.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, env={})


def test_most_specific_gate_key_wins(tmp_path: Path) -> None:
    (tmp_path / "lockgate.toml").write_text(
        '[gates]\n"*" = ["parity"]\n"stabilized->production" = ["unsafe_allow", "parity"]\n'
    )
    s = load_settings(tmp_path, env={})
    assert [g.name for g in s.gates_for("stabilized", "production")] == ["unsafe_allow",
                                                                          "parity"]
    assert [g.name for g in s.gates_for("prototype", "stabilized")] == ["parity"]


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    for setting in SETTINGS:
        assert re.search(rf"`{setting.key}`", text), f"{setting.key} missing from {DOCS.name}"
        if setting.env != "-":
            assert setting.env in text, f"{setting.env} missing from {DOCS.name}"
