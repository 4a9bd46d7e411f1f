"""The Python API under the CLI: load a variant once, then propagate first-frame edits through clips.

    from genprop_cli import GenProp, Clip, PropagationOptions, Task

    model = GenProp.load()                                   # default variant from weights.toml
    clip = Clip.open("clip.mp4", "edited.png")               # validates the video and the edited frame
    for frame in model.propagate(clip, PropagationOptions(task=Task.REMOVE)):
        ...                                                  # frames arrive chunk by chunk, in order

`render()` does the same and writes the video (with the original audio) and, optionally, the masks.
Memory does not grow with the clip's length: frames are decoded, propagated and encoded as a stream.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import tempfile
from fractions import Fraction
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genprop_cli.chunking import ChunkSpan, Segment, Stitcher, plan_chunks, plan_segments
from genprop_cli.config import PropagationOptions, RuntimeOptions, Task, parse_position
from genprop_cli.errors import DeviceError, OptionError, OutputError
from genprop_cli.fileio import partial_path, replace_folder, sha256_file
from genprop_cli.images import load_first_frame, save_png_atomic
from genprop_cli.preview import ContactSheet
from genprop_cli.resume import ChunkStore, array_sha256, default_work_dir
from genprop_cli.video_io import (
    EncoderOptions,
    InputLimits,
    VideoFrame,
    VideoInfo,
    VideoWriter,
    check_output_path,
    iter_frames,
    probe_video,
    remove_stale_partials,
)
from genprop_cli.weights import Limits, ResolvedVariant, resolve_variant

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ProgressEvent:
    """Where a propagation is: `step` of `steps` denoising steps in chunk `chunk` (1-based) of `chunks`."""

    chunk: int
    chunks: int
    step: int
    steps: int


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class OutputFrame:
    index: int
    pts: int
    time_base: object  # fractions.Fraction, the input stream's
    rgb: np.ndarray  # (H, W, 3) uint8 at the input's display size
    mask: np.ndarray  # (H, W) uint8, 255 = modified
    source: np.ndarray  # (H, W, 3) uint8, the input frame it replaces


@dataclass(frozen=True)
class Clip:
    """A validated input: the video's facts and the edited first frame at the video's display size."""

    video: Path
    info: VideoInfo
    first_frame: np.ndarray  # (H, W, 3) uint8
    notes: tuple[str, ...] = ()
    in_memory: np.ndarray | None = None  # (T, H, W, 3) uint8 when the clip was given as frames
    source: Callable[[], Iterator[VideoFrame]] | None = None  # a part of another clip (keyframe segments)

    @classmethod
    def from_frames(cls, frames: np.ndarray, first_frame: np.ndarray, *, fps: float = 24.0, name: str = "frames") -> Clip:
        """A clip held in memory (evaluation sets, scripts): uint8 (T, H, W, 3) frames at a constant rate."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise OptionError(f"frames must be a non-empty uint8 (T, H, W, 3) array, got {frames.dtype} {frames.shape}")
        if first_frame.shape != frames.shape[1:] or first_frame.dtype != np.uint8:
            raise OptionError(f"first frame must be uint8 {frames.shape[1:]}, got {first_frame.dtype} {first_frame.shape}")
        rate = Fraction(fps).limit_denominator(1001)
        info = VideoInfo(
            path=Path(name), width=frames.shape[2], height=frames.shape[1], rotation=0, num_frames=len(frames),
            time_base=1 / rate, average_rate=rate, duration_s=len(frames) / float(rate), codec="rawvideo", audio=(),
        )  # fmt: skip
        return cls(Path(name), info, first_frame, (), frames)

    def frames(self) -> Iterator[VideoFrame]:
        """The clip's frames in order, streamed from the file (or from memory)."""
        if self.source is not None:
            yield from self.source()
            return
        if self.in_memory is None:
            yield from iter_frames(self.video)
            return
        for index, rgb in enumerate(self.in_memory):
            yield VideoFrame(index=index, pts=index, time_base=self.info.time_base, rgb=rgb)

    @classmethod
    def open(
        cls, video: Path | str, first_frame: Path | str | np.ndarray, *, limits: InputLimits = InputLimits()
    ) -> Clip:
        """Probes the video (no full decode; size and frame-count `limits` checked first) and loads and checks
        the edited first frame."""
        video = Path(video)
        info = probe_video(video, limits)
        if isinstance(first_frame, np.ndarray):
            if first_frame.shape != (info.height, info.width, 3) or first_frame.dtype != np.uint8:
                raise OptionError(
                    f"first frame array must be uint8 ({info.height}, {info.width}, 3), got "
                    f"{first_frame.dtype} {first_frame.shape}"
                )
            return cls(video, info, first_frame)
        image, note = load_first_frame(Path(first_frame), (info.width, info.height))
        return cls(video, info, image, (note,) if note else ())


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


def working_size(width: int, height: int, limits: Limits, multiple: int) -> tuple[int, int]:
    """The size the model runs at: the input's aspect ratio at the variant's pixel budget, rounded to `multiple`."""
    scale = math.sqrt(limits.max_pixels / (width * height))
    step = max(multiple, limits.multiple_of)
    w = max(step, int(width * scale) // step * step)
    h = max(step, int(height * scale) // step * step)
    return w, h


def _to_model_frames(frames: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """uint8 (H, W, 3) frames -> (F, 3, h, w) float in [-1, 1] at the working size."""
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return F.interpolate(x, size=(size[1], size[0]), mode="bilinear", antialias=True, align_corners=False)


def _to_display(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Working-size (h, w[, 3]) float in [0, 1] -> display-size float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    t = F.interpolate(t, size=(size[1], size[0]), mode="bicubic", align_corners=False).clamp(0, 1)
    return t[0].permute(1, 2, 0).numpy() if x.ndim == 3 else t[0, 0].numpy()


def _windows(frames: Iterator[VideoFrame], chunk: int, overlap: int) -> Iterator[tuple[ChunkSpan, list[VideoFrame], bool]]:
    """Groups a frame stream into the chunks `plan_chunks` describes, without knowing the length ahead.

    Yields (span, frames, is_last); holds at most one chunk of decoded frames.
    """
    window: deque[VideoFrame] = deque()
    start, shared, index = 0, 0, 0
    pending = next(frames, None)
    while pending is not None:
        while pending is not None and len(window) < chunk:
            window.append(pending)
            pending = next(frames, None)
        last = pending is None
        span = ChunkSpan(index, start, start + len(window), shared)
        yield span, list(window), last
        if last:
            return
        for _ in range(chunk - overlap):
            window.popleft()
        start, shared, index = start + chunk - overlap, overlap, index + 1


class GenProp:
    """A loaded GenProp variant (frozen backbone + adapter) on one device; load once, propagate many clips."""

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
                resolved.backbone_dir,
                resolved.adapter_file,
                device=torch_device,
                dtype=torch_dtype,
                file_variant=resolved.spec.backbone_file_variant,
                runtime=runtime,
            )
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
        """`options` with every unset value (chunk, overlap, steps, guidance) taken from the variant's defaults."""
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

    def propagate(
        self,
        clip: Clip,
        options: PropagationOptions,
        *,
        on_progress: ProgressCallback | None = None,
        store: ChunkStore | None = None,
    ) -> Iterator[OutputFrame]:
        """Yields the output frames in order, chunk by chunk, as they are finished. With a `store`, chunks
        it holds are replayed instead of sampled, and newly sampled chunks are added to it."""
        self.check_clip(clip)
        pipe = self.pipeline
        options = self.resolve(options)
        steps, guidance = options.steps, options.guidance
        self.check_options(options)
        display = (clip.info.width, clip.info.height)
        work = working_size(*display, self.variant.spec.limits, pipe.size_multiple)
        chunks = len(plan_chunks(max(clip.info.num_frames, 1), options.chunk, options.overlap))

        from genprop_cli.families.base import ChunkResult

        edited = _to_model_frames([clip.first_frame], work)[0]
        anchor = pipe.prepare_anchor(edited, options.prompt)  # the user's edit (and prompt) anchor every chunk
        generator = torch.Generator(device=pipe.device)
        stitcher = Stitcher()
        held: dict[int, VideoFrame] = {}
        previous = None  # (first frame index, ChunkResult, decoded frames) of the last chunk
        for span, frames, last in _windows(clip.frames(), options.chunk, options.overlap):
            chunks = max(chunks, span.index + 1)
            generator.manual_seed(options.seed + span.start)  # per chunk, reproducible (LTX's scheme)

            def step_done(step: int, total: int, _k: int = span.index, _n: int = chunks) -> None:
                if on_progress is not None:
                    on_progress(ProgressEvent(chunk=_k + 1, chunks=_n, step=step, steps=total))

            record = store.load(span.index) if store is not None else None
            if record is not None:  # finished by an earlier, interrupted run with the same key
                result = ChunkResult(latents=record.latents.to(pipe.device, pipe.dtype), mask=record.mask.to(pipe.device))
                step_done(steps, steps)
            else:
                if previous is None:
                    condition = pipe.first_condition(edited, generator)
                else:  # the frame the previous chunk generated at this chunk's start
                    start, prev_result, prev_decoded = previous
                    condition = pipe.next_condition(prev_result, prev_decoded, span.start - start)
                source = pipe.encode_frames(_to_model_frames([f.rgb for f in frames], work))
                result = pipe.sample_chunk(
                    source_latents=source,
                    condition=condition,
                    anchor=anchor,
                    task=options.task,
                    steps=steps,
                    guidance=guidance,
                    generator=generator,
                    preserve=options.preserve,
                    on_step=step_done,
                )
                if store is not None:
                    store.save(span.index, result.latents, result.mask)
            # A backbone with temporal compression runs a padded chunk; only the chunk's own frames are kept.
            decoded = pipe.decode_latents(result.latents)[: len(frames)]
            previous = (span.start, result, decoded)
            rgb = ((decoded + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
            mask = F.interpolate(result.mask[: len(frames)], size=(work[1], work[0]), mode="bilinear", align_corners=False)
            mask = mask[:, 0].cpu().numpy()
            for offset, f in enumerate(frames):
                held[span.start + offset] = f  # by position in this run (a segment's frames keep their own index)
            for done in stitcher.push(span, rgb, mask, last=last, overlap=options.overlap):
                source_frame = held.pop(done.index)
                yield self._finish_frame(done.rgb, done.mask, source_frame, display, options.composite)

    @staticmethod
    def _finish_frame(
        rgb: np.ndarray, mask: np.ndarray, source: VideoFrame, display: tuple[int, int], composite: bool
    ) -> OutputFrame:
        """Scales a stitched frame to the display size; with `composite`, unmodified pixels come from the source."""
        out = _to_display(rgb, display)
        m = _to_display(mask, display)
        if composite:
            src = source.rgb.astype(np.float32) / 255.0
            out = m[..., None] * out + (1 - m[..., None]) * src
        return OutputFrame(
            index=source.index,
            pts=source.pts,
            time_base=source.time_base,
            rgb=(out * 255 + 0.5).clip(0, 255).astype(np.uint8),
            mask=(m * 255 + 0.5).clip(0, 255).astype(np.uint8),
            source=source.rgb,
        )


@dataclass(frozen=True)
class Keyframe:
    """An edited frame of the clip: the edit is propagated from frame `frame` both ways."""

    frame: int
    image: np.ndarray  # (H, W, 3) uint8 at the video's display size


class _DiskFrames:
    """Frames of one segment in a memory-mapped scratch file, so a long backward run does not fill memory."""

    def __init__(self, folder: Path, count: int, height: int, width: int, channels: int) -> None:
        self.path = folder / f"frames-{time.time_ns()}.u8"
        shape = (count, height, width, channels) if channels else (count, height, width)
        self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=shape)

    def close(self) -> None:
        del self.array
        self.path.unlink(missing_ok=True)


def _segment_clip(clip: Clip, frames: Callable[[], Iterator[VideoFrame]], count: int, image: np.ndarray) -> Clip:
    """A view of part of `clip` (in any order) whose first frame is `image`."""
    return replace(clip, first_frame=image, info=replace(clip.info, num_frames=count), source=frames, in_memory=None)


def _passthrough(frame: VideoFrame) -> OutputFrame:
    """A frame outside the processed range: the source itself, nothing modified."""
    mask = np.zeros(frame.rgb.shape[:2], np.uint8)
    return OutputFrame(index=frame.index, pts=frame.pts, time_base=frame.time_base, rgb=frame.rgb, mask=mask, source=frame.rgb)


def place_edits(
    clip: Clip,
    at: Sequence[str] = (),
    start: str | None = None,
    end: str | None = None,
    images: Sequence[np.ndarray] = (),
) -> tuple[list[Keyframe] | None, int, int | None]:
    """Positions (`120`, `2.5s`, `0:02.5`) of the edits and of the range to process, as `render` takes them:
    (keyframes, start, stop). Keyframes are None when the clip's first frame is the edit (the paper's case);
    the first `at` (or else `start`) gets the clip's edited frame, later `at`s get `images` in order."""
    frame_at = clip.info.frame_at
    start_frame = parse_position(start, frame_at, "--start") if start else 0
    stop_frame = parse_position(end, frame_at, "--end") if end else None
    if not at:
        if start is None and end is None:
            return None, 0, None
        return [Keyframe(start_frame, clip.first_frame)], start_frame, stop_frame
    if len(images) != len(at) - 1:
        raise OptionError(f"give one edited frame per --at: {len(images) + 1} image(s) for {len(at)} --at")
    frames = [clip.first_frame, *images]
    keyframes = [Keyframe(parse_position(position, frame_at), image) for position, image in zip(at, frames)]
    return sorted(keyframes, key=lambda k: k.frame), start_frame, stop_frame


def propagate_keyframes(
    model: GenProp,
    clip: Clip,
    keyframes: list[Keyframe],
    options: PropagationOptions,
    *,
    start: int = 0,
    stop: int | None = None,
    scratch: Path | None = None,
    on_progress: ProgressCallback | None = None,
    store: ChunkStore | None = None,
) -> Iterator[OutputFrame]:
    """Yields every frame of the clip in order: frames outside [start, stop) unchanged, and each segment of
    [start, stop) propagated from its nearest keyframe, backwards (the model runs on the reversed frames) to
    the segment's start and forwards to its end. Both directions start from the same edited frame, so they
    meet at the keyframe without a seam. Where two keyframes' segments meet, both runs extend `overlap / 2`
    frames past the boundary and are cross-faded over those `overlap` frames, as chunks are. Backward
    segments go through a scratch file (memory stays flat)."""
    options = model.resolve(options)
    try:
        segments = plan_segments(clip.info.num_frames, [k.frame for k in keyframes], start, stop)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    halves = [_blend_half(a, b, options.overlap) for a, b in zip(segments, segments[1:])] + [0]
    decoded = clip.frames()
    owned = scratch is None
    folder = Path(tempfile.mkdtemp(prefix="genprop-segments-")) if owned else Path(scratch)
    try:
        for _ in range(start):
            yield _passthrough(next(decoded))
        carried: list[VideoFrame] = []  # source frames of the last blend region, already decoded
        fading: list[OutputFrame] = []  # the previous segment's outputs over that region
        for j, segment in enumerate(segments):
            image = keyframes[segment.keyframe].image
            sub = store.sub(f"segment-{segment.keyframe:03d}") if store is not None else None
            before = halves[j - 1] if j else 0
            first: VideoFrame | None = None
            if segment.backward or before:
                span = replace(segment, start=segment.start - before)
                # itertools.chain, not a generator: closing a generator that `yield from`s the decoder closes it.
                first = yield from _backward(model, clip, itertools.chain(carried, decoded), span, image, options,
                                             folder, on_progress, sub, fading)  # fmt: skip
            after = halves[j]
            forward_count = segment.stop + after - segment.at
            head = [first] if first is not None else []

            def forward(head=head, n=forward_count - len(head)) -> Iterator[VideoFrame]:
                yield from head
                for _ in range(n):
                    yield next(decoded)

            view = _segment_clip(clip, forward, forward_count, image)
            carried, fading = [], []
            for out in model.propagate(view, options, on_progress=on_progress, store=sub.sub("forward") if sub else None):
                if out.index >= segment.stop - after and after:
                    fading.append(out)
                    carried.append(VideoFrame(index=out.index, pts=out.pts, time_base=out.time_base, rgb=out.source))
                else:
                    yield out
        for frame in decoded:
            yield _passthrough(frame)
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


def _blend_half(a: Segment, b: Segment, overlap: int) -> int:
    """Frames each side of the boundary between segments a and b that both runs make: at most overlap / 2,
    and never reaching either keyframe."""
    return max(0, min(overlap // 2, a.stop - 1 - a.at, b.at - b.start))


def _cross_fade(earlier: OutputFrame, later: OutputFrame, weight: float) -> OutputFrame:
    """`weight` of `later` and 1 - weight of `earlier` (same frame, two runs)."""
    rgb = (1 - weight) * earlier.rgb.astype(np.float32) + weight * later.rgb.astype(np.float32)
    mask = (1 - weight) * earlier.mask.astype(np.float32) + weight * later.mask.astype(np.float32)
    return replace(later, rgb=(rgb + 0.5).astype(np.uint8), mask=(mask + 0.5).astype(np.uint8))


def _backward(model, clip, decoded, segment, image, options, folder, on_progress, store, fading=()):
    """Runs the model on frames [segment.start, segment.at] reversed; yields frames start..at-1 in order
    (the first ones cross-faded with `fading`, the previous run's outputs over the same frames) and returns
    the keyframe's own source frame (the forward run starts from it)."""
    count = segment.at - segment.start + 1
    h, w = clip.info.height, clip.info.width
    sources, outputs, masks = _DiskFrames(folder, count, h, w, 3), _DiskFrames(folder, count, h, w, 3), _DiskFrames(folder, count, h, w, 0)
    meta: list[VideoFrame] = []
    try:
        for i in range(count):
            frame = next(decoded)
            sources.array[i] = frame.rgb
            meta.append(VideoFrame(index=frame.index, pts=frame.pts, time_base=frame.time_base, rgb=sources.array[i]))

        def reversed_frames() -> Iterator[VideoFrame]:
            yield from reversed(meta)

        view = _segment_clip(clip, reversed_frames, count, image)
        for position, out in enumerate(model.propagate(view, options, on_progress=on_progress,
                                                        store=store.sub("backward") if store else None)):
            outputs.array[count - 1 - position] = out.rgb
            masks.array[count - 1 - position] = out.mask
        for i in range(count - 1):
            out = OutputFrame(index=meta[i].index, pts=meta[i].pts, time_base=meta[i].time_base,
                              rgb=np.array(outputs.array[i]), mask=np.array(masks.array[i]), source=np.array(sources.array[i]))  # fmt: skip
            if i < len(fading):
                out = _cross_fade(fading[i], out, (i + 0.5) / len(fading))
            yield out
        last = meta[-1]
        return VideoFrame(index=last.index, pts=last.pts, time_base=last.time_base, rgb=np.array(sources.array[-1]))
    finally:
        for disk in (sources, outputs, masks):
            disk.close()


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


def default_output_path(video: Path, task: Task) -> Path:
    """`clip.mp4` -> `clip.genprop-remove.mp4` next to the input (mp4 unless the input is .mov/.mkv)."""
    suffix = video.suffix.lower() if video.suffix.lower() in (".mp4", ".mov", ".mkv") else ".mp4"
    return video.with_name(f"{video.stem}.genprop-{task.value}{suffix}")


def default_masks_dir(output: Path) -> Path:
    return output.with_name(f"{output.stem}.masks")


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


class _MaskSequence:
    """Writes masks as a PNG sequence into a temporary folder, renamed into place only on success."""

    def __init__(self, target: Path, overwrite: bool) -> None:
        check_masks_dir(target, overwrite=overwrite)
        self.target, self.overwrite = target, overwrite
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
    clip: Clip,
    output: Path | str,
    options: PropagationOptions,
    *,
    overwrite: bool = False,
    masks: Path | str | None = None,
    preview: Path | str | None = None,
    encoder: EncoderOptions = EncoderOptions(),
    on_progress: ProgressCallback | None = None,
    work_dir: Path | str | None = None,
    keep_work: bool = False,
    keyframes: list[Keyframe] | None = None,
    start: int = 0,
    stop: int | None = None,
    splice: bool = False,
) -> RenderResult:
    """Propagates and writes the output video (original audio kept) and, if asked, the mask PNG sequence
    and a preview contact sheet (sampled frames: input | output | mask).

    No half-written output is left behind on failure or Ctrl-C: outputs are written to temporary paths and
    renamed into place only when complete. The input is never opened for writing. Finished chunks are kept
    in a work folder (`work_dir`, default beside the output) until the render succeeds, so running it again
    after a crash or `kill -9` continues from the last finished chunk with the same result (`resume.py`).

    `keyframes` (edited frames anywhere in the clip) and `start`/`stop` (only frames [start, stop) are
    processed) go through `propagate_keyframes`; without them the clip's first frame is the edit, as in the
    paper. With a range the output is that range alone (its audio with it), or with `splice` the whole clip
    with the range replaced and the rest as it was, audio intact.
    """
    started = time.perf_counter()
    output = Path(output)
    masks = Path(masks) if masks is not None else None
    check_output_path(output, input_path=clip.video, overwrite=overwrite)
    model.check_clip(clip)
    options = model.resolve(options)
    model.check_options(options)
    steps, guidance = options.steps, options.guidance
    display = (clip.info.width, clip.info.height)
    work = working_size(*display, model.variant.spec.limits, model.pipeline.size_multiple)
    if preview is not None:
        check_preview_path(Path(preview), overwrite=overwrite)
    segmented = keyframes is not None or start != 0 or stop is not None
    trimmed = (start != 0 or stop is not None) and not splice
    last = stop if stop is not None else clip.info.num_frames
    keyframes = keyframes if keyframes is not None else [Keyframe(start, clip.first_frame)]
    key = run_key(model, clip, options)
    if segmented:
        key["keyframes"] = [[k.frame, array_sha256(k.image)] for k in keyframes]
        key["range"] = [start, stop]
    store = ChunkStore.open(Path(work_dir) if work_dir else default_work_dir(output), key)
    resumed = store.total()
    remove_stale_partials(output)
    mask_writer = _MaskSequence(masks, overwrite) if masks is not None else None
    sheet = ContactSheet(clip.info.num_frames, display) if preview is not None else None
    frames = 0
    try:
        with VideoWriter(
            output, source=clip.info, width=display[0], height=display[1], encoder=encoder, overwrite=overwrite,
            trim_start=trimmed,
        ) as writer:
            stream = (
                propagate_keyframes(model, clip, keyframes, options, start=start, stop=stop, scratch=store.folder,
                                    on_progress=on_progress, store=store)  # fmt: skip
                if segmented
                else model.propagate(clip, options, on_progress=on_progress, store=store)
            )
            for frame in stream:
                if trimmed and not start <= frame.index < last:
                    continue
                writer.write(frame.rgb, frame.pts, frame.time_base)
                if mask_writer is not None:
                    mask_writer.write(frame.index, frame.mask)
                if sheet is not None:
                    sheet.add(frame.index, frame.source, frame.rgb, frame.mask)
                frames += 1
        masks_path = mask_writer.commit() if mask_writer is not None else None
        preview_path = sheet.save(Path(preview)) if sheet is not None and sheet.rows else None
        if not keep_work:
            store.remove()
    except BaseException as exc:
        if mask_writer is not None:
            mask_writer.abort()
        if store.total() == 0:  # nothing to resume from: leave nothing behind
            store.remove()
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise DeviceError(out_of_memory_advice(options)) from None
        raise
    return RenderResult(
        task=options.task.value,
        input=str(clip.video),
        output=str(output),
        masks=str(masks_path) if masks_path else None,
        preview=str(preview_path) if preview_path else None,
        variant=model.name,
        adapter_sha256=model.variant.adapter_sha256,
        device=str(model.pipeline.device),
        dtype=str(model.pipeline.dtype).removeprefix("torch."),
        seed=options.seed,
        steps=steps,
        guidance=guidance,
        chunk=options.chunk,
        overlap=options.overlap,
        frames=frames,
        chunks=_chunk_count(clip, keyframes, options, start, stop) if segmented else len(plan_chunks(max(frames, 1), options.chunk, options.overlap)),
        width=display[0],
        height=display[1],
        working_width=work[0],
        working_height=work[1],
        fps=clip.info.fps,
        duration_s=clip.info.duration_s,
        audio_streams=len(clip.info.audio),
        elapsed_s=round(time.perf_counter() - started, 3),
        resumed_chunks=resumed,
        warnings=[*clip.notes, *writer.warnings,
                  *_missing_frames_warning(frames, last - start if trimmed else clip.info.num_frames)],
    )


def run_key(model: GenProp, clip: Clip, options: PropagationOptions) -> dict[str, object]:
    """Everything a render's chunks depend on: a work folder made under another key is never reused."""
    options = model.resolve(options)
    pipe = model.pipeline
    video = array_sha256(clip.in_memory) if clip.in_memory is not None else sha256_file(clip.video)
    chosen = {k: v for k, v in asdict(options).items() if k not in ("device", "dtype")}
    return {
        "input": video,
        "first_frame": array_sha256(clip.first_frame),
        "variant": model.name,
        "adapter_sha256": model.variant.adapter_sha256,
        "backbone": dict(sorted(model.variant.spec.backbone_files.items())),
        "options": {**chosen, "task": options.task.value},
        "device": pipe.device.type,
        "dtype": str(pipe.dtype).removeprefix("torch."),
        "working_size": list(working_size(clip.info.width, clip.info.height, model.variant.spec.limits, pipe.size_multiple)),
    }


def out_of_memory_advice(options: PropagationOptions) -> str:
    """The one-line message for CUDA running out of memory, with what to try next."""
    smaller = f"--chunk {options.chunk // 2}, " if options.chunk > 32 else ""
    return (
        f"out of GPU memory at --chunk {options.chunk}; try {smaller}--offload encoders (or group: the backbone's "
        "blocks stream from CPU memory), --vae-tiling (Wan), --dtype bf16/fp16, or a smaller variant"
    )


def _chunk_count(clip: Clip, keyframes: list[Keyframe], options: PropagationOptions, start: int, stop: int | None) -> int:
    """Chunks sampled by a keyframe render: each segment's backward and forward runs."""
    total = 0
    for segment in plan_segments(clip.info.num_frames, [k.frame for k in keyframes], start, stop):
        runs = [segment.at - segment.start + 1] if segment.backward else []
        runs.append(segment.stop - segment.at)
        total += sum(len(plan_chunks(n, options.chunk, options.overlap)) for n in runs)
    return total


def _missing_frames_warning(written: int, expected: int) -> list[str]:
    if written >= expected:
        return []
    return [f"only {written} of the {expected} frames in the input could be decoded; the output is that long"]



def propagate(
    video: Path | str,
    first_frame: Path | str | np.ndarray,
    *,
    task: Task | str = Task.EDIT,
    model: str | None = None,
    adapter: str | None = None,
    on_progress: ProgressCallback | None = None,
    **options: object,
) -> Iterator[OutputFrame]:
    """One-call convenience: loads the variant and yields the output frames of one clip.

    `options` are `PropagationOptions` fields (chunk, overlap, steps, guidance, seed, device, dtype, composite).
    Load a `GenProp` yourself to process several clips without reloading the model.
    """
    opts = PropagationOptions(task=Task(task), **options)  # type: ignore[arg-type]
    clip = Clip.open(video, first_frame)
    loaded = GenProp.load(model, adapter=adapter, device=opts.device, dtype=opts.dtype)
    yield from loaded.propagate(clip, opts, on_progress=on_progress)
