"""`render`: runs a plan and writes what it asks for: the video (original audio kept), the mask PNG sequence,
the preview contact sheet.

No half-written output is left behind on failure or Ctrl-C: outputs are written to temporary paths and
renamed into place only when complete. The input is never opened for writing. Finished chunks are kept in a
work folder (default beside the output) until the render succeeds, so running it again after a crash or
`kill -9` continues from the last finished chunk with the same result (`resume.py`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from genprop_cli.clip import Clip
from genprop_cli.config import PropagationOptions, RunRequest
from genprop_cli.errors import DeviceError
from genprop_cli.fileio import partial_path, replace_folder
from genprop_cli.images import save_png_atomic
from genprop_cli.plan import Inputs, OutputPaths, RunPlan, check_masks_dir, plan_inputs
from genprop_cli.preview import ContactSheet
from genprop_cli.propagation import GenProp, ProgressCallback
from genprop_cli.resume import ChunkStore
from genprop_cli.video_io import VideoWriter, remove_stale_partials


@dataclass
class RenderResult:
    """What `render` did; `to_json()` is the CLI's `--json` document."""

    task: str
    input: str
    output: str
    masks: str | None
    preview: str | None
    variant: str
    adapter_sha256: str | None
    device: str
    dtype: str
    seed: int
    steps: int
    guidance: float
    chunk: int
    overlap: int
    preserve: bool
    preserve_margin: int
    preserve_threshold: float
    frames: int
    chunks: int
    width: int
    height: int
    working_width: int
    working_height: int
    fps: float
    duration_s: float
    audio_streams: int
    elapsed_s: float
    resumed_chunks: int = 0  # chunks replayed from the work folder of an interrupted run
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"status": "ok", **asdict(self)}, indent=2)


class _MaskSequence:
    """Writes masks as a PNG sequence into a temporary folder, renamed into place only on success."""

    def __init__(self, target: Path, overwrite: bool) -> None:
        check_masks_dir(target, overwrite=overwrite)
        self.target = target
        self.tmp = partial_path(target)
        self.tmp.mkdir()

    def write(self, index: int, mask: np.ndarray) -> None:
        save_png_atomic(self.tmp / f"{index:06d}.png", mask)

    def commit(self) -> Path:
        replace_folder(self.tmp, self.target)  # check_masks_dir refused an existing folder without overwrite
        return self.target

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def render(
    model: GenProp,
    request: RunRequest,
    *,
    clip: Clip | None = None,
    inputs: Inputs | None = None,
    on_progress: ProgressCallback | None = None,
) -> RenderResult:
    """Plans `request` on `model` and writes its outputs. `clip` replaces opening `request.video` (a clip
    held in memory); `inputs` is an earlier `plan_inputs(request)` (the CLI checks them before loading)."""
    started = time.perf_counter()
    plan = model.plan(request, inputs=inputs or plan_inputs(request, clip))
    paths = plan.inputs.outputs
    store = ChunkStore.open(paths.work_dir, plan.key)
    resumed = store.total()
    remove_stale_partials(paths.video)
    try:
        with _mask_sequence(paths, request) as masks:
            frames, warnings, preview = _write_video(model, plan, paths, store, masks, on_progress)
        if not request.outputs.keep_work:
            store.remove()
    except BaseException as exc:
        if store.total() == 0:  # nothing to resume from: leave nothing behind
            store.remove()
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise DeviceError(out_of_memory_advice(plan.options)) from None
        raise
    expected = plan.inputs.stop - plan.inputs.start if plan.trimmed else plan.clip.info.num_frames
    result = _result(model, plan, frames, time.perf_counter() - started, resumed,
                     [*plan.inputs.notes, *warnings, *_missing_frames_warning(frames, expected)])  # fmt: skip
    result.preview = str(preview) if preview is not None else None
    return result


@contextmanager
def _mask_sequence(paths: OutputPaths, request: RunRequest) -> Iterator[_MaskSequence | None]:
    """The mask writer if masks are asked for; committed on success, removed on failure."""
    if paths.masks is None:
        yield None
        return
    masks = _MaskSequence(paths.masks, request.outputs.overwrite)
    try:
        yield masks
    except BaseException:
        masks.abort()
        raise
    masks.commit()


def _write_video(model, plan: RunPlan, paths: OutputPaths, store, masks, on_progress) -> tuple[int, list[str], Path | None]:
    """Streams the plan's frames into the video (and masks, preview); returns the frames written, the
    writer's warnings and the preview written, if any."""
    request, inputs = plan.request, plan.inputs
    sheet = ContactSheet(plan.clip.info.num_frames, plan.display) if paths.preview is not None else None
    frames = 0
    with VideoWriter(
        paths.video, source=plan.clip.info, width=plan.display[0], height=plan.display[1], encoder=request.encoder,
        overwrite=request.outputs.overwrite, trim_start=plan.trimmed,
    ) as writer:  # fmt: skip
        for frame in model.frames(plan, on_progress=on_progress, store=store):
            if plan.trimmed and not inputs.start <= frame.index < inputs.stop:
                continue
            writer.write(frame.rgb, frame.pts, frame.time_base)
            if masks is not None:
                masks.write(frame.index, frame.mask)
            if sheet is not None:
                sheet.add(frame.index, frame.source, frame.rgb, frame.mask)
            frames += 1
    preview = sheet.save(paths.preview) if sheet is not None and sheet.rows else None
    return frames, list(writer.warnings), preview


def _result(model: GenProp, plan: RunPlan, frames: int, elapsed: float, resumed: int, warnings: list[str]) -> RenderResult:
    paths, options, info = plan.inputs.outputs, plan.options, plan.clip.info
    return RenderResult(
        task=options.task.value, input=str(plan.clip.video), output=str(paths.video),
        masks=str(paths.masks) if paths.masks else None,
        preview=None,
        variant=model.name, adapter_sha256=model.variant.adapter_sha256, device=str(model.pipeline.device),
        dtype=str(model.pipeline.dtype).removeprefix("torch."), seed=options.seed, steps=options.steps,
        guidance=options.guidance, chunk=options.chunk, overlap=options.overlap, preserve=options.preserve,
        preserve_margin=options.preserve_margin, preserve_threshold=options.preserve_threshold,
        frames=frames, chunks=plan.chunks,
        width=plan.display[0], height=plan.display[1], working_width=plan.work[0], working_height=plan.work[1],
        fps=info.fps, duration_s=info.duration_s, audio_streams=len(info.audio), elapsed_s=round(elapsed, 3),
        resumed_chunks=resumed, warnings=warnings,
    )  # fmt: skip


def out_of_memory_advice(options: PropagationOptions) -> str:
    """The one-line message for CUDA running out of memory, with what to try next."""
    smaller = f"--chunk {options.chunk // 2}, " if options.chunk > 32 else ""
    return (
        f"out of GPU memory at --chunk {options.chunk}; try {smaller}--offload encoders (or group: the backbone's "
        "blocks stream from CPU memory), --vae-tiling (Wan), --dtype bf16/fp16, or a smaller variant"
    )


def _missing_frames_warning(written: int, expected: int) -> list[str]:
    if written >= expected:
        return []
    return [f"only {written} of the {expected} frames in the input could be decoded; the output is that long"]
