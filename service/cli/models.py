"""``humwatch models``: pretrained weights in the models directory (HUMWATCH_MODELS_DIR).

``fetch`` is the only command in humwatch that downloads weights; embedders load them from
the models directory and never download at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import app, fail, load_settings

models_app = typer.Typer(
    help="Pretrained model weights: fetch them once into the models directory.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="models directory (default: HUMWATCH_MODELS_DIR, ~/.cache/humwatch/models)",
    ),
]


def _models_dir(directory: Path | None) -> Path:
    return (directory or Path(load_settings().models_dir)).expanduser()


@models_app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="model to fetch: aisfx")],
    directory: DirOption = None,
    wheel: Annotated[
        Path | None,
        typer.Option(
            help="use this wheel file (e.g. downloaded on another machine) instead of "
            "running pip download; its checksum is checked all the same"
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="fetch again even if the weights are there")] = False,
) -> None:
    """Download a model's pinned weights (checksum checked) into the models directory."""
    from service.model_store import SOURCES, ModelFetchError, fetch_model, read_manifest

    models_dir = _models_dir(directory)
    try:
        target, fetched = fetch_model(name, models_dir, wheel=wheel, force=force)
    except ModelFetchError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write to {models_dir}: {exc}")
    _check_loads(name, target)
    manifest = read_manifest(models_dir, name) or {}
    source = SOURCES[name]
    verb = "fetched" if fetched else "already present:"
    typer.echo(
        f"{name}: {verb} {target} ({source.package} {source.version}, sha256 "
        f"{manifest.get('sha256', source.member_sha256)[:16]}...)"
    )
    typer.echo(f"license: {source.license}; cite: {source.citation}")


def _check_loads(name: str, target: Path) -> None:
    """Build the embedder from the fetched weights (fails loudly if they do not fit)."""
    if name != "aisfx":
        return
    from detectors.embedders.aisfx import AisfxEmbedder
    from detectors.errors import EmbedderError

    try:
        AisfxEmbedder(model_dir=str(target), device="cpu")
    except EmbedderError as exc:
        fail(f"the fetched weights do not load: {exc}")


@models_app.command("list")
def list_models(directory: DirOption = None) -> None:
    """Models humwatch can fetch, and which are in the models directory."""
    from service.model_store import SOURCES, is_installed, model_dir, read_manifest

    models_dir = _models_dir(directory)
    typer.echo(f"models directory: {models_dir}")
    for name, source in SOURCES.items():
        if is_installed(models_dir, name):
            manifest = read_manifest(models_dir, name) or {}
            fetched = manifest.get("fetched_at", "?")
            state = f"present ({model_dir(models_dir, name)}, fetched {fetched})"
        else:
            state = f"not fetched (humwatch models fetch {name})"
        typer.echo(f"{name:8s} {source.package} {source.version}  {state}")
