"""Chunk and segment planning, and the one overlap stitcher. Pure: no model, no files, no torch.

A run of N frames is cut into chunks of C frames whose starts are C - O apart, so consecutive chunks share
O frames (`chunk_windows`, which groups a stream without knowing its length, and `plan_chunks`, the same
grouping of N known frames). Chunk k+1 is conditioned on the frame chunk k generated at chunk k+1's first
index. Where two pieces of output cover the same frames (consecutive chunks of a run, or the runs of two
keyframes' segments) the `Stitcher` cross-fades them with one linear ramp (the demucs/LTX form: the two
weights sum to one on every frame). The last chunk may be shorter than C.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class ChunkSpan:
    """Frames [start, stop) of a run; `shared` of them (at the start) were also made by the previous piece."""

    index: int
    start: int
    stop: int
    shared: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def check_chunking(chunk: int, overlap: int) -> None:
    if not 1 <= overlap < chunk:
        raise ValueError(f"overlap must be in [1, chunk), got overlap={overlap}, chunk={chunk}")


def chunk_windows(items: Iterable[T], chunk: int, overlap: int) -> Iterator[tuple[ChunkSpan, list[T], bool]]:
    """Groups a stream into chunks of `chunk` items sharing `overlap`, without knowing its length ahead.

    Yields (span, items, is_last); holds at most one chunk of items.
    """
    check_chunking(chunk, overlap)
    stream = iter(items)
    window: deque[T] = deque()
    start, shared, index = 0, 0, 0
    pending = next(stream, None)
    while pending is not None:
        while pending is not None and len(window) < chunk:
            window.append(pending)
            pending = next(stream, None)
        last = pending is None
        yield ChunkSpan(index, start, start + len(window), shared), list(window), last
        if last:
            return
        for _ in range(chunk - overlap):
            window.popleft()
        start, shared, index = start + chunk - overlap, overlap, index + 1


def plan_chunks(num_frames: int, chunk: int, overlap: int) -> list[ChunkSpan]:
    """Chunks covering frames 0..num_frames-1, each `chunk` long (the last may be shorter), sharing `overlap`."""
    if num_frames < 1:
        raise ValueError(f"cannot plan chunks for {num_frames} frames")
    return [span for span, _, _ in chunk_windows(range(num_frames), chunk, overlap)]


def crossfade_weights(shared: int) -> np.ndarray:
    """Weight of the NEWER piece on each shared frame: strictly between 0 and 1, increasing."""
    return np.arange(1, shared + 1, dtype=np.float32) / (shared + 1)


class Stitcher(Generic[T]):
    """Streams pieces of output in (chunks of a run, or keyframe segments), and finished frames out in order,
    holding only the frames still to be blended. `blend(older, newer, weight)` mixes two versions of a frame
    (`weight` is the newer one's, from `crossfade_weights`)."""

    def __init__(self, blend: Callable[[T, T, float], T]) -> None:
        self._blend = blend
        self._held: dict[int, T] = {}

    def push(self, span: ChunkSpan, frames: Iterable[T], *, hold: int) -> Iterator[T]:
        """Adds the frames of `span` (their first `span.shared` overlap frames held from the previous piece);
        yields every frame that is now final and keeps the last `hold` for the next piece (0 for the last)."""
        if sorted(self._held) != list(range(span.start, span.start + span.shared)):
            raise ValueError(f"piece {span.index} does not continue the previous one")
        weights = crossfade_weights(span.shared)
        for j, frame in enumerate(frames):
            index = span.start + j
            if j < span.shared:
                frame = self._blend(self._held.pop(index), frame, float(weights[j]))
            if hold and j >= span.length - hold:
                self._held[index] = frame
            else:
                yield frame


def blend_arrays(older: tuple[np.ndarray, ...], newer: tuple[np.ndarray, ...], weight: float) -> tuple[np.ndarray, ...]:
    """The float blend of two versions of a frame given as arrays (e.g. (rgb, mask) at the working size)."""
    return tuple((1 - weight) * a + weight * b for a, b in zip(older, newer, strict=True))


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


def blend_halves(segments: list[Segment], overlap: int) -> list[int]:
    """For each segment, the frames its run reaches past its end into the next one (and the next one's run
    reaches back before its start): at most overlap / 2, never reaching either keyframe; 0 after the last."""
    halves = [max(0, min(overlap // 2, a.stop - 1 - a.at, b.at - b.start)) for a, b in zip(segments, segments[1:])]
    return [*halves, 0]


def segment_spans(segments: list[Segment], halves: list[int]) -> list[ChunkSpan]:
    """Each segment's output span, reaching `halves` frames into its neighbours, as the stitcher takes them:
    two neighbouring segments' runs share 2 * half frames around their boundary."""
    before = [0, *halves[:-1]]
    return [
        ChunkSpan(s.keyframe, s.start - b, s.stop + a, 2 * b) for s, b, a in zip(segments, before, halves, strict=True)
    ]
