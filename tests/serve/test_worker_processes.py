"""`lockgate serve --workers N`: worker processes behind one port, their merged /metrics and
capture, a replaced worker, the rolling stop; the default worker count; the manifests."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serve_process import infer_doc, register, wait_until

from lockgate.api.facade import Lockgate
from lockgate.errors import InvalidInputError
from lockgate.rollout.manifests import K8sOptions, render_manifests, workers_for
from lockgate.serve.cluster_metrics import Exposition, merge
from lockgate.serve.supervisor import cgroup_cpu_limit, default_workers

LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not LINUX, reason="worker processes share a socket on Linux")


# -- the default worker count ---------------------------------------------------------------------


def test_default_workers_follow_the_cgroup_quota(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(v2) == 2.5
    assert default_workers(v2, cpus=8) == 2  # rounded down
    assert default_workers(v2, cpus=1) == 1  # never more than the affinity allows
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    assert default_workers(v2, cpus=6) == 6
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert default_workers(v2, cpus=4) == 1  # half a core: at least one worker
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert default_workers(v1, cpus=16) == 3
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert default_workers(v1, cpus=16) == 16
    assert default_workers(tmp_path / "none", cpus=5) == 5


def test_the_default_uses_this_process_affinity() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    found = default_workers(Path("/nonexistent"))
    assert found >= 1
    if expected is not None:
        assert found == expected


def test_the_default_is_one_worker_on_an_accelerator() -> None:
    from dataclasses import replace

    from lockgate.cli.serving import _worker_count
    from lockgate.config.providers import parse_providers_text
    from lockgate.config.values import Settings

    cpu = Settings(home=Path("h"), database_url="", artifact_root=Path("a"), user="u")
    cuda = replace(cpu, serve_providers=parse_providers_text("cuda,cpu", "providers"))
    assert _worker_count(cpu, None) == default_workers()
    assert _worker_count(cuda, None) == 1  # one device session
    assert _worker_count(cuda, 3) == 3  # asked for: given
    assert _worker_count(replace(cpu, serve_workers=4), None) == 4
    with pytest.raises(InvalidInputError, match="--workers cannot be negative"):
        _worker_count(cpu, -1)


# -- merging expositions --------------------------------------------------------------------------


_ONE = """# HELP lockgate_requests_total Infer requests received.
# TYPE lockgate_requests_total counter
lockgate_requests_total{model="m",version="1"} 3.0
# HELP lockgate_pending_requests Requests not yet answered.
# TYPE lockgate_pending_requests gauge
lockgate_pending_requests{model="m",version="1"} 1.0
# HELP lockgate_model_info A loaded model version.
# TYPE lockgate_model_info gauge
lockgate_model_info{digest="sha256:ab",model="m",version="1"} 1.0
# HELP lockgate_batch_size Rows per execution.
# TYPE lockgate_batch_size histogram
lockgate_batch_size_bucket{le="1.0",model="m",version="1"} 2.0
lockgate_batch_size_bucket{le="+Inf",model="m",version="1"} 3.0
lockgate_batch_size_count{model="m",version="1"} 3.0
lockgate_batch_size_sum{model="m",version="1"} 6.0
"""


def _samples(text: bytes) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_counters_and_histograms_sum_gauges_follow_their_kind() -> None:
    merged = _samples(merge([Exposition(_ONE), Exposition(_ONE),
                             Exposition(_ONE, live=False)]))
    assert merged['lockgate_requests_total{model="m",version="1"}'] == 9.0  # the dead too
    assert merged['lockgate_batch_size_bucket{le="+Inf",model="m",version="1"}'] == 9.0
    assert merged['lockgate_batch_size_sum{model="m",version="1"}'] == 18.0
    assert merged['lockgate_pending_requests{model="m",version="1"}'] == 2.0  # live only
    assert merged['lockgate_model_info{digest="sha256:ab",model="m",version="1"}'] == 1.0


def test_merged_text_parses_again() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = merge([Exposition(_ONE), Exposition(_ONE.replace('version="1"', 'version="2"'))])
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["lockgate_requests"].type == "counter"
    assert families["lockgate_batch_size"].type == "histogram"
    assert len(families["lockgate_requests"].samples) == 2


def test_statistics_sum_per_version_and_batch_size() -> None:
    from lockgate.serve.cluster_metrics import merge_statistics
    from lockgate.serve.statistics import Statistics

    parts = []
    for rows in (1, 3):
        stats = Statistics()
        stats.of("m", "1").succeeded(rows, 0.5, (0.1, 0.2, 0.1, 0.1), rows)
        parts.append(stats.snapshot([("m", "1"), ("m", "2")]))
    merged = merge_statistics(parts)["model_stats"]
    assert [(e["name"], e["version"]) for e in merged] == [("m", "1"), ("m", "2")]
    assert merged[0]["inference_count"] == 4
    assert merged[0]["inference_stats"]["success"] == {"count": 2, "ns": 1_000_000_000}
    assert [b["batch_size"] for b in merged[0]["batch_stats"]] == [1, 3]
    assert merged[1]["inference_count"] == 0


# -- manifests ------------------------------------------------------------------------------------


def _args(opts: K8sOptions) -> tuple[list[str], dict[str, Any]]:
    deployment = next(d for d in render_manifests("m", opts) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return list(container["args"]), dict(container["resources"])


def test_manifest_sets_workers_from_the_cpu_limit() -> None:
    args, resources = _args(K8sOptions(cpu_request="1", cpu_limit="3500m"))
    assert args[args.index("--workers") + 1] == "3"
    assert resources["limits"]["cpu"] == "3500m"
    args, resources = _args(K8sOptions())  # 500m requested, no limit
    assert args[args.index("--workers") + 1] == "1"
    assert "cpu" not in resources["limits"]
    assert workers_for(K8sOptions(cpu_request="2")) == 2


# -- real servers ---------------------------------------------------------------------------------


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    banner: str


@contextmanager
def serving(home: Path, *args: str) -> Iterator[Served]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "serve", "--port", "0",
         "--poll", "0.1", *args], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        port = None
        while port is None:
            line = proc.stderr.readline()
            lines.append(line)
            assert line, f"server exited: {''.join(lines)}"
            if m := re.search(r"on http://127\.0\.0\.1:(\d+)/v2", line):
                port = int(m.group(1))
        threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                         daemon=True).start()
        yield Served(proc, port, line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        if proc.stderr is not None:
            proc.stderr.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _infer(conn: http.client.HTTPConnection) -> int:
    conn.request("POST", "/v2/models/m/infer", body=json.dumps(infer_doc()).encode(),
                 headers={"content-type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _holders(pids: set[int], client_ports: set[int]) -> set[int]:
    """The processes among ``pids`` holding the server side of connections from
    ``client_ports`` (read from /proc: which socket inodes each process has open)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in list(f)[1:]:
                cols = row.split()
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if remote_port in client_ports:
                    inodes[cols[9]] = remote_port
    holders = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link[8:-1] in inodes for link in links if link.startswith("socket:[")):
            holders.add(pid)
    return holders


def _requests_total(port: int) -> float:
    status, body = _get(port, "/metrics")
    assert status == 200
    found = re.search(rb'^lockgate_requests_total\{model="m",version="1"\} (\S+)$', body,
                      re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def deployed(home: Path, tmp_path: Path) -> Path:
    register(home, tmp_path)
    with Lockgate.open(home) as lg:
        lg.promote("m@1", "production")
    return home


def _ready(port: int, answers: int = 20) -> None:
    """Ready on ``answers`` fresh connections in a row: every worker, almost surely."""
    streak = [0]

    def ready() -> bool:
        streak[0] = streak[0] + 1 if _get(port, "/v2/health/ready")[0] == 200 else 0
        return streak[0] >= answers

    wait_until(ready, "ready")


@needs_linux
@pytest.mark.slow
def test_two_workers_answer_on_one_port_and_report_the_sum(deployed: Path) -> None:
    with serving(deployed, "--workers", "2") as s:
        assert "2 workers" in s.banner
        _ready(s.port)
        workers = _children(s.proc.pid)
        assert len(workers) == 2
        conns = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
                 for _ in range(24)]
        try:
            for conn in conns:
                assert _infer(conn) == 200  # the connection stays open, held by one worker
            ports = {conn.sock.getsockname()[1] for conn in conns}
            assert _holders(workers, ports) == workers  # both workers took connections
            sent = len(conns)
        finally:
            for conn in conns:
                conn.close()
        # every scrape, on a new connection to whichever worker, reports all the requests
        for _ in range(6):
            assert _requests_total(s.port) == sent
            status, raw = _get(s.port, "/v2/models/m/versions/1/stats")
            assert status == 200
            stats = json.loads(raw)["model_stats"][0]
            assert stats["inference_count"] == sent
            assert stats["inference_stats"]["success"]["count"] == sent
    with Lockgate.open(deployed) as lg:  # one server, one start and one stop in the trail
        types = [r.type for r in lg.audit_log()]
    assert types.count("serve.started") == 1
    assert types.count("serve.stopped") == 1


@needs_linux
@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_counts_kept(deployed: Path) -> None:
    with serving(deployed, "--workers", "2") as s:
        _ready(s.port)
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        for _ in range(10):
            assert _infer(conn) == 200
        conn.close()
        assert _requests_total(s.port) == 10  # every worker left its figures
        before = _children(s.proc.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(_children(s.proc.pid) - before) == 1, "a new worker")
        after = _children(s.proc.pid)
        assert victim not in after
        assert len(after) == 2
        _ready(s.port)
        assert _requests_total(s.port) == 10
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        assert _infer(conn) == 200
        conn.close()
        assert s.proc.poll() is None


@needs_linux
@pytest.mark.slow
def test_sigterm_stops_the_workers_in_turn_without_error_answers(deployed: Path) -> None:
    with serving(deployed, "--workers", "2") as s:
        _ready(s.port)
        workers = _children(s.proc.pid)
        statuses: list[int] = []
        refused = threading.Event()
        stop_sent = threading.Event()
        after_stop: list[int] = []

        def client() -> None:
            while not refused.is_set():
                conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
                try:
                    status = _infer(conn)
                except ConnectionRefusedError:
                    refused.set()
                    return
                except (ConnectionError, http.client.HTTPException):
                    continue  # closed before its request was read: never an answer
                finally:
                    conn.close()
                statuses.append(status)
                if stop_sent.is_set():
                    after_stop.append(status)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(statuses) >= 20, "traffic")
        s.proc.send_signal(signal.SIGTERM)
        stop_sent.set()
        assert s.proc.wait(timeout=120) == -signal.SIGTERM
        refused.set()
        for t in threads:
            t.join(timeout=60)
        assert statuses
        assert set(statuses) == {200}
        assert after_stop, "the port stopped answering as soon as the stop began"
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.slow
def test_one_worker_is_this_process(deployed: Path) -> None:
    with serving(deployed, "--workers", "1") as s:
        assert "workers" not in s.banner
        _ready(s.port)
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        try:
            assert _infer(conn) == 200
            if LINUX:
                assert _children(s.proc.pid) == set()
                assert _holders({s.proc.pid}, {conn.sock.getsockname()[1]}) == {s.proc.pid}
        finally:
            conn.close()
        assert _requests_total(s.port) == 1


@needs_linux
@pytest.mark.slow
def test_capture_and_repository_span_the_workers(deployed: Path) -> None:
    path = "/v2/models/m/versions/1/capture"
    with serving(deployed, "--workers", "2") as s:
        _ready(s.port)
        conns = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
                 for _ in range(12)]
        for conn in conns:
            assert _infer(conn) == 200
        for conn in conns:
            conn.close()
        status, raw = _get(s.port, path)
        assert status == 200
        first = json.loads(raw)
        assert first["requests"]["count"] == 12
        assert first["rows"]["to"] - first["rows"]["from"] == 12
        assert all(len(f["values"]) == 12 for f in first["rows"]["features"].values())
        for _ in range(3):  # a cursor of its own choosing counts rows in worker order
            status, raw = _get(s.port, path + "?rows_since=5&requests_since=4")
            assert status == 200
            chosen = json.loads(raw)
            assert chosen["rows"]["from"] == 5
            assert chosen["rows"]["to"] == 12
            assert all(len(f["values"]) == 7 for f in chosen["rows"]["features"].values())
            assert chosen["requests"]["count"] == 8
        cursor = f"?rows_since={first['rows']['to']}&requests_since={first['requests']['to']}"
        for _ in range(3):  # whichever worker answers, nothing is read twice
            again = json.loads(_get(s.port, path + cursor)[1])
            assert again["requests"]["count"] == 0
            assert again["instance"] == first["instance"]
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        for _ in range(5):
            assert _infer(conn) == 200
        conn.close()
        later = json.loads(_get(s.port, path + cursor)[1])
        assert later["requests"]["count"] == 5
        assert later["rows"]["from"] == first["rows"]["to"]
        # the repository extension's unload and load reach every worker
        assert _post(s.port, "/v2/repository/models/m/unload") == 200
        assert {_infer_once(s.port) for _ in range(10)} == {404}
        assert _post(s.port, "/v2/repository/models/m/load") == 200
        assert {_infer_once(s.port) for _ in range(10)} == {200}


def _post(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def _infer_once(port: int) -> int:
    """One infer request on a fresh connection: whichever worker accepts it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        return _infer(conn)
    finally:
        conn.close()
