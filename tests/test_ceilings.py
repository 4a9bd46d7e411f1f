"""The oracle bounds of evaluation/ceilings.py on toy-world removals: the true region covers the object and
its shadow, and the first stage's ceilings bound a round trip's error as documented."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from genprop_cli.config import Task
from genprop_cli.evaluation import metrics
from genprop_cli.evaluation.ceilings import first_stage_ceilings, true_region_weight
from genprop_cli.evaluation.runner import composite, score
from genprop_cli.toy import toy_example


@pytest.fixture(scope="module")
def removal():
    example = toy_example(Task.REMOVE, 4252, frames=8, size=64)
    assert example.object_masks.any() and example.shadow_masks is not None and example.shadow_masks.any()
    return example


def test_composite_takes_the_video_where_the_weight_is_one_and_the_source_where_it_is_zero(removal):
    video, source = removal.target, removal.source
    half = np.zeros(source.shape[:3], np.float32)
    half[:, :, :32] = 1.0
    mixed = composite(video, source, half)
    assert np.array_equal(mixed[:, :, :32], video[:, :, :32]) and np.array_equal(mixed[:, :, 32:], source[:, :, 32:])


def test_the_true_region_covers_the_object_and_its_shadow_and_nothing_far_from_them(removal):
    weight = true_region_weight(removal)
    region = removal.masks | removal.object_masks | removal.shadow_masks
    assert weight[region].min() > 0.9
    near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0 for m in region])
    far = ~near
    assert far.any() and weight[far].max() < 1e-3


def test_a_lossless_first_stage_reaches_the_ground_truth(removal):
    ceilings = first_stage_ceilings(removal, lambda video: video.copy())
    assert np.array_equal(ceilings[""].video, removal.target)
    assert metrics.psnr(ceilings[", true-region composite"].video, removal.target) > 45


def test_a_lossy_first_stage_bounds_a_plain_output_and_a_composite_keeps_its_loss_inside_the_region(removal):
    rng = np.random.default_rng(0)

    def lossy(video: np.ndarray) -> np.ndarray:
        return (video.astype(np.int16) + rng.integers(-12, 13, video.shape)).clip(0, 255).astype(np.uint8)

    ceilings = first_stage_ceilings(removal, lossy)
    plain, kept = score(removal, ceilings[""]), score(removal, ceilings[", true-region composite"])
    assert 24 < plain["psnr"] < 32 and 24 < plain["psnr_m"] < 32  # the noise everywhere
    assert kept["psnr"] > plain["psnr"] + 6 and kept["psnr_m"] > 45  # only inside the region
    assert kept["residual_object"] < 0.2  # what is left there is the noise, not the object
