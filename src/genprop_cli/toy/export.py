"""Writes the toy world to disk: training sets in the DAVIS layout and evaluation sets with exact ground truth.

DAVIS: `<root>/JPEGImages/480p/<seq>/00000.jpg` (JPEG quality 95, 4:4:4 chroma so that small shapes keep
their colours) and `<root>/Annotations/480p/<seq>/00000.png` (palette PNG: 0 background, instance ids
1..K, contiguous per clip, DAVIS palette). Shadows are not annotated, as in DAVIS, unless asked
(`shadows=True`): then each instance's mask also holds the visible pixels of its own shadow, as in
datasets that segment an object together with its effects (shadows, reflections).

Evaluation set: `<root>/index.json` and one folder per example, `<root>/<task>-<k:03d>/`, holding
lossless PNGs `source/00000.png...`, `edited_first.png`, `target/00000.png...`, `masks/00000.png...`
(0/255 grayscale), `object_masks/...` and, when the object casts a shadow, `shadow_masks/...`, plus
`meta.json` (task, object id, edit kind, seed, fps, prompt, the scene description). The same seed
gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genprop_cli.config import Task
from genprop_cli.errors import InputError
from genprop_cli.fileio import read_json
from genprop_cli.toy.world import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    ToyExample,
    frame_dimensions,
    make_example,
    render,
    HELD_OUT_PHOTOS,
    TRAIN_PHOTOS,
    sample_scene,
)

__all__ = [
    "EVAL_FORMAT",
    "EVAL_FPS",
    "davis_palette",
    "read_eval_example",
    "read_eval_set",
    "write_davis",
    "write_eval_set",
]

EVAL_FPS = 24
EVAL_FORMAT = "genprop-toy-eval/1"
DAVIS_RESOLUTION = "480p"  # the folder name DAVIS readers look for first; the frames keep the toy size
JPEG_QUALITY = 95
# Streams of seeds derived from the user's seed, so that DAVIS clips and eval examples never share a scene.
_DAVIS_STREAM = 0
_EVAL_STREAM = 1
# One seed stream per task, fixed: evaluation sets stay byte-identical for a seed whatever order Task lists.
_TASK_STREAMS = {Task.EDIT: 0, Task.REMOVE: 1, Task.INSERT: 2, Task.TRACK: 3}


# --- DAVIS ---------------------------------------------------------------------------------------


def davis_palette() -> list[int]:
    """The DAVIS / PASCAL VOC palette as PIL wants it: 768 ints, index i's bits spread over R, G, B."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= (bits & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette += [red, green, blue]
    return palette


def write_davis(
    root: Path,
    n_clips: int,
    seed: int,
    *,
    frames: int = DEFAULT_FRAMES,
    size: int | tuple[int, int] = DEFAULT_SIZE,
    shadows: bool = False,
    backgrounds: tuple[str, ...] = ("waves",),
    camera_zoom: float = 0.0,
) -> list[str]:
    """Write `n_clips` toy clips in the DAVIS layout under `root`; returns the sequence names. With `shadows`
    each instance is annotated together with its shadow. `backgrounds` and `camera_zoom` are
    `sample_scene`'s; photo backgrounds come from TRAIN_PHOTOS only (evaluation sets keep the held-out ones)."""
    root = Path(root)
    names = []
    for index in range(n_clips):
        name = f"toy-{index:05d}"
        scene = sample_scene(_rng(seed, _DAVIS_STREAM, index), frames=frames, size=size, backgrounds=backgrounds,
                             photos=TRAIN_PHOTOS, camera_zoom=camera_zoom)
        output = render(scene)
        masks = with_shadows(output.instance_masks, output.shadow_masks) if shadows else output.instance_masks
        labels = label_maps(masks)
        _write_davis_sequence(root, name, output.frames, labels)
        names.append(name)
    return names


def with_shadows(instance_masks: dict[int, np.ndarray], shadow_masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Each instance's mask joined with its shadow's pixels that no shape covers (a shape keeps its own pixels)."""
    any_shape = np.logical_or.reduce(list(instance_masks.values())) if instance_masks else False
    return {i: mask | (shadow_masks.get(i, False) & ~any_shape) for i, mask in instance_masks.items()}


def label_maps(instance_masks: dict[int, np.ndarray]) -> np.ndarray:
    """(T, H, W) uint8 ids: the instances that show in some frame, numbered 1..K in id order."""
    visible = [shape_id for shape_id in sorted(instance_masks) if instance_masks[shape_id].any()]
    if len(visible) > 254:
        raise ValueError(f"DAVIS annotations hold at most 254 instances, got {len(visible)}")
    shape = next(iter(instance_masks.values())).shape if instance_masks else (0, 0, 0)
    labels = np.zeros(shape, dtype=np.uint8)
    for label, shape_id in enumerate(visible, start=1):
        labels[instance_masks[shape_id]] = label
    return labels


def _write_davis_sequence(root: Path, name: str, frames: np.ndarray, labels: np.ndarray) -> None:
    """One sequence's JPEG frames and palette-PNG annotations."""
    image_dir = root / "JPEGImages" / DAVIS_RESOLUTION / name
    label_dir = root / "Annotations" / DAVIS_RESOLUTION / name
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    palette = davis_palette()
    for t, (frame, label) in enumerate(zip(frames, labels)):
        Image.fromarray(frame, "RGB").save(
            image_dir / f"{t:05d}.jpg", format="JPEG", quality=JPEG_QUALITY, subsampling=0
        )
        annotation = Image.fromarray(label, "L").convert("P")
        annotation.putpalette(palette)
        annotation.save(label_dir / f"{t:05d}.png", format="PNG")


# --- evaluation sets -----------------------------------------------------------------------------


def example_seed(seed: int, task: Task, index: int) -> int:
    """The seed of the `index`-th example of `task` in an evaluation set drawn with `seed`."""
    return int(np.random.SeedSequence([seed, _EVAL_STREAM, _TASK_STREAMS[Task(task)], index]).generate_state(1)[0])


def write_eval_set(
    root: Path,
    n_per_task: int,
    seed: int,
    *,
    frames: int = DEFAULT_FRAMES,
    size: int | tuple[int, int] = DEFAULT_SIZE,
    tasks: Iterable[Task] = tuple(Task),
    backgrounds: tuple[str, ...] = ("waves",),
    photos: tuple[str, ...] = HELD_OUT_PHOTOS,
    camera_zoom: float = 0.0,
) -> list[Path]:
    """Write `n_per_task` examples of each task and `<root>/index.json`; returns the example folders.
    Photo backgrounds come from `photos` (by default the ones training data never uses)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries, folders = [], []
    for task in (Task(t) for t in tasks):
        for index in range(n_per_task):
            name = f"{task.value}-{index:03d}"
            rng_seed = example_seed(seed, task, index)
            rng = np.random.default_rng(rng_seed)
            scene = sample_scene(rng, frames=frames, size=size, backgrounds=backgrounds, photos=photos,
                                 camera_zoom=camera_zoom)
            example = make_example(task, scene, rng)
            example.name, example.seed = name, rng_seed
            folders.append(write_eval_example(root / name, example, scene_description=dataclasses.asdict(scene)))
            entries.append({"name": name, "task": task.value, "path": name})
    width, height = frame_dimensions(size)
    index_document = {
        "format": EVAL_FORMAT,
        "seed": seed,
        "frames": frames,
        "width": width,
        "height": height,
        "fps": EVAL_FPS,
        "examples": entries,
    }
    _write_json(root / "index.json", index_document)
    return folders


def write_eval_example(
    folder: Path, example: ToyExample, *, scene_description: dict[str, Any] | None = None
) -> Path:
    """Write one example's PNGs and meta.json into `folder` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_png_sequence(folder / "source", example.source)
    _save_png(folder / "edited_first.png", example.edited_first)
    _write_png_sequence(folder / "target", example.target)
    _write_png_sequence(folder / "masks", example.masks)
    if example.object_masks is not None:
        _write_png_sequence(folder / "object_masks", example.object_masks)
    if example.shadow_masks is not None:
        _write_png_sequence(folder / "shadow_masks", example.shadow_masks)
    meta = {
        "name": example.name,
        "task": example.task.value,
        "object_id": example.object_id,
        "edit_kind": example.edit_kind,
        "seed": example.seed,
        "fps": EVAL_FPS,
        "frames": int(example.source.shape[0]),
        "height": int(example.source.shape[1]),
        "width": int(example.source.shape[2]),
        "prompt": example.prompt,
        "scene": scene_description,
    }
    _write_json(folder / "meta.json", meta)
    return folder


def read_eval_example(folder: Path) -> ToyExample:
    """Read an example written by `write_eval_example` back, bit-exactly."""
    folder = Path(folder)
    meta = _read_json(folder / "meta.json")
    try:
        task = Task(meta["task"])
        object_id = int(meta["object_id"])
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{folder / 'meta.json'} has no valid task and object_id: {error}") from error
    source = _read_png_sequence(folder / "source", "RGB")
    return ToyExample(
        task=task,
        source=source,
        edited_first=_load_png(folder / "edited_first.png", "RGB"),
        target=_read_png_sequence(folder / "target", "RGB"),
        masks=_read_png_sequence(folder / "masks", "L") > 127,
        object_id=object_id,
        edit_kind=meta.get("edit_kind"),
        object_masks=_read_optional_masks(folder / "object_masks"),
        shadow_masks=_read_optional_masks(folder / "shadow_masks"),
        prompt=str(meta.get("prompt") or ""),
        name=str(meta.get("name") or folder.name),
        seed=meta.get("seed"),
    )


def read_eval_set(root: Path) -> list[ToyExample]:
    """Every example listed in `<root>/index.json`, in its order."""
    root = Path(root)
    document = _read_json(root / "index.json")
    examples = document.get("examples")
    if not isinstance(examples, list):
        raise InputError(f"{root / 'index.json'} has no \"examples\" list")
    return [read_eval_example(root / str(entry["path"])) for entry in examples]


# --- files ---------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """An independent generator for item `index` of a stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _save_png(path: Path, array: np.ndarray) -> None:
    """Lossless PNG of an RGB frame or a boolean mask (0/255)."""
    if array.dtype == np.bool_:
        Image.fromarray(array.astype(np.uint8) * 255, "L").save(path, format="PNG")
    else:
        Image.fromarray(np.ascontiguousarray(array), "RGB").save(path, format="PNG")


def _write_png_sequence(folder: Path, arrays: np.ndarray) -> None:
    """00000.png, 00001.png, ... one per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, array in enumerate(arrays):
        _save_png(folder / f"{t:05d}.png", array)


def _load_png(path: Path, mode: str) -> np.ndarray:
    """Decode one PNG in the given mode."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path}: {error}") from error


def _read_png_sequence(folder: Path, mode: str) -> np.ndarray:
    """Stack a folder's numbered PNGs."""
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise InputError(f"{folder} holds no PNG frames")
    return np.stack([_load_png(path, mode) for path in paths])


def _read_optional_masks(folder: Path) -> np.ndarray | None:
    """Boolean masks from a folder, or None when the example has none."""
    return _read_png_sequence(folder, "L") > 127 if folder.is_dir() else None


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Stable JSON (sorted keys, fixed indentation) so that files are byte-identical across runs."""
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object, or raise InputError."""
    document = read_json(path)
    if not isinstance(document, dict):
        raise InputError(f"{path} is not a JSON object")
    return document
