"""What a run reads and yields: the validated input clip, its edited keyframes, the output frames, and the
conversions between uint8 frames and the model's tensors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genprop_cli.config import InputLimits, Placement, parse_position
from genprop_cli.errors import OptionError
from genprop_cli.images import load_first_frame
from genprop_cli.video_io import VideoFrame, VideoInfo, iter_frames, probe_video


@dataclass(frozen=True)
class OutputFrame:
    index: int
    pts: int
    time_base: object  # fractions.Fraction, the input stream's
    rgb: np.ndarray  # (H, W, 3) uint8 at the input's display size
    mask: np.ndarray  # (H, W) uint8, 255 = modified
    source: np.ndarray  # (H, W, 3) uint8, the input frame it replaces


@dataclass(frozen=True)
class Keyframe:
    """An edited frame of the clip: the edit is propagated from frame `frame` both ways."""

    frame: int
    image: np.ndarray  # (H, W, 3) uint8 at the video's display size


@dataclass(frozen=True)
class Clip:
    """A validated input: the video's facts and the edited first frame at the video's display size."""

    video: Path
    info: VideoInfo
    first_frame: np.ndarray  # (H, W, 3) uint8
    notes: tuple[str, ...] = ()
    in_memory: np.ndarray | None = None  # (T, H, W, 3) uint8 when the clip was given as frames

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

    @classmethod
    def open(cls, video: Path | str, first_frame: Path | str | np.ndarray, *, limits: InputLimits = InputLimits()) -> Clip:
        """Probes the video (no full decode; size and frame-count `limits` checked first) and loads and checks
        the edited first frame."""
        video = Path(video)
        info = probe_video(video, limits)
        image, note = load_edited_frame(first_frame, info)
        return cls(video, info, image, (note,) if note else ())

    def frames(self) -> Iterator[VideoFrame]:
        """The clip's frames in order, streamed from the file (or from memory)."""
        if self.in_memory is None:
            yield from iter_frames(self.video)
            return
        for index, rgb in enumerate(self.in_memory):
            yield VideoFrame(index=index, pts=index, time_base=self.info.time_base, rgb=rgb)

    @property
    def display_size(self) -> tuple[int, int]:
        return self.info.width, self.info.height


def load_edited_frame(image: Path | str | np.ndarray, info: VideoInfo) -> tuple[np.ndarray, str | None]:
    """An edited frame (image file or uint8 array) at the video's display size, and a note if it was resized."""
    if isinstance(image, np.ndarray):
        if image.shape != (info.height, info.width, 3) or image.dtype != np.uint8:
            raise OptionError(
                f"first frame array must be uint8 ({info.height}, {info.width}, 3), got {image.dtype} {image.shape}"
            )
        return image, None
    return load_first_frame(Path(image), (info.width, info.height))


@dataclass(frozen=True)
class Placed:
    """The edits of a run, positioned: keyframes (the first is the clip's edited frame) and the range
    [start, stop) that is processed; `notes` say which images were resized."""

    keyframes: tuple[Keyframe, ...]
    start: int
    stop: int
    notes: tuple[str, ...]


def place_edits(clip: Clip, placement: Placement, images: Sequence[Any] = ()) -> Placed:
    """Positions (`120`, `2.5s`, `0:02.5`) of the edits and of the range to process. Without --at the edit
    is on frame --start (0: the paper's case); the first --at gets the clip's edited frame, later ones
    `images` (paths or arrays) in order."""
    frame_at = clip.info.frame_at
    start = parse_position(placement.start, frame_at, "--start") if placement.start else 0
    stop = parse_position(placement.end, frame_at, "--end") if placement.end else clip.info.num_frames
    if not placement.at:
        return Placed((Keyframe(start, clip.first_frame),), start, stop, clip.notes)
    if len(images) != len(placement.at) - 1:
        raise OptionError(f"give one edited frame per --at: {len(images) + 1} image(s) for {len(placement.at)} --at")
    loaded = [load_edited_frame(image, clip.info) for image in images]
    frames = [clip.first_frame, *(image for image, _ in loaded)]
    keyframes = [Keyframe(parse_position(p, frame_at), image) for p, image in zip(placement.at, frames)]
    notes = (*clip.notes, *(note for _, note in loaded if note))
    return Placed(tuple(sorted(keyframes, key=lambda k: k.frame)), start, stop, notes)


def to_model_frames(frames: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (H, W, 3) frames -> (F, 3, h, w) float in [-1, 1], resized to `size` (w, h) if given."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(frames))).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if size is None or tuple(x.shape[-2:]) == (size[1], size[0]):
        return x
    return F.interpolate(x, size=(size[1], size[0]), mode="bilinear", antialias=True, align_corners=False)


def to_display(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Working-size (h, w[, 3]) float in [0, 1] -> display-size float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    t = F.interpolate(t, size=(size[1], size[0]), mode="bicubic", align_corners=False).clamp(0, 1)
    return t[0].permute(1, 2, 0).numpy() if x.ndim == 3 else t[0, 0].numpy()


def finish_frame(rgb: np.ndarray, mask: np.ndarray, source: VideoFrame, display: tuple[int, int], composite: bool) -> OutputFrame:
    """Scales a stitched working-size frame to the display size; with `composite`, unmodified pixels come
    from the source."""
    out = to_display(rgb, display)
    m = to_display(mask, display)
    if composite:
        src = source.rgb.astype(np.float32) / 255.0
        out = m[..., None] * out + (1 - m[..., None]) * src
    return OutputFrame(
        index=source.index, pts=source.pts, time_base=source.time_base,
        rgb=(out * 255 + 0.5).clip(0, 255).astype(np.uint8), mask=(m * 255 + 0.5).clip(0, 255).astype(np.uint8),
        source=source.rgb,
    )  # fmt: skip


def passthrough(frame: VideoFrame) -> OutputFrame:
    """A frame outside the processed range: the source itself, nothing modified."""
    mask = np.zeros(frame.rgb.shape[:2], np.uint8)
    return OutputFrame(index=frame.index, pts=frame.pts, time_base=frame.time_base, rgb=frame.rgb, mask=mask, source=frame.rgb)


def blend_output_frames(older: OutputFrame, newer: OutputFrame, weight: float) -> OutputFrame:
    """`weight` of `newer` and 1 - weight of `older` (the same frame from two runs), rounded to uint8."""
    rgb = (1 - weight) * older.rgb.astype(np.float32) + weight * newer.rgb.astype(np.float32)
    mask = (1 - weight) * older.mask.astype(np.float32) + weight * newer.mask.astype(np.float32)
    return OutputFrame(index=newer.index, pts=newer.pts, time_base=newer.time_base, source=newer.source,
                       rgb=(rgb + 0.5).astype(np.uint8), mask=(mask + 0.5).astype(np.uint8))  # fmt: skip

