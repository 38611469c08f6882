"""The parity gate: the version's stored parity report passed within the configured tolerance."""

from __future__ import annotations

import math
import warnings

from lockgate.gates.base import Configurable, GateContext
from lockgate.types import GateResult, GateStatus

__all__ = ["ParityGate", "UnsafeAllowGate"]


class ParityGate(Configurable):
    name = "parity"

    def evaluate(self, ctx: GateContext) -> GateResult:
        report = ctx.version.parity
        if report is None:
            return GateResult(
                self.name,
                GateStatus.FAIL,
                "no parity report: the version was registered without a source model to "
                "compare ONNX Runtime against (register an ONNX file with --reference "
                "MODULE:FUNCTION or --expect INPUTS.npz OUTPUTS.npz to prove it)",
            )
        measured = {o.name: {"max_abs_error": o.max_abs_error, "max_rel_error": o.max_rel_error,
                             "mismatches": o.mismatches} for o in report.outputs}
        thresholds = {o.name: {"atol": o.atol, "rtol": o.rtol} for o in report.outputs}
        if not report.outputs:
            return GateResult(self.name, GateStatus.FAIL, "parity report has no outputs")
        bad = [o for o in report.outputs if not o.passed or math.isnan(o.max_abs_error)]
        if bad:
            names = ", ".join(o.name for o in bad)
            return GateResult(
                self.name, GateStatus.FAIL,
                f"parity out of tolerance for: {names}",
                measured, thresholds,
            )
        worst = max(report.outputs, key=lambda o: o.max_abs_error)
        notes = [f"{o.borderline} label(s) of {o.name} on near ties"
                 for o in report.outputs if o.borderline]
        if report.skipped:
            notes.append(f"{len(report.skipped)} input(s) the source model refused skipped")
        return GateResult(
            self.name, GateStatus.PASS,
            f"{len(report.outputs)} output(s) within tolerance over {len(report.batch_sizes)} "
            f"input(s); worst max abs error {worst.max_abs_error:.3g} ({worst.name})"
            + "".join(f"; {n}" for n in notes),
            measured, thresholds,
        )


class UnsafeAllowGate(Configurable):
    """Passes everything. Exists so a policy can say so explicitly; it warns every time."""

    name = "unsafe_allow"

    def evaluate(self, ctx: GateContext) -> GateResult:
        warnings.warn(
            f"unsafe_allow gate let {ctx.version.ref} into {ctx.to_stage} without checks",
            UserWarning,
            stacklevel=2,
        )
        return GateResult(self.name, GateStatus.PASS,
                          "UNSAFE: no check was made; the policy allows anything here")
