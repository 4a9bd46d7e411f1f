"""A loaded GenProp variant and how it runs a plan: chunk by chunk, segment by segment, frames out in order.

    model = GenProp.load()                                   # default variant from weights.toml
    plan = model.plan(RunRequest(video="clip.mp4", first_frames=("edited.png",)))
    for frame in model.frames(plan):                         # frames arrive chunk by chunk, in order
        ...

Each segment of the plan (one, unless there are keyframes or a range) is run backwards from its keyframe
(the model sees the reversed frames) and forwards to its end; a run is cut into overlapping chunks, each
sampled by the family's sampler and conditioned on the frame the previous chunk generated at its start.
Chunks of a run, and the runs of neighbouring segments, are cross-faded by the one `chunking.Stitcher`.
Memory does not grow with the clip's length: frames are decoded, sampled and handed on as a stream (a
backward run goes through memory-mapped scratch files).
"""

from __future__ import annotations

import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genprop_cli.chunking import ChunkSpan, Segment, Stitcher, blend_arrays, chunk_windows
from genprop_cli.clip import Clip, OutputFrame, blend_output_frames, finish_frame, passthrough, to_model_frames
from genprop_cli.config import PropagationOptions, RunRequest, RuntimeOptions, Task
from genprop_cli.errors import DeviceError, OptionError
from genprop_cli.plan import Inputs, RunPlan, make_plan, plan_inputs, segment_runs
from genprop_cli.resume import ChunkStore
from genprop_cli.video_io import VideoFrame
from genprop_cli.weights import ResolvedVariant, resolve_variant

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ProgressEvent:
    """Where a propagation is: `step` of `steps` denoising steps in chunk `chunk` (1-based) of `chunks`."""

    chunk: int
    chunks: int
    step: int
    steps: int


ProgressCallback = Callable[[ProgressEvent], None]


# A later chunk reads its conditioning frame's change from the source only where the previous chunk's MPD was
# at least this sure of an edit: whatever that chunk regenerated elsewhere (under --preserve, background it
# marked by mistake) would otherwise read as part of the edit, be marked again, and grow chunk after chunk.
CONFIDENT_CHANGE = 0.5


def confident_change(probability: torch.Tensor) -> torch.Tensor:
    """Where a chunk's MPD probability ((1, h, w), calibrated) says an edit is more likely than not: 1, else 0."""
    return (probability > CONFIDENT_CHANGE).to(probability.dtype)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an unavailable device is an error, never a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise OptionError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return device


def resolve_dtype(name: str, device: torch.device, variant_default: str) -> torch.dtype:
    """`auto` is the variant's dtype on an accelerator and float32 on the CPU (half precision is slow there)."""
    if name == "auto":
        name = variant_default if device.type != "cpu" else "fp32"
    if name not in DTYPES:
        raise OptionError(f"--dtype must be one of auto, {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


class GenProp:
    """A loaded GenProp variant (frozen backbone + adapter) on one device; load once, run many clips."""

    def __init__(self, pipeline, variant: ResolvedVariant) -> None:
        self.pipeline = pipeline
        self.variant = variant

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        adapter: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        offline: bool | None = None,
        runtime: RuntimeOptions = RuntimeOptions(),
    ) -> GenProp:
        """Resolves the variant through weights.toml (Hub cache or local files, hashes checked) and loads it;
        `runtime` holds the speed/memory options (compile, offload, VAE tiling, attention backend)."""
        from genprop_cli.families import sampler_class
        from genprop_cli.pipelines import quiet_libraries
        from genprop_cli.pipelines.acceleration import check_runtime

        torch_device = resolve_device(device)
        check_runtime(runtime, torch_device)
        resolved = resolve_variant(model, adapter=adapter, offline=offline)
        torch_dtype = resolve_dtype(dtype, torch_device, resolved.spec.defaults.dtype)
        quiet_libraries()
        try:
            pipeline = sampler_class(resolved.spec.family).from_pretrained(
                resolved.backbone_dir, resolved.adapter_file, device=torch_device, dtype=torch_dtype,
                file_variant=resolved.spec.backbone_file_variant, runtime=runtime,
            )  # fmt: skip
        except torch.cuda.OutOfMemoryError:
            raise DeviceError(
                f"out of GPU memory loading variant {resolved.spec.name!r}; try --offload encoders or --offload group "
                "(weights stay in CPU memory), or --dtype bf16/fp16"
            ) from None
        # Inference never needs the adapter's gradients; frozen like the backbone, its block copies also share
        # the backbone blocks' compiled graphs under --compile (dynamo guards on requires_grad).
        pipeline.denoiser.adapter.requires_grad_(False)
        return cls(pipeline, resolved)

    @property
    def name(self) -> str:
        return self.variant.spec.name

    def resolve(self, options: PropagationOptions) -> PropagationOptions:
        """`options` with every unset value (chunk, overlap, steps, guidance, preserve) from the variant's defaults."""
        return options.with_defaults(self.variant.spec.defaults)

    def check_options(self, options: PropagationOptions) -> None:
        """Refuses, before any work is done, a task the adapter was not trained for and --preserve for a
        family whose sampler cannot anchor latents."""
        self.pipeline.adapter.task_id(options.task)
        if options.preserve and not self.pipeline.capabilities.preserve:
            raise OptionError(f"--preserve is not available for {self.pipeline.family} variants; --composite is")

    def check_clip(self, clip: Clip) -> None:
        """Refuses clips over the variant's frame limit before any work is done."""
        limit = self.variant.spec.limits.max_frames
        if clip.info.num_frames > limit:
            raise OptionError(
                f"{clip.video.name} has {clip.info.num_frames} frames; variant {self.name!r} allows at most {limit}"
            )

    def plan(self, request: RunRequest, *, clip: Clip | None = None, inputs: Inputs | None = None) -> RunPlan:
        """Resolves `request` once (options, working size, segments and chunks, resume key); `clip` replaces
        opening `request.video` (clips held in memory), `inputs` an earlier `plan_inputs`."""
        return make_plan(self, request, inputs or plan_inputs(request, clip, write=False))

    def frames(
        self, plan: RunPlan, *, on_progress: ProgressCallback | None = None, store: ChunkStore | None = None
    ) -> Iterator[OutputFrame]:
        """Yields every output frame of the plan in order. With a `store`, chunks it holds are replayed
        instead of sampled, and newly sampled chunks are added to it."""
        yield from _PlanRunner(self, plan, on_progress, store).frames()

    def propagate(
        self,
        clip: Clip,
        options: PropagationOptions,
        *,
        on_progress: ProgressCallback | None = None,
        store: ChunkStore | None = None,
    ) -> Iterator[OutputFrame]:
        """The paper's case: `clip.first_frame` is the edit of frame 0, propagated through the whole clip."""
        request = RunRequest(video=clip.video, first_frames=(clip.first_frame,), options=options)
        yield from self.frames(self.plan(request, clip=clip), on_progress=on_progress, store=store)


class _Progress:
    """Counts finished chunks over all runs of a plan and reports steps as `ProgressEvent`s."""

    def __init__(self, chunks: int, steps: int, callback: ProgressCallback | None) -> None:
        self.chunks, self.steps, self.callback, self.done = chunks, steps, callback, 0

    def step(self, step: int, total: int) -> None:
        if self.callback is not None:
            self.chunks = max(self.chunks, self.done + 1)
            self.callback(ProgressEvent(chunk=self.done + 1, chunks=self.chunks, step=step, steps=total))

    def chunk_done(self) -> None:
        self.done += 1


class _Tape:
    """The clip's decoded frames, read forwards once, that can go back over the last `keep` of them (the runs
    of neighbouring segments share a few frames)."""

    def __init__(self, frames: Iterator[VideoFrame], keep: int) -> None:
        self._source = frames
        self._kept: deque[VideoFrame] = deque(maxlen=max(keep, 1))  # the last frames read from the source
        self._replay: deque[VideoFrame] = deque()
        self._read = 0  # frames read from the source
        self.position = 0  # of the next frame `take` yields

    def rewind(self, position: int) -> None:
        """The next frames `take` yields start again at `position` (one of the kept frames)."""
        oldest = self._read - len(self._kept)
        if not oldest <= position <= self.position:
            raise ValueError(f"cannot go back from frame {self.position} to {position}")
        self._replay = deque(list(self._kept)[position - oldest :])
        self.position = position

    def take(self, count: int | None) -> Iterator[VideoFrame]:
        """The next `count` frames (None: all that are left)."""
        while count is None or count > 0:
            if self._replay:
                frame = self._replay.popleft()
            else:
                frame = next(self._source, None)
                if frame is None:
                    return
                self._kept.append(frame)
                self._read += 1
            self.position += 1
            count = None if count is None else count - 1
            yield frame


class _PlanRunner:
    """Runs one plan: passthrough frames outside its range, each segment's runs, the stitching between them."""

    def __init__(self, model: GenProp, plan: RunPlan, on_progress: ProgressCallback | None, store: ChunkStore | None) -> None:
        self.model, self.plan, self.store = model, plan, store
        self.progress = _Progress(plan.chunks, plan.options.steps, on_progress)

    def frames(self) -> Iterator[OutputFrame]:
        plan = self.plan
        tape = _Tape(plan.clip.frames(), keep=max(span.shared for span in plan.spans))
        with ExitStack() as scratch:
            yield from map(passthrough, tape.take(plan.inputs.start))
            stitcher: Stitcher[OutputFrame] = Stitcher(blend_output_frames)
            holds = [span.shared for span in plan.spans[1:]] + [0]
            for segment, span, hold in zip(plan.segments, plan.spans, holds, strict=True):
                tape.rewind(span.start)
                to_end = segment is plan.segments[-1] and plan.request.placement.end is None
                frames = self._segment(segment, span, tape, scratch, to_end=to_end)
                yield from stitcher.push(span, frames, hold=hold)
            yield from map(passthrough, tape.take(None))

    def _store(self, segment: Segment, direction: str) -> ChunkStore | None:
        if self.store is None or not self.plan.segmented:
            return self.store
        return self.store.sub(f"segment-{segment.keyframe:03d}").sub(direction)

    def _segment(
        self, segment: Segment, span: ChunkSpan, tape: _Tape, scratch: ExitStack, *, to_end: bool
    ) -> Iterator[OutputFrame]:
        """The segment's frames in order: its backward run's (keyframe excluded), then its forward run's; with
        `to_end` the forward run reads to the end of the stream, whatever the probe counted."""
        image = self.plan.inputs.keyframes[segment.keyframe].image
        backward, forward = segment_runs(segment, span)
        head: list[VideoFrame] = []
        if backward:
            base = self.store.folder if self.store is not None else None  # scratch beside the output, not in /tmp
            folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="scratch-", dir=base)))
            keyframe_source = yield from self._backward(list(tape.take(backward)), image, folder, segment)
            head = [keyframe_source]
        count = None if to_end else forward - len(head)
        yield from self._run(chain(head, tape.take(count)), image, self._store(segment, "forward"))

    def _backward(self, sources: list[VideoFrame], image: np.ndarray, folder: Path, segment: Segment):
        """Runs the model on `sources` reversed; yields the outputs of all but the keyframe (the last source) in
        clip order and returns the keyframe's source frame (the forward run starts from it). Outputs go
        through a memory-mapped scratch file, so a long backward run does not fill memory."""
        count = len(sources)
        h, w = sources[0].rgb.shape[:2]
        rgb = np.lib.format.open_memmap(folder / f"rgb-{time.time_ns()}.npy", mode="w+", dtype=np.uint8, shape=(count, h, w, 3))
        mask = np.lib.format.open_memmap(folder / f"mask-{time.time_ns()}.npy", mode="w+", dtype=np.uint8, shape=(count, h, w))
        for position, out in enumerate(self._run(reversed(sources), image, self._store(segment, "backward"))):
            rgb[count - 1 - position], mask[count - 1 - position] = out.rgb, out.mask
        for i, source in enumerate(sources[:-1]):
            yield OutputFrame(index=source.index, pts=source.pts, time_base=source.time_base,
                              rgb=np.array(rgb[i]), mask=np.array(mask[i]), source=source.rgb)  # fmt: skip
        return sources[-1]

    def _run(self, frames: Iterable[VideoFrame], image: np.ndarray, store: ChunkStore | None) -> Iterator[OutputFrame]:
        """One run of the model over `frames` (in the order given) from the edited `image`: chunk by chunk,
        each conditioned on what the previous one generated at its first frame; overlaps cross-faded."""
        plan, pipe = self.plan, self.model.pipeline
        options, work = plan.options, plan.work
        edited = to_model_frames([image], work)[0]
        anchor = pipe.prepare_anchor(edited, options.prompt)  # the user's edit (and prompt) anchor every chunk
        generator = torch.Generator(device=pipe.device)
        stitcher: Stitcher[tuple[np.ndarray, np.ndarray]] = Stitcher(blend_arrays)
        sources: deque[VideoFrame] = deque()
        previous = None  # (first frame index, ChunkResult, decoded frames) of the last chunk
        for span, chunk, last in chunk_windows(frames, options.chunk, options.overlap):
            generator.manual_seed(options.seed + span.start)  # per chunk, reproducible (LTX's scheme)
            result = self._chunk(span, chunk, edited, anchor, previous, generator, store)
            decoded = pipe.decode_latents(result.latents)[: len(chunk)]  # a padded chunk keeps its own frames
            previous = (span.start, result, decoded)
            rgb = ((decoded + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
            mask = F.interpolate(result.mask[: len(chunk)], size=(work[1], work[0]), mode="bilinear", align_corners=False)
            sources.extend(chunk[span.shared :])
            pieces = zip(rgb, mask[:, 0].cpu().numpy())
            for done_rgb, done_mask in stitcher.push(span, pieces, hold=0 if last else options.overlap):
                yield finish_frame(done_rgb, done_mask, sources.popleft(), plan.display, options.composite)

    def _chunk(self, span: ChunkSpan, chunk: list[VideoFrame], edited, anchor, previous, generator, store):
        """One chunk's sampler output: replayed from `store` when an interrupted run finished it, else sampled."""
        from genprop_cli.families.base import ChunkResult

        pipe, options = self.model.pipeline, self.plan.options
        record = store.load(span.index) if store is not None else None
        if record is not None:  # finished by an earlier, interrupted run with the same key
            self.progress.step(options.steps, options.steps)
            self.progress.chunk_done()
            return ChunkResult(latents=record.latents.to(pipe.device, pipe.dtype), mask=record.mask.to(pipe.device))
        change_region = None  # the user's edited frame: all of its difference from the source is the edit
        if previous is None:
            condition = pipe.first_condition(edited, generator)
        else:  # the frame the previous chunk generated at this chunk's start
            start, prev_result, prev_decoded = previous
            condition = pipe.next_condition(prev_result, prev_decoded, span.start - start)
            change_region = confident_change(prev_result.mask[span.start - start])
        source = pipe.encode_frames(to_model_frames([f.rgb for f in chunk], self.plan.work))
        result = pipe.sample_chunk(
            source_latents=source, condition=condition, anchor=anchor, task=options.task, steps=options.steps,
            guidance=options.guidance, generator=generator, preserve=options.preserve,
            preserve_margin=options.preserve_margin, preserve_threshold=options.preserve_threshold,
            change_region=change_region, on_step=self.progress.step,
        )  # fmt: skip
        if store is not None:
            store.save(span.index, result.latents, result.mask)
        self.progress.chunk_done()
        return result


def propagate(
    video: Path | str,
    first_frame: Path | str | np.ndarray,
    *,
    task: Task | str = Task.EDIT,
    model: str | None = None,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    on_progress: ProgressCallback | None = None,
    **options: object,
) -> Iterator[OutputFrame]:
    """One-call convenience: loads the variant and yields the output frames of one clip.

    `options` are `PropagationOptions` fields (chunk, overlap, steps, guidance, seed, composite, preserve,
    preserve_margin, preserve_threshold, prompt).
    Load a `GenProp` yourself to process several clips without reloading the model.
    """
    opts = PropagationOptions(task=Task(task), **options)  # type: ignore[arg-type]
    clip = Clip.open(video, first_frame)
    loaded = GenProp.load(model, adapter=adapter, device=device, dtype=dtype)
    yield from loaded.propagate(clip, opts, on_progress=on_progress)
