"""Shared pieces of the ``humwatch`` command line: the root app, one-line errors, options."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

app = typer.Typer(
    name="humwatch",
    help="humwatch: listens to machines and flags the moments they sound wrong.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """humwatch: listens to machines and flags the moments they sound wrong."""


def fail(message: str, code: int = 1) -> None:
    """Print one readable error line and exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_settings():
    from pydantic import ValidationError

    from service.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"HUMWATCH_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        fail(f"bad settings: {problems}")


@contextlib.contextmanager
def one_line_errors():
    """A ``CommandError`` (or Ctrl-C) becomes one error line and a non-zero exit."""
    from service.cli.api_client import CommandError

    try:
        yield
    except CommandError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


# -- API commands (--url / HUMWATCH_URL, key in HUMWATCH_API_KEY); see api_client -------

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="HUMWATCH_URL",
        help="the humwatch service; requests send the key in HUMWATCH_API_KEY (Bearer)",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON, not a table")]
MachineOption = Annotated[
    str, typer.Option("--machine", "-m", metavar="ID", help="the machine's id (slug)")
]
StartedAtOption = Annotated[
    str,
    typer.Option(
        "--started-at",
        help="time of each file's first sample: 'auto' (a file ends at its modification "
        "time, moved earlier so that files do not overlap; re-running stores nothing twice), "
        "'now' (the service's receive time), or an ISO time for the first file (the others "
        "follow back to back)",
    ),
]
ConditionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--condition", metavar="KEY=VALUE", help="operating condition, e.g. rpm=1480 (repeat)"
    ),
]
