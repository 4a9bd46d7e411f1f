"""Typed configuration shared by the API and the CLI: tasks and propagation options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from genprop_cli.errors import OptionError

CHUNK_SIZES = (32, 64, 128)
DTYPES = ("auto", "fp32", "fp16", "bf16")


class Task(str, Enum):
    """The four things GenProp propagates; the task selects the task embedding and the extra outputs."""

    EDIT = "edit"
    REMOVE = "remove"
    INSERT = "insert"
    TRACK = "track"


@dataclass(frozen=True)
class PropagationOptions:
    """How one clip is propagated. `None` means "the variant's default" (weights.toml)."""

    task: Task = Task.EDIT
    chunk: int | None = None
    overlap: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    composite: bool = False
    preserve: bool = False  # SVD family: anchor what the MPD leaves unmodified to the source while sampling
    prompt: str = ""  # text conditioning, for backbones that read text (Wan); empty by default

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
        if self.dtype not in DTYPES:
            raise OptionError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def with_defaults(self, defaults: object) -> PropagationOptions:
        """These options with every unset value (chunk, overlap, steps, guidance) taken from `defaults` (a
        variant's `weights.Defaults`); raises OptionError if the combination is invalid."""
        chosen = {name: getattr(self, name) for name in ("chunk", "overlap", "steps", "guidance")}
        return replace(self, **{k: getattr(defaults, k) if v is None else v for k, v in chosen.items()})


OFFLOAD_MODES = ("none", "encoders", "group")


@dataclass(frozen=True)
class RuntimeOptions:
    """How a variant is loaded and run (speed and memory; mostly for CUDA). See `pipelines/acceleration.py`."""

    compile: bool = False  # torch.compile the denoiser's and the adapter's blocks
    offload: str = "none"  # none | encoders (text/image encoders in CPU memory) | group (also the denoiser's blocks)
    vae_tiling: bool = False  # tiled VAE encode/decode (Wan)
    attention_backend: str | None = None  # diffusers attention backend, e.g. flash, _native_cudnn (Wan)

    def __post_init__(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise OptionError(f"--offload must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}")


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
