"""Gates that run the version the way production would: in a child ``lockgate serve``, on the
execution providers it will be served on.

Both gates take ``providers`` (the text form, ``tensorrt:trt_fp16_enable=true,cuda,cpu``;
default: ``[serve] providers``) and ``fallback`` (``none`` or ``cpu``; default:
``[serve] provider_fallback``). Their results name the provider set (its
:attr:`~lockgate.config.providers.ProviderSet.key`, under which
:mod:`lockgate.api.validations` lists the sets a version passed ``infra_validation`` on), the
providers the child's session used, the set's precision and, for ``infra_validation``, the
tolerances the answers were held to (:mod:`lockgate.config.tolerances`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lockgate.config.providers import FALLBACKS, ProviderSet, parse_providers_text
from lockgate.config.settings import Settings
from lockgate.errors import Error
from lockgate.gates.base import Configurable, GateContext, ServerHandle
from lockgate.gates.params import Param
from lockgate.seal.folder import SAMPLES_FILE
from lockgate.types import GateResult, GateStatus

__all__ = ["InfraValidationGate", "LatencyBudgetGate", "gate_providers"]

_PROVIDER_PARAMS = {
    "providers": Param(str, None, "execution providers, in order, as text (cuda,cpu); "
                                  "default: [serve] providers"),
    "fallback": Param(str, None, "when a provider cannot load: none (fail) or cpu; default: "
                                 "[serve] provider_fallback", choices=FALLBACKS),
}


def gate_providers(params: Mapping[str, Any], settings: Settings,
                   where: str = "providers") -> ProviderSet:
    """The provider set a serving gate runs on: its ``providers``/``fallback`` parameters over
    the ``[serve]`` settings."""
    default = settings.serve_provider_set
    text, fallback = params.get("providers"), params.get("fallback")
    specs = default.specs if text is None else parse_providers_text(str(text), where)
    return ProviderSet(specs, default.fallback if fallback is None else str(fallback))


def _facts(pset: ProviderSet, server: ServerHandle | None) -> dict[str, Any]:
    """What a serving gate's result says of the providers it ran on."""
    used = list(server.providers_used) if server is not None else []
    facts: dict[str, Any] = {"provider_set": pset.key, "providers": pset.to_dict(),
                             "precision": pset.precision}
    if server is not None:
        # A fallback the child does not report cannot be ruled out: it counts as one.
        unsure = pset.fallback == "cpu" and not used and not pset.is_cpu_only
        facts |= {"providers_used": used, "fell_back": bool(server.fell_back or unsure)}
    return facts


class _OnProviders(Configurable):
    """A gate run in a child server on a provider set; its text is checked on load."""

    @classmethod
    def configure(cls, params: Mapping[str, Any], where: str) -> Configurable:
        gate = super().configure(params, where)
        if gate.params.get("providers") is not None:
            parse_providers_text(str(gate.params["providers"]), f"{where}.providers")
        return gate

    def _served(self, ctx: GateContext, pset: ProviderSet
                ) -> tuple[dict[str, Any], ServerHandle] | GateResult:
        """The recorded samples and the child server on ``pset`` (shared by the gates of one
        promotion that run on the same set), or the failing result that stops the gate."""
        if ctx.evidence is None:
            return GateResult(self.name, GateStatus.ERROR, "no evidence store")
        if SAMPLES_FILE not in ctx.version.files:
            return GateResult(self.name, GateStatus.FAIL,
                              "no sample requests were recorded at registration")
        # the child serves on its own [serve] settings unless the gate asks for another set
        plain = pset == ProviderSet() == ctx.settings.serve_provider_set
        try:
            samples = json.loads(ctx.evidence.file(SAMPLES_FILE))
            return samples, ctx.evidence.server(float(self.params["max_loading_time_s"]),
                                                None if plain else pset)
        except (Error, OSError, ValueError) as exc:
            return GateResult(self.name, GateStatus.FAIL,
                              f"validation server on {pset.key}: {exc}")


def _on(pset: ProviderSet, server: ServerHandle) -> str:
    used = ", ".join(server.providers_used) or pset.key
    fell = "; it FELL BACK to the CPU" if server.fell_back else ""
    return f"on {pset.key} (session uses {used}{fell})"


class InfraValidationGate(_OnProviders):
    """Load the version in a child server on the provider set, send the sample requests
    recorded at registration over OIP, and compare the answers with the outputs recorded
    then, within the tolerances of the set's precision."""

    name = "infra_validation"
    PARAMS = {
        "max_loading_time_s": Param(float, 60.0, "longest time to verify and load", 0),
        "timeout_s": Param(float, 30.0, "longest time for one request", 0),
        **_PROVIDER_PARAMS,
    }

    def evaluate(self, ctx: GateContext) -> GateResult:
        from lockgate.gates.probe import check_samples, provider_tolerance

        thresholds = {k: v for k, v in self.params.items() if v is not None}
        pset = gate_providers(self.params, ctx.settings)
        tol = provider_tolerance(ctx.settings, pset)
        measured: dict[str, Any] = {**_facts(pset, None), "tolerance": tol.to_dict()}
        served = self._served(ctx, pset)
        if isinstance(served, GateResult):
            return GateResult(served.gate, served.status, served.message, measured,
                              thresholds)
        samples, server = served
        measured = {**_facts(pset, server), "tolerance": tol.to_dict()}
        try:
            problems = check_samples(server.base_url, ctx.version.name, samples,
                                     atol=tol.atol, rtol=tol.rtol,
                                     timeout=float(self.params["timeout_s"]))
        except (Error, OSError, ValueError) as exc:
            return GateResult(self.name, GateStatus.FAIL, f"validation server: {exc}",
                              measured, thresholds)
        measured |= {"load_seconds": round(server.load_seconds, 3), "problems": problems}
        if problems:
            return GateResult(self.name, GateStatus.FAIL,
                              f"served answers {_on(pset, server)} differ from the registered "
                              "ones: " + "; ".join(problems), measured, thresholds)
        return GateResult(self.name, GateStatus.PASS,
                          f"loaded in {server.load_seconds:.2f} s in a child server "
                          f"{_on(pset, server)}; the recorded sample answers match within "
                          f"atol {tol.atol:g} / rtol {tol.rtol:g} ({tol.precision})",
                          measured, thresholds)


class LatencyBudgetGate(_OnProviders):
    """p50/p95/p99 latency and throughput in the child server on the provider set, at the
    configured concurrency and batch size. Budgets left unset are recorded but not
    enforced."""

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
        **_PROVIDER_PARAMS,
    }

    def evaluate(self, ctx: GateContext) -> GateResult:
        from lockgate.gates.probe import batch_request, measure_latency

        p = self.params
        thresholds = {k: v for k, v in p.items() if v is not None}
        pset = gate_providers(p, ctx.settings)
        served = self._served(ctx, pset)
        if isinstance(served, GateResult):
            return GateResult(served.gate, served.status, served.message, _facts(pset, None),
                              thresholds)
        samples, server = served
        try:
            stats = measure_latency(
                server.base_url, ctx.version.name, batch_request(samples, int(p["batch_size"])),
                concurrency=int(p["concurrency"]), requests=int(p["requests"]),
                warmup=int(p["warmup"]), batch_size=int(p["batch_size"]),
                timeout=float(p["timeout_s"]))
        except (Error, OSError, ValueError) as exc:
            return GateResult(self.name, GateStatus.FAIL, f"validation server: {exc}",
                              _facts(pset, server), thresholds)
        measured: dict[str, Any] = {**stats.to_dict(), **_facts(pset, server)}
        over = [f"{k} {measured[k]:.2f} ms > {p[k]:g} ms" for k in ("p50_ms", "p95_ms", "p99_ms")
                if p[k] is not None and measured[k] > p[k]]
        if stats.throughput_rps < p["min_throughput_rps"]:
            over.append(f"throughput {stats.throughput_rps:.1f} rps < "
                        f"{p['min_throughput_rps']:g} rps")
        if stats.errors:
            over.append(f"{stats.errors} of {stats.requests} requests failed")
        summary = (f"p50 {stats.p50_ms:.2f} ms, p95 {stats.p95_ms:.2f} ms, p99 "
                   f"{stats.p99_ms:.2f} ms, {stats.throughput_rps:.0f} rps at concurrency "
                   f"{stats.concurrency}, batch {stats.batch_size}, {_on(pset, server)}")
        if over:
            return GateResult(self.name, GateStatus.FAIL, "over budget: " + "; ".join(over)
                              + f" ({summary})", measured, thresholds)
        return GateResult(self.name, GateStatus.PASS, summary, measured, thresholds)
