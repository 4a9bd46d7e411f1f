"""images: loading the edited first frame at the video's size, and atomic PNG writes."""

from __future__ import annotations

import numpy as np
import pytest
from clips import orientation_pattern
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from genprop_cli.errors import FrameSizeError, ImageReadError, OutputError
from genprop_cli.images import _same_aspect, load_first_frame, save_png_atomic

QUADRANTS = {"top_left": (255, 0, 0), "top_right": (0, 255, 0), "bottom_left": (0, 0, 255),
             "bottom_right": (255, 255, 0)}


def quadrant_colours(rgb: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Colour at the centre of each quadrant."""
    height, width = rgb.shape[:2]
    rows, cols = (height // 4, 3 * height // 4), (width // 4, 3 * width // 4)
    return {
        "top_left": tuple(int(v) for v in rgb[rows[0], cols[0]]),
        "top_right": tuple(int(v) for v in rgb[rows[0], cols[1]]),
        "bottom_left": tuple(int(v) for v in rgb[rows[1], cols[0]]),
        "bottom_right": tuple(int(v) for v in rgb[rows[1], cols[1]]),
    }


def assert_colours_close(actual: dict, expected: dict, tolerance: int) -> None:
    for key, colour in expected.items():
        assert np.abs(np.subtract(actual[key], colour)).max() <= tolerance, (key, actual[key], colour)


def test_same_size_is_returned_as_is(image_factory):
    path = image_factory("edit.png", (96, 64))
    rgb, note = load_first_frame(path, (96, 64))
    assert note is None
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, orientation_pattern(96, 64))


def test_same_aspect_ratio_is_resized_with_a_note(image_factory):
    path = image_factory("edit.png", (192, 128))
    rgb, note = load_first_frame(path, (96, 64))
    assert rgb.shape == (64, 96, 3)
    assert note == "resized first frame 192x128 -> 96x64 (same aspect ratio)"
    assert_colours_close(quadrant_colours(rgb), QUADRANTS, tolerance=2)


def test_aspect_within_one_pixel_counts_as_the_same(image_factory):
    path = image_factory("edit.png", (641, 360))
    rgb, note = load_first_frame(path, (640, 360))
    assert rgb.shape == (360, 640, 3)
    assert note == "resized first frame 641x360 -> 640x360 (same aspect ratio)"


def test_other_aspect_ratio_is_a_frame_size_error(image_factory):
    path = image_factory("edited.png", (500, 500))
    with pytest.raises(FrameSizeError) as caught:
        load_first_frame(path, (640, 360))
    assert str(caught.value) == ("first frame edited.png is 500x500 but the video is 640x360: the aspect ratios "
                                 "differ (1.000 vs 1.778); crop or pad it to 640x360")


@given(width=st.integers(8, 2000), height=st.integers(8, 2000), scale=st.integers(1, 4),
       extra_rows=st.integers(2, 50))
def test_aspect_test_accepts_scaled_copies_and_rejects_other_shapes(width, height, scale, extra_rows):
    image_size = (width * scale, height * scale)
    assert _same_aspect(image_size, (width, height))
    assert not _same_aspect(image_size, (width, height + extra_rows))


@pytest.mark.parametrize(
    ("name", "mode", "note_part", "tolerance"),
    [
        ("rgba.png", "RGBA", "alpha channel", 0),
        ("cmyk.jpg", "CMYK", "CMYK", 12),
        ("cmyk.tiff", "CMYK", "CMYK", 0),
        ("palette.png", "P", "palette", 0),
    ],
)
def test_colour_modes_are_converted_to_rgb(image_factory, name, mode, note_part, tolerance):
    path = image_factory(name, (96, 64), mode)
    with Image.open(path) as image:
        assert image.mode == mode
    rgb, note = load_first_frame(path, (96, 64))
    assert rgb.shape == (64, 96, 3) and rgb.dtype == np.uint8
    assert note_part in note
    assert_colours_close(quadrant_colours(rgb), QUADRANTS, tolerance)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bit(image_factory):
    path = image_factory("deep.png", (96, 64), "I;16")
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    rgb, note = load_first_frame(path, (96, 64))
    assert "16-bit" in note
    expected = np.asarray(Image.fromarray(orientation_pattern(96, 64)).convert("L"))
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_conversion_and_resize_notes_are_joined(image_factory):
    path = image_factory("edit.png", (192, 128), "RGBA")
    _, note = load_first_frame(path, (96, 64))
    assert note == "dropped the alpha channel (RGBA -> RGB); resized first frame 192x128 -> 96x64 (same aspect ratio)"


def test_exif_orientation_is_applied(image_factory):
    # Stored 64 wide x 96 tall; orientation 6 means "rotate 90 degrees clockwise to display".
    path = image_factory("phone.png", (64, 96), exif_orientation=6)
    rgb, note = load_first_frame(path, (96, 64))
    assert note is None
    np.testing.assert_array_equal(rgb, np.rot90(orientation_pattern(64, 96), k=-1))


def test_missing_image_is_an_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png does not exist"):
        load_first_frame(tmp_path / "nope.png", (96, 64))


@pytest.mark.parametrize("content", [b"", b"this is text, not a picture\n", "truncated"],
                         ids=["zero-byte", "text", "truncated"])
def test_unreadable_image_is_an_image_read_error(tmp_path, image_factory, content):
    path = tmp_path / "bad.png"
    if content == "truncated":
        full = image_factory("full.png", (96, 64)).read_bytes()
        content = full[: len(full) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="bad.png"):
        load_first_frame(path, (96, 64))


@pytest.mark.parametrize(
    ("array", "mode"),
    [
        (np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3), "RGB"),
        (np.arange(48 * 64, dtype=np.uint8).reshape(48, 64), "L"),
    ],
    ids=["rgb", "gray"],
)
def test_save_png_atomic_round_trips(tmp_path, array, mode):
    path = tmp_path / "mask_0001.png"
    path.write_bytes(b"old")
    save_png_atomic(path, array)
    with Image.open(path) as image:
        assert image.mode == mode
        np.testing.assert_array_equal(np.asarray(image), array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask_0001.png"]


def test_save_png_atomic_writes_bool_masks_as_0_and_255(tmp_path):
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    save_png_atomic(tmp_path / "mask.png", mask)
    with Image.open(tmp_path / "mask.png") as image:
        np.testing.assert_array_equal(np.asarray(image), mask.astype(np.uint8) * 255)


def test_save_png_atomic_errors(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        save_png_atomic(tmp_path / "missing" / "m.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        save_png_atomic(tmp_path / "m.png", np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []
