"""Settings: defaults < lockgate.toml < LOCKGATE_* environment < flags, read once at the edge.

Every setting is a row of :data:`SETTINGS` with its name, default and help; a test checks that each
one is documented in docs/configuration.md.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lockgate.errors import ConfigError

__all__ = ["SETTINGS", "Setting", "Settings", "load_settings", "write_default_config"]

CONFIG_FILE = "lockgate.toml"
DEFAULT_STAGES = ("prototype", "stabilized", "production", "archived")


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
    Setting("user", "LOCKGATE_USER", "<login name>", "Who is acting; recorded as creator and in "
            "the audit log."),
    Setting("stages", "LOCKGATE_STAGES", ",".join(DEFAULT_STAGES),
            "Ordered stages a version moves through; the last one is the retirement stage."),
    Setting("exclusive_stages", "LOCKGATE_EXCLUSIVE_STAGES", "production",
            "Stages that hold one version per model; promoting into one retires the previous "
            "holder to the last stage."),
    Setting("stage_aliases", "LOCKGATE_STAGE_ALIASES", "production=champion",
            "Aliases moved to a version when it enters a stage."),
    Setting("gates", "-", '"*" = ["parity"]',
            "Gates per transition, in [gates] as \"from->to\" = [names]; \"*\" matches any."),
    Setting("parity_atol", "LOCKGATE_PARITY_ATOL", "1e-4", "Absolute tolerance for float32 "
            "parity."),
    Setting("parity_rtol", "LOCKGATE_PARITY_RTOL", "1e-3", "Relative tolerance for float32 "
            "parity."),
    Setting("parity_samples", "LOCKGATE_PARITY_SAMPLES", "8",
            "Random inputs checked for parity besides the sample input."),
    Setting("serve_host", "LOCKGATE_SERVE_HOST", "127.0.0.1", "Address the server binds."),
    Setting("serve_port", "LOCKGATE_SERVE_PORT", "8080", "Port the server binds (0: any free)."),
)


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    artifact_root: Path
    user: str
    stages: tuple[str, ...] = DEFAULT_STAGES
    exclusive_stages: tuple[str, ...] = ("production",)
    stage_aliases: Mapping[str, str] = field(default_factory=lambda: {"production": "champion"})
    gates: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"*": ("parity",)})
    parity_atol: float = 1e-4
    parity_rtol: float = 1e-3
    parity_samples: int = 8
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080

    @classmethod
    def for_home(cls, home: Path, **overrides: Any) -> Settings:
        home = home.resolve()
        base = cls(
            home=home,
            database_url=f"sqlite:///{home / 'lockgate.db'}",
            artifact_root=home / "artifacts",
            user=_default_user(),
        )
        return replace(base, **overrides)

    def gates_for(self, from_stage: str, to_stage: str) -> tuple[str, ...]:
        """The gate names configured for a transition; most specific key wins."""
        for key in (f"{from_stage}->{to_stage}", f"*->{to_stage}", f"{from_stage}->*", "*"):
            if key in self.gates:
                return self.gates[key]
        return ()


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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _from_toml(settings: Settings, data: Mapping[str, Any], path: Path) -> Settings:
    known_sections = {"lockgate", "stages", "gates", "parity", "serve"}
    for section in data:
        if section not in known_sections:
            raise ConfigError(
                f"{path}: unknown section [{section}]", hint=f"known: {sorted(known_sections)}"
            )
    s = settings
    core = dict(data.get("lockgate", {}))
    for key in core:
        if key not in ("database_url", "artifact_root", "user"):
            raise ConfigError(f"{path}: unknown key lockgate.{key}")
    if "database_url" in core:
        s = replace(s, database_url=str(core["database_url"]))
    if "artifact_root" in core:
        root = Path(str(core["artifact_root"]))
        s = replace(s, artifact_root=root if root.is_absolute() else s.home / root)
    if "user" in core:
        s = replace(s, user=str(core["user"]))
    stages = data.get("stages", {})
    if "order" in stages:
        s = replace(s, stages=tuple(str(x) for x in stages["order"]))
    if "exclusive" in stages:
        s = replace(s, exclusive_stages=tuple(str(x) for x in stages["exclusive"]))
    if "aliases" in stages:
        s = replace(s, stage_aliases={str(k): str(v) for k, v in stages["aliases"].items()})
    if "gates" in data:
        gates: dict[str, tuple[str, ...]] = dict(s.gates)  # file keys override defaults
        for key, names in data["gates"].items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigError(f"{path}: gates.{key!r} must be a list of gate names")
            gates[str(key)] = tuple(names)
        s = replace(s, gates=gates)
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
    return s


def _from_env(s: Settings, env: Mapping[str, str]) -> Settings:
    if v := env.get("LOCKGATE_DATABASE_URL"):
        s = replace(s, database_url=v)
    if v := env.get("LOCKGATE_ARTIFACT_ROOT"):
        s = replace(s, artifact_root=Path(v))
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
    if s.parity_atol < 0 or s.parity_rtol < 0 or s.parity_samples < 0:
        raise ConfigError("parity tolerances and sample count must not be negative")
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
    flags = {k: v for k, v in flags.items() if v is not None}
    if flags:
        s = replace(s, **flags)
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
# Gates run, in order, for each transition; "*" matches any stage. An empty list is refused.
# "*" = ["parity"]
# "stabilized->production" = ["parity"]

[parity]
# atol = 1e-4      # float32 absolute tolerance
# rtol = 1e-3      # float32 relative tolerance
# samples = 8      # random inputs besides the sample input

[serve]
# host = "127.0.0.1"
# port = 8080
"""


def write_default_config(home: Path) -> Path:
    """Create ``home`` and a commented lockgate.toml in it, unless one exists."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILE
    if not path.exists():
        path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    return path
