"""Settings: defaults < lockgate.toml < LOCKGATE_* environment < flags, read once at the edge.

Every setting is a row of :data:`SETTINGS` with its name, default and help; a test checks that each
one is documented in docs/configuration.md.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from lockgate.errors import ConfigError, InvalidInputError

__all__ = [
    "SETTINGS",
    "Setting",
    "Settings",
    "VulnAllow",
    "load_settings",
    "write_default_config",
]

CONFIG_FILE = "lockgate.toml"
DEFAULT_STAGES = ("prototype", "stabilized", "production", "archived")
SEVERITIES = ("NONE", "LOW", "MODERATE", "HIGH", "CRITICAL")


@dataclass(frozen=True)
class Setting:
    key: str
    env: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("home", "LOCKGATE_HOME", "./.lockgate", "Folder holding lockgate.toml, the database "
            "and the artifact store."),
    Setting("database_url", "LOCKGATE_DATABASE_URL", "sqlite:///<home>/lockgate.db",
            "SQLAlchemy URL of the metadata store."),
    Setting("artifact_root", "LOCKGATE_ARTIFACT_ROOT", "<home>/artifacts",
            "Folder of the content-addressed artifact store."),
    Setting("artifact_url", "LOCKGATE_ARTIFACT_URL", "-",
            "s3://bucket/prefix: keep artifacts in S3-compatible storage instead of "
            "artifact_root."),
    Setting("s3_endpoint_url", "LOCKGATE_S3_ENDPOINT_URL", "-",
            "Endpoint of the S3-compatible service (MinIO, Ceph, ...); unset: AWS."),
    Setting("user", "LOCKGATE_USER", "<login name>", "Who is acting; recorded as creator and in "
            "the audit log."),
    Setting("stages", "LOCKGATE_STAGES", ",".join(DEFAULT_STAGES),
            "Ordered stages a version moves through; the last one is the retirement stage."),
    Setting("exclusive_stages", "LOCKGATE_EXCLUSIVE_STAGES", "production",
            "Stages that hold one version per model; promoting into one retires the previous "
            "holder to the last stage."),
    Setting("stage_aliases", "LOCKGATE_STAGE_ALIASES", "production=champion",
            "Aliases moved to a version when it enters a stage."),
    Setting("gates", "-", "(the seed's policy)",
            "Gates per transition, in [gates] as \"from->to\" = [gate, ...]; \"*\" matches any. "
            "A [gates] table replaces the default policy."),
    Setting("gate_params", "-", "(each gate's defaults)",
            "Parameters per gate, in [gate.<name>] tables; an inline entry in [gates] overrides."),
    Setting("roles", "-", "{}", "Users per role, in [roles] as role = [users]; `approver` signs "
            "off approvals and waivers."),
    Setting("policy_file", "LOCKGATE_POLICY", "-",
            "A separate TOML policy file ([gates], [gate.*], [roles], [vulnerabilities], "
            "[licenses]) applied over lockgate.toml."),
    Setting("frameworks", "-", "{} (any)",
            "Allowed training frameworks and version ranges, in [frameworks] as name = "
            "\"range\"; once non-empty, unlisted frameworks are refused."),
    Setting("parity_atol", "LOCKGATE_PARITY_ATOL", "1e-4", "Absolute tolerance for float32 "
            "parity."),
    Setting("parity_rtol", "LOCKGATE_PARITY_RTOL", "1e-3", "Relative tolerance for float32 "
            "parity."),
    Setting("parity_samples", "LOCKGATE_PARITY_SAMPLES", "8",
            "Random inputs checked for parity besides the sample input."),
    Setting("signing_key", "LOCKGATE_SIGNING_KEY", "<home>/keys/signing.key",
            "Private EC P-256 key (PEM) that signs every new version; created by `lockgate init` "
            "when missing."),
    Setting("public_keys", "LOCKGATE_PUBLIC_KEYS", "<home>/keys/signing.pub",
            "Public keys (PEM) trusted to verify versions at load and serve time; "
            "comma-separated in the environment."),
    Setting("require_signature", "LOCKGATE_REQUIRE_SIGNATURE", "true",
            "Refuse to load or serve a version without a valid signature."),
    Setting("vuln_max_severity", "LOCKGATE_VULN_MAX_SEVERITY", "MODERATE",
            "Highest vulnerability severity the vulnerabilities gate lets through."),
    Setting("vuln_max_age_days", "LOCKGATE_VULN_MAX_AGE_DAYS", "30",
            "Oldest vulnerability snapshot (days since its newest record) the gate accepts."),
    Setting("vuln_allow", "-", "[]",
            "Allow-listed vulnerability ids, each with an expiry date and a reason."),
    Setting("license_allow", "-", "(permissive SPDX ids)",
            "SPDX license ids the licenses gate allows."),
    Setting("license_deny", "-", "(network copyleft ids)",
            "SPDX license ids the licenses gate refuses."),
    Setting("environment_drift", "LOCKGATE_ENVIRONMENT_DRIFT", "warn",
            "What serving does when ONNX Runtime, providers or CUDA/cuDNN differ from the "
            "registered environment: warn or refuse."),
    Setting("serve_host", "LOCKGATE_SERVE_HOST", "127.0.0.1", "Address the server binds."),
    Setting("serve_port", "LOCKGATE_SERVE_PORT", "8080", "Port the server binds (0: any free)."),
    Setting("serve_max_head_bytes", "LOCKGATE_SERVE_MAX_HEAD_BYTES", "65536",
            "Largest request line plus headers the HTTP servers accept (431 beyond)."),
    Setting("serve_max_headers", "LOCKGATE_SERVE_MAX_HEADERS", "100",
            "Most header fields in one request (431 beyond)."),
    Setting("serve_head_timeout_s", "LOCKGATE_SERVE_HEAD_TIMEOUT_S", "10",
            "Seconds from a request head's first byte to its end (408 and close beyond)."),
    Setting("serve_body_timeout_s", "LOCKGATE_SERVE_BODY_TIMEOUT_S", "30",
            "Seconds a request body may take, plus one per serve_min_body_rate bytes received "
            "(408 and close beyond)."),
    Setting("serve_min_body_rate", "LOCKGATE_SERVE_MIN_BODY_RATE", "65536",
            "Bytes per second that buy a request body one more second (0: the body must "
            "arrive within serve_body_timeout_s)."),
    Setting("serve_keep_alive_s", "LOCKGATE_SERVE_KEEP_ALIVE_S", "5",
            "Seconds an idle connection stays open between requests."),
    Setting("serve_max_connections", "LOCKGATE_SERVE_MAX_CONNECTIONS", "1024",
            "Most open connections per server; beyond it a new one is closed at once."),
    Setting("serve_decode_budget", "LOCKGATE_SERVE_DECODE_BUDGET", "268435456",
            "Bytes of memory the server spends on large infer requests at once, all "
            "together (503 with Retry-After beyond; 413 for one body that alone exceeds it)."),
    Setting("serve_max_elements", "LOCKGATE_SERVE_MAX_ELEMENTS", "67108864",
            "Tensor elements one infer request may carry, all inputs together (400 beyond)."),
    Setting("serve_auth", "LOCKGATE_SERVE_AUTH", "none",
            "Data plane authentication: none, or token (infer needs a token with the "
            "inference role). Capture always needs the monitoring role once the home has "
            "users."),
    Setting("capture_window", "LOCKGATE_CAPTURE_WINDOW", "5000",
            "Rows and requests each served version keeps for drift monitors (0: no capture)."),
    Setting("request_log", "LOCKGATE_REQUEST_LOG", "-",
            "Folder for sampled request logs (inputs and outputs); unset: none are written."),
    Setting("request_log_rate", "LOCKGATE_REQUEST_LOG_RATE", "0.01",
            "Share of requests written to the request log."),
    Setting("request_log_format", "LOCKGATE_REQUEST_LOG_FORMAT", "jsonl",
            "Request log format: jsonl, or parquet (needs lockgate[parquet])."),
    Setting("monitor", "-", "(see docs)",
            "Drift and SLO monitor policy in [monitor], [monitor.slo], [monitor.trigger], "
            "[monitor.rollback]; per model in [monitor.models.<name>]."),
    Setting("notify_command", "LOCKGATE_NOTIFY_COMMAND", "-",
            "Command run with a deployment incident (automatic rollback, failed load) as JSON "
            "on stdin."),
)


@dataclass(frozen=True)
class VulnAllow:
    """An accepted vulnerability: its id, until when, and why."""

    id: str
    expires: date
    reason: str


@dataclass(frozen=True)
class GateSpec:
    """One gate in a transition's list, with the parameters given there."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.name, **dict(self.params)}


def _specs(*names: str) -> tuple[GateSpec, ...]:
    return tuple(GateSpec(n) for n in names)


SEED_POLICY: Mapping[str, tuple[GateSpec, ...]] = {
    "prototype->stabilized": _specs("parity", "pinned_dependencies", "seeds_recorded",
                                    "reproducible"),
    "*->production": _specs("parity", "sbom_valid", "signature", "vulnerabilities", "licenses",
                            "metrics", "infra_validation", "latency_budget", "approval",
                            "rollback_ready"),
    "*": _specs("parity"),
}
"""The default policy, after the seed article: Stabilization needs pinned dependencies, recorded
seeds and reproducibility; Production needs the supply chain, metrics against the champion,
infrastructure validation, a latency budget, approval and a rollback plan."""


def default_gates(stages: Sequence[str]) -> dict[str, tuple[GateSpec, ...]]:
    """:data:`SEED_POLICY` less the keys naming stages that are not configured."""
    out = {}
    for key, specs in SEED_POLICY.items():
        src, _, dst = key.partition("->")
        if all(st in ("*", "") or st in stages for st in (src, dst)):
            out[key] = specs
    return out


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    artifact_root: Path
    user: str
    artifact_url: str | None = None
    s3_endpoint_url: str | None = None
    stages: tuple[str, ...] = DEFAULT_STAGES
    exclusive_stages: tuple[str, ...] = ("production",)
    stage_aliases: Mapping[str, str] = field(default_factory=lambda: {"production": "champion"})
    gates: Mapping[str, tuple[GateSpec, ...]] = field(
        default_factory=lambda: default_gates(DEFAULT_STAGES))
    gate_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    policy_file: Path | None = None
    parity_atol: float = 1e-4
    parity_rtol: float = 1e-3
    parity_samples: int = 8
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080
    serve_max_head_bytes: int = 65536
    serve_max_headers: int = 100
    serve_head_timeout_s: float = 10.0
    serve_body_timeout_s: float = 30.0
    serve_min_body_rate: int = 65536
    serve_keep_alive_s: float = 5.0
    serve_max_connections: int = 1024
    serve_decode_budget: int = 256 << 20
    serve_max_elements: int = 1 << 26
    serve_auth: str = "none"
    signing_key: Path | None = None
    public_keys: tuple[Path, ...] = ()
    require_signature: bool = True
    vuln_max_severity: str = "MODERATE"
    vuln_max_age_days: int = 30
    vuln_allow: tuple[VulnAllow, ...] = ()
    license_allow: frozenset[str] | None = None
    license_deny: frozenset[str] | None = None
    environment_drift: str = "warn"
    notify_command: tuple[str, ...] = ()
    capture_window: int = 5000
    request_log: Path | None = None
    request_log_rate: float = 0.01
    request_log_format: str = "jsonl"
    monitor: Mapping[str, Any] = field(default_factory=dict)
    frameworks: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_home(cls, home: Path, **overrides: Any) -> Settings:
        home = home.resolve()
        base = cls(
            home=home,
            database_url=f"sqlite:///{home / 'lockgate.db'}",
            artifact_root=home / "artifacts",
            user=_default_user(),
            signing_key=home / "keys" / "signing.key",
            public_keys=(home / "keys" / "signing.pub",),
        )
        return replace(base, **overrides)

    def gates_for(self, from_stage: str, to_stage: str) -> tuple[GateSpec, ...]:
        """The gates configured for a transition (most specific key wins), each with its
        [gate.<name>] parameters under the ones given inline."""
        key = self.gate_key(from_stage, to_stage)
        if key is None:
            return ()
        return tuple(GateSpec(g.name, {**self.gate_params.get(g.name, {}), **g.params})
                     for g in self.gates[key])

    def gate_key(self, from_stage: str, to_stage: str) -> str | None:
        for key in (f"{from_stage}->{to_stage}", f"*->{to_stage}", f"{from_stage}->*", "*"):
            if key in self.gates:
                return key
        return None

    def has_role(self, user: str, role: str) -> bool:
        return user in self.roles.get(role, frozenset())


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _split(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _pairs(text: str, key: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _split(text):
        k, sep, v = item.partition("=")
        if not sep:
            raise ConfigError(f"{key}: expected stage=alias pairs, got {item!r}")
        out[k.strip()] = v.strip()
    return out


def _number(value: Any, key: str, kind: type[float] | type[int]) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a {kind.__name__}, got {value!r}") from None


_HTTP_LIMITS: dict[str, type[int] | type[float]] = {
    "max_head_bytes": int, "max_headers": int, "head_timeout_s": float,
    "body_timeout_s": float, "min_body_rate": int, "keep_alive_s": float,
    "max_connections": int, "decode_budget": int, "max_elements": int}
"""[serve] keys of the HTTP limits (settings serve_<key>, LOCKGATE_SERVE_<KEY>)."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _from_toml(settings: Settings, data: Mapping[str, Any], path: Path) -> Settings:
    known_sections = {"lockgate", "stages", "gates", "gate", "roles", "parity", "serve",
                      "signing", "vulnerabilities", "licenses", "monitor", "frameworks"}
    for section in data:
        if section not in known_sections:
            raise ConfigError(
                f"{path}: unknown section [{section}]", hint=f"known: {sorted(known_sections)}"
            )
    s = settings
    core = dict(data.get("lockgate", {}))
    for key in core:
        if key not in ("database_url", "artifact_root", "artifact_url", "s3_endpoint_url",
                       "user", "policy"):
            raise ConfigError(f"{path}: unknown key lockgate.{key}")
    if "policy" in core:
        s = replace(s, policy_file=_path(core["policy"], "lockgate.policy", s.home))
    if "database_url" in core:
        s = replace(s, database_url=str(core["database_url"]))
    if "artifact_root" in core:
        root = Path(str(core["artifact_root"]))
        s = replace(s, artifact_root=root if root.is_absolute() else s.home / root)
    if "user" in core:
        s = replace(s, user=str(core["user"]))
    if "artifact_url" in core:
        s = replace(s, artifact_url=str(core["artifact_url"]))
    if "s3_endpoint_url" in core:
        s = replace(s, s3_endpoint_url=str(core["s3_endpoint_url"]))
    stages = data.get("stages", {})
    if "order" in stages:
        s = replace(s, stages=tuple(str(x) for x in stages["order"]))
    if "exclusive" in stages:
        s = replace(s, exclusive_stages=tuple(str(x) for x in stages["exclusive"]))
    if "aliases" in stages:
        s = replace(s, stage_aliases={str(k): str(v) for k, v in stages["aliases"].items()})
    s = _policy_from_toml(s, data, path)
    parity = data.get("parity", {})
    if "atol" in parity:
        s = replace(s, parity_atol=_number(parity["atol"], "parity.atol", float))
    if "rtol" in parity:
        s = replace(s, parity_rtol=_number(parity["rtol"], "parity.rtol", float))
    if "samples" in parity:
        s = replace(s, parity_samples=_number(parity["samples"], "parity.samples", int))
    serve = data.get("serve", {})
    if "host" in serve:
        s = replace(s, serve_host=str(serve["host"]))
    if "port" in serve:
        s = replace(s, serve_port=_number(serve["port"], "serve.port", int))
    for key, kind in _HTTP_LIMITS.items():
        if key in serve:
            s = replace(s, **{f"serve_{key}": _number(serve[key], f"serve.{key}", kind)})
    if "auth" in serve:
        s = replace(s, serve_auth=str(serve["auth"]))
    if "environment_drift" in serve:
        s = replace(s, environment_drift=str(serve["environment_drift"]))
    if "notify_command" in serve:
        cmd = serve["notify_command"]
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise ConfigError(f"{path}: serve.notify_command must be a list of strings, e.g. "
                              '["/usr/local/bin/page-oncall", "--team", "ml"]')
        s = replace(s, notify_command=tuple(cmd))
    if "capture_window" in serve:
        s = replace(s, capture_window=_number(serve["capture_window"], "serve.capture_window",
                                              int))
    if "request_log" in serve:
        s = replace(s, request_log=_path(serve["request_log"], "serve.request_log", s.home))
    if "request_log_rate" in serve:
        s = replace(s, request_log_rate=_number(serve["request_log_rate"],
                                                "serve.request_log_rate", float))
    if "request_log_format" in serve:
        s = replace(s, request_log_format=str(serve["request_log_format"]))
    return _supply_chain_from_toml(s, data, path)


POLICY_SECTIONS = frozenset({"gates", "gate", "roles", "vulnerabilities", "licenses",
                             "monitor", "frameworks"})


def _policy_from_toml(s: Settings, data: Mapping[str, Any], path: Path) -> Settings:
    """[gates] (replaces the whole default policy; an empty table, as the commented default
    file has, changes nothing), [gate.<name>] and [roles]."""
    if data.get("gates"):
        table = data["gates"]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [gates] must be a table of \"from->to\" = [gates]")
        gates: dict[str, tuple[GateSpec, ...]] = {}
        for key, entries in table.items():
            where = f"{path}: gates.\"{key}\""
            if not isinstance(entries, list):
                raise ConfigError(f"{where}: expected a list of gate names or "
                                  "{ gate = \"name\", ... } tables")
            specs = []
            for i, entry in enumerate(entries):
                if isinstance(entry, str):
                    specs.append(GateSpec(entry))
                elif isinstance(entry, dict) and isinstance(entry.get("gate"), str):
                    params = {k: v for k, v in entry.items() if k != "gate"}
                    specs.append(GateSpec(entry["gate"], params))
                else:
                    raise ConfigError(f"{where}[{i}]: expected a gate name or a table with "
                                      f"gate = \"name\", got {entry!r}")
            gates[str(key)] = tuple(specs)
        s = replace(s, gates=gates)
    if "gate" in data:
        params = data["gate"]
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise ConfigError(f"{path}: [gate.<name>] sections must be tables of parameters")
        s = replace(s, gate_params={**s.gate_params, **{str(k): dict(v)
                                                         for k, v in params.items()}})
    if "roles" in data:
        roles = data["roles"]
        out: dict[str, frozenset[str]] = dict(s.roles)
        for role, users in roles.items():
            if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
                raise ConfigError(f"{path}: roles.{role}: expected a list of user names")
            out[str(role)] = frozenset(users)
        s = replace(s, roles=out)
    if "monitor" in data:
        from lockgate.monitor.policy import check_monitor_config

        s = replace(s, monitor=check_monitor_config(data["monitor"], str(path)))
    if "frameworks" in data:
        from lockgate.convert.frameworks import check_framework_config

        s = replace(s, frameworks=check_framework_config(data["frameworks"], str(path)))
    return s


def _read_policy_file(s: Settings, path: Path) -> Settings:
    data = _read_toml(path)
    unknown = sorted(set(data) - POLICY_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: a policy file holds only {sorted(POLICY_SECTIONS)}; "
                          f"found {unknown}")
    s = _policy_from_toml(s, data, path)
    return _supply_chain_from_toml(s, data, path)


def _path(value: Any, key: str, home: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path")
    p = Path(value).expanduser()
    return p if p.is_absolute() else home / p


def _ids(value: Any, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"{key}: expected a list of SPDX license ids")
    return frozenset(value)


def _allow_entry(item: Any, index: int) -> VulnAllow:
    key = f"vulnerabilities.allow[{index}]"
    if not isinstance(item, dict) or set(item) != {"id", "expires", "reason"}:
        raise ConfigError(f"{key}: expected {{ id = ..., expires = YYYY-MM-DD, reason = ... }}")
    expires = item["expires"]
    if isinstance(expires, str):
        try:
            expires = date.fromisoformat(expires)
        except ValueError:
            raise ConfigError(f"{key}.expires: not a date: {expires!r}") from None
    if not isinstance(expires, date):
        raise ConfigError(f"{key}.expires: not a date: {expires!r}")
    if not str(item["reason"]).strip():
        raise ConfigError(f"{key}.reason: say why the vulnerability is accepted")
    return VulnAllow(str(item["id"]), expires, str(item["reason"]))


def _supply_chain_from_toml(s: Settings, data: Mapping[str, Any], path: Path) -> Settings:
    known = {"signing": {"private_key", "public_keys", "require_signature"},
             "vulnerabilities": {"max_severity", "max_age_days", "allow"},
             "licenses": {"allow", "deny"}}
    for section, keys in known.items():
        for key in data.get(section, {}):
            if key not in keys:
                raise ConfigError(f"{path}: unknown key {section}.{key}",
                                  hint=f"known: {sorted(keys)}")
    signing = data.get("signing", {})
    if "private_key" in signing:
        s = replace(s, signing_key=_path(signing["private_key"], "signing.private_key", s.home))
    if "public_keys" in signing:
        keys_value = signing["public_keys"]
        if not isinstance(keys_value, list):
            raise ConfigError("signing.public_keys: expected a list of paths")
        s = replace(s, public_keys=tuple(
            _path(k, "signing.public_keys", s.home) for k in keys_value))
    if "require_signature" in signing:
        if not isinstance(signing["require_signature"], bool):
            raise ConfigError("signing.require_signature: expected true or false")
        s = replace(s, require_signature=signing["require_signature"])
    vulns = data.get("vulnerabilities", {})
    if "max_severity" in vulns:
        s = replace(s, vuln_max_severity=str(vulns["max_severity"]).upper())
    if "max_age_days" in vulns:
        s = replace(s, vuln_max_age_days=_number(vulns["max_age_days"],
                                                  "vulnerabilities.max_age_days", int))
    if "allow" in vulns:
        if not isinstance(vulns["allow"], list):
            raise ConfigError("vulnerabilities.allow: expected a list of tables")
        s = replace(s, vuln_allow=tuple(_allow_entry(x, i) for i, x in enumerate(vulns["allow"])))
    lic = data.get("licenses", {})
    if "allow" in lic:
        s = replace(s, license_allow=_ids(lic["allow"], "licenses.allow"))
    if "deny" in lic:
        s = replace(s, license_deny=_ids(lic["deny"], "licenses.deny"))
    if lic:
        from lockgate.supplychain.licenses import policy_for

        try:
            policy_for(s.license_allow, s.license_deny)
        except InvalidInputError as exc:
            raise ConfigError(f"[licenses]: {exc.message}", hint=exc.hint) from None
    return s


def _from_env(s: Settings, env: Mapping[str, str]) -> Settings:
    if v := env.get("LOCKGATE_DATABASE_URL"):
        s = replace(s, database_url=v)
    if v := env.get("LOCKGATE_ARTIFACT_ROOT"):
        s = replace(s, artifact_root=Path(v))
    if v := env.get("LOCKGATE_ARTIFACT_URL"):
        s = replace(s, artifact_url=v)
    if v := env.get("LOCKGATE_S3_ENDPOINT_URL"):
        s = replace(s, s3_endpoint_url=v)
    if v := env.get("LOCKGATE_USER"):
        s = replace(s, user=v)
    if v := env.get("LOCKGATE_STAGES"):
        s = replace(s, stages=_split(v))
    if v := env.get("LOCKGATE_EXCLUSIVE_STAGES"):
        s = replace(s, exclusive_stages=_split(v))
    if v := env.get("LOCKGATE_STAGE_ALIASES"):
        s = replace(s, stage_aliases=_pairs(v, "LOCKGATE_STAGE_ALIASES"))
    if v := env.get("LOCKGATE_PARITY_ATOL"):
        s = replace(s, parity_atol=_number(v, "LOCKGATE_PARITY_ATOL", float))
    if v := env.get("LOCKGATE_PARITY_RTOL"):
        s = replace(s, parity_rtol=_number(v, "LOCKGATE_PARITY_RTOL", float))
    if v := env.get("LOCKGATE_PARITY_SAMPLES"):
        s = replace(s, parity_samples=_number(v, "LOCKGATE_PARITY_SAMPLES", int))
    if v := env.get("LOCKGATE_SERVE_HOST"):
        s = replace(s, serve_host=v)
    if v := env.get("LOCKGATE_SERVE_PORT"):
        s = replace(s, serve_port=_number(v, "LOCKGATE_SERVE_PORT", int))
    if v := env.get("LOCKGATE_SERVE_AUTH"):
        s = replace(s, serve_auth=v)
    for key, kind in _HTTP_LIMITS.items():
        name = f"LOCKGATE_SERVE_{key.upper()}"
        if v := env.get(name):
            s = replace(s, **{f"serve_{key}": _number(v, name, kind)})
    if v := env.get("LOCKGATE_SIGNING_KEY"):
        s = replace(s, signing_key=Path(v).expanduser())
    if v := env.get("LOCKGATE_PUBLIC_KEYS"):
        s = replace(s, public_keys=tuple(Path(p).expanduser() for p in _split(v)))
    if v := env.get("LOCKGATE_REQUIRE_SIGNATURE"):
        if v.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"LOCKGATE_REQUIRE_SIGNATURE: expected true or false, got {v!r}")
        s = replace(s, require_signature=v.lower() in ("true", "1"))
    if v := env.get("LOCKGATE_VULN_MAX_SEVERITY"):
        s = replace(s, vuln_max_severity=v.upper())
    if v := env.get("LOCKGATE_VULN_MAX_AGE_DAYS"):
        s = replace(s, vuln_max_age_days=_number(v, "LOCKGATE_VULN_MAX_AGE_DAYS", int))
    if v := env.get("LOCKGATE_ENVIRONMENT_DRIFT"):
        s = replace(s, environment_drift=v)
    if v := env.get("LOCKGATE_CAPTURE_WINDOW"):
        s = replace(s, capture_window=_number(v, "LOCKGATE_CAPTURE_WINDOW", int))
    if v := env.get("LOCKGATE_REQUEST_LOG"):
        s = replace(s, request_log=Path(v).expanduser())
    if v := env.get("LOCKGATE_REQUEST_LOG_RATE"):
        s = replace(s, request_log_rate=_number(v, "LOCKGATE_REQUEST_LOG_RATE", float))
    if v := env.get("LOCKGATE_REQUEST_LOG_FORMAT"):
        s = replace(s, request_log_format=v)
    if v := env.get("LOCKGATE_NOTIFY_COMMAND"):
        import shlex

        s = replace(s, notify_command=tuple(shlex.split(v)))
    return s


def _validate(s: Settings) -> Settings:
    if len(s.stages) < 2 or len(set(s.stages)) != len(s.stages):
        raise ConfigError(f"stages must be at least two distinct names, got {list(s.stages)}")
    for name in (*s.exclusive_stages, *s.stage_aliases):
        if name not in s.stages:
            raise ConfigError(f"stage {name!r} is configured but not in stages {list(s.stages)}")
    for key in s.gates:
        if key == "*":
            continue
        src, sep, dst = key.partition("->")
        if not sep:
            raise ConfigError(f"gates key {key!r} must look like 'from->to' or '*'")
        for st in (src, dst):
            if st != "*" and st not in s.stages:
                raise ConfigError(f"gates key {key!r} names unknown stage {st!r}")
    if not 0 <= s.serve_port <= 65535:
        raise ConfigError(f"serve port {s.serve_port} is out of range")
    if s.serve_max_head_bytes < 1024 or s.serve_max_headers < 1 or s.serve_max_connections < 1:
        raise ConfigError("serve.max_head_bytes must be at least 1024, serve.max_headers and "
                          "serve.max_connections at least 1")
    if s.serve_decode_budget < 1 << 20 or s.serve_max_elements < 1:
        raise ConfigError("serve.decode_budget must be at least 1 MiB (1048576), "
                          "serve.max_elements at least 1")
    if s.serve_auth not in ("none", "token"):
        raise ConfigError(f"serve.auth: expected 'none' or 'token', got {s.serve_auth!r}")
    if min(s.serve_head_timeout_s, s.serve_body_timeout_s, s.serve_keep_alive_s) <= 0 or \
            s.serve_min_body_rate < 0:
        raise ConfigError("serve.head_timeout_s, serve.body_timeout_s and serve.keep_alive_s "
                          "must be positive, serve.min_body_rate not negative")
    if s.parity_atol < 0 or s.parity_rtol < 0 or s.parity_samples < 0:
        raise ConfigError("parity tolerances and sample count must not be negative")
    if s.vuln_max_severity not in SEVERITIES:
        raise ConfigError(f"vulnerabilities.max_severity: {s.vuln_max_severity!r} is not one of "
                          f"{list(SEVERITIES)}")
    if s.environment_drift not in ("warn", "refuse"):
        raise ConfigError(f"serve.environment_drift: expected 'warn' or 'refuse', got "
                          f"{s.environment_drift!r}")
    if s.vuln_max_age_days < 0:
        raise ConfigError("vulnerabilities.max_age_days must not be negative")
    return s


def load_settings(
    home: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Build settings from defaults, ``<home>/lockgate.toml``, the environment and ``flags``."""
    env = os.environ if env is None else env
    home_path = Path(home) if home is not None else Path(env.get("LOCKGATE_HOME", ".lockgate"))
    s = Settings.for_home(home_path)
    cfg = s.home / CONFIG_FILE
    if cfg.is_file():
        s = _from_toml(s, _read_toml(cfg), cfg)
    s = _from_env(s, env)
    if v := env.get("LOCKGATE_POLICY"):
        s = replace(s, policy_file=Path(v).expanduser().resolve())
    if s.policy_file is not None:
        if not s.policy_file.is_file():
            raise ConfigError(f"policy file {s.policy_file} does not exist")
        s = _read_policy_file(s, s.policy_file)
    flags = {k: v for k, v in flags.items() if v is not None}
    if flags:
        s = replace(s, **flags)
    if s.stages != DEFAULT_STAGES and s.gates == default_gates(DEFAULT_STAGES):
        s = replace(s, gates=default_gates(s.stages))  # the default policy, for these stages
    return _validate(s)


DEFAULT_CONFIG = """\
# lockgate configuration. Precedence: defaults < this file < LOCKGATE_* variables < CLI flags.
# Every key is optional; the values shown commented out are the defaults.

[lockgate]
# database_url = "sqlite:///<home>/lockgate.db"   # or postgresql+psycopg://user@host/db
# artifact_root = "artifacts"                     # relative to this folder
# user = "<login name>"                           # recorded as creator and audit actor

[stages]
# order = ["prototype", "stabilized", "production", "archived"]
# exclusive = ["production"]             # one version per model; the previous one is archived
# aliases = { production = "champion" }  # alias moved along when a version enters the stage

[gates]
# Gates run, in order, for each transition; "*" matches any stage; the most specific key wins.
# A [gates] table here replaces the whole default policy, shown below. An empty list is refused.
# "prototype->stabilized" = ["parity", "pinned_dependencies", "seeds_recorded", "reproducible"]
# "*->production" = ["parity", "sbom_valid", "signature", "vulnerabilities", "licenses",
#                    "metrics", "infra_validation", "latency_budget", "approval", "rollback_ready"]
# "*" = ["parity"]
# An entry may carry parameters for this transition only:
#   { gate = "latency_budget", p99_ms = 20 }

# [gate.metrics]                 # parameters per gate (`lockgate policy show` lists them all)
# accuracy = { threshold = 0.8, min_absolute_change = 0.0, greater_is_better = true }
# [gate.approval]
# required = 1

[roles]
# approver = ["alice", "bob"]    # who may approve, reject and waive

[parity]
# atol = 1e-4      # float32 absolute tolerance
# rtol = 1e-3      # float32 relative tolerance
# samples = 8      # random inputs besides the sample input

[serve]
# host = "127.0.0.1"
# port = 8080
# environment_drift = "warn"   # or "refuse": ONNX Runtime/provider/CUDA differs from registration
# notify_command = ["/usr/local/bin/notify-oncall"]   # gets incidents as JSON on stdin
# max_head_bytes = 65536       # request line + headers (431 beyond)
# max_headers = 100            # header fields per request (431 beyond)
# head_timeout_s = 10          # first byte of a head to its end (408 beyond)
# body_timeout_s = 30          # a body's time, plus 1 s per min_body_rate bytes (408 beyond)
# min_body_rate = 65536        # bytes per second
# keep_alive_s = 5             # idle time between requests
# max_connections = 1024       # a new connection beyond it is closed at once
# decode_budget = 268435456    # bytes spent on large requests at once (503 Retry-After beyond)
# max_elements = 67108864      # tensor elements per infer request (400 beyond)
# auth = "none"                # or "token": infer needs a token with the inference role
# capture_window = 5000        # rows and requests kept per version for drift monitors
# request_log = "request-log"  # folder for sampled request logs
# request_log_rate = 0.01
# request_log_format = "jsonl" # or "parquet"

[frameworks]
# pytorch = ">=2.4,<3"           # once anything is listed, unlisted frameworks are refused
# keras = ">=3.5"
# jax = ">=0.5"
# scikit-learn = "*"
# onnx = "*"                     # ready-made ONNX files

[monitor]
# min_rows = 100               # a monitor window with fewer rows is not judged
# drift_share = 0.5            # dataset drift when this share of features drifted
# consecutive = 3              # windows of drift in a row before a retraining trigger
# [monitor.slo]
# max_error_rate = 0.05
# max_p99_ms = 250
# [monitor.trigger]
# webhook = "https://ci.example.com/hooks/retrain"   # Standard Webhooks, secret in secret_env
# secret_env = "LOCKGATE_WEBHOOK_SECRET"
# command = ["/usr/local/bin/start-retraining"]      # gets the CloudEvent on stdin
# [monitor.rollback]
# on_slo_breach = false        # true: roll back to the previous production version

[signing]
# private_key = "keys/signing.key"         # EC P-256 PEM; `lockgate init` creates one if missing
# public_keys = ["keys/signing.pub"]       # keys trusted at load and serve time
# require_signature = true                 # unsigned or unverifiable versions are not served

[vulnerabilities]
# max_severity = "MODERATE"     # NONE, LOW, MODERATE, HIGH, CRITICAL; unknown counts as CRITICAL
# max_age_days = 30             # refuse a vulnerability snapshot older than this
# allow = [ { id = "GHSA-xxxx-xxxx-xxxx", expires = 2027-01-31, reason = "not reachable" } ]

[licenses]
# allow = ["MIT", "BSD-3-Clause", "Apache-2.0"]   # default: common permissive licenses
# deny = ["AGPL-3.0-only", "SSPL-1.0"]            # default: network copyleft
"""


def write_default_config(home: Path) -> Path:
    """Create ``home`` and a commented lockgate.toml in it, unless one exists."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILE
    if not path.exists():
        path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    return path
