"""GenProp's synthetic training pairs, made from a real clip and its instance masks.

At inference the SCE reads the ORIGINAL video and the I2V model gets the EDITED first frame. In training
the SCE reads a SYNTHETIC clip and the I2V model the REAL clip's first frame, with the real clip as the
denoising target: the synthetic clip plays "the original video" and the real clip "the edited result".
Each augmentation's task is therefore the edit that turns the synthetic clip into the real one:

- Copy-and-Paste -> REMOVE. An instance of a donor clip (its pixels and masks, frame by frame, so it
  moves as it moves in the donor; random offset and scale) is pasted onto the clip. The SCE sees an
  object that the first frame and the target lack, so the model learns to drop what the first frame
  dropped. The mask is the pasted object dilated by PASTE_FEATHER px; that ring is a soft (partly
  transparent) edge, so the object's border lies inside the mask.
- Mask-and-Fill -> INSERT or EDIT (even odds). An instance's per-frame mask, dilated a little, is filled
  in every frame. INSERT: filled with background-like content (the surroundings spread inwards, coarser
  further in, plus mild noise), so the SCE lacks the object the first frame shows. EDIT: the object's
  pixels are hue-rotated and tinted, so the first frame shows appearance A where the SCE shows B.
- Color Fill -> TRACK. An instance's exact per-frame mask is filled with one flat saturated colour: the
  SCE gives the region's shape in every frame, the first frame its content (shape-exact region following;
  what the paper credits for propagating large shape changes).
- Reshape -> EDIT. Not in the paper, and off by default: an instance takes another shape in every frame
  (the disc of its area, its bounding box, or itself rotated about its centre), in its own mean colour,
  where the new shape reaches past it, and over background spread inwards where it no longer covers. The
  first frame shows shape A where the SCE shows B: the edit the product promises ("reshape it") and that
  Copy-and-Paste, Mask-and-Fill and Color Fill never show, whose MPD then missed same-colour reshapes
  (docs/results.md, issue 12). The mask is where the shapes differ.
- Unchanged -> REMOVE, INSERT or EDIT (even odds). Not in the paper, and off by default: the SCE sees the
  clip itself and the mask is empty. It is the case of a first frame that an edit left unchanged: the
  output must copy the source and the MPD mark nothing. Without it the MPD never sees a pair with nothing
  to mark, and marks 10-17% of an unedited frame (docs/results.md, issue 12).

Every pair guarantees, bit-exactly:
- `original` is the input clip's frames (a copy), `mask` has the same (T, H, W), `edited` the same shape;
- `edited[~mask] == original[~mask]`: nothing outside the mask changes;
- `(edited != original).any(axis=-1) == mask`: every masked pixel differs in at least one channel (where a
  fill happens to reproduce the original colour, the red channel's lowest bit is flipped: a 1-level nudge);
- `mask[0].any()`: the edit is visible in the first frame, the one the I2V model is conditioned on
  (except for an unchanged pair, whose mask is empty and whose `edited` equals `original`).
All randomness comes from the `rng` passed in, so a seed fixes the pair.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from genprop_cli.config import Task
from genprop_cli.training.data import VideoSample

__all__ = [
    "KINDS",
    "AugmentConfig",
    "PairSampler",
    "SyntheticPair",
    "color_fill",
    "copy_and_paste",
    "dilate",
    "mask_and_fill",
    "reshape",
    "unchanged",
]

KINDS = ("copy_paste", "mask_fill", "color_fill", "unchanged", "reshape")
UNCHANGED_TASKS = (Task.REMOVE, Task.INSERT, Task.EDIT)
INSERT_PROBABILITY = 0.5  # Mask-and-Fill: background fill (INSERT) vs recolour (EDIT)
PASTE_FEATHER = 2  # px of soft edge around a pasted object
PASTE_SCALE = (0.5, 1.25)  # default range of the pasted object's scale
PASTE_MAX_COVER = 0.9  # the pasted object's first-frame box fits in this fraction of the frame
INSERT_DILATION = 2  # px: the whole object, anti-aliased border included, must go
EDIT_DILATION = 1
FILL_NOISE = 3.0  # std of the noise on a background fill, in 8-bit levels
FILL_GRID = 24  # cells across a hole on the coarse grid its fill is computed on
HUE_ROTATION = (60.0, 300.0)  # degrees: far enough from 0/360 to be a visible change
TINT_STRENGTH = (0.25, 0.5)  # blend towards a saturated colour, so that gray pixels change too
RESHAPES = ("disc", "box", "rotated")
RESHAPE_ROTATION = (25.0, 65.0)  # degrees, either way: a square becomes a diamond-like shape
RESHAPE_LAST_RESORT = 2  # px of growth when no shape differs in the first frame (a tiny or round object)


@dataclass(frozen=True)
class AugmentConfig:
    """Relative frequency of each augmentation (normalised; the paper's 0.5/0.375/0.125, and no unchanged or
    reshape pairs, by default)."""

    copy_paste: float = 0.5
    mask_fill: float = 0.375
    color_fill: float = 0.125
    unchanged: float = 0.0
    reshape: float = 0.0

    def __post_init__(self) -> None:
        weights = self.weights()
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"augmentation weights must be finite, >= 0 and not all zero, got {self}")

    def weights(self) -> tuple[float, ...]:
        """Raw weights in KINDS order."""
        return tuple(float(getattr(self, kind)) for kind in KINDS)

    def probabilities(self) -> dict[str, float]:
        """Normalised probability of each kind."""
        weights = self.weights()
        return {kind: w / sum(weights) for kind, w in zip(KINDS, weights)}


@dataclass(frozen=True)
class SyntheticPair:
    """One training example: what the I2V model must produce, what the SCE sees, and where they differ."""

    original: np.ndarray  # (T, H, W, 3) uint8: the I2V target (and its frame 0 is the I2V condition)
    edited: np.ndarray  # (T, H, W, 3) uint8: what the SCE sees
    mask: np.ndarray  # (T, H, W) bool: exactly the pixels where edited != original (MPD target)
    task: Task
    kind: str  # one of KINDS


# --- the augmentations ---------------------------------------------------------------------------


def copy_and_paste(
    target: VideoSample,
    donor: VideoSample,
    rng: np.random.Generator,
    *,
    scale_range: tuple[float, float] = PASTE_SCALE,
) -> SyntheticPair:
    """Paste a donor instance, moving as in the donor, onto `target` -> REMOVE."""
    frames = target.frames
    length, height, width = frames.shape[:3]
    # A donor shorter than the target holds its last frame.
    times = np.minimum(np.arange(length), len(donor.frames) - 1)
    objects = _pick_instance(donor, rng)[times]
    scale = _paste_scale(objects[0], (height, width), scale_range, rng)
    margin = math.ceil((PASTE_FEATHER + 1) / scale)
    top, bottom, left, right = _bbox(objects.any(axis=0))
    box = (top - margin, bottom + margin, left - margin, right + margin)
    patch = _rescale_frames(_crop_padded(donor.frames[times], box), scale)
    alpha = _feathered_alpha(_rescale_masks(_crop_padded(objects, box), scale))
    offset = _placement(alpha[0] == 1.0, (height, width), rng)
    edited, mask = _paste(frames, patch, alpha, offset)
    return _pair(frames, edited, mask, Task.REMOVE, "copy_paste")


def mask_and_fill(sample: VideoSample, rng: np.random.Generator) -> SyntheticPair:
    """Fill an instance with background (INSERT) or recolour it (EDIT), in every frame."""
    objects = _pick_instance(sample, rng)
    if rng.random() < INSERT_PROBABILITY:
        region = dilate(objects, INSERT_DILATION)
        edited = _fill_background(sample.frames, region, rng)
        return _pair(sample.frames, edited, region, Task.INSERT, "mask_fill")
    region = dilate(objects, EDIT_DILATION)
    edited = _recolour(sample.frames, region, rng)
    return _pair(sample.frames, edited, region, Task.EDIT, "mask_fill")


def color_fill(sample: VideoSample, rng: np.random.Generator) -> SyntheticPair:
    """Fill an instance's exact masks with one flat saturated colour -> TRACK."""
    objects = _pick_instance(sample, rng)
    edited = sample.frames.copy()
    edited[objects] = _saturated_colour(rng)
    return _pair(sample.frames, edited, objects, Task.TRACK, "color_fill")


def unchanged(sample: VideoSample, rng: np.random.Generator) -> SyntheticPair:
    """The clip paired with itself, empty mask -> REMOVE, INSERT or EDIT: an edit that changed nothing."""
    task = UNCHANGED_TASKS[int(rng.integers(len(UNCHANGED_TASKS)))]
    mask = np.zeros(sample.frames.shape[:3], dtype=bool)
    return _pair(sample.frames, sample.frames.copy(), mask, task, "unchanged")


def reshape(sample: VideoSample, rng: np.random.Generator) -> SyntheticPair:
    """Give an instance another shape in every frame, in its own colour -> EDIT."""
    objects = _pick_instance(sample, rng)
    angle = float(rng.uniform(*RESHAPE_ROTATION)) * (1 if rng.random() < 0.5 else -1)
    shapes = None
    for kind in rng.permutation(RESHAPES):  # the first that changes the first frame
        candidate = np.stack([_other_shape(mask, str(kind), angle) for mask in objects])
        if (candidate[0] != objects[0]).any():
            shapes = candidate
            break
    if shapes is None:
        shapes = dilate(objects, RESHAPE_LAST_RESORT)
    # The background behind the whole object (its anti-aliased border included), shown where it is uncovered.
    background = _fill_background(sample.frames, dilate(objects, INSERT_DILATION), rng)
    dropped = objects & ~shapes
    edited = sample.frames.copy()
    edited[dropped] = background[dropped]
    grown = shapes & ~objects
    for t in np.flatnonzero(grown.any(axis=(1, 2))):
        edited[t][grown[t]] = np.round(sample.frames[t][objects[t]].mean(axis=0)).astype(np.uint8)
    return _pair(sample.frames, edited, objects ^ shapes, Task.EDIT, "reshape")


class PairSampler:
    """Draws an augmentation with the configured mix and applies it."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()
        self._cumulative = np.cumsum(self.config.weights())
        self._last = max(i for i, w in enumerate(self.config.weights()) if w > 0)

    def draw_kind(self, rng: np.random.Generator) -> str:
        """One kind, with the configured probabilities (a zero weight is never drawn)."""
        u = rng.random() * self._cumulative[-1]
        index = int(np.searchsorted(self._cumulative, u, side="right"))
        return KINDS[min(index, self._last)]

    def __call__(self, sample: VideoSample, donor: VideoSample, rng: np.random.Generator) -> SyntheticPair:
        kind = self.draw_kind(rng)
        if kind == "copy_paste":
            return copy_and_paste(sample, donor, rng)
        if kind == "mask_fill":
            return mask_and_fill(sample, rng)
        if kind == "unchanged":
            return unchanged(sample, rng)
        if kind == "reshape":
            return reshape(sample, rng)
        return color_fill(sample, rng)


# --- shared helpers ------------------------------------------------------------------------------


def _pair(original: np.ndarray, edited: np.ndarray, mask: np.ndarray, task: Task, kind: str) -> SyntheticPair:
    """Assemble a pair, making every masked pixel differ (see the module docstring)."""
    unchanged = np.zeros_like(mask)
    unchanged[mask] = (edited[mask] == original[mask]).all(axis=-1)
    edited[unchanged, 0] ^= 1
    return SyntheticPair(original=original.copy(), edited=edited, mask=mask, task=task, kind=kind)


def _pick_instance(sample: VideoSample, rng: np.random.Generator) -> np.ndarray:
    """Masks (T, H, W) of a random instance visible in the first frame."""
    visible = [i for i in sorted(sample.instances) if sample.instances[i][0].any()]
    if not visible:
        raise ValueError(f"{sample.name}: no instance is visible in the first frame")
    return sample.instances[visible[int(rng.integers(len(visible)))]].astype(bool)


def dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    """Grow (..., H, W) masks by `radius` px (square neighbourhood)."""
    grown = masks.astype(bool)
    for _ in range(radius):
        padded = np.pad(grown, [(0, 0)] * (grown.ndim - 2) + [(1, 1), (1, 1)])
        height, width = grown.shape[-2:]
        grown = np.zeros_like(grown)
        for dy in range(3):
            for dx in range(3):
                grown |= padded[..., dy:dy + height, dx:dx + width]
    return grown


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a non-empty (H, W) mask, ends exclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _saturated_colour(rng: np.random.Generator) -> np.ndarray:
    """A random bright, saturated RGB colour."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    return np.round(np.asarray(rgb) * 255).astype(np.uint8)


def _other_shape(mask: np.ndarray, kind: str, angle: float) -> np.ndarray:
    """An (H, W) mask's object as another shape about its centre: "disc" (of its area), "box" (its bounding
    box) or "rotated" (by `angle` degrees); empty stays empty."""
    if not mask.any():
        return mask.copy()
    rows, cols = np.nonzero(mask)
    cy, cx = rows.mean(), cols.mean()
    if kind == "disc":
        y, x = np.ogrid[: mask.shape[0], : mask.shape[1]]
        return (y - cy) ** 2 + (x - cx) ** 2 <= len(rows) / math.pi
    if kind == "box":
        top, bottom, left, right = _bbox(mask)
        box = np.zeros_like(mask)
        box[top:bottom, left:right] = True
        return box
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.rotate(angle, resample=Image.Resampling.NEAREST, center=(cx, cy))) > 127


# --- copy and paste ------------------------------------------------------------------------------


def _paste_scale(first: np.ndarray, size: tuple[int, int], scale_range: tuple[float, float],
                 rng: np.random.Generator) -> float:
    """A random scale, reduced so that the object's first-frame box fits in the target frame."""
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
    top, bottom, left, right = _bbox(first)
    fit = PASTE_MAX_COVER * min(size[0] / (bottom - top), size[1] / (right - left))
    return min(float(rng.uniform(low, high)), fit)


def _crop_padded(array: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """array[:, top:bottom, left:right] where the box leaves the frame: frames edge-padded, masks empty."""
    top, bottom, left, right = box
    height, width = array.shape[1:3]
    pads = [(0, 0), (max(0, -top), max(0, bottom - height)), (max(0, -left), max(0, right - width))]
    pads += [(0, 0)] * (array.ndim - 3)
    inside = array[:, max(0, top):min(height, bottom), max(0, left):min(width, right)]
    return np.pad(inside, pads, mode="constant") if array.dtype == bool else np.pad(inside, pads, mode="edge")


def _scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(width, height) of a (T, H, W, ...) array scaled by `scale`."""
    return max(1, round(shape[2] * scale)), max(1, round(shape[1] * scale))


def _rescale_frames(frames: np.ndarray, scale: float) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 frames by `scale` (bilinear)."""
    if scale == 1.0:
        return frames
    size = _scaled_size(frames.shape, scale)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])


def _rescale_masks(masks: np.ndarray, scale: float) -> np.ndarray:
    """Resize (T, H, W) masks by `scale`, keeping any non-empty frame non-empty."""
    if scale == 1.0:
        return masks
    size = _scaled_size(masks.shape, scale)
    resized = []
    for mask in masks:
        coverage = np.asarray(Image.fromarray(mask.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
        kept = coverage >= 0.5
        # A thin object shrunk below half a pixel keeps its best-covered pixels rather than vanishing.
        resized.append(kept if kept.any() or not mask.any() else coverage >= coverage.max())
    return np.stack(resized)


def _feathered_alpha(objects: np.ndarray) -> np.ndarray:
    """Opacity of a pasted object: 1 on it, fading to 0 over PASTE_FEATHER px outside it."""
    alpha = objects.astype(np.float32)
    reached = objects
    for step in range(1, PASTE_FEATHER + 1):
        grown = dilate(reached, 1)
        alpha[grown & ~reached] = 1.0 - step / (PASTE_FEATHER + 1)
        reached = grown
    return alpha


def _placement(first: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """Patch offset (y, x) that puts the object's first-frame box inside the target frame."""
    top, bottom, left, right = _bbox(first)
    y = int(rng.integers(-top, max(-top, size[0] - bottom) + 1))
    x = int(rng.integers(-left, max(-left, size[1] - right) + 1))
    return y, x


def _paste(frames: np.ndarray, patch: np.ndarray, alpha: np.ndarray,
           offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Blend `patch` over `frames` at `offset` with `alpha`; the edited frames and where alpha > 0."""
    height, width = frames.shape[1:3]
    y, x = offset
    top, left = max(0, y), max(0, x)
    bottom, right = min(height, y + patch.shape[1]), min(width, x + patch.shape[2])
    edited = frames.copy()
    mask = np.zeros(frames.shape[:3], bool)
    if bottom <= top or right <= left:
        return edited, mask
    a = alpha[:, top - y:bottom - y, left - x:right - x]
    source = patch[:, top - y:bottom - y, left - x:right - x].astype(np.float32)
    below = frames[:, top:bottom, left:right]
    blend = np.round(a[..., None] * source + (1 - a[..., None]) * below).astype(np.uint8)
    edited[:, top:bottom, left:right] = np.where(a[..., None] > 0, blend, below)
    mask[:, top:bottom, left:right] = a > 0
    return edited, mask


# --- mask and fill -------------------------------------------------------------------------------


def _fill_background(frames: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill each frame's region with its surroundings spread inwards, plus mild noise."""
    edited = frames.copy()
    for t in np.flatnonzero(region.any(axis=(1, 2))):
        fill = _spread_inwards(frames[t], region[t])
        noisy = fill + rng.normal(0.0, FILL_NOISE, size=fill.shape).astype(np.float32)
        edited[t][region[t]] = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return edited


def _spread_inwards(frame: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Colours (N, 3) for the hole's pixels: the surroundings blurred inwards, local near the border, coarser deeper.

    Works on a coarse grid (the hole about FILL_GRID cells across) and upsamples bilinearly: the fill is
    meant to be smooth, and this keeps a large hole in a large frame cheap.
    """
    top, bottom, left, right = _bbox(hole)
    extent = max(bottom - top, right - left)
    height, width = hole.shape
    window = (slice(max(0, top - extent), min(height, bottom + extent)),
              slice(max(0, left - extent), min(width, right + extent)))
    image, missing = frame[window].astype(np.float32), hole[window]
    factor = max(1, math.ceil(extent / FILL_GRID))
    known = (~missing).astype(np.float32)
    weight = _block_sum(known, factor)
    total = _block_sum(image * known[..., None], factor)
    coarse = np.empty(total.shape, np.float32)
    todo = np.ones(weight.shape, bool)
    radius = 1
    while todo.any() and radius <= 2 * max(weight.shape):
        near_weight, near_total = _box_sum(weight, radius), _box_sum(total, radius)
        ready = todo & (near_weight > 0)
        coarse[ready] = near_total[ready] / near_weight[ready][:, None]
        todo &= ~ready
        radius *= 2
    if todo.any():  # the hole fills the whole window: no surroundings to spread
        outside = frame[~hole]
        coarse[todo] = outside.mean(axis=0) if len(outside) else 127.5
    # The hole lies inside the window, so the window's row-major order is the frame's.
    return _upsample(coarse, factor, missing.shape)[missing]


def _block_sum(array: np.ndarray, factor: int) -> np.ndarray:
    """Sum over factor x factor blocks of an (H, W, ...) array (zero-padded to whole blocks)."""
    if factor == 1:
        return array.astype(np.float32)
    height, width = array.shape[:2]
    rows, cols = math.ceil(height / factor), math.ceil(width / factor)
    pads = [(0, rows * factor - height), (0, cols * factor - width)] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array.astype(np.float32), pads)
    return padded.reshape(rows, factor, cols, factor, *array.shape[2:]).sum(axis=(1, 3))


def _upsample(coarse: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a coarse (h, w, 3) grid by `factor`, cropped to `shape`."""
    if factor == 1:
        return coarse[: shape[0], : shape[1]]
    size = (coarse.shape[1] * factor, coarse.shape[0] * factor)
    planes = (Image.fromarray(np.ascontiguousarray(coarse[..., c])) for c in range(coarse.shape[2]))
    channels = [np.asarray(plane.resize(size, Image.Resampling.BILINEAR)) for plane in planes]
    return np.stack(channels, axis=-1)[: shape[0], : shape[1]]


def _box_sum(array: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the (2r+1)^2 window around each pixel of an (H, W, ...) array, clipped at the borders."""
    for axis in (0, 1):
        size = array.shape[axis]
        cumulative = np.cumsum(array, axis=axis, dtype=np.float64)
        cumulative = np.concatenate([np.zeros_like(np.take(cumulative, [0], axis=axis)), cumulative], axis=axis)
        high = np.minimum(np.arange(size) + radius + 1, size)
        low = np.maximum(np.arange(size) - radius, 0)
        array = np.take(cumulative, high, axis=axis) - np.take(cumulative, low, axis=axis)
    return array.astype(np.float32)


def _recolour(frames: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hue-rotate and tint the region's pixels: same shading, another appearance."""
    angle = math.radians(rng.uniform(*HUE_ROTATION))
    tint = _saturated_colour(rng).astype(np.float32)
    strength = rng.uniform(*TINT_STRENGTH)
    pixels = frames[region].astype(np.float32)
    rotated = pixels @ _hue_rotation(angle).T
    recoloured = (1 - strength) * rotated + strength * tint
    edited = frames.copy()
    edited[region] = np.clip(np.round(recoloured), 0, 255).astype(np.uint8)
    return edited


def _hue_rotation(angle: float) -> np.ndarray:
    """3x3 rotation of RGB about the gray axis (a hue shift that keeps brightness)."""
    cos, sin = math.cos(angle), math.sin(angle)
    cross = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], np.float32) / math.sqrt(3)
    return (cos * np.eye(3) + (1 - cos) / 3 * np.ones((3, 3)) + sin * cross).astype(np.float32)
