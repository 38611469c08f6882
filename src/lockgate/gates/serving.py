"""Gates that run the version the way production would: in a child ``lockgate serve``."""

from __future__ import annotations

import json
from typing import Any

from lockgate.errors import Error
from lockgate.gates.base import Configurable, GateContext, ServerHandle
from lockgate.gates.params import Param
from lockgate.seal.folder import SAMPLES_FILE
from lockgate.types import GateResult, GateStatus

__all__ = ["InfraValidationGate", "LatencyBudgetGate"]


def _served(gate: str, ctx: GateContext, max_loading_time_s: float
            ) -> tuple[dict[str, Any], ServerHandle] | GateResult:
    """The recorded samples and the child server (shared by the gates of one promotion), or
    the failing result that stops the gate."""
    if ctx.evidence is None:
        return GateResult(gate, GateStatus.ERROR, "no evidence store")
    if SAMPLES_FILE not in ctx.version.files:
        return GateResult(gate, GateStatus.FAIL,
                          "no sample requests were recorded at registration")
    try:
        samples = json.loads(ctx.evidence.file(SAMPLES_FILE))
        return samples, ctx.evidence.server(max_loading_time_s)
    except (Error, OSError, ValueError) as exc:
        return GateResult(gate, GateStatus.FAIL, f"validation server: {exc}")


class InfraValidationGate(Configurable):
    """Load the version in a child server, send the sample requests recorded at registration
    over OIP, and compare the answers with the outputs recorded then."""

    name = "infra_validation"
    PARAMS = {
        "max_loading_time_s": Param(float, 60.0, "longest time to verify and load", 0),
        "timeout_s": Param(float, 30.0, "longest time for one request", 0),
    }

    def evaluate(self, ctx: GateContext) -> GateResult:
        from lockgate.gates.probe import check_samples

        thresholds = dict(self.params)
        served = _served(self.name, ctx, float(self.params["max_loading_time_s"]))
        if isinstance(served, GateResult):
            return GateResult(served.gate, served.status, served.message, {}, thresholds)
        samples, server = served
        try:
            problems = check_samples(server.base_url, ctx.version.name, samples,
                                     atol=ctx.settings.parity_atol,
                                     rtol=ctx.settings.parity_rtol,
                                     timeout=float(self.params["timeout_s"]))
        except (Error, OSError, ValueError) as exc:
            return GateResult(self.name, GateStatus.FAIL, f"validation server: {exc}", {},
                              thresholds)
        measured = {"load_seconds": round(server.load_seconds, 3), "problems": problems}
        if problems:
            return GateResult(self.name, GateStatus.FAIL,
                              "served answers differ from the registered ones: "
                              + "; ".join(problems), measured, thresholds)
        return GateResult(self.name, GateStatus.PASS,
                          f"loaded in {server.load_seconds:.2f} s in a child server; the "
                          "recorded sample answers match", measured, thresholds)


class LatencyBudgetGate(Configurable):
    """p50/p95/p99 latency and throughput in the child server at the configured concurrency
    and batch size. Budgets left unset are recorded but not enforced."""

    name = "latency_budget"
    PARAMS = {
        "p50_ms": Param(float, None, "p50 budget in milliseconds", 0),
        "p95_ms": Param(float, None, "p95 budget in milliseconds", 0),
        "p99_ms": Param(float, 250.0, "p99 budget in milliseconds", 0),
        "min_throughput_rps": Param(float, 0.0, "least requests per second", 0),
        "concurrency": Param(int, 4, "concurrent clients", 1),
        "batch_size": Param(int, 1, "rows per request", 1),
        "requests": Param(int, 200, "measured requests", 1),
        "warmup": Param(int, 20, "requests before measuring", 0),
        "max_loading_time_s": Param(float, 60.0, "longest time to verify and load", 0),
        "timeout_s": Param(float, 30.0, "longest time for one request", 0),
    }

    def evaluate(self, ctx: GateContext) -> GateResult:
        from lockgate.gates.probe import batch_request, measure_latency

        p = self.params
        thresholds = {k: v for k, v in p.items() if v is not None}
        served = _served(self.name, ctx, float(p["max_loading_time_s"]))
        if isinstance(served, GateResult):
            return GateResult(served.gate, served.status, served.message, {}, thresholds)
        samples, server = served
        try:
            stats = measure_latency(
                server.base_url, ctx.version.name, batch_request(samples, int(p["batch_size"])),
                concurrency=int(p["concurrency"]), requests=int(p["requests"]),
                warmup=int(p["warmup"]), batch_size=int(p["batch_size"]),
                timeout=float(p["timeout_s"]))
        except (Error, OSError, ValueError) as exc:
            return GateResult(self.name, GateStatus.FAIL, f"validation server: {exc}", {},
                              thresholds)
        measured = stats.to_dict()
        over = [f"{k} {measured[k]:.2f} ms > {p[k]:g} ms" for k in ("p50_ms", "p95_ms", "p99_ms")
                if p[k] is not None and measured[k] > p[k]]
        if stats.throughput_rps < p["min_throughput_rps"]:
            over.append(f"throughput {stats.throughput_rps:.1f} rps < "
                        f"{p['min_throughput_rps']:g} rps")
        if stats.errors:
            over.append(f"{stats.errors} of {stats.requests} requests failed")
        summary = (f"p50 {stats.p50_ms:.2f} ms, p95 {stats.p95_ms:.2f} ms, p99 "
                   f"{stats.p99_ms:.2f} ms, {stats.throughput_rps:.0f} rps at concurrency "
                   f"{stats.concurrency}, batch {stats.batch_size}")
        if over:
            return GateResult(self.name, GateStatus.FAIL, "over budget: " + "; ".join(over)
                              + f" ({summary})", measured, thresholds)
        return GateResult(self.name, GateStatus.PASS, summary, measured, thresholds)
