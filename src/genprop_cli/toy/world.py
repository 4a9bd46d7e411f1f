"""The toy world: procedural clips of coloured shapes over a slowly panning textured background, with
exact ground truth for every GenProp task.

A `Scene` is a description (no pixels) drawn by `sample_scene` from a numpy Generator; `render` turns
it into frames and masks with numpy alone and no random draws, so the same scene always gives the same
bytes. Rendering rules, which make every mask exact:

* Shapes are aliased on purpose: a pixel belongs to a shape when its centre is inside the shape. A
  shape's visible pixels (its instance mask) therefore hold exactly its flat colour, unless the shadow
  of a nearer shape falls on them.
* Layers are composited back to front by `depth` (larger is nearer). A shape's soft shadow darkens
  everything already drawn (the background and farther shapes), then the shape is painted.
* A shadow's attenuation below SHADOW_CUTOFF is set to zero, so its mask (attenuation > 0 and not
  covered by its caster or a nearer shape) holds every pixel it can change.
* A track marker is painted flat over the object's visible pixels after compositing.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from genprop_cli.config import Task

__all__ = [
    "BACKGROUND_KINDS",
    "BUNDLED_PHOTOS",
    "HELD_OUT_PHOTOS",
    "TRAIN_PHOTOS",
    "bundled_photo",
    "DEFAULT_FRAMES",
    "DEFAULT_SIZE",
    "EDIT_KINDS",
    "KINDS",
    "MARKER",
    "SHADOW_CUTOFF",
    "Background",
    "RenderOutput",
    "Scene",
    "Shadow",
    "Shape",
    "ToyExample",
    "Trajectory",
    "Wave",
    "colour_name",
    "describe",
    "frame_dimensions",
    "make_edit",
    "make_example",
    "make_insert",
    "make_remove",
    "make_track",
    "render",
    "sample_inserted_shape",
    "sample_scene",
    "toy_example",
]

RGB = tuple[int, int, int]
EditKind = Literal["recolour", "reshape"]

DEFAULT_FRAMES = 24
DEFAULT_SIZE = 64
KINDS = ("disc", "square", "triangle", "star")
BACKGROUND_KINDS = ("waves", "gradient", "flat", "stripes", "checker", "blobs", "photo")
EDIT_KINDS: tuple[EditKind, ...] = ("recolour", "reshape")
MARKER: RGB = (255, 0, 255)
SHADOW_CUTOFF = 0.01  # attenuation below this (under 2.55/255 on white) is dropped, so shadow masks are exact

# Shape hues avoid the magenta marker (and its neighbours) so that marker pixels are unambiguous.
_FORBIDDEN_HUES = (260.0, 340.0)
_MIN_HUE_GAP = 35.0
_MIN_VISIBLE_FRACTION = 0.3  # of a shape's unoccluded area, in frame 0 (the frame the editor edits)
_MAX_ATTEMPTS = 30
_REFERENCE_SIZE = 64  # shape sizes, speeds and shadow offsets are given for 64 px and scale with the frame

# Outlines of the polygonal kinds, for a shape of size 1 (a disc of radius 1 has a similar area).
_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]),
    "triangle": np.array(
        [(1.2 * math.cos(a), 1.2 * math.sin(a)) for a in np.radians([-90.0, 30.0, 150.0])]
    ),
    "star": np.array(
        [
            ((1.3 if i % 2 == 0 else 0.55) * math.cos(a), (1.3 if i % 2 == 0 else 0.55) * math.sin(a))
            for i, a in enumerate(np.radians(-90.0 + 36.0 * np.arange(10)))
        ]
    ),
}


# --- scene description ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shadow:
    """A soft drop shadow: the shape's outline moved by `offset` with a faded edge."""

    offset: tuple[float, float]  # (dx, dy) in px
    softness: float  # px from the outline to either end of the fade
    strength: float  # fraction of the light removed in the shadow's core


@dataclass(frozen=True)
class Trajectory:
    """Where a shape's centre is and how it is turned in each frame: linear motion plus a gentle wobble."""

    start: tuple[float, float]  # centre (x, y) in frame 0, px
    velocity: tuple[float, float]  # px per frame
    wobble: tuple[float, float] = (0.0, 0.0)  # amplitude (x, y) of a sinusoidal sway, px
    wobble_rate: float = 0.0  # rad per frame
    wobble_phase: float = 0.0
    angle: float = 0.0  # rotation in frame 0, rad
    spin: float = 0.0  # rad per frame

    def centres(self, times: np.ndarray) -> np.ndarray:
        """(len(times), 2) centres (x, y) at the given frame indices."""
        times = np.asarray(times, dtype=np.float64)
        sway = np.sin(self.wobble_rate * times + self.wobble_phase)
        x = self.start[0] + self.velocity[0] * times + self.wobble[0] * sway
        y = self.start[1] + self.velocity[1] * times + self.wobble[1] * sway
        return np.stack([x, y], axis=1)

    def angles(self, times: np.ndarray) -> np.ndarray:
        """(len(times),) rotations at the given frame indices."""
        return self.angle + self.spin * np.asarray(times, dtype=np.float64)


@dataclass(frozen=True)
class Shape:
    """One flat-coloured object of the scene."""

    id: int  # >= 1; the DAVIS instance id
    kind: str  # one of KINDS
    colour: RGB
    size: float  # px; the radius of a disc, comparable for the other kinds
    trajectory: Trajectory
    depth: float  # larger is nearer the camera; ties are broken by id
    shadow: Shadow | None = None


@dataclass(frozen=True)
class Wave:
    """One plane wave of the background texture."""

    direction: tuple[float, float]  # unit vector
    wavelength: float  # px
    phase: float
    amplitude: float


@dataclass(frozen=True)
class Background:
    """What is behind the shapes, as a function of texture coordinates, moved by a camera pan and zoom.

    `kind` picks how `colours` are mixed (BACKGROUND_KINDS): "waves" (the original toy texture: broad plane
    waves), "gradient" (a linear ramp along `waves[0]`'s direction over its wavelength), "flat" (`colours[0]`),
    "stripes" and "checker" (hard-edged patterns from `waves[0]` and `waves[:2]`), "blobs" (many waves of
    several scales) or "photo" (the bundled photograph `photo`, a real image, `photo_scale` photo pixels per
    frame pixel from `photo_origin`). Fine grain modulates brightness on top.
    """

    colours: tuple[RGB, RGB]
    waves: tuple[Wave, ...]  # the mix between the two colours
    grain: tuple[Wave, ...]  # a fine brightness modulation
    grain_amount: float
    pan: tuple[float, float]  # on-screen velocity of the texture, px per frame
    kind: str = "waves"
    zoom: float = 0.0  # camera zoom: the texture's scale grows by this fraction per frame, about the frame centre
    photo: str | None = None  # a BUNDLED_PHOTOS name, for kind "photo"
    photo_origin: tuple[float, float] = (0.0, 0.0)  # photo pixel under the frame's top-left corner in frame 0
    photo_scale: float = 1.0  # photo pixels per frame pixel


@dataclass(frozen=True)
class Scene:
    """A whole clip, as a description."""

    width: int
    height: int
    frames: int
    background: Background
    shapes: tuple[Shape, ...]

    def shape(self, shape_id: int) -> Shape:
        """The shape with this id."""
        for shape in self.shapes:
            if shape.id == shape_id:
                return shape
        raise KeyError(f"scene has no shape {shape_id}; its ids are {[s.id for s in self.shapes]}")

    @property
    def light(self) -> Shadow | None:
        """The shadow parameters the scene's casters share (one light), or None without casters."""
        return next((s.shadow for s in self.shapes if s.shadow is not None), None)


# --- rendering -----------------------------------------------------------------------------------


@dataclass
class RenderOutput:
    """Rendered frames and, per shape id, its visible pixels and the pixels its shadow changes."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    instance_masks: dict[int, np.ndarray]  # id -> (T, H, W) bool, visible after occlusion
    shadow_masks: dict[int, np.ndarray]  # id -> (T, H, W) bool, all False for a shape without shadow


def render(
    scene: Scene,
    *,
    remove: Iterable[int] = (),
    replace: Mapping[int, Shape] | None = None,
    add: Iterable[Shape] = (),
    marker: Mapping[int, RGB] | None = None,
) -> RenderOutput:
    """Render the scene with shapes removed, replaced (by id), added, or painted a flat marker colour."""
    shapes = _edited_shapes(scene, set(remove), dict(replace or {}), list(add))
    output = _composite(scene, shapes, np.arange(scene.frames))
    for shape_id, colour in (marker or {}).items():
        if shape_id not in output.instance_masks:
            raise KeyError(f"cannot mark shape {shape_id}: it is not in the rendered scene")
        output.frames[output.instance_masks[shape_id]] = colour
    return output


def _edited_shapes(
    scene: Scene, remove: set[int], replacements: dict[int, Shape], add: list[Shape]
) -> list[Shape]:
    """The scene's shapes after the edits, checked for unknown and duplicate ids."""
    ids = {s.id for s in scene.shapes}
    unknown = (remove | set(replacements)) - ids
    if unknown:
        raise KeyError(f"scene has no shape {sorted(unknown)}; its ids are {sorted(ids)}")
    kept = [
        dataclasses.replace(replacements[s.id], id=s.id) if s.id in replacements else s
        for s in scene.shapes
        if s.id not in remove
    ]
    shapes = kept + add
    seen = [s.id for s in shapes]
    if len(seen) != len(set(seen)):
        raise ValueError(f"shape ids must be unique after the edits, got {sorted(seen)}")
    return shapes


def _composite(scene: Scene, shapes: list[Shape], times: np.ndarray) -> RenderOutput:
    """Composite the shapes back to front over the background at the given frame indices."""
    canvas = _background(scene, times)
    order = sorted(shapes, key=lambda s: (s.depth, s.id))
    footprints: dict[int, np.ndarray] = {}
    attenuations: dict[int, np.ndarray] = {}
    for shape in order:
        if shape.shadow is not None:
            attenuations[shape.id] = _shadow_attenuation(scene, shape, times)
            canvas *= (1.0 - attenuations[shape.id])[..., None]
        footprints[shape.id] = _signed_distance(scene, shape, times) <= 0
        canvas[footprints[shape.id]] = shape.colour
    instance_masks, shadow_masks = _visibility(order, footprints, attenuations, canvas.shape[:3])
    frames = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return RenderOutput(frames, instance_masks, shadow_masks)


def _visibility(
    order: list[Shape],
    footprints: dict[int, np.ndarray],
    attenuations: dict[int, np.ndarray],
    shape: tuple[int, ...],
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Visible pixels of each shape and of its shadow: not covered by the shape itself or a nearer one."""
    instance_masks: dict[int, np.ndarray] = {}
    shadow_masks: dict[int, np.ndarray] = {}
    covered = np.zeros(shape, dtype=bool)
    for layer in reversed(order):
        instance_masks[layer.id] = footprints[layer.id] & ~covered
        covered = covered | footprints[layer.id]
        attenuation = attenuations.get(layer.id)
        shadow = attenuation > 0 if attenuation is not None else np.zeros(shape, dtype=bool)
        shadow_masks[layer.id] = shadow & ~covered
    return dict(sorted(instance_masks.items())), dict(sorted(shadow_masks.items()))


def _pixel_centres(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(1, H, W) x and y coordinates of the pixel centres."""
    ys, xs = np.mgrid[0 : scene.height, 0 : scene.width].astype(np.float64) + 0.5
    return xs[None], ys[None]


def _background(scene: Scene, times: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) float64 background: the texture sampled where the camera's pan and zoom have moved it."""
    xs, ys = _pixel_centres(scene)
    background = scene.background
    t = np.asarray(times, dtype=np.float64)[:, None, None]
    u, v = _texture_coordinates(background, xs, ys, t, scene.width / 2.0, scene.height / 2.0)
    brightness = 1.0 + background.grain_amount * _wave_sum(background.grain, u, v)
    if background.kind == "photo":
        colour = _photo_colour(background, u, v)
    else:
        mix = _background_mix(background, u, v)
        first, second = (np.asarray(c, dtype=np.float64) for c in background.colours)
        colour = first + (second - first) * mix[..., None]
    return np.clip(colour * brightness[..., None], 0.0, 255.0)


def _texture_coordinates(
    background: Background, xs: np.ndarray, ys: np.ndarray, t: np.ndarray, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates seen at pixel centres (xs, ys) at frames t: zoomed about the centre, then panned."""
    zoom = (1.0 + background.zoom) ** t
    u = cx + (xs - cx) / zoom - background.pan[0] * t
    v = cy + (ys - cy) / zoom - background.pan[1] * t
    return u, v


def _background_mix(background: Background, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The mix in [0, 1] between the two colours at texture coordinates (u, v), by background kind."""
    kind, waves = background.kind, background.waves
    if kind in ("waves", "blobs"):
        return 0.5 + 0.5 * _wave_sum(waves, u, v)
    if kind == "flat":
        return np.zeros(np.broadcast_shapes(u.shape, v.shape))
    if kind == "gradient":
        wave = waves[0]
        along = wave.direction[0] * u + wave.direction[1] * v
        return np.clip(along / wave.wavelength + wave.phase, 0.0, 1.0)
    if kind == "stripes":
        return 0.5 + 0.5 * np.tanh(4.0 * _wave_sum(waves[:1], u, v))
    if kind == "checker":
        return 0.5 + 0.5 * np.tanh(6.0 * _wave_sum(waves[:1], u, v) * _wave_sum(waves[1:2], u, v))
    raise ValueError(f"unknown background kind {kind!r}; expected one of {', '.join(BACKGROUND_KINDS)}")


def _photo_colour(background: Background, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(…, 3) the bundled photograph sampled bilinearly at texture coordinates (u, v), mirrored at its edges."""
    if background.photo is None:
        raise ValueError("a photo background needs a photo name")
    image = bundled_photo(background.photo)
    height, width = image.shape[:2]
    px = _mirrored(background.photo_origin[0] + background.photo_scale * u - 0.5, width)
    py = _mirrored(background.photo_origin[1] + background.photo_scale * v - 0.5, height)
    x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = (px - x0)[..., None], (py - y0)[..., None]
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _mirrored(coordinate: np.ndarray, size: int) -> np.ndarray:
    """Coordinates folded into [0, size - 1] by mirroring, so a pan or zoom never leaves the photo."""
    period = 2.0 * (size - 1)
    folded = np.mod(coordinate, period)
    return np.where(folded > size - 1, period - folded, folded)


# Colour photographs that scikit-image bundles in its wheel (no download): real backgrounds for the toy world.
# The held-out ones never appear in training data (write_davis) unless asked for; evaluation sets use them.
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
HELD_OUT_PHOTOS = ("chelsea",)
BUNDLED_PHOTOS = TRAIN_PHOTOS + HELD_OUT_PHOTOS
_PHOTO_WIDTH = 160  # px: a 64 px frame sees about half of a photo at scale 1


@functools.lru_cache(maxsize=None)
def bundled_photo(name: str) -> np.ndarray:
    """(H, W, 3) float64 photograph `name` from scikit-image's bundled data, area-resized to _PHOTO_WIDTH wide."""
    if name not in BUNDLED_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; expected one of {', '.join(BUNDLED_PHOTOS)}")
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError("photo backgrounds need scikit-image: pip install 'genprop-cli[toy]'") from exc
    from PIL import Image

    pixels = np.asarray(getattr(skimage.data, name)())[..., :3]
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    height = round(image.height * _PHOTO_WIDTH / image.width)
    return np.asarray(image.resize((_PHOTO_WIDTH, height), Image.BOX), dtype=np.float64)


def _wave_sum(waves: tuple[Wave, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sum of plane waves, normalised to [-1, 1]."""
    total = np.zeros(np.broadcast_shapes(u.shape, v.shape))
    for wave in waves:
        along = wave.direction[0] * u + wave.direction[1] * v
        total += wave.amplitude * np.sin(2.0 * math.pi * along / wave.wavelength + wave.phase)
    weight = sum(w.amplitude for w in waves)
    return total / weight if weight > 0 else total


def _signed_distance(
    scene: Scene, shape: Shape, times: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """(T, H, W) signed distance in px from each pixel centre to the shape's outline (negative inside)."""
    xs, ys = _pixel_centres(scene)
    centres = shape.trajectory.centres(times)
    angles = shape.trajectory.angles(times)[:, None, None]
    dx = xs - (centres[:, 0, None, None] + shift[0])
    dy = ys - (centres[:, 1, None, None] + shift[1])
    cos, sin = np.cos(angles), np.sin(angles)
    # Rotate the pixels by -angle into the shape's own frame, in units of its size.
    qx = (cos * dx + sin * dy) / shape.size
    qy = (-sin * dx + cos * dy) / shape.size
    if shape.kind == "disc":
        return (np.hypot(qx, qy) - 1.0) * shape.size
    if shape.kind not in _POLYGONS:
        raise ValueError(f"unknown shape kind {shape.kind!r}; expected one of {', '.join(KINDS)}")
    return _polygon_distance(_POLYGONS[shape.kind], qx, qy) * shape.size


def _polygon_distance(vertices: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Signed distance to a closed polygon: nearest edge for the size, even-odd crossings for the sign."""
    nearest = np.full(qx.shape, np.inf)
    inside = np.zeros(qx.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(vertices, np.roll(vertices, 1, axis=0)):
        ex, ey = bx - ax, by - ay
        wx, wy = qx - ax, qy - ay
        h = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        nearest = np.minimum(nearest, (wx - ex * h) ** 2 + (wy - ey * h) ** 2)
        straddles = (qy >= ay) != (qy >= by)
        crossing_x = ax + (qy - ay) * ex / (ey if ey != 0 else 1.0)
        inside ^= straddles & (qx < crossing_x)
    distance = np.sqrt(nearest)
    return np.where(inside, -distance, distance)


def _shadow_attenuation(scene: Scene, shape: Shape, times: np.ndarray) -> np.ndarray:
    """(T, H, W) fraction of light the shape's shadow removes; exactly 0 below SHADOW_CUTOFF."""
    shadow = shape.shadow
    assert shadow is not None
    distance = _signed_distance(scene, shape, times, shift=shadow.offset)
    fade = np.clip((shadow.softness - distance) / (2.0 * shadow.softness), 0.0, 1.0)
    attenuation = shadow.strength * fade * fade * (3.0 - 2.0 * fade)
    attenuation[attenuation < SHADOW_CUTOFF] = 0.0
    return attenuation


def _frame0_visibility(scene: Scene, shapes: list[Shape]) -> dict[int, tuple[int, int]]:
    """Per shape id: (visible pixels, unoccluded pixels) in frame 0."""
    times = np.zeros(1)
    output = _composite(scene, shapes, times)
    return {
        s.id: (int(output.instance_masks[s.id].sum()), int((_signed_distance(scene, s, times) <= 0).sum()))
        for s in shapes
    }


def _visible_enough(visible: int, whole: int) -> bool:
    """Whether a shape shows enough of itself in frame 0 for an editor to work on it."""
    return whole > 0 and visible >= _MIN_VISIBLE_FRACTION * whole


# --- sampling ------------------------------------------------------------------------------------


def sample_scene(
    rng: np.random.Generator,
    *,
    frames: int = DEFAULT_FRAMES,
    size: int | tuple[int, int] = DEFAULT_SIZE,
    num_shapes: tuple[int, int] = (2, 4),
    backgrounds: tuple[str, ...] = ("waves",),
    photos: tuple[str, ...] = TRAIN_PHOTOS,
    camera_zoom: float = 0.0,
) -> Scene:
    """A random scene: 2-4 shapes (inclusive range) that stay mostly in frame, at least one casting a shadow.

    `size` is the side of a square frame or (width, height). Every shape shows at least
    _MIN_VISIBLE_FRACTION of itself in frame 0 whenever one of _MAX_ATTEMPTS layouts allows it. The
    background is one of `backgrounds` (BACKGROUND_KINDS; a "photo" one from `photos`), drawn with equal
    odds; with `camera_zoom` > 0 half the clips also zoom in or out by up to that fraction per frame. The
    defaults draw exactly the scenes of the original toy world (waves, no zoom) for a given rng.
    """
    width, height = frame_dimensions(size)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not 1 <= num_shapes[0] <= num_shapes[1]:
        raise ValueError(f"num_shapes must be (low, high) with 1 <= low <= high, got {num_shapes}")
    scale = min(width, height) / _REFERENCE_SIZE
    background = _sample_background(rng, scale)
    if tuple(backgrounds) != ("waves",) or camera_zoom > 0:
        background = _vary_background(
            rng, background, (width / 2.0, height / 2.0), tuple(backgrounds), tuple(photos), camera_zoom
        )
    count = int(rng.integers(num_shapes[0], num_shapes[1] + 1))
    scene = Scene(width, height, frames, background, ())
    for _ in range(_MAX_ATTEMPTS):
        scene = dataclasses.replace(scene, shapes=_sample_shapes(rng, scene, count, scale))
        visibility = _frame0_visibility(scene, list(scene.shapes))
        if all(_visible_enough(*v) for v in visibility.values()):
            break
    return scene


def _vary_background(
    rng: np.random.Generator,
    background: Background,
    centre: tuple[float, float],
    kinds: tuple[str, ...],
    photos: tuple[str, ...],
    camera_zoom: float,
) -> Background:
    """The waves background turned into one of `kinds` (its colours and pan kept), with an optional zoom."""
    unknown = sorted(set(kinds) - set(BACKGROUND_KINDS))
    if unknown or not kinds:
        raise ValueError(f"background kinds must be among {', '.join(BACKGROUND_KINDS)}, got {list(kinds)}")
    scale = min(centre) / (_REFERENCE_SIZE / 2.0)
    kind = kinds[int(rng.integers(len(kinds)))]
    zoom = float(rng.uniform(-camera_zoom, camera_zoom)) if camera_zoom > 0 and rng.random() < 0.5 else 0.0
    grain = background.grain_amount * float(rng.uniform(0.0, 1.0))
    changes: dict = {"kind": kind, "zoom": zoom, "grain_amount": grain}
    if kind == "gradient":
        ramp = _sample_wave(rng, rng.uniform(48.0, 128.0) * scale)
        # The ramp's middle falls near the frame centre, so both colours show.
        middle = (ramp.direction[0] * centre[0] + ramp.direction[1] * centre[1]) / ramp.wavelength
        changes["waves"] = (dataclasses.replace(ramp, phase=float(0.5 - middle + rng.uniform(-0.2, 0.2))),)
        changes["colours"] = _gradient_colours(rng)
    elif kind == "stripes":
        changes["waves"] = (_sample_wave(rng, rng.uniform(6.0, 24.0) * scale),)
    elif kind == "checker":
        first = _sample_wave(rng, rng.uniform(8.0, 28.0) * scale)
        turn = first.direction[1], -first.direction[0]  # the second wave runs across the first
        changes["waves"] = (first, dataclasses.replace(first, direction=turn, phase=float(rng.uniform(0, 2 * math.pi))))
    elif kind == "blobs":
        changes["waves"] = tuple(_sample_wave(rng, rng.uniform(4.0, 48.0) * scale) for _ in range(10))
    elif kind == "photo":
        if not photos:
            raise ValueError("a photo background needs at least one photo name")
        name = photos[int(rng.integers(len(photos)))]
        image = bundled_photo(name)
        photo_scale = float(rng.uniform(0.6, 1.6) / scale)
        origin = tuple(float(rng.uniform(0.0, max(n - 64.0 * scale * photo_scale, 1.0))) for n in image.shape[1::-1])
        changes.update(photo=name, photo_scale=photo_scale, photo_origin=origin)
    return dataclasses.replace(background, **changes)


def _gradient_colours(rng: np.random.Generator) -> tuple[RGB, RGB]:
    """Two unrelated colours, one darker, for a ramp (any hue: a gradient is nothing like the toy texture)."""
    first = _hsv(rng.uniform(0.0, 360.0), rng.uniform(0.1, 0.6), rng.uniform(0.25, 0.5))
    second = _hsv(rng.uniform(0.0, 360.0), rng.uniform(0.1, 0.6), rng.uniform(0.6, 0.9))
    return (first, second) if rng.random() < 0.5 else (second, first)


def frame_dimensions(size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) from a side or a pair."""
    width, height = (size, size) if isinstance(size, (int, np.integer)) else size
    if width < 8 or height < 8:
        raise ValueError(f"frames must be at least 8x8 px, got {width}x{height}")
    return int(width), int(height)


def _sample_background(rng: np.random.Generator, scale: float) -> Background:
    """Muted colours (never near a shape's saturation), broad waves, fine grain, a slow pan."""
    hue = rng.uniform(0.0, 360.0)
    saturation = rng.uniform(0.05, 0.3)
    dark = _hsv(hue, saturation, rng.uniform(0.35, 0.55))
    light = _hsv((hue + rng.uniform(-30.0, 30.0)) % 360.0, rng.uniform(0.05, 0.3), rng.uniform(0.65, 0.8))
    waves = tuple(_sample_wave(rng, rng.uniform(10.0, 40.0) * scale) for _ in range(4))
    grain = tuple(_sample_wave(rng, rng.uniform(3.0, 7.0) * scale) for _ in range(3))
    speed, direction = rng.uniform(0.1, 0.5) * scale, rng.uniform(0.0, 2.0 * math.pi)
    pan = (speed * math.cos(direction), speed * math.sin(direction))
    return Background((dark, light), waves, grain, float(rng.uniform(0.05, 0.1)), pan)


def _sample_wave(rng: np.random.Generator, wavelength: float) -> Wave:
    """A plane wave of random direction and phase."""
    direction = rng.uniform(0.0, 2.0 * math.pi)
    return Wave(
        (math.cos(direction), math.sin(direction)),
        float(wavelength),
        float(rng.uniform(0.0, 2.0 * math.pi)),
        float(rng.uniform(0.5, 1.0)),
    )


def _sample_shapes(rng: np.random.Generator, scene: Scene, count: int, scale: float) -> tuple[Shape, ...]:
    """`count` shapes with distinct hues, random depths, one shared light and at least one caster."""
    light = _sample_light(rng, scale)
    casters = rng.random(count) < 0.5
    casters[rng.integers(count)] = True
    depths = rng.permutation(count)
    hues: list[float] = []
    shapes = []
    for index in range(count):
        hues.append(_distinct_hue(rng, hues))
        radius = float(rng.uniform(5.0, 9.5) * scale)
        shapes.append(
            Shape(
                id=index + 1,
                kind=str(rng.choice(KINDS)),
                colour=_shape_colour(rng, hues[-1]),
                size=radius,
                trajectory=_sample_trajectory(rng, scene, radius, scale),
                depth=float(depths[index]),
                shadow=light if casters[index] else None,
            )
        )
    return tuple(shapes)


def _sample_light(rng: np.random.Generator, scale: float) -> Shadow:
    """The scene's light, as the shadow every caster gets."""
    distance, direction = rng.uniform(2.0, 4.5) * scale, rng.uniform(0.0, 2.0 * math.pi)
    return Shadow(
        offset=(float(distance * math.cos(direction)), float(distance * math.sin(direction))),
        softness=float(rng.uniform(1.2, 2.5) * scale),
        strength=float(rng.uniform(0.35, 0.6)),
    )


def _sample_trajectory(
    rng: np.random.Generator,
    scene: Scene,
    radius: float,
    scale: float,
    carried_by: tuple[float, float] = (0.0, 0.0),
    max_own_speed: float = 1.0,
) -> Trajectory:
    """Linear motion between two points well inside the frame (plus `carried_by`), a small wobble and spin."""
    margin = 0.75 * radius
    low, high = np.array([margin, margin]), np.array([scene.width - margin, scene.height - margin])
    span = max(scene.frames - 1, 1)
    carried = np.asarray(carried_by, dtype=np.float64)
    start = rng.uniform(low, high)
    velocity = carried
    for _ in range(_MAX_ATTEMPTS):
        start = rng.uniform(low, high)
        own = (rng.uniform(low, high) - start) / span - carried
        speed = float(np.hypot(*own))
        if speed > max_own_speed * scale:
            own *= max_own_speed * scale / speed
        velocity = carried + own
        end = start + velocity * span
        if np.all(end >= low) and np.all(end <= high):
            break
    return Trajectory(
        start=(float(start[0]), float(start[1])),
        velocity=(float(velocity[0]), float(velocity[1])) if scene.frames > 1 else (0.0, 0.0),
        wobble=(float(rng.uniform(0.0, 1.5) * scale), float(rng.uniform(0.0, 1.5) * scale)),
        wobble_rate=float(rng.uniform(0.15, 0.4)),
        wobble_phase=float(rng.uniform(0.0, 2.0 * math.pi)),
        angle=float(rng.uniform(0.0, 2.0 * math.pi)),
        spin=float(rng.uniform(-0.06, 0.06)),
    )


def _distinct_hue(rng: np.random.Generator, taken: list[float]) -> float:
    """A hue outside the marker's band and at least _MIN_HUE_GAP from `taken` (the farthest one if none is)."""
    allowed = 360.0 - (_FORBIDDEN_HUES[1] - _FORBIDDEN_HUES[0])
    candidates = (_FORBIDDEN_HUES[1] + rng.uniform(0.0, allowed, size=_MAX_ATTEMPTS)) % 360.0
    gaps = np.array([min((_hue_gap(h, t) for t in taken), default=360.0) for h in candidates])
    good = np.flatnonzero(gaps >= _MIN_HUE_GAP)
    return float(candidates[good[0]] if len(good) else candidates[np.argmax(gaps)])


def _hue_gap(a: float, b: float) -> float:
    """Angular distance between two hues in degrees."""
    gap = abs(a - b) % 360.0
    return min(gap, 360.0 - gap)


def _shape_colour(rng: np.random.Generator, hue: float) -> RGB:
    """A saturated, bright colour of this hue (the background is muted, so shapes stand out)."""
    return _hsv(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))


def _hsv(hue: float, saturation: float, value: float) -> RGB:
    """HSV (degrees, 0-1, 0-1) -> 8-bit RGB."""
    r, g, b = colorsys.hsv_to_rgb(hue / 360.0, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _hue_of(colour: RGB) -> float:
    """Hue of an RGB colour in degrees."""
    return colorsys.rgb_to_hsv(*(c / 255.0 for c in colour))[0] * 360.0


def sample_inserted_shape(scene: Scene, rng: np.random.Generator) -> Shape:
    """A new shape carried by the pan (plus its own slower motion), well visible in frame 0.

    It gets a new id, a hue distinct from the scene's, a depth between or around the existing shapes,
    and (with probability 1/2, when the scene has a light) the scene's shadow.
    """
    scale = min(scene.width, scene.height) / _REFERENCE_SIZE
    taken = [_hue_of(s.colour) for s in scene.shapes]
    depths = sorted(s.depth for s in scene.shapes)
    slots = [d - 0.5 for d in depths] + [(depths[-1] if depths else 0.0) + 0.5]
    light = scene.light
    shadow = light if light is not None and rng.random() < 0.5 else None
    new_id = max((s.id for s in scene.shapes), default=0) + 1
    candidate = None
    for attempt in range(_MAX_ATTEMPTS):
        radius = float(rng.uniform(5.0, 9.5) * scale)
        candidate = Shape(
            id=new_id,
            kind=str(rng.choice(KINDS)),
            colour=_shape_colour(rng, _distinct_hue(rng, taken)),
            size=radius,
            trajectory=_sample_trajectory(
                rng, scene, radius, scale, carried_by=scene.background.pan, max_own_speed=0.4
            ),
            # The last attempts go on top, where nothing can hide the new shape.
            depth=float(rng.choice(slots)) if attempt < _MAX_ATTEMPTS // 2 else slots[-1],
            shadow=shadow,
        )
        visible, whole = _frame0_visibility(scene, [*scene.shapes, candidate])[new_id]
        if whole > 0 and visible >= 0.6 * whole:
            break
    assert candidate is not None
    return candidate


# --- names and prompts ---------------------------------------------------------------------------


_HUE_NAMES = (
    (15.0, "red"),
    (45.0, "orange"),
    (72.0, "yellow"),
    (150.0, "green"),
    (195.0, "cyan"),
    (255.0, "blue"),
    (285.0, "purple"),
    (330.0, "magenta"),
    (360.0, "red"),
)


def colour_name(colour: RGB) -> str:
    """A plain English name for an RGB colour."""
    hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255.0 for c in colour))
    if value < 0.2:
        return "black"
    if saturation < 0.25:
        return "white" if value > 0.85 else "grey"
    return next(name for limit, name in _HUE_NAMES if hue * 360.0 < limit)


def _shape_phrase(shape: Shape) -> str:
    """'a red disc'."""
    return f"a {colour_name(shape.colour)} {shape.kind}"


def describe(shapes: Iterable[Shape], marked: Mapping[int, RGB] | None = None) -> str:
    """A one-line description of a clip, for CLIP-T: its shapes, nearest first, over the background."""
    marked = marked or {}
    phrases = []
    for shape in sorted(shapes, key=lambda s: (-s.depth, s.id)):
        phrase = _shape_phrase(shape)
        if shape.id in marked:
            phrase = f"{phrase} painted {colour_name(marked[shape.id])}"
        phrases.append(phrase)
    if not phrases:
        return "a textured background panning slowly"
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{listed} moving over a textured background"


# --- ground truth for the four tasks -------------------------------------------------------------


@dataclass
class ToyExample:
    """One evaluation example: what a user gives (source, edited first frame) and the exact answer.

    `masks` is where the edit changes the clip (target differs from source only there). `object_masks`
    and `shadow_masks` are the edited object's visible pixels and its shadow's: in the source for remove,
    in the target for the other tasks (`shadow_masks` is None when the object casts no shadow).
    """

    task: Task
    source: np.ndarray  # (T, H, W, 3) uint8
    edited_first: np.ndarray  # (H, W, 3) uint8 == target[0]
    target: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, H, W) bool
    object_id: int
    edit_kind: str | None = None  # "recolour" | "reshape" for edit
    object_masks: np.ndarray | None = None
    shadow_masks: np.ndarray | None = None
    prompt: str = ""  # describes the target
    name: str = ""
    seed: int | None = None


def _example(
    task: Task,
    source: RenderOutput,
    target: RenderOutput,
    masks: np.ndarray,
    object_id: int,
    prompt: str,
    edit_kind: str | None = None,
) -> ToyExample:
    """Assemble an example; the object's masks come from the source for remove, else from the target."""
    where = source if task is Task.REMOVE else target
    shadow = where.shadow_masks[object_id]
    return ToyExample(
        task=task,
        source=source.frames,
        edited_first=target.frames[0].copy(),
        target=target.frames,
        masks=masks,
        object_id=object_id,
        edit_kind=edit_kind,
        object_masks=where.instance_masks[object_id],
        shadow_masks=shadow if shadow.any() else None,
        prompt=prompt,
    )


def _pick_object(scene: Scene, source: RenderOutput, rng: np.random.Generator, object_id: int | None) -> Shape:
    """The given shape, or a random one well visible in frame 0 (the most visible if none is)."""
    if object_id is not None:
        return scene.shape(object_id)
    if not scene.shapes:
        raise ValueError("the scene has no shape to edit")
    visible = {s.id: int(source.instance_masks[s.id][0].sum()) for s in scene.shapes}
    whole = _frame0_visibility(scene, list(scene.shapes))
    eligible = [s for s in scene.shapes if _visible_enough(*whole[s.id])]
    if not eligible:
        return max(scene.shapes, key=lambda s: (visible[s.id], -s.id))
    return eligible[int(rng.integers(len(eligible)))]


def make_remove(scene: Scene, rng: np.random.Generator, *, object_id: int | None = None) -> ToyExample:
    """Remove an object and its shadow; masks = its pixels and its shadow's in the source."""
    source = render(scene)
    shape = _pick_object(scene, source, rng, object_id)
    target = render(scene, remove={shape.id})
    masks = source.instance_masks[shape.id] | source.shadow_masks[shape.id]
    kept = [s for s in scene.shapes if s.id != shape.id]
    return _example(Task.REMOVE, source, target, masks, shape.id, describe(kept))


def make_edit(
    scene: Scene, rng: np.random.Generator, kind: EditKind | None = None, *, object_id: int | None = None
) -> ToyExample:
    """Recolour an object or turn it into another kind (same trajectory); masks = old and new pixels.

    A reshape also moves the shadow's outline, so its masks include the old and the new shadow.
    """
    source = render(scene)
    shape = _pick_object(scene, source, rng, object_id)
    kind = kind or EDIT_KINDS[int(rng.integers(len(EDIT_KINDS)))]
    if kind == "recolour":
        taken = [_hue_of(s.colour) for s in scene.shapes]
        edited = dataclasses.replace(shape, colour=_shape_colour(rng, _distinct_hue(rng, taken)))
    elif kind == "reshape":
        edited = _reshaped(scene, shape, rng)
    else:
        raise ValueError(f"edit kind must be one of {', '.join(EDIT_KINDS)}, got {kind!r}")
    target = render(scene, replace={shape.id: edited})
    masks = source.instance_masks[shape.id] | target.instance_masks[shape.id]
    if kind == "reshape":
        masks = masks | source.shadow_masks[shape.id] | target.shadow_masks[shape.id]
    shapes = [edited if s.id == shape.id else s for s in scene.shapes]
    return _example(Task.EDIT, source, target, masks, shape.id, describe(shapes), edit_kind=kind)


def _reshaped(scene: Scene, shape: Shape, rng: np.random.Generator) -> Shape:
    """The shape turned into another kind whose first frame differs (tiny shapes can look alike)."""
    others = [k for k in KINDS if k != shape.kind]
    first = _composite(scene, list(scene.shapes), np.zeros(1)).frames
    for index in rng.permutation(len(others)):
        edited = dataclasses.replace(shape, kind=others[int(index)])
        shapes = [edited if s.id == shape.id else s for s in scene.shapes]
        if not np.array_equal(_composite(scene, shapes, np.zeros(1)).frames, first):
            return edited
    return edited


def make_insert(scene: Scene, rng: np.random.Generator) -> ToyExample:
    """Insert a new shape moving with the scene; masks = its pixels and its shadow's in the target."""
    source = render(scene)
    shape = sample_inserted_shape(scene, rng)
    target = render(scene, add=[shape])
    masks = target.instance_masks[shape.id] | target.shadow_masks[shape.id]
    return _example(Task.INSERT, source, target, masks, shape.id, describe([*scene.shapes, shape]))


def make_track(
    scene: Scene, rng: np.random.Generator, marker: RGB = MARKER, *, object_id: int | None = None
) -> ToyExample:
    """Paint an object a flat marker colour; masks = its visible pixels."""
    source = render(scene)
    shape = _pick_object(scene, source, rng, object_id)
    target = render(scene, marker={shape.id: marker})
    masks = target.instance_masks[shape.id].copy()
    return _example(Task.TRACK, source, target, masks, shape.id, describe(scene.shapes, {shape.id: marker}))


def make_example(task: Task, scene: Scene, rng: np.random.Generator) -> ToyExample:
    """The ground truth of `task` for this scene, with the edit drawn from `rng`."""
    makers = {Task.REMOVE: make_remove, Task.EDIT: make_edit, Task.INSERT: make_insert, Task.TRACK: make_track}
    return makers[Task(task)](scene, rng)


def toy_example(
    task: Task, seed: int, *, frames: int = DEFAULT_FRAMES, size: int | tuple[int, int] = DEFAULT_SIZE
) -> ToyExample:
    """A whole example from one seed: the scene and the edit are both drawn from it."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, frames=frames, size=size)
    example = make_example(Task(task), scene, rng)
    example.seed = int(seed)
    return example
