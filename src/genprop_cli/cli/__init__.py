"""`genprop`: a thin Typer shell over `genprop_cli.api`. It parses, validates cheap things before loading any
weights, shows progress on stderr, and turns library errors into one line and an exit code.

`common` holds the apps and the error boundary, `options` derives flags from the config dataclasses, `run`
the propagation commands (tasks and batch), `tools` the rest (models, train, eval, toy world).
"""

from __future__ import annotations

from genprop_cli.cli import run, tools  # noqa: F401 - registers the commands
from genprop_cli.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
