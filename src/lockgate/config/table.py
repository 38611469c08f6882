"""The settings table: one :class:`Setting` row per field of
:class:`~lockgate.config.values.Settings`, saying where it is read (its key in lockgate.toml, its
``LOCKGATE_*`` variable), how (its :class:`~lockgate.config.kinds.Kind`), its documented default,
its help and the check of its final value. :mod:`lockgate.config.load` reads every source from
these rows, and a test checks that each row is documented in docs/configuration.md, so a new
setting is a field of Settings and a row here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lockgate.config.checks import (
    Check,
    at_least,
    check_gate_keys,
    check_port,
    check_severity,
    check_stages,
    in_stages,
    one_of,
    positive,
)
from lockgate.config.environment import check_drift_ignore
from lockgate.config.kinds import (
    BOOL,
    COMMAND,
    FILE,
    FILES,
    FLOAT,
    FOLDER,
    INT,
    NAMES,
    PAIRS,
    POLICY_FILE,
    PROVIDERS,
    TEXT,
    UPPER,
    Kind,
)
from lockgate.config.optimize import OPTIMIZE_TOLERANCES
from lockgate.config.policy import (
    FRAMEWORK_TABLE,
    GATE_PARAMS,
    GATES,
    LICENSE_DECISIONS,
    LICENSE_IDS,
    MONITOR,
    ROLES,
    VULN_ALLOW,
    check_licenses,
)
from lockgate.config.tolerances import PROVIDER_TOLERANCES
from lockgate.config.values import DEFAULT_STAGES, Settings

__all__ = ["POLICY_SECTIONS", "SECTIONS", "SETTINGS", "Setting"]


@dataclass(frozen=True)
class Setting:
    """One setting: its Settings field, where a TOML file holds it (``section.name``; a bare
    ``section`` when the setting is that whole table; ``-`` when no file does), its environment
    variable (``-``: none), how it is read, its documented default and help, the check of its
    final value, and whether the policy file may set it too."""

    key: str
    file: str
    env: str
    kind: Kind
    default: str
    help: str
    check: Check | None = None
    policy: bool = False

    @property
    def section(self) -> str:
        return self.file.partition(".")[0]

    @property
    def name(self) -> str:
        """The key inside the section; empty when the setting is the whole table."""
        return self.file.partition(".")[2]


_HTTP_SIZES = ("serve.max_head_bytes must be at least 1024, serve.max_headers and "
               "serve.max_connections at least 1")
_DECODE = "serve.decode_budget must be at least 1 MiB (1048576), serve.max_elements at least 1"
_TIMES = ("serve.head_timeout_s, serve.body_timeout_s and serve.keep_alive_s must be positive, "
          "serve.min_body_rate not negative")
_PARITY = "parity tolerances and sample count must not be negative"


def _grpc_port(value: int, s: Settings) -> None:
    if value != -1:  # -1: no gRPC
        check_port(value, s)


SETTINGS: tuple[Setting, ...] = (
    Setting("home", "-", "LOCKGATE_HOME", FOLDER, "./.lockgate",
            "Folder holding lockgate.toml, the database and the artifact store."),
    Setting("database_url", "lockgate.database_url", "LOCKGATE_DATABASE_URL", TEXT,
            "sqlite:///<home>/lockgate.db", "SQLAlchemy URL of the metadata store."),
    Setting("artifact_root", "lockgate.artifact_root", "LOCKGATE_ARTIFACT_ROOT", FOLDER,
            "<home>/artifacts", "Folder of the content-addressed artifact store."),
    Setting("artifact_url", "lockgate.artifact_url", "LOCKGATE_ARTIFACT_URL", TEXT, "-",
            "s3://bucket/prefix: keep artifacts in S3-compatible storage instead of "
            "artifact_root."),
    Setting("s3_endpoint_url", "lockgate.s3_endpoint_url", "LOCKGATE_S3_ENDPOINT_URL", TEXT, "-",
            "Endpoint of the S3-compatible service (MinIO, Ceph, ...); unset: AWS."),
    Setting("user", "lockgate.user", "LOCKGATE_USER", TEXT, "<login name>",
            "Who is acting; recorded as creator and in the audit log."),
    Setting("policy_file", "lockgate.policy", "LOCKGATE_POLICY", POLICY_FILE, "-",
            "A separate TOML policy file ([gates], [gate.*], [roles], [vulnerabilities], "
            "[licenses], [monitor], [frameworks], [serve] providers and provider_fallback) applied "
            "over lockgate.toml."),
    Setting("stages", "stages.order", "LOCKGATE_STAGES", NAMES, ",".join(DEFAULT_STAGES),
            "Ordered stages a version moves through; the last one is the retirement stage.",
            check_stages),
    Setting("exclusive_stages", "stages.exclusive", "LOCKGATE_EXCLUSIVE_STAGES", NAMES,
            "production", "Stages that hold one version per model; promoting into one retires "
            "the previous holder to the last stage.", in_stages),
    Setting("stage_aliases", "stages.aliases", "LOCKGATE_STAGE_ALIASES", PAIRS,
            "production=champion", "Aliases moved to a version when it enters a stage.",
            in_stages),
    Setting("gates", "gates", "-", GATES, "(the seed's policy)",
            "Gates per transition, in [gates] as \"from->to\" = [gate, ...]; \"*\" matches any. "
            "A [gates] table replaces the default policy.", check_gate_keys, policy=True),
    Setting("gate_params", "gate", "-", GATE_PARAMS, "(each gate's defaults)",
            "Parameters per gate, in [gate.<name>] tables; an inline entry in [gates] "
            "overrides.", policy=True),
    Setting("roles", "roles", "-", ROLES, "{}",
            "Users per role, in [roles] as role = [users]; `approver` signs off approvals and "
            "waivers.", policy=True),
    Setting("frameworks", "frameworks", "-", FRAMEWORK_TABLE, "{} (any)",
            "Allowed training frameworks and version ranges, in [frameworks] as name = "
            "\"range\"; once non-empty, unlisted frameworks are refused.", policy=True),
    Setting("parity_atol", "parity.atol", "LOCKGATE_PARITY_ATOL", FLOAT, "1e-4",
            "Absolute tolerance for float32 parity.", at_least(0, _PARITY)),
    Setting("parity_rtol", "parity.rtol", "LOCKGATE_PARITY_RTOL", FLOAT, "1e-3",
            "Relative tolerance for float32 parity.", at_least(0, _PARITY)),
    Setting("parity_samples", "parity.samples", "LOCKGATE_PARITY_SAMPLES", INT, "8",
            "Random inputs checked for parity besides the sample input.", at_least(0, _PARITY)),
    Setting("provider_tolerances", "provider_tolerances", "-", PROVIDER_TOLERANCES,
            "fp32 1e-4/1e-3, fp16 1e-2/1e-2, int8 5e-2/5e-2",
            "Parity tolerances (atol, rtol) of a provider set other than the CPU alone, by the "
            "precision it may compute in, in [provider_tolerances.<fp32|fp16|int8>].",
            policy=True),
    Setting("signing_key", "signing.private_key", "LOCKGATE_SIGNING_KEY", FILE,
            "<home>/keys/signing.key", "Private EC P-256 key (PEM) that signs every new "
            "version; created by `lockgate init` when missing."),
    Setting("public_keys", "signing.public_keys", "LOCKGATE_PUBLIC_KEYS", FILES,
            "<home>/keys/signing.pub", "Public keys (PEM) trusted to verify versions at load "
            "and serve time; comma-separated in the environment."),
    Setting("require_signature", "signing.require_signature", "LOCKGATE_REQUIRE_SIGNATURE", BOOL,
            "true", "Refuse to load or serve a version without a valid signature."),
    Setting("vuln_max_severity", "vulnerabilities.max_severity", "LOCKGATE_VULN_MAX_SEVERITY",
            UPPER, "MODERATE",
            "Highest vulnerability severity the vulnerabilities gate lets through.",
            check_severity, policy=True),
    Setting("vuln_max_age_days", "vulnerabilities.max_age_days", "LOCKGATE_VULN_MAX_AGE_DAYS",
            INT, "30", "Oldest vulnerability snapshot (days since its newest record) the gate "
            "accepts.", at_least(0, "vulnerabilities.max_age_days must not be negative"),
            policy=True),
    Setting("vuln_allow", "vulnerabilities.allow", "-", VULN_ALLOW, "[]",
            "Allow-listed vulnerability ids, each with an expiry date and a reason.",
            policy=True),
    Setting("license_allow", "licenses.allow", "-", LICENSE_IDS, "(permissive SPDX ids)",
            "SPDX license ids the licenses gate allows.", policy=True),
    Setting("license_deny", "licenses.deny", "-", LICENSE_IDS, "(network copyleft ids)",
            "SPDX license ids the licenses gate refuses.", check_licenses, policy=True),
    Setting("license_decisions", "licenses.decisions", "-", LICENSE_DECISIONS, "[]",
            "Per-package license decisions: the license a distribution is under, or accept = "
            "true, each with a reason, and optionally expires and by.", policy=True),
    Setting("environment_drift", "serve.environment_drift", "LOCKGATE_ENVIRONMENT_DRIFT", TEXT,
            "warn", "What serving does when ONNX Runtime, providers, CUDA/cuDNN, TensorRT, the "
            "NVIDIA driver or the GPU model differ from the registered environment: warn or "
            "refuse.",
            one_of("serve.environment_drift", "warn", "refuse")),
    Setting("environment_drift_ignore", "serve.environment_drift_ignore",
            "LOCKGATE_ENVIRONMENT_DRIFT_IGNORE", NAMES, "",
            "Environment differences that never count (not warned, audited or refused), by "
            "name, e.g. [\"GPU model\"].", check_drift_ignore),
    Setting("serve_host", "serve.host", "LOCKGATE_SERVE_HOST", TEXT, "127.0.0.1",
            "Address the server binds."),
    Setting("serve_port", "serve.port", "LOCKGATE_SERVE_PORT", INT, "8080",
            "Port the server binds (0: any free).", check_port),
    Setting("serve_grpc_port", "serve.grpc_port", "LOCKGATE_SERVE_GRPC_PORT", INT, "-1",
            "Port the server also serves OIP v2 over gRPC on, same host (0: any free; -1: "
            "off).", _grpc_port),
    Setting("serve_workers", "serve.workers", "LOCKGATE_SERVE_WORKERS", INT, "0",
            "Worker processes `lockgate serve` runs on its port (0: one per core the "
            "container is given; 1: a single process).",
            at_least(0, "serve.workers must be 0 (one per core) or more")),
    Setting("serve_max_head_bytes", "serve.max_head_bytes", "LOCKGATE_SERVE_MAX_HEAD_BYTES", INT,
            "65536", "Largest request line plus headers the HTTP servers accept (431 beyond).",
            at_least(1024, _HTTP_SIZES)),
    Setting("serve_max_headers", "serve.max_headers", "LOCKGATE_SERVE_MAX_HEADERS", INT, "100",
            "Most header fields in one request (431 beyond).", at_least(1, _HTTP_SIZES)),
    Setting("serve_head_timeout_s", "serve.head_timeout_s", "LOCKGATE_SERVE_HEAD_TIMEOUT_S",
            FLOAT, "10", "Seconds from a request head's first byte to its end (408 and close "
            "beyond).", positive(_TIMES)),
    Setting("serve_body_timeout_s", "serve.body_timeout_s", "LOCKGATE_SERVE_BODY_TIMEOUT_S",
            FLOAT, "30", "Seconds a request body may take, plus one per serve_min_body_rate "
            "bytes received (408 and close beyond).", positive(_TIMES)),
    Setting("serve_min_body_rate", "serve.min_body_rate", "LOCKGATE_SERVE_MIN_BODY_RATE", INT,
            "65536", "Bytes per second that buy a request body one more second (0: the body "
            "must arrive within serve_body_timeout_s).", at_least(0, _TIMES)),
    Setting("serve_keep_alive_s", "serve.keep_alive_s", "LOCKGATE_SERVE_KEEP_ALIVE_S", FLOAT,
            "5", "Seconds an idle connection stays open between requests.", positive(_TIMES)),
    Setting("serve_max_connections", "serve.max_connections", "LOCKGATE_SERVE_MAX_CONNECTIONS",
            INT, "1024", "Most open connections per server; beyond it a new one is closed at "
            "once.", at_least(1, _HTTP_SIZES)),
    Setting("serve_decode_budget", "serve.decode_budget", "LOCKGATE_SERVE_DECODE_BUDGET", INT,
            "268435456", "Bytes of memory the server spends on large infer requests at once, "
            "all together (503 with Retry-After beyond; 413 for one body that alone exceeds "
            "it).", at_least(1 << 20, _DECODE)),
    Setting("serve_max_elements", "serve.max_elements", "LOCKGATE_SERVE_MAX_ELEMENTS", INT,
            "67108864", "Tensor elements one infer request may carry, all inputs together (400 "
            "beyond).", at_least(1, _DECODE)),
    Setting("serve_auth", "serve.auth", "LOCKGATE_SERVE_AUTH", TEXT, "none",
            "Data plane authentication: none, or token (infer needs a token with the inference "
            "role). Capture always needs the monitoring role once the home has users.",
            one_of("serve.auth", "none", "token")),
    Setting("serve_providers", "serve.providers", "LOCKGATE_SERVE_PROVIDERS", PROVIDERS, "cpu",
            "ONNX Runtime execution providers, in order, each version is served on unless its "
            "deployment names others: names or tables with options (cuda,cpu).", policy=True),
    Setting("serve_provider_fallback", "serve.provider_fallback",
            "LOCKGATE_SERVE_PROVIDER_FALLBACK", TEXT, "none",
            "When a requested provider cannot load: none (the version is not served) or cpu "
            "(served on the CPU, logged, counted and shown in its metadata).",
            one_of("serve.provider_fallback", "none", "cpu"), policy=True),
    Setting("unvalidated_providers", "serve.unvalidated_providers",
            "LOCKGATE_UNVALIDATED_PROVIDERS", TEXT, "refuse",
            "Serving a version on a provider set other than the CPU alone that it never passed "
            "infra_validation on: refuse or allow.",
            one_of("serve.unvalidated_providers", "refuse", "allow"), policy=True),
    Setting("capture_window", "serve.capture_window", "LOCKGATE_CAPTURE_WINDOW", INT, "5000",
            "Rows and requests each served version keeps for drift monitors (0: no capture)."),
    Setting("request_log", "serve.request_log", "LOCKGATE_REQUEST_LOG", FILE, "-",
            "Folder for sampled request logs (inputs and outputs); unset: none are written."),
    Setting("request_log_rate", "serve.request_log_rate", "LOCKGATE_REQUEST_LOG_RATE", FLOAT,
            "0.01", "Share of requests written to the request log."),
    Setting("request_log_format", "serve.request_log_format", "LOCKGATE_REQUEST_LOG_FORMAT", TEXT,
            "jsonl", "Request log format: jsonl, or parquet (needs lockgate[parquet])."),
    Setting("notify_command", "serve.notify_command", "LOCKGATE_NOTIFY_COMMAND", COMMAND, "-",
            "Command run with a deployment incident (automatic rollback, failed load) as JSON "
            "on stdin."),
    Setting("monitor", "monitor", "-", MONITOR, "(see docs)",
            "Drift and SLO monitor policy in [monitor], [monitor.slo], [monitor.trigger], "
            "[monitor.rollback]; per model in [monitor.models.<name>].", policy=True),
    Setting("optimize_tolerances", "optimize_tolerances", "-", OPTIMIZE_TOLERANCES,
            "dynamic-int8 0.1/0.1, fp16 1e-2/1e-2, ort-basic and ort-extended 1e-4/1e-3",
            "Parity tolerances (atol, rtol) of `lockgate optimize`, by transformation, in "
            "[optimize_tolerances.<dynamic-int8|fp16|ort-basic|ort-extended>].", policy=True),
)


def _sections() -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for row in SETTINGS:
        if row.file != "-":
            out.setdefault(row.section, set()).update([row.name] if row.name else [])
    return {k: frozenset(v) for k, v in out.items()}


SECTIONS: Mapping[str, frozenset[str]] = _sections()
"""Each section of lockgate.toml and the keys it defines (none: the setting is the whole table,
whose reader checks its keys)."""

POLICY_SECTIONS = frozenset(row.section for row in SETTINGS if row.policy)
"""The sections a policy file may hold."""
