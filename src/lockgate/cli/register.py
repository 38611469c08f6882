"""`lockgate register`: an ONNX file, or the model a --from function returns."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from lockgate.cli.context import open_registry
from lockgate.cli.parse import (
    load_factory,
    load_sample,
    parse_dynamic,
    parse_pairs,
    reference_option,
)
from lockgate.cli.render import emit_json, err, out, print_parity, progress_bars
from lockgate.errors import InvalidInputError


@click.command()
@click.argument("onnx_file", required=False, type=click.Path(path_type=Path))
@click.option("--from", "factory", metavar="MODULE:FUNCTION",
              help="Function returning (model, sample_input) to register.")
@click.option("--name", required=True, help="Model name.")
@click.option("--description", default="", help="Free text stored with the version.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag (repeatable).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=NUMBER",
              help="User metric (repeatable).")
@click.option("--seed", type=int, default=None, help="Seed used for training, recorded.")
@click.option("--opset", type=int, default=None, help="ONNX opset to export with.")
@click.option("--dynamic", "dynamic", multiple=True, metavar="NAME:AXIS=DIM[,AXIS=DIM]",
              help="Dimensions left free, e.g. input_ids:0=batch,1=sequence, or a JSON object "
                   "(repeatable; default: dim 0 of every input as batch).")
@click.option("--atol", type=float, default=None, help="Parity absolute tolerance.")
@click.option("--rtol", type=float, default=None, help="Parity relative tolerance.")
@click.option("--lock-file", type=click.Path(path_type=Path), default=None,
              help="pylock.toml or requirements.txt with --hash: hashes for the BOM.")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME[=sha256:HEX]",
              help="Training dataset and its fingerprint, for the model card (repeatable).")
@click.option("--considerations", default="",
              help="Known limitations for the model card (paragraphs separated by blank lines).")
@click.option("--arg", "args", multiple=True,
              help="Argument passed to the --from function, recorded in the recipe (repeatable).")
@click.option("--reference", "reference", default=None, metavar="MODULE:FUNCTION",
              help="For an ONNX file: the function it was made from, taking the inputs by ONNX "
                   "input name (numpy arrays) and returning the outputs; parity is checked "
                   "against it on the sample and random inputs. A path to a data file here "
                   "means --reference-data.")
@click.option("--reference-data", type=click.Path(path_type=Path), default=None,
              help="Reference data (.npy, .npz, .csv, .parquet) profiled for drift monitors.")
@click.option("--expect", nargs=2, type=click.Path(path_type=Path), default=None,
              metavar="INPUTS.npz OUTPUTS.npz",
              help="For an ONNX file: inputs and the outputs the source model gave for them "
                   "(arrays by ONNX input and output name); parity compares ONNX Runtime "
                   "with them, on those inputs alone.")
@click.option("--sample", type=click.Path(path_type=Path), default=None,
              help="For an ONNX file: the sample input (.npz by input name, or .npy for a "
                   "one-input model); random parity inputs are drawn like it.")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@click.pass_context
def register(ctx: click.Context, onnx_file: Path | None, factory: str | None, name: str,
             description: str, tags: tuple[str, ...], metrics: tuple[str, ...],
             seed: int | None, opset: int | None, dynamic: tuple[str, ...],
             atol: float | None, rtol: float | None,
             lock_file: Path | None, datasets: tuple[str, ...], considerations: str,
             args: tuple[str, ...], reference: str | None, reference_data: Path | None,
             expect: tuple[Path, Path] | None, sample: Path | None, as_json: bool) -> None:
    """Register an ONNX file, or the model returned by --from MODULE:FUNCTION.

    An ONNX file's parity is proven with --reference MODULE:FUNCTION (the code it was made
    from) or --expect INPUTS.npz OUTPUTS.npz (outputs recorded from it); without either it is
    registered unproven and the parity gate refuses it.
    """
    if (onnx_file is None) == (factory is None):
        raise InvalidInputError("give either an .onnx file or --from MODULE:FUNCTION")
    source, reference_data = reference_option(reference, reference_data)
    if factory is not None and sample is not None:
        raise InvalidInputError("--sample is for an ONNX file; the --from function returns "
                                "the sample of its model")
    if factory is not None and ctx.obj.get("server"):
        raise InvalidInputError(
            "a remote registration uploads an .onnx file; --from converts in this process",
            hint="export to ONNX first, or point LOCKGATE_DATABASE_URL at the shared database")
    metric_values = parse_pairs(metrics, "--metric")
    dynamic_spec = parse_dynamic(dynamic)
    lg = open_registry(ctx)
    model, sample_input = (
        (str(onnx_file), load_sample(sample) if sample is not None else None)
        if onnx_file is not None else load_factory(factory or "", args))
    recipe = None
    if factory is not None:
        from lockgate.reproduce.recipe import make_recipe

        recipe = make_recipe(factory, list(args), Path.cwd())
    with progress_bars(not as_json and err.is_terminal) as bar:
        v = lg.register(
            model, sample_input, name=name, description=description,
            tags=parse_pairs(tags, "--tag"),
            metrics={k: _float(k, x) for k, x in metric_values.items()}, seed=seed,
            opset=opset, dynamic=dynamic_spec, atol=atol, rtol=rtol, lock_file=lock_file,
            datasets=[_dataset(d) for d in datasets], considerations=considerations,
            recipe=recipe, reference=reference_data, source=source, expect=expect,
            progress=bar,
        )
    if as_json:
        emit_json(v.to_dict())
        return
    out.print(Text.assemble("registered ", (f"{v.name}@{v.number}", "bold"),
                            f" ({v.framework} {v.framework_version}, opset {v.opset}, "
                            f"{v.digest})"))
    print_parity(v)
    if v.signed_by:
        out.print(f"signed with key {v.signed_by[:16]}; files: {', '.join(sorted(v.files))}")
    else:
        out.print(Text.assemble(("unsigned", "yellow"),
                                " (signing.require_signature = false)"))


def _dataset(text: str) -> dict[str, str]:
    name, sep, fingerprint = text.partition("=")
    if not name.strip():
        raise InvalidInputError(f"--dataset {text!r}: expected NAME or NAME=sha256:HEX")
    return {"name": name.strip(), **({"fingerprint": fingerprint.strip()} if sep else {})}


def _float(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"metric {key} is not a number: {text!r}") from None


COMMANDS: tuple[click.Command, ...] = (register,)
