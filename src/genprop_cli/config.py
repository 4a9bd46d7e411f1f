"""Every option of a run, declared once: typed dataclasses whose fields carry their command-line help.

A run is a `RunRequest`: which clip and edited frame(s), plus one dataclass per concern (sampling, where the
edits sit, outputs, encoder, input limits). How the model is loaded is `ModelOptions` + `RuntimeOptions`.
The task commands and `genprop batch` derive their flags from these fields (`cli/options.py`), and batch jobs
lines their KEY=VALUE keys (`batch.py`), so a new option is one field here (plus where it is used).

Imports stay light (no torch, numpy or PyAV): `genprop --help` builds its commands from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from genprop_cli.errors import FrameSizeError, OptionError, VideoReadError

CHUNK_SIZES = (32, 64, 128)
DTYPES = ("auto", "fp32", "fp16", "bf16")
OFFLOAD_MODES = ("none", "encoders", "group")
# auto follows the input (4:4:4 and 4:2:2 kept, else 4:2:0); yuv420p plays everywhere but needs even sizes.
PIX_FMTS = ("auto", "yuv420p", "yuv422p", "yuv444p")

# How a field reaches `genprop batch` (the task commands take every field that has a `Flag`):
SHARED = "shared"  # one value for every job, from the batch command line
JOB = "job"  # ... which a jobs line may also set for its job, as KEY=VALUE
FOLDER = "folder"  # a path per output: a jobs line's KEY=VALUE, or on the batch command line a folder that
#                    receives each job's file under its default name
TASK_ONLY = "task-only"  # not a batch option (the batch has its own form of it)


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line (and on a batch jobs line)."""

    help: str
    names: tuple[str, ...] = ()  # spellings, e.g. ("--output", "-o"); default: --field-name
    batch: str = SHARED

    @property
    def job_key(self) -> bool:
        """Whether a batch jobs line may set this field for its own job (KEY=VALUE)."""
        return self.batch in (JOB, FOLDER)


def option(default: Any, help: str, *names: str, batch: str = SHARED) -> Any:
    """A dataclass field with a default and its command-line declaration."""
    return field(default=default, metadata={"flag": Flag(help, names, batch)})


def flag_of(f: Field) -> Flag | None:
    return f.metadata.get("flag")


def flagged_fields(cls: type) -> list[Field]:
    """The fields of a config dataclass that are command-line options, in declaration order."""
    return [f for f in fields(cls) if flag_of(f) is not None]


def from_values(cls: type, values: dict[str, Any], base: Any = None) -> Any:
    """An instance of `cls` (or `base` with changes) from the entries of `values` that name its fields."""
    own = {f.name: values[f.name] for f in fields(cls) if f.name in values}
    return replace(base, **own) if base is not None else cls(**own)


def reject_unknown(cls: type, raw: Mapping[str, Any], what: str) -> None:
    """An OptionError naming the keys of `raw` that are not fields of the dataclass `cls`."""
    unknown = sorted(set(raw) - {f.name for f in fields(cls)})
    if unknown:
        raise OptionError(f"unknown {what}(s): {', '.join(unknown)}")


def require_at_least_one(config: object, names: Iterable[str]) -> None:
    """An OptionError for the first of these fields of `config` below 1 (None, left to a default, passes)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise OptionError(f"{name} must be at least 1, got {value}")


def field_default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


class Task(str, Enum):
    """The four things GenProp propagates; the task selects the task embedding and the extra outputs."""

    EDIT = "edit"
    REMOVE = "remove"
    INSERT = "insert"
    TRACK = "track"


TASK_NAMES = tuple(task.value for task in Task)


@dataclass(frozen=True)
class PropagationOptions:
    """How one clip is sampled. `None` means "the variant's default" (weights.toml)."""

    task: Task = Task.EDIT  # the command (or a batch job's TASK field), not a flag
    seed: int = option(0, "Random seed (each chunk uses seed + its first frame index).", batch=JOB)
    steps: int | None = option(None, "Denoising steps (default: the variant's).", batch=JOB)
    guidance: float | None = option(
        None, "Classifier-free guidance scale (default: the variant's; <= 1 disables).", batch=JOB
    )
    chunk: int | None = option(
        None, f"Frames per chunk: {', '.join(map(str, CHUNK_SIZES))} (default: the variant's, 32 or 64).", batch=JOB
    )
    overlap: int | None = option(
        None, "Frames shared (and cross-faded) by consecutive chunks (default: the variant's, 8).", batch=JOB
    )
    composite: bool = option(
        False, "Take unmodified pixels (per the predicted mask) from the source at full resolution.", batch=JOB
    )
    preserve: bool | None = option(
        None,
        "While sampling, keep what the predicted mask leaves unmodified anchored to the source (SVD variants; "
        "default: the variant's).",
        "--preserve/--no-preserve",
        batch=JOB,
    )
    preserve_margin: int | None = option(
        None, "Latent pixels around the predicted region that --preserve regenerates too (default: the variant's).",
        batch=JOB,
    )  # fmt: skip
    preserve_threshold: float | None = option(
        None, "How likely a change must be (the MPD's probability, 0-1) for --preserve to regenerate it "
        "(default: the variant's).", batch=JOB,
    )  # fmt: skip
    prompt: str = option("", "Text conditioning for backbones that read text (Wan); empty by default.", batch=JOB)

    def __post_init__(self) -> None:
        if self.chunk is not None and self.chunk not in CHUNK_SIZES:
            raise OptionError(f"--chunk must be one of {', '.join(map(str, CHUNK_SIZES))}, got {self.chunk}")
        if self.overlap is not None and self.overlap < 1:
            raise OptionError(f"--overlap must be at least 1, got {self.overlap}")
        if self.chunk is not None and self.overlap is not None and self.overlap >= self.chunk:
            raise OptionError(f"--overlap must be smaller than --chunk ({self.chunk}), got {self.overlap}")
        if self.steps is not None and self.steps < 1:
            raise OptionError(f"--steps must be at least 1, got {self.steps}")
        if self.guidance is not None and self.guidance < 0:
            raise OptionError(f"--guidance must be >= 0, got {self.guidance}")
        if self.preserve_margin is not None and self.preserve_margin < 0:
            raise OptionError(f"--preserve-margin must be >= 0, got {self.preserve_margin}")
        if self.preserve_threshold is not None and not 0 < self.preserve_threshold < 1:
            raise OptionError(f"--preserve-threshold must be between 0 and 1, got {self.preserve_threshold}")

    def with_defaults(self, defaults: Any) -> PropagationOptions:
        """These options with every unset value (chunk, overlap, steps, guidance and the preserve ones, the
        threshold this task's) taken from `defaults` (a variant's `weights.Defaults`); raises OptionError if the
        combination is invalid."""
        names = ("chunk", "overlap", "steps", "guidance", "preserve", "preserve_margin")
        chosen = {name: getattr(self, name) for name in names}
        resolved = {k: getattr(defaults, k) if v is None else v for k, v in chosen.items()}
        threshold = self.preserve_threshold
        if threshold is None:
            threshold = defaults.preserve_threshold(self.task.value)
        return replace(self, **resolved, preserve_threshold=threshold)


@dataclass(frozen=True)
class ModelOptions:
    """Which variant is loaded, with which adapter, where and in which precision."""

    model: str | None = option(
        None, "Variant from weights.toml (see `genprop models list`).", "--model", "--variant", "-m"
    )
    adapter: str | None = option(
        None, "Adapter weights overriding the variant's: a .safetensors path or hf://org/name@REV/file."
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps.")
    dtype: str = option("auto", "auto, fp32, fp16 or bf16 (auto: fp32 on CPU).")

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise OptionError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass(frozen=True)
class RuntimeOptions:
    """How a variant is loaded and run (speed and memory; mostly for CUDA). See `pipelines/acceleration.py`."""

    compile: bool = option(False, "torch.compile the denoiser's blocks (faster steps after a warm-up).", "--compile")
    offload: str = option(
        "none", "none, encoders (text/image encoders in CPU memory) or group (also stream the denoiser's blocks)."
    )
    vae_tiling: bool = option(False, "Tiled VAE encode/decode (Wan), for large frames.", "--vae-tiling")
    attention_backend: str | None = option(
        None, "diffusers attention backend for Wan, e.g. flash, _native_cudnn, sage."
    )

    def __post_init__(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise OptionError(f"--offload must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}")


@dataclass(frozen=True)
class Placement:
    """Where the edited frames sit in the clip and which frames are processed (frames, `2.5s` or `0:02.5`)."""

    at: tuple[str, ...] = option(
        (),
        "The frame each --first-frame shows: 120 (frame), 2.5s or 0:02.5; repeat for several keyframes. The edit "
        "is propagated both ways; each frame follows its nearest keyframe.",
        batch=JOB,
    )
    start: str | None = option(None, "Process only from this frame/time on (the rest is kept as it is).", batch=JOB)
    end: str | None = option(None, "Process only up to (not including) this frame/time.", batch=JOB)
    splice: bool = option(
        False, "With --start/--end: output the whole clip, the range replaced, the rest as it was.", "--splice",
        batch=JOB,
    )  # fmt: skip

    @property
    def segmented(self) -> bool:
        """Whether the run goes through keyframe segments (an --at, or a range) rather than one forward run."""
        return bool(self.at) or self.start is not None or self.end is not None


@dataclass(frozen=True)
class OutputOptions:
    """What a run writes besides the video, and where its resumable work is kept."""

    output: Path | None = option(
        None, "Output video; default: <input>.genprop-<task>.mp4 beside the input.", "--output", "-o",
        batch=TASK_ONLY,
    )  # fmt: skip
    overwrite: bool = option(False, "Replace existing outputs.", "--overwrite", "-y")
    masks: Path | None = option(
        None, "Write the predicted masks as a PNG sequence into this folder (track: on by default).", batch=FOLDER
    )
    preview: Path | None = option(
        None, "Write a PNG contact sheet of sampled frames: input | output | mask.", batch=FOLDER
    )
    work_dir: Path | None = option(
        None,
        "Where finished chunks are kept until success (default: hidden folder beside the output); rerunning an "
        "interrupted command continues from there.",
        batch=FOLDER,
    )
    keep_work: bool = option(False, "Keep the work folder after success.", "--keep-work")


@dataclass(frozen=True)
class EncoderOptions:
    """Video encoder settings; crf/preset apply to libx264 and libx265."""

    codec: str = "libx264"
    crf: int = option(18, "libx264 CRF (lower is better quality).", batch=JOB)
    preset: str = option("veryfast", "libx264 preset.", batch=JOB)
    pix_fmt: str = option(
        "auto",
        "Output chroma: auto (follow the input: 4:4:4 and 4:2:2 kept, else yuv420p), yuv420p (plays everywhere; "
        "odd sizes padded by 1 px), yuv422p or yuv444p (exact odd sizes, fewer players).",
        batch=JOB,
    )

    def __post_init__(self) -> None:
        if self.pix_fmt not in PIX_FMTS:
            raise OptionError(f"--pix-fmt must be one of {', '.join(PIX_FMTS)}, got {self.pix_fmt!r}")


@dataclass(frozen=True)
class InputLimits:
    """Safety limits on what is decoded at all, checked from the container before any frame is decoded."""

    # width x height of one frame (8K UHD is 33 Mpx)
    max_pixels: int = option(8192 * 8192, "Refuse inputs whose frames have more pixels than this (before decoding).")
    max_frames: int = option(100_000, "Refuse inputs with more frames than this.")  # about 70 minutes at 24 fps

    def check_size(self, path: Path, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise FrameSizeError(
                f"{path} declares {width}x{height} frames ({_pixels(width * height)}); the limit is "
                f"{_pixels(self.max_pixels)} (raise it with --max-pixels)"
            )

    def check_frames(self, path: Path, frames: int) -> None:
        if frames > self.max_frames:
            raise VideoReadError(f"{path} has {frames} frames; the limit is {self.max_frames} (raise it with --max-frames)")


def _pixels(count: int) -> str:
    return f"{count / 1e6:.1f} Mpx" if count >= 100_000 else f"{count} px"


@dataclass(frozen=True)
class RunSettings:
    """Everything about a run but which clip: what the task commands set per command and `genprop batch`
    sets for every job (a jobs line's KEY=VALUE changing its own job's)."""

    options: PropagationOptions = PropagationOptions()
    placement: Placement = Placement()
    outputs: OutputOptions = OutputOptions()
    encoder: EncoderOptions = EncoderOptions()
    limits: InputLimits = InputLimits()

    def changed(self, values: dict[str, Any]) -> dict[str, Any]:
        """Each group with the entries of `values` (field name -> value) that name its fields applied."""
        return {f.name: from_values(type(getattr(self, f.name)), values, getattr(self, f.name)) for f in fields(RunSettings)}

    @classmethod
    def groups(cls) -> dict[str, type]:
        """Group name -> its dataclass."""
        return {f.name: type(field_default(f)) for f in fields(RunSettings)}


@dataclass(frozen=True, kw_only=True)
class RunRequest(RunSettings):
    """One run: a clip, its edited frame(s) (one per `placement.at`, or just the first frame's edit), and how.

    `first_frames` are image paths or uint8 (H, W, 3) arrays at the video's size. This is what `render` and
    `GenProp.plan` take; the CLI builds one per command (and per batch job) in one place.
    """

    video: Path
    first_frames: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "video", Path(self.video))
        frames = self.first_frames
        if isinstance(frames, (str, Path)) or not isinstance(frames, (tuple, list)):
            frames = (frames,)
        object.__setattr__(self, "first_frames", tuple(frames))
        at = self.placement.at
        if at and len(at) != len(self.first_frames):
            raise OptionError(f"give one --first-frame per --at: {len(self.first_frames)} image(s) for {len(at)} --at")
        if not at and len(self.first_frames) != 1:
            raise OptionError("several --first-frame images need an --at for each")

    @classmethod
    def build(cls, video: Path, first_frames: Any, settings: RunSettings = RunSettings(), values: dict[str, Any] | None = None) -> RunRequest:
        """A request for one clip from shared `settings`, changed by flat option `values` (field name -> value,
        e.g. parsed command-line flags or a jobs line's KEY=VALUE)."""
        return cls(video=video, first_frames=first_frames, **settings.changed(values or {}))


def parse_position(text: str, frame_at: Callable[[float], int], option: str = "--at") -> int:
    """A frame index from `120` (frame), `2.5s` (seconds) or `1:02.5` / `0:01:02.5` (clock time); a time
    becomes the frame shown at that time through `frame_at` (the clip's own timestamps: `VideoInfo.frame_at`)."""
    value = text.strip()
    try:
        if value.isdigit():
            return int(value)
        if value.endswith("s") and ":" not in value:
            seconds = float(value[:-1])
        elif ":" in value:
            seconds = 0.0
            for part in value.split(":"):
                seconds = seconds * 60 + float(part)
        else:
            raise ValueError(value)
    except ValueError:
        raise OptionError(f"{option} {text!r}: give a frame number (120), seconds (2.5s) or a time (0:02.5)") from None
    if seconds < 0 or seconds != seconds:
        raise OptionError(f"{option} {text!r}: not a position in the clip")
    return frame_at(seconds)
