"""Video instance segmentation datasets (DAVIS, YouTube-VIS) read as clips with per-instance masks.

A dataset is indexed when it is opened (folder listings and the YT-VIS JSON only) and its images are
read on `load`, so opening a big dataset is cheap. Problems are never fatal: a bad sequence, frame or
annotation is left out and listed in `report.skipped` with the file (or JSON entry) and the reason.
What the index can see (missing files, count mismatches, JSON inconsistencies) is reported when the
dataset opens; what needs the pixels (unreadable images, wrong sizes, empty masks) when a sequence is
first loaded. A sequence found broken on load is reported once and from then on loads as an empty
sample (no frames, no instances) so that indices stay stable; `sample_clip` returns None for it.

COCO RLE (both the uncompressed counts list and the compressed string) and polygons are decoded here
(no pycocotools): RLE is column-major; a polygon covers the pixels whose area it covers at least half.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from genprop_cli.errors import InputError, OptionError
from genprop_cli.fileio import read_json

__all__ = [
    "ClipSpec",
    "DatasetReport",
    "DavisDataset",
    "VideoSample",
    "YTVISDataset",
    "decode_rle",
    "open_dataset",
    "polygons_to_mask",
    "rle_counts_from_string",
    "sample_clip",
]

FRAME_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
DAVIS_RESOLUTIONS = ("480p", "Full-Resolution")
VOID_ID = 255
MIN_INSTANCE_AREA = 0.005  # fraction of the clip's first frame an instance must cover to be kept
_POLYGON_SUPERSAMPLING = 4
_IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


# --- samples and reports -----------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSample:
    """One video (or clip): RGB frames and the boolean masks of its instances."""

    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    instances: dict[int, np.ndarray]  # instance id -> (T, H, W) bool; empty in some frames, never in all


@dataclass
class DatasetReport:
    """What a dataset holds and what it left out, and why."""

    sequences: int = 0
    used: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or sequence, reason)
    _seen: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False, compare=False)

    def skip(self, item: str, reason: str) -> None:
        """Record a left-out item once, however often it is met."""
        if (item, reason) not in self._seen:
            self._seen.add((item, reason))
            self.skipped.append((item, reason))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "sequences": self.sequences,
            "used": self.used,
            "skipped": [{"item": item, "reason": reason} for item, reason in self.skipped],
        }

    def summary(self, limit: int = 3) -> str:
        """The first few skip reasons on one line."""
        shown = "; ".join(f"{item}: {reason}" for item, reason in self.skipped[:limit])
        more = f" (+{len(self.skipped) - limit} more)" if len(self.skipped) > limit else ""
        return f"{len(self.skipped)} skipped: {shown}{more}" if self.skipped else "nothing found"


class _Unusable(Exception):
    """A file or entry that cannot be used; carries the item name and the reason."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"{item}: {reason}")
        self.item = item
        self.reason = reason


# --- RLE and polygons --------------------------------------------------------------------------


def rle_counts_from_string(text: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (6-bit chunks, deltas from the run two back)."""
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    counts: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise ValueError("compressed RLE string ends inside a number")
            chunk = data[position] - 48
            if not 0 <= chunk < 64:
                raise ValueError(f"invalid character {chr(data[position])!r} in compressed RLE")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value -= 1 << shift  # sign-extend the last chunk
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _rle_counts(rle: dict[str, Any]) -> list[int]:
    """The run lengths of an RLE dict, whichever form its counts take."""
    counts = rle.get("counts")
    if isinstance(counts, (str, bytes)):
        return rle_counts_from_string(counts)
    if isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return counts
    raise ValueError("RLE counts must be a list of integers or a compressed string")


def _rle_size(rle: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of an RLE dict."""
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ValueError(f"RLE size must be [height, width], got {size!r}")
    return size[0], size[1]


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE dict {"size": [h, w], "counts": list | str} -> (h, w) bool mask."""
    height, width = _rle_size(rle)
    counts = np.asarray(_rle_counts(rle), dtype=np.int64)
    if (counts < 0).any():
        raise ValueError("RLE has a negative run length")
    if counts.sum() != height * width:
        raise ValueError(f"RLE runs cover {int(counts.sum())} pixels, size {height}x{width} has {height * width}")
    values = np.arange(len(counts)) % 2 == 1  # runs alternate background, foreground, ...
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T.copy()  # column-major


def polygons_to_mask(polygons: Iterable[Iterable[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons [[x1, y1, x2, y2, ...], ...] -> (h, w) bool: pixels at least half covered by one."""
    factor = _POLYGON_SUPERSAMPLING
    canvas = Image.new("L", (width * factor, height * factor), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        xy = [float(v) * factor for v in polygon]
        if len(xy) < 6 or len(xy) % 2:
            raise ValueError("a polygon needs at least 3 (x, y) points")
        draw.polygon(list(zip(xy[0::2], xy[1::2])), fill=1)
    # PIL fills edges inclusively, so at 4x a pixel on a polygon's right/bottom edge gets 1/4 of its
    # sub-pixels and the majority vote drops it: the mask covers the polygon's area, as COCO's does.
    coverage = np.asarray(canvas, dtype=np.uint16).reshape(height, factor, width, factor).sum(axis=(1, 3))
    return coverage * 2 >= factor * factor


def _decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One frame of a YT-VIS annotation (RLE dict, polygon list or null) -> (h, w) bool."""
    if segmentation is None:
        return np.zeros((height, width), bool)
    if isinstance(segmentation, dict):
        return decode_rle(segmentation)
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width) if segmentation else np.zeros((height, width), bool)
    raise ValueError(f"segmentation must be an RLE dict, a polygon list or null, got {type(segmentation).__name__}")


# --- files ---------------------------------------------------------------------------------------


def _natural_key(name: str) -> tuple:
    """Sort key that puts frame 2 before frame 10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name))


def _list_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files of `folder` with one of `suffixes` (any case), in natural order."""
    wanted = {s.lower() for s in suffixes}
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _relative(path: Path, root: Path) -> str:
    """`path` as shown in reports: relative to the dataset root when inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _open_decoded(path: Path, item: str) -> Image.Image:
    """Open and fully decode an image, or raise _Unusable."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except _IMAGE_ERRORS as error:
        raise _Unusable(item, f"unreadable image ({error})") from error


def _read_frames(paths: list[Path], root: Path, size: tuple[int, int] | None) -> np.ndarray:
    """Decode frames to (T, H, W, 3) uint8; all must be `size` (w, h), or the first frame's size."""
    frames = []
    for path in paths:
        image = _open_decoded(path, _relative(path, root)).convert("RGB")
        size = size or image.size
        if image.size != size:
            raise _Unusable(_relative(path, root), f"frame is {_wxh(image.size)}, expected {_wxh(size)}")
        frames.append(np.asarray(image, dtype=np.uint8))
    return np.stack(frames)


def _wxh(size: tuple[int, int]) -> str:
    """(w, h) -> 'WxH'."""
    return f"{size[0]}x{size[1]}"


_GRAYSCALE_MODES = frozenset({"L", "I", "I;16", "I;16L", "I;16B"})


def _read_label_map(path: Path, root: Path, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """A DAVIS annotation PNG -> (H, W) integer ids (palette index or gray value), and whether it is grayscale."""
    item = _relative(path, root)
    image = _open_decoded(path, item)
    if image.size != size:
        raise _Unusable(item, f"annotation is {_wxh(image.size)}, frame is {_wxh(size)}")
    if image.mode == "1":
        return np.asarray(image, dtype=np.int64), False
    if image.mode != "P" and image.mode not in _GRAYSCALE_MODES:
        raise _Unusable(item, f"annotation is {image.mode}, expected a palette or grayscale index image")
    return np.asarray(image).astype(np.int64), image.mode in _GRAYSCALE_MODES


def _instances_from_label_maps(labels: np.ndarray, grayscale: bool) -> dict[int, np.ndarray]:
    """(T, H, W) id maps -> {id: (T, H, W) bool}, background 0 and void 255 left out."""
    ids = [int(i) for i in np.unique(labels) if i not in (0, VOID_ID)]
    if not ids and grayscale and (labels == VOID_ID).any():
        # DAVIS 2016 stores one object as a 0/255 grayscale mask: 255 is the object there, not void.
        return {1: labels == VOID_ID}
    return {i: labels == i for i in ids}


# --- datasets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One indexed sequence: its frame files and how to read its annotations."""

    name: str
    frames: list[Path]
    masks: list[Path] = field(default_factory=list)  # DAVIS: one PNG per frame
    size: tuple[int, int] | None = None  # YT-VIS: (w, h) from the JSON
    annotations: list[tuple[int, list[Any], str]] = field(default_factory=list)  # YT-VIS: (id, segs, item)


class _IndexedDataset:
    """Shared behaviour: an index of sequences read lazily, with a report of what was left out."""

    root: Path
    report: DatasetReport

    def __init__(self, root: Path, min_frames: int) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"dataset folder {self.root} does not exist or is not a folder")
        self.report = DatasetReport()
        self.min_frames = max(1, min_frames)
        self._entries: list[_Entry] = []
        self._broken: set[int] = set()

    def _add(self, entry: _Entry, item: str) -> None:
        """Index a sequence unless it is too short for the clips being drawn."""
        if len(entry.frames) < self.min_frames:
            self.report.skip(item, f"only {len(entry.frames)} frames, clips need {self.min_frames}")
            return
        self._entries.append(entry)
        self.report.used += 1

    def _finish_index(self) -> None:
        """Refuse a dataset with no usable sequence."""
        if not self._entries:
            raise InputError(f"no usable sequence in {self.root}: {self.report.summary()}")

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Names of the indexed sequences, in index order."""
        return [entry.name for entry in self._entries]

    def load(self, i: int) -> VideoSample:
        """Read sequence `i`; a broken one is reported and comes back empty."""
        entry = self._entries[i]
        if i in self._broken:
            return _empty_sample(entry.name)
        try:
            return self._read(entry)
        except _Unusable as problem:
            self.report.skip(problem.item, problem.reason)
            self._broken.add(i)
            self.report.used -= 1
            return _empty_sample(entry.name)

    def verify(self) -> DatasetReport:
        """Load every sequence once, so that the report also holds the problems only pixels show."""
        for i in range(len(self)):
            self.load(i)
        return self.report

    def _read(self, entry: _Entry) -> VideoSample:
        raise NotImplementedError


def _empty_sample(name: str) -> VideoSample:
    """The stand-in for a sequence that turned out unusable."""
    return VideoSample(name=name, frames=np.zeros((0, 0, 0, 3), np.uint8), instances={})


class DavisDataset(_IndexedDataset):
    """DAVIS layout: <root>/JPEGImages/<480p|Full-Resolution|.>/<seq>/*.jpg and <root>/Annotations/<...>/<seq>/*.png.

    Annotations are palette PNGs whose value is the instance id (0 background, 255 void, ignored); a
    grayscale 0/255 PNG (DAVIS 2016) is one object. The resolution folder is auto-detected (480p first).
    """

    def __init__(self, root: Path, *, resolution: str | None = None, min_frames: int = 1) -> None:
        super().__init__(root, min_frames)
        images = self.root / "JPEGImages"
        if not images.is_dir():
            raise InputError(f"{self.root} is not a DAVIS dataset: it has no JPEGImages folder")
        self.resolution = _davis_resolution(images, resolution)
        self._index(images / self.resolution, self.root / "Annotations" / self.resolution)
        self._finish_index()

    def _index(self, images: Path, annotations: Path) -> None:
        """One entry per sequence folder whose frames and annotation PNGs pair up one to one."""
        for folder in sorted((p for p in images.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name)):
            self.report.sequences += 1
            try:
                entry = self._index_sequence(folder, annotations / folder.name)
            except _Unusable as problem:
                self.report.skip(problem.item, problem.reason)
                continue
            self._add(entry, _relative(folder, self.root))

    def _index_sequence(self, frames_dir: Path, masks_dir: Path) -> _Entry:
        """Pair a sequence's frames with its annotations by file stem."""
        frames = _list_files(frames_dir, FRAME_SUFFIXES)
        if not frames:
            raise _Unusable(_relative(frames_dir, self.root), "no frames")
        if not masks_dir.is_dir():
            raise _Unusable(_relative(masks_dir, self.root), "no annotation folder for this sequence")
        masks = {p.stem: p for p in _list_files(masks_dir, {".png"})}
        for frame in frames:
            if frame.stem not in masks:
                missing = masks_dir / f"{frame.stem}.png"
                raise _Unusable(_relative(missing, self.root), f"missing annotation PNG for frame {frame.name}")
        if len(masks) != len(frames):
            raise _Unusable(
                _relative(masks_dir, self.root), f"{len(frames)} frames but {len(masks)} annotation PNGs"
            )
        return _Entry(name=frames_dir.name, frames=frames, masks=[masks[f.stem] for f in frames])

    def _read(self, entry: _Entry) -> VideoSample:
        frames = _read_frames(entry.frames, self.root, None)
        size = (frames.shape[2], frames.shape[1])
        maps, grayscale = zip(*(_read_label_map(path, self.root, size) for path in entry.masks))
        instances = _instances_from_label_maps(np.stack(maps), all(grayscale))
        if not instances:
            raise _Unusable(_relative(entry.masks[0].parent, self.root), "no instance in any frame")
        return VideoSample(name=entry.name, frames=frames, instances=instances)


def _davis_resolution(images: Path, resolution: str | None) -> str:
    """The resolution subfolder to read: the one asked for, else 480p, Full-Resolution, or none."""
    if resolution is not None:
        if not (images / resolution).is_dir():
            raise InputError(f"DAVIS resolution folder {images / resolution} does not exist")
        return resolution
    for candidate in DAVIS_RESOLUTIONS:
        if (images / candidate).is_dir():
            return candidate
    return "."


class YTVISDataset(_IndexedDataset):
    """YouTube-VIS layout: <root>/JPEGImages/<video>/<frame>.jpg and <root>/<annotations>.json.

    The JSON has "videos" [{id, file_names, height, width, length}] and "annotations" [{video_id, id,
    segmentations: [RLE dict | polygon list | null, one per frame]}]; it is the single .json in the root
    unless named. Instance ids are the annotation ids.
    """

    def __init__(self, root: Path, *, annotations: Path | None = None, min_frames: int = 1) -> None:
        super().__init__(root, min_frames)
        self.annotations = Path(annotations) if annotations is not None else _find_json(self.root)
        self._listings: dict[Path, set[str]] = {}
        document = _load_json(self.annotations)
        by_video = self._group_annotations(document.get("annotations") or [])
        for video in document.get("videos") or []:
            self.report.sequences += 1
            try:
                entry = self._index_video(video, by_video)
            except _Unusable as problem:
                self.report.skip(problem.item, problem.reason)
                continue
            self._add(entry, self._video_item(video))
        self._finish_index()

    def _video_item(self, video: Any) -> str:
        """How a video entry is named in the report."""
        video_id = video.get("id") if isinstance(video, dict) else None
        return f"{self.annotations.name}: video {video_id}"

    def _group_annotations(self, annotations: list[Any]) -> dict[Any, list[tuple[int, list[Any], str]]]:
        """Annotations that pass the index-time checks, by video id (the rest are reported)."""
        grouped: dict[Any, list[tuple[int, list[Any], str]]] = {}
        for annotation in annotations:
            if not isinstance(annotation, dict):
                self.report.skip(f"{self.annotations.name}: annotation", "not a JSON object")
                continue
            item = f"{self.annotations.name}: annotation {annotation.get('id')} (video {annotation.get('video_id')})"
            segmentations = annotation.get("segmentations")
            if not isinstance(annotation.get("id"), int) or not isinstance(segmentations, list):
                self.report.skip(item, "needs an integer id and a segmentations list")
                continue
            grouped.setdefault(annotation.get("video_id"), []).append((annotation["id"], segmentations, item))
        return grouped

    def _index_video(self, video: Any, by_video: dict[Any, list[tuple[int, list[Any], str]]]) -> _Entry:
        """Check a video entry, its frame files and its annotations against each other."""
        item = self._video_item(video)
        if not isinstance(video, dict) or not isinstance(video.get("file_names"), list) or not video["file_names"]:
            raise _Unusable(item, "no file_names")
        names = video["file_names"]
        length = video.get("length", len(names))
        if length != len(names):
            raise _Unusable(item, f"length is {length} but it lists {len(names)} file_names")
        height, width = video.get("height"), video.get("width")
        size = (width, height) if isinstance(width, int) and isinstance(height, int) else None
        frames = [self.root / "JPEGImages" / name for name in names]
        for frame in frames:
            if not self._exists(frame):
                raise _Unusable(_relative(frame, self.root), "frame file is missing")
        annotations = [a for a in by_video.get(video.get("id"), []) if self._annotation_ok(a, length, size)]
        if not annotations:
            raise _Unusable(item, "no usable annotations")
        return _Entry(name=Path(names[0]).parent.name or str(video.get("id")), frames=frames, size=size,
                      annotations=annotations)

    def _annotation_ok(self, annotation: tuple[int, list[Any], str], length: int, size: tuple[int, int] | None) -> bool:
        """Index-time checks of one annotation; a failing one is reported."""
        _, segmentations, item = annotation
        problem = _segmentations_problem(segmentations, length, size)
        if problem:
            self.report.skip(item, problem)
        return problem is None

    def _exists(self, path: Path) -> bool:
        """File existence from one listing per folder (far fewer system calls than a stat per frame)."""
        folder = path.parent
        if folder not in self._listings:
            self._listings[folder] = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        return path.name in self._listings[folder]

    def _read(self, entry: _Entry) -> VideoSample:
        frames = _read_frames(entry.frames, self.root, entry.size)
        height, width = frames.shape[1:3]
        instances = {}
        for instance_id, segmentations, item in entry.annotations:
            try:
                masks = np.stack([_decode_segmentation(s, height, width) for s in segmentations])
            except ValueError as error:
                self.report.skip(item, f"cannot decode: {error}")
                continue
            if masks.shape[1:] != (height, width):
                self.report.skip(item, f"mask is {masks.shape[2]}x{masks.shape[1]}, frames are {width}x{height}")
            elif not masks.any():
                self.report.skip(item, "instance is empty in every frame")
            else:
                instances[instance_id] = masks
        if not instances:
            raise _Unusable(f"{self.annotations.name}: video {entry.name}", "no usable instance")
        return VideoSample(name=entry.name, frames=frames, instances=instances)


def _segmentations_problem(segmentations: list[Any], length: int, size: tuple[int, int] | None) -> str | None:
    """Why an annotation's segmentation list cannot be used with its video, or None."""
    if len(segmentations) != length:
        return f"{len(segmentations)} segmentations for a video of {length} frames"
    if all(s is None or s == [] for s in segmentations):
        return "instance is empty in every frame"
    for t, segmentation in enumerate(segmentations):
        if isinstance(segmentation, dict):
            try:
                height, width = _rle_size(segmentation)
            except ValueError as error:
                return f"frame {t}: {error}"
            if size is not None and (width, height) != size:
                return f"frame {t}: segmentation is {width}x{height}, the video is {_wxh(size)}"
            counts = segmentation.get("counts")
            if isinstance(counts, list) and sum(c for c in counts if isinstance(c, int)) != height * width:
                return f"frame {t}: RLE counts do not add up to {height}x{width} pixels"
        elif segmentation is not None and not isinstance(segmentation, list):
            return f"frame {t}: segmentation is neither RLE, polygons nor null"
    return None


def _find_json(root: Path) -> Path:
    """The single annotation JSON in the dataset root."""
    candidates = sorted(root.glob("*.json"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise InputError(f"expected exactly one annotation .json in {root} (found {found}); name it explicitly")
    return candidates[0]


def _load_json(path: Path) -> dict[str, Any]:
    """Parse the YT-VIS annotation file."""
    document = read_json(path, "annotation file ")
    if not isinstance(document, dict) or not isinstance(document.get("videos"), list):
        raise InputError(f"{path} is not a YouTube-VIS annotation file: it has no \"videos\" list")
    return document


def open_dataset(
    root: Path, fmt: Literal["davis", "ytvis"], *, min_frames: int = 1
) -> DavisDataset | YTVISDataset:
    """Open a dataset folder in one of the two layouts; `min_frames` leaves out (and reports) shorter videos."""
    if fmt == "davis":
        return DavisDataset(Path(root), min_frames=min_frames)
    if fmt == "ytvis":
        return YTVISDataset(Path(root), min_frames=min_frames)
    raise OptionError(f"dataset format must be davis or ytvis, got {fmt!r}")


# --- clips ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """How training clips are cut from videos."""

    frames: int  # clip length (e.g. the chunk length)
    size: tuple[int, int]  # (width, height) of training clips
    max_stride: int = 2  # temporal stride drawn uniformly from 1..max_stride (reduced for short videos)
    min_crop: float = 0.6  # the crop's sides are at least this fraction of the largest crop of that aspect

    def __post_init__(self) -> None:
        if self.frames < 1 or self.max_stride < 1:
            raise ValueError(f"clip frames and max_stride must be >= 1, got {self.frames}, {self.max_stride}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"clip size must be (width, height) >= 1, got {self.size}")
        if not 0 < self.min_crop <= 1:
            raise ValueError(f"min_crop must be in (0, 1], got {self.min_crop}")


@dataclass(frozen=True)
class _Crop:
    left: int
    top: int
    width: int
    height: int


def sample_clip(sample: VideoSample, spec: ClipSpec, rng: np.random.Generator) -> VideoSample | None:
    """A random clip: start, stride and crop drawn from `rng`, resized to `spec.size`.

    Keeps the instances that cover at least MIN_INSTANCE_AREA of the clip's first frame; None when the
    video is shorter than `spec.frames` or no instance is left.
    """
    length = len(sample.frames)
    if length < spec.frames or not sample.instances:
        return None
    indices = _draw_indices(length, spec, rng)
    height, width = sample.frames.shape[1:3]
    crop = _draw_crop(width, height, spec, rng)
    min_area = max(1, math.ceil(MIN_INSTANCE_AREA * spec.size[0] * spec.size[1]))
    instances = {}
    for instance_id in sorted(sample.instances):
        masks = _resize_masks(sample.instances[instance_id][indices], crop, spec.size)
        if masks[0].sum() >= min_area:
            instances[instance_id] = masks
    if not instances:
        return None
    frames = np.stack([_resize_frame(sample.frames[t], crop, spec.size) for t in indices])
    return VideoSample(name=sample.name, frames=frames, instances=instances)


def _draw_indices(length: int, spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of a clip: a stride the video is long enough for, then a start."""
    longest = (length - 1) // (spec.frames - 1) if spec.frames > 1 else spec.max_stride
    stride = int(rng.integers(1, min(spec.max_stride, longest) + 1))
    start = int(rng.integers(0, length - (spec.frames - 1) * stride))
    return start + stride * np.arange(spec.frames)


def _draw_crop(width: int, height: int, spec: ClipSpec, rng: np.random.Generator) -> _Crop:
    """A crop with the clip's aspect ratio (no distortion), at least `min_crop` of the largest one."""
    aspect = spec.size[0] / spec.size[1]
    largest_w, largest_h = (height * aspect, height) if width / height > aspect else (width, width / aspect)
    scale = rng.uniform(spec.min_crop, 1.0)
    crop_w = min(width, max(1, round(largest_w * scale)))
    crop_h = min(height, max(1, round(largest_h * scale)))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    return _Crop(left, top, crop_w, crop_h)


def _resize_frame(frame: np.ndarray, crop: _Crop, size: tuple[int, int]) -> np.ndarray:
    """Crop and resize one RGB frame (bilinear)."""
    box = (crop.left, crop.top, crop.left + crop.width, crop.top + crop.height)
    resized = Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.uint8)


def _resize_masks(masks: np.ndarray, crop: _Crop, size: tuple[int, int]) -> np.ndarray:
    """Crop and resize (T, H, W) masks with nearest neighbour (sample at output pixel centres)."""
    width, height = size
    rows = crop.top + np.minimum(((np.arange(height) + 0.5) * crop.height / height).astype(int), crop.height - 1)
    cols = crop.left + np.minimum(((np.arange(width) + 0.5) * crop.width / width).astype(int), crop.width - 1)
    return masks[:, rows[:, None], cols[None, :]]
