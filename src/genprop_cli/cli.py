"""`genprop`: a thin Typer shell over `genprop_cli.api`. It parses, validates cheap things before loading any
weights, shows progress on stderr, and turns library errors into one line and an exit code:
0 ok, 1 runtime failure, 2 bad option, 3 unusable input, 4 output problem, 5 weights, 6 device, 130 Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from genprop_cli import __version__
from genprop_cli.config import CHUNK_SIZES, PropagationOptions, RuntimeOptions, Task
from genprop_cli.errors import GenPropError, OptionError

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

TASK_HELP = {
    Task.EDIT: "Propagate an appearance or shape edit made on the first frame.",
    Task.REMOVE: "Erase through the whole clip what was erased in the first frame (shadows included).",
    Task.INSERT: "Keep an object pasted into the first frame in the scene for the whole clip.",
    Task.TRACK: "Propagate a colour marker painted on the first frame; also writes per-frame masks.",
}


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


class _ProgressDisplay:
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

    def __enter__(self) -> _ProgressDisplay:
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


def _run_task(
    task: Task,
    video: Path,
    first_frame: list[Path],
    at: Optional[list[str]],
    start: Optional[str],
    end: Optional[str],
    splice: bool,
    output: Optional[Path],
    overwrite: bool,
    model: Optional[str],
    adapter: Optional[str],
    device: str,
    dtype: str,
    seed: int,
    steps: Optional[int],
    guidance: Optional[float],
    chunk: int | None,
    overlap: int | None,
    composite: bool,
    preserve: bool,
    prompt: str,
    compile: bool,
    offload: str,
    vae_tiling: bool,
    attention_backend: Optional[str],
    work_dir: Optional[Path],
    keep_work: bool,
    max_pixels: int,
    max_frames: int,
    masks: Optional[Path],
    preview: Optional[Path],
    crf: int,
    preset: str,
    pix_fmt: str,
    json_out: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    from genprop_cli import api
    from genprop_cli.video_io import EncoderOptions, InputLimits, check_output_path
    from genprop_cli.weights import load_registry

    try:
        options = PropagationOptions(
            task=task, chunk=chunk, overlap=overlap, steps=steps, guidance=guidance, seed=seed,
            device=device, dtype=dtype, composite=composite, preserve=preserve, prompt=prompt,
        ).with_defaults(load_registry().get(model).defaults)  # fmt: skip
        encoder = EncoderOptions(crf=crf, preset=preset, pix_fmt=pix_fmt)
        runtime = RuntimeOptions(
            compile=compile, offload=offload, vae_tiling=vae_tiling, attention_backend=attention_backend
        )
        output = output or api.default_output_path(video, task)
        check_output_path(output, input_path=video, overwrite=overwrite)
        if masks is None and task is Task.TRACK:
            masks = api.default_masks_dir(output)
        if masks is not None:
            api.check_masks_dir(masks, overwrite=overwrite)
        if preview is not None:
            api.check_preview_path(preview, overwrite=overwrite)
        if at and len(at) != len(first_frame):
            raise OptionError(f"give one --first-frame per --at: {len(first_frame)} image(s) for {len(at)} --at")
        if not at and len(first_frame) != 1:
            raise OptionError("several --first-frame images need an --at for each")
        clip = api.Clip.open(video, first_frame[0], limits=InputLimits(max_pixels=max_pixels, max_frames=max_frames))
        keyframes, start_frame, stop_frame, notes = _keyframes(clip, first_frame, at, start, end)
        for note in notes:
            if not quiet:
                err.print(f"note: {note}", highlight=False)
        model_ = api.GenProp.load(model, adapter=adapter, device=device, dtype=dtype, runtime=runtime)
        if model_.variant.spec.untrained and not quiet:
            err.print(
                f"[yellow]warning:[/] variant {model_.name!r} has random, untrained weights: its output is not a result",
                highlight=False,
            )
        with _ProgressDisplay(enabled=not quiet and err.is_terminal) as progress:
            result = api.render(
                model_, clip, output, options, overwrite=overwrite, masks=masks, preview=preview,
                encoder=encoder, on_progress=progress, work_dir=work_dir,
                keep_work=keep_work, keyframes=keyframes, start=start_frame, stop=stop_frame, splice=splice,
            )  # fmt: skip
    except (GenPropError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        exit_ = fail(exc, verbose)
        if json_out:  # batch scripts read one JSON document on stdout, success or not
            typer.echo(json.dumps({"status": "error", "exit_code": exit_.exit_code, "error": str(exc) or type(exc).__name__}))
        raise exit_ from None
    if json_out:
        typer.echo(result.to_json())
    if not quiet:
        for warning in result.warnings:
            err.print(f"note: {warning}", highlight=False)
        masks_note = f", masks in {result.masks}" if result.masks else ""
        masks_note += f", preview {result.preview}" if result.preview else ""
        masks_note += f", {result.resumed_chunks} chunk(s) resumed from an interrupted run" if result.resumed_chunks else ""
        err.print(
            f"wrote {result.output} ({result.frames} frames, {result.chunks} chunk(s), {result.elapsed_s:.1f} s"
            f"{masks_note})",
            highlight=False,
        )


def _keyframes(clip, images: list[Path], at: list[str] | None, start: str | None, end: str | None):
    """--at/--start/--end as `render`'s keyframes and range (`api.place_edits`), loading the edited frames
    of the second and later --at; plus the notes about the images (resized, converted)."""
    from genprop_cli import api
    from genprop_cli.images import load_first_frame

    notes, extra = list(clip.notes), []
    for path in images[1:] if at else []:
        image, note = load_first_frame(path, (clip.info.width, clip.info.height))
        notes += [note] if note else []
        extra.append(image)
    keyframes, start_frame, stop_frame = api.place_edits(clip, at or (), start, end, extra)
    return keyframes, start_frame, stop_frame, notes


def _make_task_command(task: Task):
    """One Typer command per task, all sharing one option list (defined once, here)."""

    def command(
        video: Annotated[Path, typer.Argument(help="Input video (.mp4, .mov, .mkv, ...).", show_default=False)],
        first_frame: Annotated[
            list[Path],
            typer.Option("--first-frame", "-f", show_default=False,
                         help="The edited first frame (PNG/JPEG/WebP); with --at, one per --at, in the same order."),
        ],
        at: Annotated[
            Optional[list[str]],
            typer.Option(help="The frame each --first-frame shows: 120 (frame), 2.5s or 0:02.5; repeat for several "
                              "keyframes. The edit is propagated both ways; each frame follows its nearest keyframe."),
        ] = None,
        start: Annotated[
            Optional[str], typer.Option(help="Process only from this frame/time on (the rest is kept as it is).")
        ] = None,
        end: Annotated[Optional[str], typer.Option(help="Process only up to (not including) this frame/time.")] = None,
        splice: Annotated[
            bool, typer.Option("--splice", help="With --start/--end: output the whole clip, the range replaced, the rest as it was.")
        ] = False,
        output: Annotated[
            Optional[Path],
            typer.Option("--output", "-o", help="Output video; default: <input>.genprop-<task>.mp4 beside the input."),
        ] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", "-y", help="Replace existing outputs.")] = False,
        model: Annotated[
            Optional[str], typer.Option("--model", "--variant", "-m", help="Variant from weights.toml (see `genprop models list`).")
        ] = None,
        adapter: Annotated[
            Optional[str],
            typer.Option(help="Adapter weights overriding the variant's: a .safetensors path or hf://org/name@REV/file."),
        ] = None,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
        dtype: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16 (auto: fp32 on CPU).")] = "auto",
        seed: Annotated[int, typer.Option(help="Random seed (each chunk uses seed + its first frame index).")] = 0,
        steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the variant's).")] = None,
        guidance: Annotated[
            Optional[float], typer.Option(help="Classifier-free guidance scale (default: the variant's; <= 1 disables).")
        ] = None,
        chunk: Annotated[
            Optional[int],
            typer.Option(help=f"Frames per chunk: {', '.join(map(str, CHUNK_SIZES))} [default: the variant's, 32 or 64]."),
        ] = None,
        overlap: Annotated[
            Optional[int],
            typer.Option(help="Frames shared (and cross-faded) by consecutive chunks [default: the variant's, 8]."),
        ] = None,
        composite: Annotated[
            bool, typer.Option(help="Take unmodified pixels (per the predicted mask) from the source at full resolution.")
        ] = False,
        preserve: Annotated[
            bool,
            typer.Option(help="While sampling, keep what the predicted mask leaves unmodified anchored to the source "
                              "(SVD variants)."),
        ] = False,
        prompt: Annotated[
            str, typer.Option(help="Text conditioning for backbones that read text (Wan); empty by default.")
        ] = "",
        compile: Annotated[
            bool, typer.Option("--compile", help="torch.compile the denoiser's blocks (faster steps after a warm-up).")
        ] = False,
        offload: Annotated[
            str,
            typer.Option(help="none, encoders (text/image encoders in CPU memory) or group (also stream the denoiser's blocks)."),
        ] = "none",
        vae_tiling: Annotated[bool, typer.Option("--vae-tiling", help="Tiled VAE encode/decode (Wan), for large frames.")] = False,
        attention_backend: Annotated[
            Optional[str], typer.Option(help="diffusers attention backend for Wan, e.g. flash, _native_cudnn, sage.")
        ] = None,
        work_dir: Annotated[
            Optional[Path],
            typer.Option(help="Where finished chunks are kept until success (default: hidden folder beside the output); "
                              "rerunning an interrupted command continues from there."),
        ] = None,
        keep_work: Annotated[bool, typer.Option("--keep-work", help="Keep the work folder after success.")] = False,
        max_pixels: Annotated[
            int, typer.Option(help="Refuse inputs whose frames have more pixels than this (before decoding).")
        ] = 8192 * 8192,
        max_frames: Annotated[int, typer.Option(help="Refuse inputs with more frames than this.")] = 100_000,
        masks: Annotated[
            Optional[Path],
            typer.Option(help="Write the predicted masks as a PNG sequence into this folder (track: on by default)."),
        ] = None,
        preview: Annotated[
            Optional[Path], typer.Option(help="Write a PNG contact sheet of sampled frames: input | output | mask.")
        ] = None,
        crf: Annotated[int, typer.Option(help="libx264 CRF (lower is better quality).")] = 18,
        preset: Annotated[str, typer.Option(help="libx264 preset.")] = "veryfast",
        pix_fmt: Annotated[
            str,
            typer.Option(help="Output chroma: yuv420p (plays everywhere; odd sizes padded by 1 px), yuv422p, or "
                              "yuv444p (exact odd sizes, fewer players)."),
        ] = "yuv420p",
        json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail; tracebacks for internal errors.")] = False,
    ) -> None:
        _run_task(**{**locals(), "task": task})

    command.__doc__ = TASK_HELP[task]
    return command


for _task in Task:
    app.command(_task.value, help=TASK_HELP[_task])(_make_task_command(_task))


# --- batch: many clips, one loaded model, optionally many processes/GPUs (see batch.py) ------------

# The task commands' options that also apply to every job of a batch (declared once, above).
_BATCH_SHARED = (
    "overwrite", "model", "adapter", "device", "dtype", "seed", "steps", "guidance", "chunk", "overlap", "composite",
    "preserve", "prompt", "compile", "offload", "vae_tiling", "attention_backend", "crf", "preset", "pix_fmt", "quiet",
    "verbose",
)  # fmt: skip


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
    json_out: Annotated[bool, typer.Option("--json", help="Print the batch summary as JSON on stdout.")] = False,
) -> None:
    """The batch command's own options; the others come from the task commands (`_batch_signature`)."""


def _batch_signature():
    import inspect

    own = inspect.signature(_batch_own_options, eval_str=True).parameters
    shared = inspect.signature(_make_task_command(Task.EDIT), eval_str=True).parameters
    return inspect.Signature([*own.values(), *(shared[name] for name in _BATCH_SHARED)])


class _BatchDisplay:
    """One line per finished job on stderr; on a terminal also a bar over jobs and one over the current job."""

    def __init__(self, shard: int, prefix: str, bars: bool, quiet: bool) -> None:
        self.shard, self.prefix, self.quiet, self.done = shard, prefix, quiet, 0
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True, disable=not bars,
        )  # fmt: skip
        self.jobs_bar = self.progress.add_task(f"{prefix}jobs", total=shard)
        self.steps_bar = None

    def __enter__(self) -> _BatchDisplay:
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


def _run_batch(
    jobs: str,
    task: Optional[Task],
    output_dir: Optional[Path],
    summary: Optional[Path],
    skip_existing: bool,
    json_out: bool,
    overwrite: bool,
    model: Optional[str],
    adapter: Optional[str],
    device: str,
    dtype: str,
    seed: int,
    steps: Optional[int],
    guidance: Optional[float],
    chunk: int | None,
    overlap: int | None,
    composite: bool,
    preserve: bool,
    prompt: str,
    compile: bool,
    offload: str,
    vae_tiling: bool,
    attention_backend: Optional[str],
    crf: int,
    preset: str,
    pix_fmt: str,
    quiet: bool,
    verbose: bool,
) -> None:
    from genprop_cli import api, batch
    from genprop_cli.video_io import EncoderOptions
    from genprop_cli.weights import load_registry

    try:
        world = batch.World.from_env()
        device = world.device(device)
        options = PropagationOptions(
            chunk=chunk, overlap=overlap, steps=steps, guidance=guidance, seed=seed, device=device, dtype=dtype,
            composite=composite, preserve=preserve, prompt=prompt,
        ).with_defaults(load_registry().get(model).defaults)  # fmt: skip
        encoder = EncoderOptions(crf=crf, preset=preset, pix_fmt=pix_fmt)
        runtime = RuntimeOptions(compile=compile, offload=offload, vae_tiling=vae_tiling, attention_backend=attention_backend)
        if overwrite and skip_existing:
            raise batch.OptionError("--overwrite and --skip-existing contradict each other")
        job_list = batch.parse_jobs(jobs, task=task, output_dir=output_dir)
        summary_path = summary or batch.default_summary_path(jobs, output_dir)
        if output_dir is not None:
            try:
                output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise batch.OutputError(f"cannot create --output-dir {output_dir}: {exc.strerror or exc}") from None
        batch.check_summary_path(summary_path)
        batch_id = batch.agree_batch_id(world)
        prefix = f"rank {world.rank}: " if world.world_size > 1 else ""
        shard = world.shard(len(job_list))
        if not quiet:
            spread = f", {len(shard)} in this process (rank {world.rank} of {world.world_size})" if world.world_size > 1 else ""
            err.print(f"batch: {len(job_list)} job(s){spread}", highlight=False)
        model_ = None
        if shard:  # loaded once for all of this process's jobs
            model_ = api.GenProp.load(model, adapter=adapter, device=device, dtype=dtype, runtime=runtime)
            if model_.variant.spec.untrained and not quiet:
                err.print(f"[yellow]warning:[/] variant {model_.name!r} has random, untrained weights: its output is not a result", highlight=False)
        with _BatchDisplay(len(shard), prefix, bars=not quiet and err.is_terminal, quiet=quiet) as display:
            part = batch.run_batch(
                model_, job_list, options, output_dir=output_dir, overwrite=overwrite, skip_existing=skip_existing,
                encoder=encoder, world=world, on_start=display.start,
                on_job=display.finished, on_progress=display.step,
            )  # fmt: skip
        if verbose:
            for result in part.failures:
                if not isinstance(result.exception, GenPropError) and result.exception is not None:
                    traceback.print_exception(result.exception, file=sys.stderr)
        merged = batch.collect_summary(part, summary_path, batch_id=batch_id, world=world)
    except KeyboardInterrupt:
        err.print("genprop: interrupted; finished jobs' outputs are kept, the running job's is not written", highlight=False)
        raise typer.Exit(130) from None
    except (GenPropError, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        exit_ = fail(exc, verbose)
        if json_out:
            typer.echo(json.dumps({"status": "error", "exit_code": exit_.exit_code, "error": str(exc) or type(exc).__name__}))
        raise exit_ from None
    shown = merged or part
    if merged is not None:
        if json_out:
            typer.echo(merged.to_json())
        skipped = f", {merged.skipped} skipped" if merged.skipped else ""
        line = f"batch: {merged.ok} ok, {merged.failed} failed{skipped} of {merged.jobs} job(s) ({merged.elapsed_s:.1f} s); summary in {summary_path}"
    else:
        line = f"{prefix}{part.ok} ok, {part.failed} failed of this process's {len(part.results)} job(s); the last process to finish writes {summary_path}"
    if shown.failed or not quiet:
        err.print(line, highlight=False, markup=False, soft_wrap=True)
        for result in shown.failures:
            err.print(f"  failed: {result.video} ({result.origin}): {result.error}", highlight=False, markup=False, soft_wrap=True)
    if shown.failed:
        raise typer.Exit(1)


def batch_command(**params) -> None:
    _run_batch(**params)


batch_command.__signature__ = _batch_signature()  # type: ignore[attr-defined]
app.command(
    "batch",
    help="Run many jobs (clip + edited first frame + task) with the model loaded once; exits 1 if any job failed. "
    "Several processes/GPUs: `accelerate launch -m genprop_cli batch ...` or `torchrun ... -m genprop_cli batch ...` "
    "(job i runs on rank i % WORLD_SIZE).",
)(batch_command)


@models_app.command("list")
def models_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """List the variants in weights.toml and whether their files are present locally."""
    from genprop_cli.weights import load_registry, variant_status

    try:
        registry = load_registry()
        rows = [variant_status(spec) for spec in registry.variants.values()]
    except GenPropError as exc:
        raise fail(exc, False) from None
    if json_out:
        typer.echo(json.dumps({"default": registry.default_variant, "variants": rows}, indent=2))
        return
    from rich.table import Table

    table = Table("variant", "family", "backbone", "adapter", "description")
    for row in rows:
        name = row["name"] + (" (default)" if row["name"] == registry.default_variant else "")
        table.add_row(name, row["family"], row["backbone"], row["adapter"], row["description"])
    Console().print(table)


@models_app.command("download")
def models_download(variant: Annotated[str, typer.Argument(help="Variant name.")]) -> None:
    """Fetch a variant's pinned files into the Hugging Face cache (needs network) and check their hashes."""
    from genprop_cli.weights import download_variant

    try:
        resolved = download_variant(variant)
    except (GenPropError, Exception) as exc:  # noqa: BLE001
        raise fail(exc, False) from None
    err.print(f"{variant}: backbone in {resolved.backbone_dir}, adapter {resolved.adapter_file}", highlight=False)


@models_app.command("build-random-tiny")
def models_build_random_tiny(
    output: Annotated[Path, typer.Argument(help="Folder to write backbone/ and adapter.safetensors into.")],
    seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 0,
    family: Annotated[str, typer.Option(help="svd, wan (Wan 2.1 I2V layout) or wan-ti2v (Wan 2.2 TI2V layout).")] = "svd",
) -> None:
    """Build a tiny random-weight variant of the SVD or Wan architecture (smoke tests; its output is not a result)."""
    from genprop_cli.families import tiny_layouts
    from genprop_cli.random_tiny import build_random_tiny

    if output.exists() and any(output.iterdir()):
        raise fail(GenPropError(f"{output} is not empty"), False)
    if family not in tiny_layouts():
        raise fail(GenPropError(f"--family must be one of {', '.join(tiny_layouts())}, got {family!r}"), False)
    backbone, adapter = build_random_tiny(output, seed=seed, family=family)
    err.print(f"wrote {backbone} and {adapter}", highlight=False)


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Option(help="Dataset root (DAVIS or YouTube-VIS layout).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoints, log.jsonl, adapter.safetensors.", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="davis or ytvis.")] = "davis",
    model: Annotated[Optional[str], typer.Option("--model", "--variant", "-m", help="Variant whose backbone to train against.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file with any training option (CLI flags win).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Clips per step and process.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Gradient accumulation micro-batches.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate.")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per training clip (default: the variant's).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Training clip width (default: the variant's, 16:9).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Training clip height (default: the variant's, 16:9).")] = None,
    sce_blocks: Annotated[Optional[int], typer.Option(help="Backbone blocks the SCE copies (default: all encoder blocks).")] = None,
    init_adapter: Annotated[Optional[str], typer.Option(help="Start from these adapter weights.")] = None,
    mixed_precision: Annotated[Optional[str], typer.Option(help="no, fp16 or bf16 (GPU).")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward.")] = None,
    ema_decay: Annotated[Optional[float], typer.Option(help="Keep an EMA of the adapter (e.g. 0.999) and export it.")] = None,
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of data, noise and initialisation.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto or cpu.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks for internal errors.")] = False,
) -> None:
    """Train the SCE + MPD + task embedding on a video instance segmentation dataset; resumes from the
    latest checkpoint in --output. Multi-GPU / multi-node: `accelerate launch -m genprop_cli train ...`."""
    try:
        from genprop_cli.training.trainer import TrainConfig, describe, train, with_variant_defaults

        overrides = dict(
            data=str(data), output=str(output), format=format, model=model, steps=steps, batch_size=batch_size,
            grad_accum=grad_accum, lr=lr, frames=frames, width=width, height=height, sce_blocks=sce_blocks,
            init_adapter=init_adapter, mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
            ema_decay=ema_decay, save_every=save_every, seed=seed, device=device,
        )  # fmt: skip
        if config is not None:
            cfg = TrainConfig.from_toml(config, **overrides)
        else:
            cfg = TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
        cfg = with_variant_defaults(cfg)
        if not quiet:
            err.print(describe(cfg), highlight=False)
        with _TrainProgress(enabled=not quiet and err.is_terminal, quiet=quiet) as progress:
            result = train(cfg, on_log=progress)
    except (GenPropError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        raise fail(exc, verbose) from None
    if json_out:
        typer.echo(result.to_json())
    if not quiet:
        if note := result.skipped_note():
            err.print(note, highlight=False, soft_wrap=True)
        terms = ", ".join(f"{k} {v:.4g}" for k, v in result.mean_terms_last_10.items())
        err.print(f"wrote {result.adapter} ({result.steps} steps, {result.steps_per_s:.2f} steps/s; last 10: {terms})", highlight=False)


class _TrainProgress:
    """Rich progress for training: step bar with rate and ETA, and the latest loss terms."""

    def __init__(self, enabled: bool, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[terms]}"),
            console=err, transient=True, disable=not enabled,
        )  # fmt: skip
        self.enabled, self.task_id = enabled, None

    def __enter__(self) -> _TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, log) -> None:
        terms = " ".join(f"{k}={v:.3g}" for k, v in log.terms.items())
        if self.task_id is None:
            self.task_id = self.progress.add_task("train", total=log.steps, rate="", terms="")
        self.progress.update(self.task_id, completed=log.step, rate=f"{log.steps_per_s:.2f} it/s", terms=terms)
        if not self.enabled and not self.quiet:
            err.print(f"step {log.step}/{log.steps} {terms} lr={log.lr:.3g} ({log.steps_per_s:.2f} steps/s)", highlight=False)


def _parse_adapters(values: list[str]) -> dict[str, str]:
    """LABEL=PATH pairs (a bare PATH is labelled by its parent folder's name)."""
    labelled: dict[str, str] = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep:
            label, path = Path(value).parent.name or Path(value).stem, value
        if not label or not path:
            raise GenPropError(f"--adapter must be LABEL=PATH or PATH, got {value!r}")
        if label in labelled:
            raise GenPropError(f"--adapter label {label!r} given twice")
        labelled[label] = path
    return labelled


@app.command("eval")
def eval_command(
    eval_set: Annotated[Path, typer.Argument(help="Evaluation set folder (from `genprop toy eval-set`).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder: report.json, report.md, sheets/.", show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", "--variant", "-m", help="Variant to evaluate.")] = None,
    adapter: Annotated[
        Optional[list[str]],
        typer.Option(help="Also evaluate these adapters on the variant's backbone: LABEL=PATH (repeatable)."),
    ] = None,
    variant_adapter: Annotated[
        bool, typer.Option("--variant-adapter/--no-variant-adapter", help="Evaluate the variant's own adapter.")
    ] = True,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Also run the classical baselines.")] = True,
    clip_model: Annotated[
        Optional[str], typer.Option(help="CLIP model (folder or Hub id) for CLIP-T / CLIP-I; skipped without one.")
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the variant's).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (default: the variant's).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N examples of each task.")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help="Only these tasks (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", "-y", help="Replace an existing report.")] = False,
    preserve: Annotated[
        bool, typer.Option("--preserve", help="Also score each GenProp run sampled with --preserve (\"+preserve\").")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks for internal errors.")] = False,
) -> None:
    """Score a variant (and extra adapters, and the baselines) on an evaluation set: PSNR, SSIM, PSNR_m,
    removal residual (object and shadow), tracking IoU and J&F, optionally CLIP-T / CLIP-I."""
    try:
        from genprop_cli.evaluation import runner

        request = runner.EvalRequest(
            eval_set=eval_set, output=output, model=model, adapters=_parse_adapters(adapter or []),
            variant_adapter=variant_adapter, baselines=baselines, clip_model=clip_model, steps=steps,
            guidance=guidance, seed=seed, limit=limit, tasks=tuple(Task(t) for t in task) if task else tuple(Task),
            device=device, overwrite=overwrite, preserve=preserve,
        )  # fmt: skip
        report = runner.run_eval(
            request, on_example=None if quiet else lambda i, n, name: err.print(f"[{i}/{n}] {name}", highlight=False)
        )
    except ValueError as exc:
        raise fail(GenPropError(str(exc)), verbose) from None
    except (GenPropError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        raise fail(exc, verbose) from None
    if json_out:
        typer.echo(json.dumps({"status": "ok", "output": str(output), "summary": report.summary()}, default=str))
    if not quiet:
        typer.echo(report.to_markdown(), err=True)
        err.print(f"wrote {output / runner.REPORT_JSON}, {output / runner.REPORT_MD} and {output / runner.SHEETS}/", highlight=False)


BACKGROUNDS_HELP = (
    "Background kinds, comma-separated, drawn with equal odds: waves (the original texture), gradient, flat, "
    "stripes, checker, blobs, photo (real photographs bundled with scikit-image); or 'all'."
)
ZOOM_HELP = "Half the clips zoom in or out by up to this fraction per frame (0: pans only)."


def _background_kinds(text: str) -> tuple[str, ...]:
    """'all' or a comma-separated list of toy background kinds; a bad name is a usage error (exit 2)."""
    from genprop_cli.toy.world import BACKGROUND_KINDS

    kinds = BACKGROUND_KINDS if text.strip() == "all" else tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in BACKGROUND_KINDS]
    if unknown or not kinds:
        raise typer.BadParameter(f"unknown background kind(s) {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(BACKGROUND_KINDS)} or all", param_hint="--backgrounds")
    return kinds


@toy_app.command("dataset")
def toy_dataset(
    output: Annotated[Path, typer.Argument(help="Dataset root to create (DAVIS layout).", show_default=False)],
    clips: Annotated[int, typer.Option(help="Number of clips.")] = 240,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 32,
    size: Annotated[int, typer.Option(help="Frame width and height.")] = 64,
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
    shadows: Annotated[
        bool, typer.Option("--shadows/--no-shadows", help="Annotate each object together with its shadow.")
    ] = False,
    backgrounds: Annotated[str, typer.Option(help=BACKGROUNDS_HELP)] = "waves",
    zoom: Annotated[float, typer.Option(help=ZOOM_HELP)] = 0.0,
) -> None:
    """Write toy clips (shapes, shadows, a panning textured background) with instance masks, DAVIS layout."""
    from genprop_cli.toy import write_davis

    if output.exists() and any(output.iterdir()):
        raise fail(GenPropError(f"{output} is not empty"), False)
    kinds = _background_kinds(backgrounds)
    names = write_davis(output, clips, seed, frames=frames, size=size, shadows=shadows, backgrounds=kinds,
                        camera_zoom=zoom)
    err.print(f"wrote {len(names)} clips to {output}", highlight=False)


@toy_app.command("eval-set")
def toy_eval_set(
    output: Annotated[Path, typer.Argument(help="Evaluation set folder to create.", show_default=False)],
    per_task: Annotated[int, typer.Option(help="Examples per task.")] = 8,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 24,
    size: Annotated[int, typer.Option(help="Frame width and height.")] = 64,
    seed: Annotated[int, typer.Option(help="World seed (use one the training data did not).")] = 1000,
    backgrounds: Annotated[str, typer.Option(help=BACKGROUNDS_HELP + " Photos: the ones training never uses.")] = "waves",
    zoom: Annotated[float, typer.Option(help=ZOOM_HELP)] = 0.0,
) -> None:
    """Write (source, edited first frame, ground-truth clip, ground-truth masks) examples for every task."""
    from genprop_cli.toy import write_eval_set

    if output.exists() and any(output.iterdir()):
        raise fail(GenPropError(f"{output} is not empty"), False)
    folders = write_eval_set(output, per_task, seed, frames=frames, size=size,
                             backgrounds=_background_kinds(backgrounds), camera_zoom=zoom)
    err.print(f"wrote {len(folders)} examples to {output}", highlight=False)


@toy_app.command("train-backbone")
def toy_train_backbone(
    data: Annotated[Path, typer.Option(help="Dataset root (DAVIS layout).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder; the model goes to OUTPUT/backbone.", show_default=False)],
    config: Annotated[Optional[Path], typer.Option(help="TOML file with any backbone training option.")] = None,
    vae_steps: Annotated[Optional[int], typer.Option(help="VAE optimizer steps.")] = None,
    unet_steps: Annotated[Optional[int], typer.Option(help="U-Net optimizer steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of data, noise and initialisation.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks for internal errors.")] = False,
) -> None:
    """Train a small SVD-architecture image-to-video backbone (VAE, then U-Net) from scratch."""
    try:
        from genprop_cli.training.backbone import BackboneTrainConfig, train_backbone
        from genprop_cli.training.trainer import read_toml

        raw = read_toml(config) if config is not None else {}
        overrides = dict(data=str(data), output=str(output), vae_steps=vae_steps, unet_steps=unet_steps, seed=seed)
        cfg = BackboneTrainConfig.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

        def log(record: dict) -> None:
            if not quiet:
                err.print(" ".join(f"{k}={v}" for k, v in record.items()), highlight=False)

        result = train_backbone(cfg, log=log)
    except (GenPropError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        raise fail(exc, verbose) from None
    if not quiet:
        err.print(f"wrote {result.output} (VAE {result.vae_seconds:.0f} s, U-Net {result.unet_seconds:.0f} s)", highlight=False)


def main() -> None:
    app()
