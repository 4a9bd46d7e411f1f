"""A plan, then a run: everything a run request resolves to, worked out once before any frame is sampled.

`plan_inputs` does the model-free part (open the clip, load the edited frames, place them, check the
outputs), so that the CLI refuses bad input before it loads any weights; `make_plan` adds what needs the
loaded model (its defaults, limits and working size) and yields a `RunPlan`, which `GenProp.frames` runs and
`render` writes. The plain case (one edited first frame, the whole clip) is one segment with no backward
part; keyframes and ranges are more segments.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from genprop_cli.chunking import ChunkSpan, Segment, blend_halves, plan_chunks, plan_segments, segment_spans
from genprop_cli.clip import Clip, Keyframe, place_edits
from genprop_cli.config import PropagationOptions, RunRequest, Task
from genprop_cli.errors import OptionError, OutputError
from genprop_cli.fileio import sha256_file
from genprop_cli.resume import array_sha256, default_work_dir
from genprop_cli.video_io import check_output_path
from genprop_cli.weights import Limits

if TYPE_CHECKING:
    from genprop_cli.propagation import GenProp


@dataclass(frozen=True)
class OutputPaths:
    """Where a render writes: the video, and optionally the mask PNG sequence, the preview and its work folder."""

    video: Path
    masks: Path | None
    preview: Path | None
    work_dir: Path


@dataclass(frozen=True)
class Inputs:
    """The model-free part of a plan: the opened clip, its placed edits and the checked output paths."""

    clip: Clip
    keyframes: tuple[Keyframe, ...]
    start: int
    stop: int
    notes: tuple[str, ...]
    outputs: OutputPaths | None  # None: frames only (`GenProp.propagate`), nothing is written


@dataclass(frozen=True)
class RunPlan:
    """A resolved run: options with the variant's defaults, sizes, segments and their chunks, resume key."""

    request: RunRequest
    inputs: Inputs
    options: PropagationOptions  # every default filled in
    segments: tuple[Segment, ...]
    spans: tuple[ChunkSpan, ...]  # each segment's output span, reaching into its neighbours to be blended
    display: tuple[int, int]
    work: tuple[int, int]  # the size the model runs at
    chunks: int  # chunks sampled in all (each segment's backward and forward runs)
    key: dict[str, object]  # everything the chunks depend on (resume.ChunkStore)

    @property
    def clip(self) -> Clip:
        return self.inputs.clip

    @property
    def segmented(self) -> bool:
        """Runs go to per-segment work folders (an --at or a range), not the plain single run's."""
        return self.request.placement.segmented

    @property
    def trimmed(self) -> bool:
        """Only the processed range is output (a range without --splice)."""
        placement = self.request.placement
        return (placement.start is not None or placement.end is not None) and not placement.splice


def segment_runs(segment: Segment, span: ChunkSpan) -> tuple[int, int]:
    """Frames of a segment's backward run (0: none; it runs from the keyframe back to the span's start) and
    of its forward run (from the keyframe to the span's end)."""
    backward = segment.at - span.start + 1 if span.start < segment.at else 0
    return backward, span.stop - segment.at


def count_chunks(segments: list[Segment], spans: list[ChunkSpan], chunk: int, overlap: int) -> int:
    """Chunks sampled in all: each segment's backward and forward runs."""
    runs = [n for segment, span in zip(segments, spans) for n in segment_runs(segment, span) if n]
    return sum(len(plan_chunks(n, chunk, overlap)) for n in runs)


def default_output_path(video: Path, task: Task) -> Path:
    """`clip.mp4` -> `clip.genprop-remove.mp4` next to the input (mp4 unless the input is .mov/.mkv)."""
    suffix = video.suffix.lower() if video.suffix.lower() in (".mp4", ".mov", ".mkv") else ".mp4"
    return video.with_name(f"{video.stem}.genprop-{task.value}{suffix}")


def default_masks_dir(output: Path) -> Path:
    return output.with_name(f"{output.stem}.masks")


def default_preview_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.preview.png")


def check_preview_path(preview: Path, *, overwrite: bool) -> None:
    if preview.suffix.lower() != ".png":
        raise OutputError(f"preview {preview} must be a .png file")
    if not preview.parent.is_dir():
        raise OutputError(f"preview folder {preview.parent} does not exist")
    if preview.exists() and not overwrite:
        raise OutputError(f"{preview} exists; pass --overwrite to replace it")


def check_masks_dir(masks: Path, *, overwrite: bool) -> None:
    if not masks.parent.is_dir():
        raise OutputError(f"mask folder's parent {masks.parent} does not exist")
    if masks.exists() and not overwrite:
        raise OutputError(f"{masks} exists; pass --overwrite to replace it")


def output_paths(request: RunRequest) -> OutputPaths:
    """The request's output paths with their defaults (track writes masks), each checked before any work."""
    out = request.outputs
    video = Path(out.output) if out.output is not None else default_output_path(request.video, request.options.task)
    check_output_path(video, input_path=request.video, overwrite=out.overwrite)
    masks = Path(out.masks) if out.masks is not None else None
    if masks is None and request.options.task is Task.TRACK:
        masks = default_masks_dir(video)
    if masks is not None:
        check_masks_dir(masks, overwrite=out.overwrite)
    preview = Path(out.preview) if out.preview is not None else None
    if preview is not None:
        check_preview_path(preview, overwrite=out.overwrite)
    work_dir = Path(out.work_dir) if out.work_dir is not None else default_work_dir(video)
    return OutputPaths(video, masks, preview, work_dir)


def plan_inputs(request: RunRequest, clip: Clip | None = None, *, write: bool = True) -> Inputs:
    """Checks the outputs (when `write`), opens the clip (or takes the given one) and places the edits."""
    outputs = output_paths(request) if write else None
    if clip is None:
        clip = Clip.open(request.video, request.first_frames[0], limits=request.limits)
    placed = place_edits(clip, request.placement, request.first_frames[1:])
    return Inputs(clip, placed.keyframes, placed.start, placed.stop, placed.notes, outputs)


def working_size(width: int, height: int, limits: Limits, multiple: int) -> tuple[int, int]:
    """The size the model runs at: the input's aspect ratio at the variant's pixel budget, rounded to `multiple`."""
    scale = math.sqrt(limits.max_pixels / (width * height))
    step = max(multiple, limits.multiple_of)
    w = max(step, int(width * scale) // step * step)
    h = max(step, int(height * scale) // step * step)
    return w, h


def make_plan(model: GenProp, request: RunRequest, inputs: Inputs) -> RunPlan:
    """Resolves a request against a loaded model; every refusal happens here, before any sampling."""
    clip = inputs.clip
    model.check_clip(clip)
    options = model.resolve(request.options)
    model.check_options(options)
    try:
        segments = plan_segments(clip.info.num_frames, [k.frame for k in inputs.keyframes], inputs.start, inputs.stop)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    spans = segment_spans(segments, blend_halves(segments, options.overlap))
    display = clip.display_size
    work = working_size(*display, model.variant.spec.limits, model.pipeline.size_multiple)
    chunks = count_chunks(segments, spans, options.chunk, options.overlap)
    plan = RunPlan(request, inputs, options, tuple(segments), tuple(spans), display, work, chunks, {})
    return replace(plan, key=run_key(model, plan))


def run_key(model: GenProp, plan: RunPlan) -> dict[str, object]:
    """Everything a render's chunks depend on: a work folder made under another key is never reused."""
    clip, pipe = plan.clip, model.pipeline
    video = array_sha256(clip.in_memory) if clip.in_memory is not None else sha256_file(clip.video)
    key: dict[str, object] = {
        "input": video,
        "first_frame": array_sha256(clip.first_frame),
        "variant": model.name,
        "adapter_sha256": model.variant.adapter_sha256,
        "backbone": dict(sorted(model.variant.spec.backbone_files.items())),
        "options": {**asdict(plan.options), "task": plan.options.task.value},
        "device": pipe.device.type,
        "dtype": str(pipe.dtype).removeprefix("torch."),
        "working_size": list(plan.work),
    }
    if plan.segmented:
        key["keyframes"] = [[k.frame, array_sha256(k.image)] for k in plan.inputs.keyframes]
        placement = plan.request.placement
        key["range"] = [plan.inputs.start, plan.inputs.stop if placement.end is not None else None]
    return key


# The default path of each per-output path option, from the output video's (batch: under a folder).
DEFAULT_PATHS = {"masks": default_masks_dir, "preview": default_preview_path, "work_dir": default_work_dir}
