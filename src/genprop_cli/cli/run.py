"""The propagation commands: `genprop edit|remove|insert|track` and `genprop batch`.

Both are derived from the config dataclasses (`cli/options.py`): a task command turns its flags into one
`RunRequest` (`build_request`), a batch turns them into the `RunSettings` every job shares and each jobs
line into that job's request (`batch.job_request`), and everything else is the library's.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from genprop_cli.cli import options as cli_options
from genprop_cli.cli.common import ProgressDisplay, app, err, fail
from genprop_cli.cli.options import ConsoleOptions
from genprop_cli.config import ModelOptions, PropagationOptions, RunRequest, RunSettings, RuntimeOptions, Task, from_values
from genprop_cli.errors import GenPropError

TASK_HELP = {
    Task.EDIT: "Propagate an appearance or shape edit made on the first frame.",
    Task.REMOVE: "Erase through the whole clip what was erased in the first frame (shadows included).",
    Task.INSERT: "Keep an object pasted into the first frame in the scene for the whole clip.",
    Task.TRACK: "Propagate a colour marker painted on the first frame; also writes per-frame masks.",
}
UNTRAINED = "[yellow]warning:[/] variant {name!r} has random, untrained weights: its output is not a result"


def settings_from_flags(values: dict[str, Any], task: Task = Task.EDIT) -> RunSettings:
    """The one place the CLI turns parsed flags into run settings (a batch's are every job's)."""
    return RunSettings(**RunSettings(options=PropagationOptions(task=task)).changed(values))


def build_request(task: Task, video: Path, first_frames: list[Path], values: dict[str, Any]) -> RunRequest:
    """A task command's run request: its clip and edited frames with the settings its flags give."""
    return RunRequest.build(video, tuple(first_frames), settings_from_flags(values, task))


def load_model(values: dict[str, Any], *, device: str | None = None, quiet: bool = False):
    """Loads the variant the flags name (`device` overrides theirs: a batch process's own GPU)."""
    from genprop_cli.api import GenProp

    chosen = from_values(ModelOptions, values)
    model = GenProp.load(
        chosen.model, adapter=chosen.adapter, device=device or chosen.device, dtype=chosen.dtype,
        runtime=from_values(RuntimeOptions, values),
    )  # fmt: skip
    if model.variant.spec.untrained and not quiet:
        err.print(UNTRAINED.format(name=model.name), highlight=False)
    return model


def check_against_variant(settings: RunSettings, values: dict[str, Any]) -> None:
    """Refuses option combinations that break with the variant's defaults (an --overlap not under its
    chunk, say) before anything is opened or loaded."""
    from genprop_cli.weights import load_registry

    settings.options.with_defaults(load_registry().get(from_values(ModelOptions, values).model).defaults)


def run_task(task: Task, video: Path, first_frame: list[Path], params: dict[str, Any]) -> None:
    from genprop_cli.api import plan_inputs, render

    values = cli_options.values(params)
    console = from_values(ConsoleOptions, values)
    try:
        request = build_request(task, video, first_frame, values)
        check_against_variant(request, values)
        inputs = plan_inputs(request)  # bad input and unwritable outputs fail here, before any weights load
        for note in inputs.notes if not console.quiet else ():
            err.print(f"note: {note}", highlight=False)
        model = load_model(values, quiet=console.quiet)
        with ProgressDisplay(enabled=not console.quiet and err.is_terminal) as progress:
            result = render(model, request, inputs=inputs, on_progress=progress)
    except (GenPropError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        raise _failed(exc, console) from None
    if console.json:
        typer.echo(result.to_json())
    if not console.quiet:
        _report(result, shown=len(inputs.notes))


def _failed(exc: BaseException, console: ConsoleOptions) -> typer.Exit:
    exit_ = fail(exc, console.verbose)
    if console.json:  # batch scripts read one JSON document on stdout, success or not
        typer.echo(json.dumps({"status": "error", "exit_code": exit_.exit_code, "error": str(exc) or type(exc).__name__}))
    return exit_


def _report(result, shown: int) -> None:
    """Warnings not yet shown (the first `shown` were, before loading) and one line on what was written."""
    for warning in result.warnings[shown:]:
        err.print(f"note: {warning}", highlight=False)
    extra = f", masks in {result.masks}" if result.masks else ""
    extra += f", preview {result.preview}" if result.preview else ""
    extra += f", {result.resumed_chunks} chunk(s) resumed from an interrupted run" if result.resumed_chunks else ""
    err.print(f"wrote {result.output} ({result.frames} frames, {result.chunks} chunk(s), {result.elapsed_s:.1f} s{extra})",
              highlight=False)  # fmt: skip


def _make_task_command(task: Task):
    """One Typer command per task, all with the options the config dataclasses declare."""

    def command(**params: Any) -> None:
        video, first_frame = params.pop("video"), params.pop("first_frame")
        run_task(task, video, first_frame, params)

    first_frame = inspect_parameter(
        "first_frame", list[Path],
        typer.Option("--first-frame", "-f", show_default=False,
                     help="The edited first frame (PNG/JPEG/WebP); with --at, one per --at, in the same order."),
    )  # fmt: skip
    video = cli_options.path_argument("video", "Input video (.mp4, .mov, .mkv, ...).")
    command.__signature__ = cli_options.signature([video, first_frame])  # type: ignore[attr-defined]
    command.__doc__ = TASK_HELP[task]
    return command


def inspect_parameter(name: str, kind: Any, typer_option: Any) -> Any:
    import inspect

    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, typer_option])


for _task in Task:
    app.command(_task.value, help=TASK_HELP[_task])(_make_task_command(_task))


# --- batch: many clips, one loaded model, optionally many processes/GPUs (see batch.py) ------------


def _batch_own_options(
    jobs: Annotated[
        str,
        typer.Argument(
            help="A jobs file (.txt/.jobs/.tsv: VIDEO FIRST_FRAME TASK [OUTPUT] [KEY=VALUE...] per line), a folder "
            "of videos, a video or a quoted glob; videos pair with NAME.edited.png, NAME.png or NAME.<task>.png.",
            show_default=False,
        ),
    ],
    task: Annotated[
        Optional[Task], typer.Option("--task", "-t", help="Task of jobs that name none (folders, globs, '-' lines).")
    ] = None,
    output_dir: Annotated[
        Optional[Path],
        typer.Option("--output-dir", "-O", help="Write outputs here (created) instead of beside each input."),
    ] = None,
    summary: Annotated[
        Optional[Path],
        typer.Option(help="Summary JSON; default: genprop-batch.json in --output-dir / the folder, or <jobs>.genprop-batch.json."),
    ] = None,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip jobs whose output exists (resume an interrupted batch).")
    ] = False,
) -> None:
    """The batch command's own options; the others are the task commands' (`cli/options.py`)."""


class BatchDisplay:
    """One line per finished job on stderr; on a terminal also a bar over jobs and one over the current job."""

    def __init__(self, shard: int, prefix: str, bars: bool, quiet: bool) -> None:
        self.shard, self.prefix, self.quiet, self.done = shard, prefix, quiet, 0
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True, disable=not bars,
        )  # fmt: skip
        self.jobs_bar = self.progress.add_task(f"{prefix}jobs", total=shard)
        self.steps_bar = None

    def __enter__(self) -> BatchDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def start(self, index: int, job) -> None:
        self.progress.update(self.jobs_bar, description=f"{self.prefix}job {self.done + 1}/{self.shard} {job.video.name}")
        if self.steps_bar is not None:
            self.progress.remove_task(self.steps_bar)
            self.steps_bar = None

    def step(self, event) -> None:
        total, done = event.chunks * event.steps, (event.chunk - 1) * event.steps + event.step
        if self.steps_bar is None:
            self.steps_bar = self.progress.add_task("  steps", total=total)
        self.progress.update(self.steps_bar, total=total, completed=done, description=f"  chunk {event.chunk}/{event.chunks}")

    def finished(self, result) -> None:
        self.done += 1
        self.progress.update(self.jobs_bar, completed=self.done)
        where = f"[{self.prefix}{self.done}/{self.shard}]"
        if result.status == "failed":
            err.print(f"{where} FAILED {result.video}: {result.error}", highlight=False, markup=False, soft_wrap=True)
        elif not self.quiet:
            detail = f"{result.frames} frames, {result.seconds:.1f} s" if result.status == "ok" else "output exists"
            err.print(f"{where} {result.status} {result.video} -> {result.output} ({detail})", highlight=False, markup=False, soft_wrap=True)



def run_batch_command(params: dict[str, Any]) -> None:
    from genprop_cli import batch

    own = {name: params.pop(name) for name in ("jobs", "task", "output_dir", "summary", "skip_existing")}
    values = cli_options.values(params)
    console = from_values(ConsoleOptions, values)
    try:
        world = batch.World.from_env()
        settings = settings_from_flags(values)
        check_against_variant(settings, values)
        if settings.outputs.overwrite and own["skip_existing"]:
            raise batch.OptionError("--overwrite and --skip-existing contradict each other")
        job_list = batch.parse_jobs(own["jobs"], task=own["task"], output_dir=own["output_dir"])
        batch.check_jobs(job_list, settings)
        summary_path = own["summary"] or batch.default_summary_path(own["jobs"], own["output_dir"])
        _make_output_dir(own["output_dir"])
        batch.check_summary_path(summary_path)
        batch_id = batch.agree_batch_id(world)
        shard = world.shard(len(job_list))
        _announce(len(job_list), shard, world, console)
        device = world.device(from_values(ModelOptions, values).device)
        model = load_model(values, device=device, quiet=console.quiet) if shard else None  # once for all jobs
        part = _run_shard(model, job_list, settings, own, world, console)
        merged = batch.collect_summary(part, summary_path, batch_id=batch_id, world=world)
    except KeyboardInterrupt:
        err.print("genprop: interrupted; finished jobs' outputs are kept, the running job's is not written", highlight=False)
        raise typer.Exit(130) from None
    except (GenPropError, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        raise _failed(exc, console) from None
    _batch_report(part, merged, summary_path, world, console)


def _make_output_dir(output_dir: Path | None) -> None:
    from genprop_cli.errors import OutputError

    if output_dir is None:
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --output-dir {output_dir}: {exc.strerror or exc}") from None


def _announce(jobs: int, shard: list[int], world, console: ConsoleOptions) -> None:
    if console.quiet:
        return
    spread = f", {len(shard)} in this process (rank {world.rank} of {world.world_size})" if world.world_size > 1 else ""
    err.print(f"batch: {jobs} job(s){spread}", highlight=False)


def _run_shard(model, job_list, settings: RunSettings, own: dict[str, Any], world, console: ConsoleOptions):
    from genprop_cli import batch

    prefix = f"rank {world.rank}: " if world.world_size > 1 else ""
    bars = not console.quiet and err.is_terminal
    with BatchDisplay(len(world.shard(len(job_list))), prefix, bars=bars, quiet=console.quiet) as display:
        part = batch.run_batch(
            model, job_list, settings, output_dir=own["output_dir"], skip_existing=own["skip_existing"], world=world,
            on_start=display.start, on_job=display.finished, on_progress=display.step,
        )  # fmt: skip
    if console.verbose:
        for result in part.failures:
            if not isinstance(result.exception, GenPropError) and result.exception is not None:
                traceback.print_exception(result.exception, file=sys.stderr)
    return part


def _batch_report(part, merged, summary_path: Path, world, console: ConsoleOptions) -> None:
    shown = merged or part
    if merged is not None:
        if console.json:
            typer.echo(merged.to_json())
        skipped = f", {merged.skipped} skipped" if merged.skipped else ""
        line = (f"batch: {merged.ok} ok, {merged.failed} failed{skipped} of {merged.jobs} job(s) "
                f"({merged.elapsed_s:.1f} s); summary in {summary_path}")  # fmt: skip
    else:
        prefix = f"rank {world.rank}: " if world.world_size > 1 else ""
        line = (f"{prefix}{part.ok} ok, {part.failed} failed of this process's {len(part.results)} job(s); "
                f"the last process to finish writes {summary_path}")  # fmt: skip
    if shown.failed or not console.quiet:
        err.print(line, highlight=False, markup=False, soft_wrap=True)
        for result in shown.failures:
            err.print(f"  failed: {result.video} ({result.origin}): {result.error}", highlight=False, markup=False, soft_wrap=True)
    if shown.failed:
        raise typer.Exit(1)


def batch_command(**params: Any) -> None:
    run_batch_command(params)


def _batch_signature():
    import inspect

    own = list(inspect.signature(_batch_own_options, eval_str=True).parameters.values())
    return cli_options.signature(own, batch=True)


batch_command.__signature__ = _batch_signature()  # type: ignore[attr-defined]
app.command(
    "batch",
    help="Run many jobs (clip + edited first frame + task) with the model loaded once; exits 1 if any job failed. "
    "Several processes/GPUs: `accelerate launch -m genprop_cli batch ...` or `torchrun ... -m genprop_cli batch ...` "
    "(job i runs on rank i % WORLD_SIZE).",
)(batch_command)
