"""Tiny synthetic video instance segmentation datasets for tests, in the DAVIS and YouTube-VIS layouts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

Video = tuple[np.ndarray, dict[int, np.ndarray]]  # (T, H, W, 3) uint8 frames, id -> (T, H, W) bool

RECT_COLOUR = (220, 40, 40)
ELLIPSE_COLOUR = (40, 60, 220)
DAVIS_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0] * (3 * 251)


def scene(
    frames: int = 6,
    size: tuple[int, int] = (48, 32),
    *,
    seed: int = 0,
    speed: int = 2,
    hidden: Mapping[int, Iterable[int]] | None = None,
) -> Video:
    """A noisy gradient with a red rectangle (id 1) moving right by `speed` px a frame and a blue
    ellipse (id 2) moving down 1 px a frame; `hidden` {id: frames} leaves an instance out of frames."""
    width, height = size
    hidden = {k: set(v) for k, v in (hidden or {}).items()}
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([60 + 100 * x / width, 90 + 60 * y / height, 120 + 0 * x], axis=-1)
    video = np.empty((frames, height, width, 3), np.uint8)
    rect = np.zeros((frames, height, width), bool)
    ellipse = np.zeros((frames, height, width), bool)
    for t in range(frames):
        noise = rng.normal(0, 4, size=base.shape)
        video[t] = np.clip(base + noise, 0, 255).astype(np.uint8)
        if t not in hidden.get(2, ()):
            ellipse[t] = _ellipse_mask(size, (width // 2 + 2, height // 2 - 2 + t, 12, 10))
            video[t][ellipse[t]] = ELLIPSE_COLOUR
        if t not in hidden.get(1, ()):
            left = 3 + speed * t
            rect[t, 4:12, max(0, left):max(0, left + 10)] = True
            ellipse[t] &= ~rect[t]
            video[t][rect[t]] = RECT_COLOUR
    return video, {1: rect, 2: ellipse}


def _ellipse_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """(H, W) mask of an ellipse given as (left, top, width, height)."""
    canvas = Image.new("L", size, 0)
    left, top, w, h = box
    ImageDraw.Draw(canvas).ellipse((left, top, left + w - 1, top + h - 1), fill=1)
    return np.asarray(canvas, dtype=bool)


def save_jpeg(path: Path, frame: np.ndarray) -> None:
    """High-quality JPEG without chroma subsampling, so colours survive at shape edges."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, quality=95, subsampling=0)


def label_map(instances: Mapping[int, np.ndarray], t: int) -> np.ndarray:
    """Frame t of instance masks as a (H, W) uint8 id map."""
    shape = next(iter(instances.values())).shape[1:]
    labels = np.zeros(shape, np.uint8)
    for instance_id, masks in instances.items():
        labels[masks[t]] = instance_id
    return labels


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    """A DAVIS-style palette PNG whose pixel values are instance ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(DAVIS_PALETTE)
    image.save(path)


def write_davis(root: Path, sequences: Mapping[str, Video], resolution: str | None = "480p") -> Path:
    """<root>/JPEGImages/<resolution>/<seq>/00000.jpg and <root>/Annotations/<resolution>/<seq>/00000.png."""
    sub = resolution or "."
    for name, (frames, instances) in sequences.items():
        for t, frame in enumerate(frames):
            save_jpeg(root / "JPEGImages" / sub / name / f"{t:05d}.jpg", frame)
            save_palette_png(root / "Annotations" / sub / name / f"{t:05d}.png", label_map(instances, t))
    return root


# --- YouTube-VIS -------------------------------------------------------------------------------


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a (H, W) mask (column-major, starting with a background run)."""
    flat = mask.T.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def compress_counts(counts: list[int]) -> str:
    """COCO's compressed RLE string of a counts list."""
    chars = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            chars.append(chr((chunk | 0x20 if more else chunk) + 48))
    return "".join(chars)


def rectangle_polygon(mask: np.ndarray) -> list[list[float]]:
    """The polygon of a rectangular (H, W) mask, in COCO pixel-edge coordinates."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    assert mask[top:bottom, left:right].all() and mask.sum() == (bottom - top) * (right - left), "not a rectangle"
    corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
    return [[float(v) for corner in corners for v in corner]]


def encode(mask: np.ndarray, encoding: str) -> object:
    """One frame's segmentation in the given encoding ("rle", "counts", "polygon"); None when empty."""
    if not mask.any():
        return None
    height, width = mask.shape
    if encoding == "rle":
        return {"size": [height, width], "counts": compress_counts(rle_counts(mask))}
    if encoding == "counts":
        return {"size": [height, width], "counts": rle_counts(mask)}
    if encoding == "polygon":
        return rectangle_polygon(mask)
    raise ValueError(encoding)


def ytvis_document(
    videos: Mapping[str, Video], encodings: Mapping[int, str], *, first_id: int = 1
) -> dict[str, object]:
    """The annotation JSON for `videos` (annotation id = instance id, which must be unique overall)."""
    document: dict[str, list] = {"videos": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for video_id, (name, (frames, instances)) in enumerate(videos.items(), start=first_id):
        length, height, width = frames.shape[:3]
        document["videos"].append({
            "id": video_id, "width": width, "height": height, "length": length,
            "file_names": [f"{name}/{t:05d}.jpg" for t in range(length)],
        })
        for instance_id, masks in instances.items():
            document["annotations"].append({
                "id": instance_id, "video_id": video_id, "category_id": 1, "iscrowd": 0,
                "segmentations": [encode(m, encodings.get(instance_id, "rle")) for m in masks],
            })
    return document


def write_ytvis(
    root: Path,
    videos: Mapping[str, Video],
    encodings: Mapping[int, str] | None = None,
    json_name: str = "instances.json",
) -> Path:
    """<root>/JPEGImages/<video>/00000.jpg and <root>/<json_name>; returns the JSON's path.

    `encodings` maps instance ids to "rle" (compressed, the default), "counts" or "polygon" (the instance
    must then be a rectangle in every frame)."""
    for name, (frames, _) in videos.items():
        for t, frame in enumerate(frames):
            save_jpeg(root / "JPEGImages" / name / f"{t:05d}.jpg", frame)
    path = root / json_name
    path.write_text(json.dumps(ytvis_document(videos, encodings or {})))
    return path


def fixed_pairs(n: int, frames: int, size: tuple[int, int], task: str) -> list:
    """`n` synthetic training pairs of random frames with a red rectangle painted in (the modified region),
    shaped like `training.augment`'s pairs: original, edited, mask, task."""
    from types import SimpleNamespace

    width, height = size
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        original = rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
        mask = np.zeros((frames, height, width), bool)
        mask[:, 8:20, 6 + 2 * i : 18 + 2 * i] = True
        edited = original.copy()
        edited[mask] = [250, 20, 20]
        pairs.append(SimpleNamespace(original=original, edited=edited, mask=mask, task=task))
    return pairs


def write_dataset(root: Path, layout: str, videos: Mapping[str, Video]) -> Path:
    """`videos` in the "davis" or "ytvis" layout under `root`; returns `root`. YouTube-VIS annotation ids
    are unique across the file, so there each video's instance ids are renumbered 100 * video + id."""
    if layout == "davis":
        return write_davis(root, videos)
    if layout == "ytvis":
        renumbered = {
            name: (frames, {100 * i + k: masks for k, masks in instances.items()})
            for i, (name, (frames, instances)) in enumerate(videos.items(), start=1)
        }
        write_ytvis(root, renumbered)
        return root
    raise ValueError(layout)
