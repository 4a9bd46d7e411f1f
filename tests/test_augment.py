"""Synthetic pairs: the edited/original/mask invariant for every kind (on in-memory scenes and on clips read
from DAVIS and YouTube-VIS folders), task mapping, motion, mix ratios."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from vis_datasets import ELLIPSE_COLOUR, RECT_COLOUR, scene, write_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from genprop_cli.config import Task
from genprop_cli.training.augment import (
    KINDS,
    PASTE_FEATHER,
    AugmentConfig,
    PairSampler,
    SyntheticPair,
    color_fill,
    copy_and_paste,
    dilate,
    mask_and_fill,
    reshape,
    unchanged,
)
from genprop_cli.training.data import ClipSpec, VideoSample, open_dataset, sample_clip
from genprop_cli.training.trainer import PairStream, TrainConfig


def video(seed: int = 0, frames: int = 6, size: tuple[int, int] = (48, 32), **options) -> VideoSample:
    rgb, instances = scene(frames, size, seed=seed, **options)
    return VideoSample(f"scene{seed}", rgb, instances)


def moving_square_donor(frames: int = 6) -> VideoSample:
    """A flat donor with a yellow square moving right 3 px and down 1 px a frame."""
    rgb = np.full((frames, 32, 48, 3), (90, 160, 90), np.uint8)
    masks = np.zeros((frames, 32, 48), bool)
    for t in range(frames):
        masks[t, 6 + t:14 + t, 4 + 3 * t:12 + 3 * t] = True
    rgb[masks] = (250, 230, 20)
    return VideoSample("donor", rgb, {5: masks})


def augment(kind: str, sample: VideoSample, donor: VideoSample, rng: np.random.Generator) -> SyntheticPair:
    """Augmentation `kind` applied to `sample` (only copy-and-paste uses the donor)."""
    if kind == "copy_paste":
        return copy_and_paste(sample, donor, rng)
    if kind == "mask_fill":
        return mask_and_fill(sample, rng)
    if kind == "unchanged":
        return unchanged(sample, rng)
    if kind == "reshape":
        return reshape(sample, rng)
    return color_fill(sample, rng)


def make_pair(kind: str, seed: int) -> tuple[VideoSample, SyntheticPair]:
    sample = video(seed)
    return sample, augment(kind, sample, video(seed + 100), np.random.default_rng(seed))


def check_pair(pair: SyntheticPair) -> None:
    """What every pair guarantees on its own: it differs from its original exactly inside its mask."""
    assert pair.original.dtype == pair.edited.dtype == np.uint8 and pair.mask.dtype == bool
    assert pair.original.shape == pair.edited.shape and pair.mask.shape == pair.original.shape[:3]
    assert np.array_equal(pair.edited[~pair.mask], pair.original[~pair.mask])
    assert np.array_equal((pair.edited != pair.original).any(axis=-1), pair.mask)
    assert pair.mask[0].any() != (pair.kind == "unchanged")  # only an unchanged pair has nothing to mark
    assert pair.kind in KINDS and isinstance(pair.task, Task)


def check_invariant(pair: SyntheticPair, sample: VideoSample) -> None:
    """What every pair guarantees (see training/augment.py), `sample` being the clip it was made from."""
    check_pair(pair)
    assert pair.original.shape == sample.frames.shape
    assert np.array_equal(pair.original, sample.frames) and pair.original is not sample.frames


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_every_kind_keeps_the_invariant(kind, seed):
    sample, pair = make_pair(kind, seed)
    check_invariant(pair, sample)
    assert pair.kind == kind


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(KINDS), frames=st.integers(1, 5),
       speed=st.integers(-3, 6))
def test_invariant_holds_for_any_seed_and_motion(seed, kind, frames, speed):
    rgb, instances = scene(frames, seed=seed % 1000, speed=speed)
    sample = VideoSample("s", rgb, instances)
    rng = np.random.default_rng(seed)
    donor = video(seed % 7, frames=max(1, frames - 1))  # shorter donors hold their last frame
    check_invariant(augment(kind, sample, donor, rng), sample)


def test_pairs_are_deterministic_for_a_seed():
    for kind in KINDS:
        (_, a), (_, b) = make_pair(kind, 3), make_pair(kind, 3)
        assert a.task == b.task and np.array_equal(a.edited, b.edited) and np.array_equal(a.mask, b.mask)


# --- task mapping --------------------------------------------------------------------------------


def test_copy_paste_is_remove_and_shows_donor_pixels():
    sample, donor = video(1), moving_square_donor()
    pair = copy_and_paste(sample, donor, np.random.default_rng(0), scale_range=(1.0, 1.0))
    assert pair.task is Task.REMOVE and pair.kind == "copy_paste"
    yellow = (pair.edited == (250, 230, 20)).all(axis=-1)
    assert yellow.sum() >= 0.9 * donor.instances[5].sum()  # clipped at the frame edge at most a little
    assert not (pair.original == (250, 230, 20)).all(axis=-1).any()


def test_copy_paste_mask_follows_the_donor_motion():
    donor = moving_square_donor()
    square = donor.instances[5]
    for seed in range(10):
        pair = copy_and_paste(video(seed), donor, np.random.default_rng(seed), scale_range=(1.0, 1.0))
        # Offset of the paste: where the donor's yellow square landed in the first frame.
        core = (pair.edited[0] == (250, 230, 20)).all(axis=-1)
        dy = np.flatnonzero(core.any(axis=1))[0] - np.flatnonzero(square[0].any(axis=1))[0]
        dx = np.flatnonzero(core.any(axis=0))[0] - np.flatnonzero(square[0].any(axis=0))[0]
        # Shift on a canvas with room around the frame: an object just outside still has its soft edge inside.
        pad = 50
        canvas = np.zeros((len(square), 32 + 2 * pad, 48 + 2 * pad), bool)
        canvas[:, pad + dy:pad + dy + 32, pad + dx:pad + dx + 48] = square
        expected = dilate(canvas, PASTE_FEATHER)[:, pad:pad + 32, pad:pad + 48]
        assert np.array_equal(pair.mask, expected), seed
        assert not np.array_equal(pair.mask[1], pair.mask[0])  # it moved


def test_copy_paste_scales_and_fits_large_donor_objects():
    donor = moving_square_donor()
    areas = []
    for seed in range(20):
        pair = copy_and_paste(video(seed), donor, np.random.default_rng(seed), scale_range=(0.5, 1.25))
        check_invariant(pair, video(seed))
        areas.append(pair.mask[0].sum())
    assert min(areas) < 100 < max(areas)  # the unscaled square with its feather ring covers 12x12 = 144 px
    big = VideoSample("big", donor.frames, {1: np.ones_like(donor.instances[5])})  # the whole donor frame
    small_target = video(2, size=(24, 16))
    for seed in range(5):
        pair = copy_and_paste(small_target, big, np.random.default_rng(seed), scale_range=(1.0, 1.25))
        check_invariant(pair, small_target)
        # Shrunk until its first-frame box fits in 0.9 of the 24x16 frame (green: the donor's flat background).
        green = (pair.edited[0] == (90, 160, 90)).all(axis=-1)
        assert 0 < green.any(axis=1).sum() <= 0.9 * 16 + 1 and green.any(axis=0).sum() <= 0.9 * 24 + 1


def test_mask_fill_is_insert_or_edit_with_even_odds():
    tasks = [mask_and_fill(video(s % 4), np.random.default_rng(s)).task for s in range(200)]
    inserts = tasks.count(Task.INSERT) / len(tasks)
    assert set(tasks) == {Task.INSERT, Task.EDIT} and 0.38 < inserts < 0.62


def _object_colour(sample: VideoSample, region: np.ndarray) -> np.ndarray:
    rect = sample.instances[1]
    overlap_rect = (region & rect).sum() / max(1, rect.sum())
    return np.array(RECT_COLOUR if overlap_rect > 0.5 else ELLIPSE_COLOUR)


def test_mask_fill_insert_fills_with_background_and_edit_recolours_the_object():
    seen = set()
    for seed in range(20):
        sample = video(seed)
        pair = mask_and_fill(sample, np.random.default_rng(seed))
        colour = _object_colour(sample, pair.mask)
        inside = pair.edited[pair.mask].astype(float)
        ring = dilate(pair.mask, 2) & ~pair.mask
        if pair.task is Task.INSERT:
            # Background-like: close to the surroundings' colour, far from the object's.
            assert np.abs(inside.mean(axis=0) - pair.original[ring].mean(axis=0)).max() < 40
            assert np.abs(inside.mean(axis=0) - colour).max() > 60
        else:
            original = pair.original[pair.mask].astype(float)
            assert np.abs(inside - original).mean() > 20  # a different appearance
            # and the same shape: the recoloured region is the object plus a 1 px border
            assert np.array_equal(pair.mask, dilate(_instance_under(sample, pair.mask), 1))
        seen.add(pair.task)
    assert seen == {Task.INSERT, Task.EDIT}


def _instance_under(sample: VideoSample, mask: np.ndarray) -> np.ndarray:
    return max(sample.instances.values(), key=lambda m: (m & mask).sum())


def test_color_fill_is_track_with_one_flat_colour_on_the_exact_mask():
    for seed in range(10):
        sample = video(seed)
        pair = color_fill(sample, np.random.default_rng(seed))
        assert pair.task is Task.TRACK and pair.kind == "color_fill"
        assert any(np.array_equal(pair.mask, m) for m in sample.instances.values())
        colours = pair.edited[pair.mask].astype(int)
        assert np.abs(colours - colours[0]).max() <= 1  # flat, up to the 1-level nudge
        rgb = colours[0]
        assert rgb.max() - rgb.min() > 40  # saturated


def test_augmentations_need_an_instance_in_the_first_frame():
    rgb, instances = scene(4, hidden={1: [0], 2: [0]})
    sample = VideoSample("late", rgb, instances)
    for call in (lambda r: mask_and_fill(sample, r), lambda r: color_fill(sample, r),
                 lambda r: copy_and_paste(video(0), sample, r)):
        with pytest.raises(ValueError, match="first frame"):
            call(np.random.default_rng(0))


# --- mix -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [AugmentConfig(), AugmentConfig(0.2, 0.0, 0.8), AugmentConfig(1, 2, 1)])
def test_sampler_draws_kinds_with_the_configured_ratios(config):
    sampler = PairSampler(config)
    rng = np.random.default_rng(0)
    draws = [sampler.draw_kind(rng) for _ in range(4000)]
    for kind, probability in config.probabilities().items():
        assert abs(draws.count(kind) / len(draws) - probability) < 0.03, kind
        if probability == 0:
            assert kind not in draws


def test_default_mix_is_the_papers():
    assert AugmentConfig().probabilities() == {
        "copy_paste": 0.5, "mask_fill": 0.375, "color_fill": 0.125, "unchanged": 0.0, "reshape": 0.0
    }


def test_sampler_applies_the_drawn_kind():
    sample, donor = video(0), video(1)
    for i, kind in enumerate(KINDS):
        sampler = PairSampler(AugmentConfig(*(float(j == i) for j in range(len(KINDS)))))
        for seed in range(3):
            pair = sampler(sample, donor, np.random.default_rng(seed))
            assert pair.kind == kind
            check_invariant(pair, sample)
    mixed = [PairSampler()(sample, donor, np.random.default_rng(s)).kind for s in range(40)]
    assert set(mixed) == set(KINDS) - {"unchanged", "reshape"}  # off by default
    mixed = [PairSampler(AugmentConfig(unchanged=0.5, reshape=0.5))(sample, donor, np.random.default_rng(s)).kind
             for s in range(80)]
    assert set(mixed) == set(KINDS)


def test_a_reshape_changes_only_where_the_shapes_differ_and_keeps_the_objects_colour():
    """A square on a flat background: where the new shape reaches past the square it takes the square's
    colour; where the square is no longer covered, the background; the mask is exactly their difference."""
    rgb = np.full((3, 32, 32, 3), (40, 60, 200), np.uint8)
    square = np.zeros((3, 32, 32), bool)
    for t in range(3):
        square[t, 10:20, 8 + t:18 + t] = True
    rgb[square] = (250, 120, 10)
    sample = VideoSample("square", rgb, {1: square})
    kinds = set()
    for seed in range(12):
        pair = reshape(sample, np.random.default_rng(seed))
        check_invariant(pair, sample)
        assert pair.task is Task.EDIT and pair.kind == "reshape"
        grown, dropped = pair.mask & ~square, pair.mask & square
        assert grown.any() and (pair.edited[grown] == (250, 120, 10)).all()
        assert np.abs(pair.edited[dropped].astype(int) - (40, 60, 200)).max() <= 4 * 3  # background + mild noise
        kinds.add(int(pair.mask[0].sum()))
    assert len(kinds) > 1  # more than one new shape is drawn


def test_a_reshape_of_a_disc_still_changes_the_first_frame():
    y, x = np.ogrid[:24, :24]
    disc = np.broadcast_to((y - 12) ** 2 + (x - 12) ** 2 <= 16, (2, 24, 24)).copy()
    rgb = np.full((2, 24, 24, 3), 30, np.uint8)
    rgb[disc] = (200, 200, 40)
    sample = VideoSample("disc", rgb, {1: disc})
    for seed in range(8):
        pair = reshape(sample, np.random.default_rng(seed))
        check_invariant(pair, sample)


def test_an_unchanged_pair_is_the_clip_itself_with_nothing_to_mark():
    sample = video(2)
    pairs = [unchanged(sample, np.random.default_rng(seed)) for seed in range(30)]
    for pair in pairs:
        check_invariant(pair, sample)
        assert np.array_equal(pair.edited, sample.frames) and pair.edited is not sample.frames
        assert not pair.mask.any()
    assert {pair.task for pair in pairs} == {Task.REMOVE, Task.INSERT, Task.EDIT}


@pytest.mark.parametrize("weights", [(-0.1, 0.5, 0.5), (0, 0, 0), (float("nan"), 1, 1), (float("inf"), 1, 1)])
def test_bad_mix_raises_value_error(weights):
    with pytest.raises(ValueError):
        AugmentConfig(*weights)


# --- on clips read from DAVIS and YouTube-VIS folders, as the trainer reads them -----------------------

DISK_CLIP = ClipSpec(frames=4, size=(32, 24))


@pytest.fixture(scope="module", params=["davis", "ytvis"])
def on_disk(request, tmp_path_factory) -> tuple[str, Path]:
    """(layout, root) of a tiny three-video dataset; the videos move at different speeds."""
    videos = {f"seq{i}": scene(6, seed=i, speed=i + 1) for i in range(3)}
    return request.param, write_dataset(tmp_path_factory.mktemp(request.param), request.param, videos)


def disk_clips(layout: str, root: Path, draws: int, seed: int) -> list[VideoSample]:
    """Clips cut from the dataset with the trainer's reader and sampler (draws with no instance left are dropped)."""
    dataset = open_dataset(root, layout, min_frames=DISK_CLIP.frames)
    rng = np.random.default_rng(seed)
    clips = [sample_clip(dataset.load(int(rng.integers(len(dataset)))), DISK_CLIP, rng) for _ in range(draws)]
    assert dataset.report.skipped == [] and dataset.report.used == 3
    return [clip for clip in clips if clip is not None]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_keeps_the_invariant_on_clips_read_from_disk(on_disk, kind):
    clips = disk_clips(*on_disk, draws=12, seed=0)
    assert len(clips) >= 8 and clips[0].frames.shape == (4, 24, 32, 3)
    for i, clip in enumerate(clips):
        pair = augment(kind, clip, clips[-1 - i], np.random.default_rng(i))
        check_invariant(pair, clip)
        assert pair.kind == kind


def test_the_trainers_pair_stream_on_disk_mixes_kinds_as_configured(on_disk):
    """Kind frequencies over N draws are within 4 binomial standard errors, sqrt(p(1-p)/N), of the configured
    (non-default) probabilities: +-0.09 for p = 1/3 at N = 480. Every pair differs from its clip exactly
    inside its mask."""
    layout, root = on_disk
    mix = AugmentConfig(copy_paste=1, mask_fill=2, color_fill=1, unchanged=1, reshape=1)
    config = TrainConfig(data=str(root), output="unused", format=layout, frames=DISK_CLIP.frames,
                         width=DISK_CLIP.size[0], height=DISK_CLIP.size[1], augment=mix)
    stream = PairStream(config)
    pairs = [pair for step in range(24) for pair in stream.pairs(step, 0, 0, 20)]
    for pair in pairs:
        check_pair(pair)
    kinds = [pair.kind for pair in pairs]
    for kind, p in mix.probabilities().items():
        assert abs(kinds.count(kind) / len(kinds) - p) < 4 * math.sqrt(p * (1 - p) / len(kinds)), kind
