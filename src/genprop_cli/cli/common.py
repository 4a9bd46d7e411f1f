"""What every `genprop` command shares: the Typer apps, the stderr console, the one-line error with its exit
code (0 ok, 1 runtime failure, 2 bad option, 3 unusable input, 4 output problem, 5 weights, 6 device, 130
Ctrl-C), and the progress display."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from genprop_cli import __version__
from genprop_cli.errors import GenPropError

err = Console(stderr=True)

app = typer.Typer(
    name="genprop",
    help="Carry a first-frame edit through a whole video (Generative Video Propagation).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 ok, 1 failure, 2 bad option, 3 bad input, 4 output exists/unwritable, 5 weights, "
    "6 device, 130 interrupted.",
)
models_app = typer.Typer(help="List, download and build model variants.", no_args_is_help=True)
app.add_typer(models_app, name="models")
toy_app = typer.Typer(help="The toy world: datasets, evaluation sets and the toy backbone.", no_args_is_help=True)
app.add_typer(toy_app, name="toy")

def _version(value: bool) -> None:
    if value:
        typer.echo(f"genprop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    """Carry a first-frame edit through a whole video (Generative Video Propagation)."""


def fail(exc: BaseException, verbose: bool) -> typer.Exit:
    """One line on stderr and the matching exit code (a traceback only with -v, for unexpected errors)."""
    if isinstance(exc, GenPropError):
        err.print(f"[bold red]genprop: error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        return typer.Exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        err.print("genprop: interrupted; no output was written (finished chunks are kept: run the same command again to continue)", highlight=False)
        return typer.Exit(130)
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    err.print(
        f"[bold red]genprop: internal error:[/] {type(exc).__name__}: {exc} (run with -v for the traceback)",
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(1)


class ProgressDisplay:
    """Rich progress on stderr: one bar over all denoising steps of all chunks, with the ETA."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not enabled,
        )
        self.task_id = None

    def __enter__(self) -> ProgressDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event) -> None:
        total = event.chunks * event.steps
        done = (event.chunk - 1) * event.steps + event.step
        description = f"chunk {event.chunk}/{event.chunks}"
        if self.task_id is None:
            self.task_id = self.progress.add_task(description, total=total)
        self.progress.update(self.task_id, total=total, completed=done, description=description)
