"""Deployment files: Kubernetes manifests and Dockerfiles for lockgate servers."""

from __future__ import annotations

from pathlib import Path

import click

from lockgate.cli.render import out


@click.group()
def k8s() -> None:
    """Kubernetes manifests for lockgate servers."""


@k8s.command("render")
@click.argument("name")
@click.option("--image", default="lockgate:latest", show_default=True)
@click.option("--namespace", default="default", show_default=True)
@click.option("--replicas", type=int, default=2, show_default=True)
@click.option("--max-replicas", type=int, default=10, show_default=True)
@click.option("--cpu-target", type=int, default=70, show_default=True,
              help="HPA target CPU utilisation, percent.")
@click.option("--out", "target", type=click.Path(path_type=Path), default=None,
              help="Write the YAML here instead of printing it.")
@click.pass_context
def k8s_render(ctx: click.Context, name: str, image: str, namespace: str, replicas: int,
               max_replicas: int, cpu_target: int, target: Path | None) -> None:
    """Deployment, Service, HPA, PodDisruptionBudget and ConfigMap serving model NAME from the
    shared registry (database URL and object-store credentials as Secret references)."""
    from lockgate.config.settings import load_settings
    from lockgate.rollout.manifests import K8sOptions, render_manifests, to_yaml

    settings = load_settings(ctx.obj["home"])
    text = to_yaml(render_manifests(name, K8sOptions(
        image=image, namespace=namespace, replicas=replicas, max_replicas=max_replicas,
        cpu_target=cpu_target, artifact_url=settings.artifact_url,
        s3_endpoint_url=settings.s3_endpoint_url)))
    if target is None:
        click.echo(text, nl=False)
        return
    target.write_text(text, encoding="utf-8")
    out.print(f"wrote {target}")


@click.group()
def docker() -> None:
    """Container images for lockgate servers."""


@docker.command("render")
@click.option("--requirements", type=click.Path(path_type=Path), required=True,
              help="requirements.txt with every package pinned (==) and hashed (--hash).")
@click.option("--python", "python_version", default="3.11", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the Dockerfile here instead of printing it.")
def docker_render(requirements: Path, python_version: str, out: Path | None) -> None:
    """A Dockerfile that installs exactly the pinned, hashed requirements."""
    from lockgate.rollout.manifests import render_dockerfile

    text = render_dockerfile(requirements, python=python_version)
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")


COMMANDS: tuple[click.Command, ...] = (k8s, docker)
