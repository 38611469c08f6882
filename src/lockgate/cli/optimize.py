"""``lockgate optimize``: an optimized version of a registered one, proven against it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.text import Text

from lockgate.api.optimize import lineage_of
from lockgate.cli.context import local_home
from lockgate.cli.parse import parse_pairs
from lockgate.cli.render import emit_json, out, print_parity
from lockgate.errors import InvalidInputError
from lockgate.types import Version

__all__ = ["COMMANDS", "lineage_lines"]


@click.command()
@click.argument("ref")
@click.option("--quantize", default=None, metavar="dynamic-int8",
              help="Quantize the weights to int8 (onnxruntime.quantization.quantize_dynamic, "
                   "QInt8); activations are quantized at run time.")
@click.option("--fp16", is_flag=True,
              help="Convert weights and arithmetic to float16; inputs and outputs stay float32.")
@click.option("--ort-level", default=None, metavar="basic|extended",
              help="Save ONNX Runtime's optimized graph at this level; `all` is refused (its "
                   "layout optimizations tie the graph to this machine's CPU).")
@click.option("--runs", type=int, default=300, show_default=True,
              help="Batch-1 runs of parent and child each, alternating, for the speed-up.")
@click.option("--description", default=None, help="Free text (default: what made it).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=NUMBER",
              help="A metric measured on the optimized model (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@click.pass_context
def optimize(ctx: click.Context, ref: str, quantize: str | None, fp16: bool,
             ort_level: str | None, runs: int, description: str | None,
             metrics: tuple[str, ...], as_json: bool) -> None:
    """Make an optimized version of REF (NAME@V): exactly one of --quantize dynamic-int8,
    --fp16 or --ort-level basic|extended.

    The new version of the same model is compared with REF under ONNX Runtime (its recorded
    sample plus random inputs) and with the samples recorded when the model was first
    registered, within [optimize_tolerances.<kind>] (exit 6 and nothing stored when out of
    tolerance); its record names REF as its parent, with the speed-up and size change measured.
    """
    values = {}
    for key, text in parse_pairs(metrics, "--metric").items():
        try:
            values[key] = float(text)
        except ValueError:
            raise InvalidInputError(f"metric {key} is not a number: {text!r}") from None
    v = local_home(ctx).optimize(ref, quantize=quantize, fp16=fp16, ort_level=ort_level,
                                 runs=runs, description=description, metrics=values)
    if as_json:
        emit_json(v.to_dict())
        return
    out.print(Text.assemble("registered ", (f"{v.name}@{v.number}", "bold"),
                            f" ({v.digest})"))
    for line in lineage_lines(v):
        out.print(line)
    print_parity(v)
    out.print(f"signed with key {v.signed_by[:16]}" if v.signed_by else "unsigned")


def lineage_lines(v: Version) -> list[str]:
    """What ``show`` and ``optimize`` print of a version's lineage: none for a version that
    was registered, not optimized."""
    lineage = lineage_of(v)
    if lineage is None:
        return []
    made: Mapping[str, Any] = lineage.get("transformation", {})
    tol: Mapping[str, Any] = lineage.get("tolerance", {})
    lines = [f"lineage: {made.get('kind', '?')} of {lineage.get('parent', '?')} "
             f"({made.get('tool', '?')} {made.get('tool_version', '?')}; parity within "
             f"atol {tol.get('atol', '?')}, rtol {tol.get('rtol', '?')})"]
    m: Mapping[str, Any] = lineage.get("measured", {})
    if m:
        speedup = m.get("speedup")
        lines.append(
            f"measured: batch-1 latency {m.get('parent_latency_ms')} ms -> "
            f"{m.get('child_latency_ms')} ms"
            + (f" ({speedup:g}x)" if isinstance(speedup, int | float) else "")
            + f"; size {m.get('parent_bytes')} -> {m.get('child_bytes')} bytes"
            + (f" ({m['size_ratio']:.1%})" if isinstance(m.get("size_ratio"), int | float)
               else "")
            + f"; {m.get('runs')} alternating runs each")
    return lines


COMMANDS: tuple[click.Command, ...] = (optimize,)
