"""Chunk planning and overlap stitching. Pure: no model, no files, no torch.

A clip of N frames is cut into chunks of C frames whose starts are C - O apart, so consecutive chunks
share O frames. Chunk k+1 is conditioned on the frame chunk k generated at chunk k+1's first index, and
the O shared frames are cross-faded from chunk k to chunk k+1 with a linear ramp (the demucs/LTX form:
weights of the two chunks sum to one on every frame). The last chunk may be shorter than C.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChunkSpan:
    """Frames [start, stop) of the clip; `shared` of them (at the start) were also made by the previous chunk."""

    index: int
    start: int
    stop: int
    shared: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_chunks(num_frames: int, chunk: int, overlap: int) -> list[ChunkSpan]:
    """Chunks covering frames 0..num_frames-1, each `chunk` long (the last may be shorter), sharing `overlap`."""
    if num_frames < 1:
        raise ValueError(f"cannot plan chunks for {num_frames} frames")
    if not 1 <= overlap < chunk:
        raise ValueError(f"overlap must be in [1, chunk), got overlap={overlap}, chunk={chunk}")
    spans = [ChunkSpan(0, 0, min(chunk, num_frames), 0)]
    while spans[-1].stop < num_frames:
        start = spans[-1].start + chunk - overlap
        spans.append(ChunkSpan(len(spans), start, min(start + chunk, num_frames), spans[-1].stop - start))
    return spans


def crossfade_weights(shared: int) -> np.ndarray:
    """Weight of the NEWER chunk on each shared frame: strictly between 0 and 1, increasing."""
    return np.arange(1, shared + 1, dtype=np.float32) / (shared + 1)


@dataclass
class StitchedFrame:
    index: int
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    mask: np.ndarray  # (H, W) float32 in [0, 1]


class Stitcher:
    """Streams chunk outputs in, and finished frames out in order, holding only the frames still to be blended."""

    def __init__(self) -> None:
        self._held: dict[int, StitchedFrame] = {}

    def push(self, span: ChunkSpan, rgb: np.ndarray, mask: np.ndarray, *, last: bool, overlap: int) -> Iterator[StitchedFrame]:
        """Adds one chunk's frames ((F, H, W, 3) and (F, H, W)); yields every frame that is now final."""
        if sorted(self._held) != list(range(span.start, span.start + span.shared)):
            raise ValueError(f"chunk {span.index} does not continue the previous chunk")
        weights = crossfade_weights(span.shared)
        for j in range(span.length):
            index = span.start + j
            frame = StitchedFrame(index, rgb[j], mask[j])
            if j < span.shared:
                old, w = self._held.pop(index), weights[j]
                frame = StitchedFrame(index, (1 - w) * old.rgb + w * rgb[j], (1 - w) * old.mask + w * mask[j])
            keep_for_next = not last and j >= span.length - overlap
            if keep_for_next:
                self._held[index] = frame
            else:
                yield frame


@dataclass(frozen=True)
class Segment:
    """Frames [start, stop) propagated from the keyframe at frame `at` (start <= at < stop): backwards over
    [start, at] (the I2V model runs on that part reversed), forwards over [at, stop)."""

    keyframe: int  # position in the keyframe list
    at: int
    start: int
    stop: int

    @property
    def backward(self) -> bool:
        return self.at > self.start


def plan_segments(num_frames: int, keyframes: list[int], start: int = 0, stop: int | None = None) -> list[Segment]:
    """Splits frames [start, stop) among keyframes: each frame goes to its nearest keyframe (ties to the
    earlier one), so segment boundaries fall halfway between consecutive keyframes."""
    stop = num_frames if stop is None else stop
    if not 0 <= start < stop <= num_frames:
        raise ValueError(f"the range [{start}, {stop}) is not inside the clip's {num_frames} frames")
    if not keyframes:
        raise ValueError("at least one keyframe is needed")
    if sorted(set(keyframes)) != list(keyframes):
        raise ValueError(f"keyframes must be distinct and in increasing order, got {keyframes}")
    outside = [k for k in keyframes if not start <= k < stop]
    if outside:
        raise ValueError(f"keyframe(s) {outside} lie outside the processed range [{start}, {stop})")
    bounds = [start] + [(a + b) // 2 + 1 for a, b in zip(keyframes, keyframes[1:])] + [stop]
    return [Segment(i, k, bounds[i], bounds[i + 1]) for i, k in enumerate(keyframes)]
