"""The `genprop` commands around propagation: models (list, download, build), train, eval and the toy world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from genprop_cli.cli.common import app, err, fail, models_app, toy_app
from genprop_cli.config import Task
from genprop_cli.errors import GenPropError


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
    family: Annotated[
        str, typer.Option(help="A tiny layout of a registered family: svd, wan (Wan 2.1 I2V) or wan-ti2v (Wan 2.2 TI2V).")
    ] = "svd",
) -> None:
    """Build a tiny random-weight variant of a backbone family (smoke tests; its output is not a result)."""
    from genprop_cli.families import tiny_layouts
    from genprop_cli.random_tiny import build_random_tiny

    if output.exists() and any(output.iterdir()):
        raise fail(GenPropError(f"{output} is not empty"), False)
    if family not in tiny_layouts():
        raise fail(GenPropError(f"--family must be one of {', '.join(tiny_layouts())}, got {family!r}"), False)
    backbone, adapter = build_random_tiny(output, seed=seed, family=family)
    err.print(f"wrote {backbone} and {adapter}", highlight=False)


@app.command(
    "train",
    help="Train the SCE + MPD + task embedding on a video instance segmentation dataset.\n\n"
    "Resumes from the latest checkpoint in --output. Multi-GPU / multi-node: "
    "`accelerate launch -m genprop_cli train ...`.",
)
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
    mixed_precision: Annotated[Optional[str], typer.Option(help="no, fp16 (GPU) or bf16 (GPU, or a CPU with AVX512-BF16 or AMX).")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward.")] = None,
    ema_decay: Annotated[Optional[float], typer.Option(help="Keep an EMA of the adapter (e.g. 0.999) and export it.")] = None,
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of data, noise and initialisation.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto or cpu.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks for internal errors.")] = False,
) -> None:
    """`genprop train` (its help is the decorator's: rich help prints a docstring's line breaks)."""
    try:
        from genprop_cli.training.trainer import (
            TrainConfig, check_can_train, compact_resume_note, describe, train, with_variant_defaults,
        )

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
        check_can_train(cfg)  # a refusal is the only line printed
        if not quiet:
            err.print(describe(cfg), highlight=False)
            if note := compact_resume_note(cfg):
                err.print(note, highlight=False)
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


@app.command(
    "eval",
    help="Score a variant (and extra adapters, and the baselines) on an evaluation set.\n\n"
    "Metrics: PSNR, SSIM, PSNR_m, removal residual (object and shadow), tracking IoU and J&F, "
    "optionally CLIP-T / CLIP-I.",
)
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
        bool,
        typer.Option(
            "--preserve",
            help="Also score each GenProp run sampled the other way: with --preserve (\"+preserve\"), or with "
            "--no-preserve (\"+no-preserve\") for a variant that preserves by default.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks for internal errors.")] = False,
) -> None:
    """`genprop eval` (its help is the decorator's)."""
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
    mixed_precision: Annotated[Optional[str], typer.Option(help="no or bf16 (a GPU, or a CPU with AVX512-BF16 or AMX).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Tracebacks for internal errors.")] = False,
) -> None:
    """Train a small SVD-architecture image-to-video backbone (VAE, then U-Net) from scratch."""
    try:
        from genprop_cli.training.backbone import BackboneTrainConfig, train_backbone
        from genprop_cli.training.trainer import read_toml

        raw = read_toml(config) if config is not None else {}
        overrides = dict(data=str(data), output=str(output), vae_steps=vae_steps, unet_steps=unet_steps, seed=seed,
                         mixed_precision=mixed_precision)  # fmt: skip
        cfg = BackboneTrainConfig.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

        def log(record: dict) -> None:
            if not quiet:
                err.print(" ".join(f"{k}={v}" for k, v in record.items()), highlight=False)

        result = train_backbone(cfg, log=log)
    except (GenPropError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the CLI boundary
        raise fail(exc, verbose) from None
    if not quiet:
        err.print(f"wrote {result.output} (VAE {result.vae_seconds:.0f} s, U-Net {result.unet_seconds:.0f} s)", highlight=False)
