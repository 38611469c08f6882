"""Every section of lockgate.toml and of the policy file refuses a key it does not define, naming
the key, its section and the closest valid one; the settings table reads every source."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lockgate.api.facade import Lockgate
from lockgate.cli.demo import DEMO_POLICY
from lockgate.config.kinds import TEXT
from lockgate.config.monitor import DRIFT_METHODS
from lockgate.config.settings import DEFAULT_CONFIG, SETTINGS, Settings, load_settings
from lockgate.config.table import SECTIONS
from lockgate.errors import ConfigError
from lockgate.monitor.stats import METHODS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _refused(home: Path, text: str) -> ConfigError:
    (home / "lockgate.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_settings(home, env={})
    return exc.value


@pytest.mark.parametrize(("toml", "message"), [
    ("[parity]\natoll = 1e-3\n", "unknown key 'atoll' in [parity]; did you mean 'atol'?"),
    ("[serve]\nprot = 9000\n", "unknown key 'prot' in [serve]; did you mean 'port'?"),
    ('[stages]\nexclusiv = ["production"]\n',
     "unknown key 'exclusiv' in [stages]; did you mean 'exclusive'?"),
    ('[lockgate]\ndatabse_url = "sqlite://"\n',
     "unknown key 'databse_url' in [lockgate]; did you mean 'database_url'?"),
    ("[signing]\nrequire_signatur = false\n",
     "unknown key 'require_signatur' in [signing]; did you mean 'require_signature'?"),
    ("[paritty]\natol = 1e-3\n", "unknown section [paritty]; did you mean [parity]?"),
    ("[monitor]\nconsecutiv = 2\n",
     "unknown key 'consecutiv' in [monitor]; did you mean 'consecutive'?"),
    ("[monitor.slo]\nmax_p99 = 20\n",
     "unknown key 'max_p99' in [monitor.slo]; did you mean 'max_p99_ms'?"),
    ('[frameworks]\npytorh = "*"\n', "frameworks.pytorh: unknown framework; did you mean "
                                     "'pytorch'?"),
    ('[gates]\n"*->prodution" = ["parity"]\n',
     "names unknown stage 'prodution'; did you mean 'production'?"),
])
def test_a_typo_is_refused_with_its_section_and_the_closest_key(
        tmp_path: Path, toml: str, message: str) -> None:
    exc = _refused(tmp_path, toml)
    assert message in exc.message
    assert str(tmp_path / "lockgate.toml") in exc.message or "gates key" in exc.message
    assert exc.exit_code == 2


def test_nothing_close_names_no_key_but_lists_them(tmp_path: Path) -> None:
    exc = _refused(tmp_path, "[parity]\nzzz = 1\n")
    assert exc.message.endswith("unknown key 'zzz' in [parity]")
    assert exc.hint == "known: ['atol', 'rtol', 'samples']"


@pytest.mark.parametrize("section", sorted(s for s, keys in SECTIONS.items() if keys))
def test_every_keyed_section_refuses_each_key_misspelt(tmp_path: Path, section: str) -> None:
    for key in sorted(SECTIONS[section]):
        typo = key[:-1]  # the last letter left out
        value = "1" if typo not in SECTIONS[section] else None
        assert value is not None, f"{section}.{typo} is a key of its own"
        exc = _refused(tmp_path, f"[{section}]\n{typo} = {value}\n")
        assert f"unknown key {typo!r} in [{section}]; did you mean {key!r}?" in exc.message


def test_a_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    assert "[parity] must be a table" in _refused(tmp_path, "parity = 3\n").message
    assert "stages.order: expected a list" in _refused(
        tmp_path, '[stages]\norder = "prototype"\n').message
    assert "stages.aliases: expected a table" in _refused(
        tmp_path, '[stages]\naliases = "production"\n').message


def test_a_typo_in_the_policy_file_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[vulnerabilities]\nmax_age_dayz = 7\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'max_age_dayz' in \[vulnerabilities\]; "
                                          r"did you mean 'max_age_days'\?"):
        load_settings(tmp_path, env={"LOCKGATE_POLICY": str(policy)})
    policy.write_text("[parity]\natol = 1.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="a policy file holds only"):
        load_settings(tmp_path, env={"LOCKGATE_POLICY": str(policy)})


@pytest.mark.parametrize(("toml", "message"), [
    ("[gate.aproval]\nrequired = 2\n", r"\[gate\.aproval\]: unknown gate; did you mean "
                                       r"'approval'\?"),
    ('[gates]\n"*" = ["approval"]\n[gate.approval]\nrequird = 2\n',
     r"unknown parameter\(s\) \['requird'\]; did you mean 'required'\?"),
])
def test_a_typo_in_a_gate_section_is_refused_on_open(home: Path, toml: str, message: str
                                                     ) -> None:
    (home / "lockgate.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        Lockgate.open(home)


def test_roles_name_any_role(tmp_path: Path) -> None:
    (tmp_path / "lockgate.toml").write_text('[roles]\nsecurity = ["sam"]\n', encoding="utf-8")
    assert load_settings(tmp_path, env={}).has_role("sam", "security")


def test_the_shipped_files_load(tmp_path: Path) -> None:
    for text in (DEFAULT_CONFIG, DEMO_POLICY):
        (tmp_path / "lockgate.toml").write_text(text, encoding="utf-8")
        s = load_settings(tmp_path, env={})
        assert s.stages[0] == "prototype"
    assert s.roles == {"approver": frozenset({"demo-approver"})}
    assert s.gate_params == {"metrics": {"accuracy": {"threshold": 0.8,
                                                     "greater_is_better": True}}}
    production = [g.name for g in s.gates["*->production"]]
    assert "latency_budget" in production  # with the default budgets
    assert "approval" in production
    assert [d.package for d in s.license_decisions] == ["cvss"]


def test_every_source_reads_through_the_table(tmp_path: Path) -> None:
    (tmp_path / "lockgate.toml").write_text(
        '[lockgate]\nartifact_root = "store"\n[stages]\naliases = { production = "live" }\n'
        '[serve]\nnotify_command = ["/bin/page", "--team", "ml"]\nrequest_log = "rl"\n'
        '[signing]\npublic_keys = ["a.pub", "/abs/b.pub"]\nrequire_signature = false\n'
        '[vulnerabilities]\nmax_severity = "high"\n', encoding="utf-8")
    s = load_settings(tmp_path, env={})
    home = tmp_path.resolve()
    assert s.artifact_root == home / "store"
    assert s.stage_aliases == {"production": "live"}
    assert s.notify_command == ("/bin/page", "--team", "ml")
    assert s.request_log == home / "rl"
    assert s.public_keys == (home / "a.pub", Path("/abs/b.pub"))
    assert (s.require_signature, s.vuln_max_severity) == (False, "HIGH")
    s = load_settings(tmp_path, env={
        "LOCKGATE_STAGE_ALIASES": "production=champion,stabilized=candidate",
        "LOCKGATE_NOTIFY_COMMAND": "notify 'on call'", "LOCKGATE_REQUIRE_SIGNATURE": "1",
        "LOCKGATE_PUBLIC_KEYS": "/k/1.pub, /k/2.pub", "LOCKGATE_SERVE_KEEP_ALIVE_S": "2.5"})
    assert s.stage_aliases == {"production": "champion", "stabilized": "candidate"}
    assert s.notify_command == ("notify", "on call")
    assert s.require_signature is True
    assert s.public_keys == (Path("/k/1.pub"), Path("/k/2.pub"))
    assert s.serve_keep_alive_s == 2.5
    with pytest.raises(ConfigError, match="LOCKGATE_REQUIRE_SIGNATURE: expected true or false"):
        load_settings(tmp_path, env={"LOCKGATE_REQUIRE_SIGNATURE": "maybe"})
    with pytest.raises(ConfigError, match="LOCKGATE_SERVE_PORT: expected a int"):
        load_settings(tmp_path, env={"LOCKGATE_SERVE_PORT": "http"})


def test_the_policy_file_goes_over_the_file_and_the_environment(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[vulnerabilities]\nmax_age_days = 7\n[roles]\napprover = ["ann"]\n',
                      encoding="utf-8")
    (tmp_path / "lockgate.toml").write_text(
        f'[lockgate]\npolicy = "{policy.name}"\n[vulnerabilities]\nmax_age_days = 3\n'
        '[roles]\nauditor = ["al"]\n', encoding="utf-8")
    s = load_settings(tmp_path, env={"LOCKGATE_VULN_MAX_AGE_DAYS": "5"})
    assert s.policy_file == tmp_path.resolve() / "policy.toml"
    assert s.vuln_max_age_days == 7
    assert s.roles == {"auditor": frozenset({"al"}), "approver": frozenset({"ann"})}
    assert load_settings(tmp_path, env={}, vuln_max_age_days=1).vuln_max_age_days == 1


def test_checks_of_final_values_keep_their_messages(tmp_path: Path) -> None:
    for env, message in [
        ({"LOCKGATE_SERVE_PORT": "70000"}, "serve port 70000 is out of range"),
        ({"LOCKGATE_SERVE_AUTH": "basic"}, "serve.auth: expected 'none' or 'token', got 'basic'"),
        ({"LOCKGATE_SERVE_MAX_HEADERS": "0"}, "serve.max_head_bytes must be at least 1024"),
        ({"LOCKGATE_PARITY_SAMPLES": "-1"}, "must not be negative"),
        ({"LOCKGATE_VULN_MAX_SEVERITY": "urgent"}, "'URGENT' is not one of"),
        ({"LOCKGATE_EXCLUSIVE_STAGES": "live"}, "stage 'live' is configured but not in stages"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings(tmp_path, env=env)
    (tmp_path / "lockgate.toml").write_text('[licenses]\nallow = ["MIT"]\ndeny = ["mit"]\n',
                                            encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[licenses\]: license ids both allowed and denied"):
        load_settings(tmp_path, env={})


def test_an_unknown_flag_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="did you mean 'serve_port'"):
        load_settings(tmp_path, env={}, serve_prot=1)


def test_the_table_has_one_row_per_setting_and_its_documented_defaults() -> None:
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(row.key for row in SETTINGS) == sorted(fields)
    defaults = Settings.for_home(Path("/h"))
    for row in SETTINGS:
        if row.key == "home" or row.env == "-" or row.default == "-" or "<" in row.default:
            continue
        read = row.kind.env(row.default, row.env)
        if row.kind is not TEXT:
            assert read == getattr(defaults, row.key), row.key
        else:
            assert row.default == getattr(defaults, row.key), row.key


def test_every_file_key_is_documented_where_its_setting_is() -> None:
    lines = {line.split("|")[1].strip(" `"): line for line in DOCS.read_text().splitlines()
             if line.startswith("| `")}
    for row in SETTINGS:
        if row.file == "-":
            continue
        shown = f"`[{row.section}] {row.name}" if row.name else f"`[{row.section}"
        assert shown in lines[row.key], f"{row.key}: {shown} missing from {DOCS.name}"


def test_drift_methods_are_the_monitors() -> None:
    assert DRIFT_METHODS == METHODS
