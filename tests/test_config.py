"""config.py: every option declared once, and the task commands, `batch` and jobs lines derived from it."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import pytest
from typer.main import get_command

from genprop_cli.batch import job_keys
from genprop_cli.cli import app
from genprop_cli.cli.options import GROUPS
from genprop_cli.cli.run import build_request
from genprop_cli.config import (
    FOLDER,
    TASK_ONLY,
    OutputOptions,
    Placement,
    PropagationOptions,
    RunRequest,
    RunSettings,
    Task,
    flag_of,
    flagged_fields,
)
from genprop_cli.errors import OptionError
from genprop_cli.plan import DEFAULT_PATHS


def command_options(name: str) -> set[str]:
    """The parameter names of a `genprop` command as Click sees it."""
    return {p.name for p in get_command(app).commands[name].params}


def all_option_fields() -> list:
    return [f for group in GROUPS for f in flagged_fields(group)]


def test_every_declared_option_is_a_flag_of_every_task_command_and_of_batch_unless_task_only():
    names = {f.name for f in all_option_fields()}
    for task in Task:
        assert names <= command_options(task.value), names - command_options(task.value)
    batch_only = {f.name for f in all_option_fields() if flag_of(f).batch == TASK_ONLY}
    assert batch_only == {"output"}  # a batch has -O/--output-dir and per-line outputs instead
    assert names - batch_only <= command_options("batch")
    assert "output" not in command_options("batch")


def test_every_per_job_option_is_a_jobs_line_key_and_every_folder_option_has_a_default_name():
    settings_fields = [f for group in RunSettings.groups().values() for f in flagged_fields(group)]
    assert {f.name for f in settings_fields if flag_of(f).job_key} | {"first_frame"} == set(job_keys())
    folders = {f.name for f in settings_fields if flag_of(f).batch == FOLDER}
    assert folders == set(DEFAULT_PATHS) == {"masks", "preview", "work_dir"}


def test_option_names_are_unique_across_groups_and_flags_have_help():
    names = [f.name for f in all_option_fields()]
    assert len(names) == len(set(names))
    assert all(flag_of(f).help.strip() for f in all_option_fields())


def test_a_command_line_becomes_one_request_with_each_value_in_its_group():
    values = {"seed": 3, "at": ("0", "2s"), "output": Path("o.mp4"), "crf": 20, "max_frames": 9, "model": "toy"}
    request = build_request(Task.REMOVE, Path("c.mp4"), [Path("a.png"), Path("b.png")], values)
    assert (request.options.task, request.options.seed, request.placement.at) == (Task.REMOVE, 3, ("0", "2s"))
    assert (request.outputs.output, request.encoder.crf, request.limits.max_frames) == (Path("o.mp4"), 20, 9)
    assert request.first_frames == (Path("a.png"), Path("b.png"))


def test_a_request_needs_one_image_per_at_and_bad_values_are_option_errors():
    with pytest.raises(OptionError, match="one --first-frame per --at"):
        RunRequest(video="c.mp4", first_frames=("a.png",), placement=Placement(at=("0", "5")))
    with pytest.raises(OptionError, match="need an --at for each"):
        RunRequest(video="c.mp4", first_frames=("a.png", "b.png"))
    with pytest.raises(OptionError, match="--chunk must be one of"):
        RunRequest.build(Path("c.mp4"), "a.png", RunSettings(), {"chunk": 33})
    assert RunRequest(video="c.mp4", first_frames="a.png").first_frames == ("a.png",)


def test_settings_changed_by_values_keep_what_the_values_do_not_name():
    base = RunSettings(options=PropagationOptions(seed=5, steps=2), outputs=OutputOptions(overwrite=True))
    changed = RunSettings(**base.changed({"steps": 4, "splice": True}))
    assert (changed.options.seed, changed.options.steps, changed.placement.splice, changed.outputs.overwrite) == (
        5, 4, True, True
    )  # fmt: skip
    assert set(RunSettings.groups()) == {f.name for f in fields(RunSettings)}


def test_the_cli_signature_is_derived_not_written_out():
    from genprop_cli.cli import run

    source = inspect.getsource(run)
    assert "--seed" not in source and "--preserve" not in source and "--pix-fmt" not in source
