"""Classical baselines: the flow-carried edit follows the motion; inpainting removes what its mask covers."""

from __future__ import annotations

import numpy as np

from genprop_cli.evaluation.baselines import carried_masks, backward_flows, edit_region, flow_warp, mask_then_inpaint

T, H, W = 6, 48, 64
RED, GREEN = np.array([220, 30, 30]), np.array([30, 200, 40])


def textured_background() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    base = 128 + 50 * np.sin(x / 3.0) * np.cos(y / 4.0)
    return np.repeat(base[..., None], 3, axis=-1).clip(0, 255).astype(np.uint8)


def moving_square(colour=RED, step: int = 2) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    frames, boxes = [], []
    for t in range(T):
        frame = textured_background()
        box = (slice(16, 28), slice(10 + step * t, 22 + step * t))
        frame[box] = colour
        frames.append(frame)
        boxes.append(box)
    return np.stack(frames), boxes


def test_edit_region_is_where_the_first_frame_changed():
    source, boxes = moving_square()
    edited = source[0].copy()
    edited[boxes[0]] = GREEN
    region = edit_region(source[0], edited)
    expected = np.zeros((H, W), bool)
    expected[boxes[0]] = True
    np.testing.assert_array_equal(region, expected)


def test_static_clip_keeps_the_edit_in_place_and_the_rest_untouched():
    source = np.repeat(textured_background()[None], T, axis=0)
    edited = source[0].copy()
    edited[10:20, 10:20] = GREEN
    out = flow_warp(source, edited)
    for t in range(T):
        np.testing.assert_array_equal(out[t][10:20, 10:20], np.broadcast_to(GREEN, (10, 10, 3)))
        np.testing.assert_array_equal(out[t][30:], source[t][30:])


def test_flow_warp_carries_a_recolour_along_the_motion():
    # Dense flow underestimates the motion of a flat, textureless square (the aperture problem), so this
    # asks for the right direction and a good part of the distance, not pixel accuracy.
    source, boxes = moving_square()
    edited = source[0].copy()
    edited[boxes[0]] = GREEN
    out = flow_warp(source, edited)
    start_x = (boxes[0][1].start + boxes[0][1].stop - 1) / 2
    for t in (2, 4, 5):
        green = np.abs(out[t].astype(int) - GREEN).max(axis=-1) < 40
        assert green.sum() > 0.5 * 12 * 12
        moved = np.nonzero(green)[1].mean() - start_x
        assert 0.3 * 2 * t < moved <= 2 * t + 1


def test_carried_masks_follow_the_object_better_than_a_static_mask():
    source, boxes = moving_square()
    first = np.zeros((H, W), bool)
    first[boxes[0]] = True
    masks = carried_masks(first, backward_flows(source))

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    for t in range(2, T):
        truth = np.zeros((H, W), bool)
        truth[boxes[t]] = True
        assert iou(masks[t], truth) > iou(first, truth)


def test_mask_then_inpaint_removes_what_the_carried_mask_covers():
    source, boxes = moving_square()
    background = textured_background()
    out = mask_then_inpaint(source, background)
    np.testing.assert_array_equal(out[0], background)
    for t in range(1, T):
        red_left = (np.abs(out[t].astype(int) - RED).max(axis=-1) < 40).sum()
        assert red_left < 0.1 * 12 * 12
