"""Command-line flags derived from the config dataclasses (as whisper derives its CLI from `transcribe()`'s
arguments): each `config.option` field becomes one Typer option with its help text, so the task commands
and `genprop batch` can never drift apart, and a new option is one field in `config.py`."""

from __future__ import annotations

import inspect
from dataclasses import Field, dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Optional, Union, get_args, get_origin, get_type_hints

import typer

from genprop_cli.config import (
    FOLDER,
    TASK_ONLY,
    ModelOptions,
    RunSettings,
    RuntimeOptions,
    field_default,
    flag_of,
    flagged_fields,
    option,
)


@dataclass(frozen=True)
class ConsoleOptions:
    """How a command talks to the terminal and to scripts."""

    json: bool = option(False, "Print a JSON summary on stdout.", "--json")
    quiet: bool = option(False, "Only errors on stderr.", "--quiet", "-q")
    verbose: bool = option(False, "More detail; tracebacks for internal errors.", "--verbose", "-v")


# Every option group of a propagation command, in the order --help lists them.
GROUPS: tuple[type, ...] = (ModelOptions, *RunSettings.groups().values(), RuntimeOptions, ConsoleOptions)
BATCH_FOLDER_NOTE = " In batch: a folder that receives each job's under its default name."


def _typer_type(hint: Any) -> tuple[Any, bool]:
    """(the type Typer parses, whether the option repeats) for a field's type hint."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is tuple:
        return Optional[list[args[0]]], True
    if args and get_origin(hint) in (Union, UnionType):
        return Optional[args[0]], False
    return hint, False


def _parameter(f: Field, hint: Any, *, batch: bool) -> inspect.Parameter:
    flag = flag_of(f)
    kind, repeats = _typer_type(hint)
    help_text = flag.help + (BATCH_FOLDER_NOTE if batch and flag.batch == FOLDER else "")
    default = None if repeats else field_default(f)
    annotation = Annotated[kind, typer.Option(*flag.names, help=help_text)]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def parameters(*, batch: bool = False) -> list[inspect.Parameter]:
    """The options of every group as Typer parameters (without the task-only ones for `batch`)."""
    out: list[inspect.Parameter] = []
    for group in GROUPS:
        hints = get_type_hints(group)
        for f in flagged_fields(group):
            if not (batch and flag_of(f).batch == TASK_ONLY):
                out.append(_parameter(f, hints[f.name], batch=batch))
    names = [p.name for p in out]
    if len(names) != len(set(names)):  # one flat namespace of flags: a clash is a programming error
        raise RuntimeError(f"option names declared twice: {sorted({n for n in names if names.count(n) > 1})}")
    return out


def values(params: dict[str, Any]) -> dict[str, Any]:
    """Parsed flags as config field values: repeated options become tuples, unset ones are dropped."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, list):
            value = tuple(value)
        if value is not None:
            out[name] = value
    return out


def signature(own: list[inspect.Parameter], *, batch: bool = False) -> inspect.Signature:
    """A command's own arguments followed by every derived option."""
    return inspect.Signature([*own, *parameters(batch=batch)])


def path_argument(name: str, help: str) -> inspect.Parameter:
    annotation = Annotated[Path, typer.Argument(help=help, show_default=False)]
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)
