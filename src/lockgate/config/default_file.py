"""The commented lockgate.toml that ``lockgate init`` (and the first use of a home) writes:
every key shown with its default, commented out, so the file changes nothing until edited."""

from __future__ import annotations

from pathlib import Path

from lockgate.config.values import CONFIG_FILE

__all__ = ["DEFAULT_CONFIG", "write_default_config"]

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
# environment_drift_ignore = []   # differences that never count, e.g. ["GPU model"]
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
# A decision for one package the lists leave to review (or a license its metadata does not say):
# [[licenses.decisions]]
# package = "cvss"
# accept = true                 # or license = "LGPL-3.0-or-later", judged by the lists
# reason = "LGPL-3.0-or-later, used unmodified as a library"
# expires = 2027-06-30
# by = "legal@example.com"
"""


def write_default_config(home: Path) -> Path:
    """Create ``home`` and a commented lockgate.toml in it, unless one exists."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILE
    if not path.exists():
        path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    return path
