"""`lockgate reproduce` and the hidden `lockgate _rebuild` its fresh environment runs."""

from __future__ import annotations

from pathlib import Path

import click

from lockgate.cli.context import local_home
from lockgate.cli.render import emit_json, err, out, progress_bars
from lockgate.errors import ReproductionError

PHASES = {"venv": "creating the environment", "packages": "installing the recorded lock",
          "install": "unpacking the packages into the environment",
          "lockgate": "installing lockgate", "rebuild": "running the recipe",
          "compare": "comparing with the stored ONNX"}


class PhaseLines:
    """Progress as one stderr line per phase, where no bar can be drawn (not a terminal)."""

    def start(self, task: str, total: int | None = None) -> None:
        count = f" ({total} packages)" if total is not None else ""
        err.print(f"  {PHASES.get(task, task)}{count}…", markup=False)

    def advance(self, task: str, steps: int = 1) -> None:
        return None

    def finish(self, task: str) -> None:
        return None


@click.command()
@click.argument("ref")
@click.option("--env", "env_kind", type=click.Choice(["fresh", "current"]), default="fresh",
              show_default=True,
              help="fresh: a new venv from the recorded lock; current: this interpreter.")
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="The git repository holding the recorded commit (default: as recorded).")
@click.option("--lockgate-spec", default=None,
              help="What to pip install as lockgate in a fresh venv (default: this one).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reproduce(ctx: click.Context, ref: str, env_kind: str, source: Path | None,
              lockgate_spec: str | None, as_json: bool) -> None:
    """Rebuild a version from its recorded recipe and compare with the stored ONNX; the result
    is stored for the reproducible gate. Exit 1 when it does not reproduce."""
    from lockgate.reproduce.recipe import reproduce as run_reproduction

    lg = local_home(ctx)
    v = lg.get(ref)
    err.print(f"rebuilding {v.name}@{v.number} ({env_kind} environment)", markup=False)
    with progress_bars(err.is_terminal) as bar:
        detail = run_reproduction(lg, v, source=source, env=env_kind,
                                  lockgate_spec=lockgate_spec, progress=bar or PhaseLines())
    if as_json:
        emit_json(detail)
    else:
        venv = detail.get("venv")
        where = (f"; environment {'reused from' if venv['cache_hit'] else 'built into'} the "
                 f"cache ({venv['packages']} packages)") if venv else ""
        out.print(f"{v.name}@{v.number}: {'reproduced' if detail['passed'] else 'NOT reproduced'}"
                  f" — {detail['message']} ({detail['seconds']} s{where})", markup=False)
    if not detail["passed"]:
        raise ReproductionError(f"{v.name}@{v.number} did not reproduce: {detail['message']}")


@click.command("_rebuild", hidden=True)
@click.argument("entry")
@click.argument("opset", type=int)
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("args", nargs=-1)
def rebuild_child(entry: str, opset: int, out: Path, args: tuple[str, ...]) -> None:
    """The child side of `lockgate reproduce` (see lockgate.reproduce.rebuild)."""
    from lockgate.reproduce.rebuild import rebuild

    rebuild(entry, opset, out, args)


COMMANDS: tuple[click.Command, ...] = (reproduce, rebuild_child)
