"""The edited first frame: load it as RGB at the video's size; save mask PNGs atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from genprop_cli.errors import FrameSizeError, ImageReadError, OutputError
from genprop_cli.fileio import atomic_file

__all__ = ["load_first_frame", "save_png_atomic"]

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image (truncated files fail here, not later), EXIF orientation applied."""
    if not path.exists():
        raise ImageReadError(f"first frame {path} does not exist")
    if not path.is_file():
        raise ImageReadError(f"first frame {path} is not a file")
    try:
        with Image.open(path) as image:
            image.load()
            # exif_transpose returns a copy when it rotates; copy() keeps the data after the file closes.
            return ImageOps.exif_transpose(image) or image.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot read first frame {path}: not an image, or it is corrupt ({error})") \
            from error


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grayscale -> 8-bit RGB, scaling 0..65535 to 0..255."""
    values = np.asarray(image, dtype=np.float64)
    gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """Convert any Pillow mode to 8-bit RGB; say what changed, if anything did."""
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image), f"converted {mode} (16-bit) grayscale to 8-bit RGB"
    if mode == "P":
        has_alpha = "transparency" in image.info or (image.palette is not None and image.palette.mode == "RGBA")
        note = "converted palette image to RGB" + (" (alpha channel dropped)" if has_alpha else "")
        return image.convert("RGBA" if has_alpha else "RGB").convert("RGB"), note
    if mode in _ALPHA_MODES:
        # The model sees colour only; transparent pixels keep the colour stored under them.
        return image.convert("RGB"), f"dropped the alpha channel ({mode} -> RGB)"
    if mode == "CMYK":
        return image.convert("RGB"), "converted CMYK to RGB"
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        gray = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB"), "converted floating-point grayscale to 8-bit RGB"
    return image.convert("RGB"), f"converted {mode} to RGB"


def _same_aspect(image_size: tuple[int, int], video_size: tuple[int, int]) -> bool:
    """True when scaling the image to the video's width (or height) lands within 1 px of the other side."""
    image_w, image_h = image_size
    video_w, video_h = video_size
    height_at_video_width = image_h * video_w / image_w
    width_at_video_height = image_w * video_h / image_h
    return abs(height_at_video_width - video_h) <= 1 and abs(width_at_video_height - video_w) <= 1


def _aspect_error(path: Path, image_size: tuple[int, int], video_size: tuple[int, int]) -> FrameSizeError:
    (image_w, image_h), (video_w, video_h) = image_size, video_size
    return FrameSizeError(
        f"first frame {path.name} is {image_w}x{image_h} but the video is {video_w}x{video_h}: "
        f"the aspect ratios differ ({image_w / image_h:.3f} vs {video_w / video_h:.3f}); "
        f"crop or pad it to {video_w}x{video_h}"
    )


def load_first_frame(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """Load the edited first frame as (H, W, 3) uint8 RGB at ``size`` = (width, height) of the video.

    Returns the array and a note (or None) saying what was converted or resized. EXIF orientation is
    applied first. Raises ImageReadError when the file cannot be read and FrameSizeError when its
    aspect ratio differs from the video's.
    """
    path = Path(path)
    video_w, video_h = int(size[0]), int(size[1])
    image = _open_image(path)
    image, conversion_note = _to_rgb(image)
    notes = [conversion_note] if conversion_note else []
    if image.size != (video_w, video_h):
        if not _same_aspect(image.size, (video_w, video_h)):
            raise _aspect_error(path, image.size, (video_w, video_h))
        notes.append(f"resized first frame {image.width}x{image.height} -> {video_w}x{video_h} "
                     f"(same aspect ratio)")
        image = image.resize((video_w, video_h), Image.Resampling.LANCZOS)
    rgb = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    return rgb, "; ".join(notes) or None


def _png_image(array: np.ndarray) -> Image.Image:
    """(H, W) / (H, W, 1) gray or (H, W, 3) RGB, uint8 or bool -> PIL image."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"PNG frames must be uint8 or bool, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), "L")
    if array.ndim == 3 and array.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(array), "RGB")
    raise ValueError(f"PNG frames must be (H, W) or (H, W, 3), got shape {array.shape}")


def save_png_atomic(path: Path, rgb_or_gray: np.ndarray) -> None:
    """Write a PNG through a temp file in the same folder, so readers never see half a file."""
    path = Path(path)
    image = _png_image(rgb_or_gray)
    if not path.parent.is_dir():
        raise OutputError(f"output folder {path.parent} does not exist")
    try:
        with atomic_file(path, durable=True) as temp, open(temp, "wb") as handle:
            image.save(handle, format="PNG")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
