"""The toy world: deterministic scenes, ground truth consistent with its renderer, exports the project can read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genprop_cli.config import Task
from genprop_cli.evaluation.metrics import masks_from_marker
from genprop_cli.toy import export
from genprop_cli.toy.world import (
    KINDS,
    MARKER,
    Scene,
    ToyExample,
    make_edit,
    make_insert,
    make_remove,
    make_track,
    render,
    sample_inserted_shape,
    sample_scene,
    toy_example,
)
from genprop_cli.training.data import ClipSpec, DavisDataset, sample_clip

FRAMES = 12
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
FEW = settings(max_examples=12, deadline=None)


def scene_for(seed: int, frames: int = FRAMES, size: int | tuple[int, int] = 64) -> Scene:
    return sample_scene(np.random.default_rng(seed), frames=frames, size=size)


def background_of(scene: Scene) -> np.ndarray:
    return render(scene, remove={s.id for s in scene.shapes}).frames


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, H, W) pixels where two clips differ in any channel."""
    return (a != b).any(axis=-1)


def union(masks) -> np.ndarray:
    masks = list(masks)
    return np.logical_or.reduce(masks) if masks else False


def has_colour(frames: np.ndarray, colour) -> np.ndarray:
    return (frames == np.asarray(colour, dtype=np.uint8)).all(axis=-1)


# --- determinism -------------------------------------------------------------------------------------


def test_same_seed_gives_identical_scene_and_frames() -> None:
    first, second = scene_for(11), scene_for(11)
    assert first == second
    np.testing.assert_array_equal(render(first).frames, render(second).frames)


def test_different_seeds_give_different_clips() -> None:
    assert not np.array_equal(render(scene_for(1)).frames, render(scene_for(2)).frames)


def test_examples_are_deterministic_per_seed() -> None:
    for task in Task:
        a, b = toy_example(task, 5, frames=FRAMES), toy_example(task, 5, frames=FRAMES)
        for field in ("source", "edited_first", "target", "masks"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert (a.object_id, a.edit_kind, a.prompt) == (b.object_id, b.edit_kind, b.prompt)


# --- scenes ------------------------------------------------------------------------------------------


@FEW
@given(seed=SEEDS)
def test_sampled_scene_follows_the_rules(seed: int) -> None:
    scene = scene_for(seed)
    assert 2 <= len(scene.shapes) <= 4
    assert [s.id for s in scene.shapes] == list(range(1, len(scene.shapes) + 1))
    assert any(s.shadow is not None for s in scene.shapes)
    assert all(s.kind in KINDS for s in scene.shapes)
    assert len({s.colour for s in scene.shapes}) == len(scene.shapes)
    output = render(scene)
    assert output.frames.shape == (FRAMES, 64, 64, 3) and output.frames.dtype == np.uint8
    for shape in scene.shapes:
        # Every shape shows in the first frame (the one the editor edits) and its centre stays near the frame.
        assert output.instance_masks[shape.id][0].sum() > 0
        centres = shape.trajectory.centres(np.arange(FRAMES))
        assert (centres >= -2).all() and (centres <= 66).all()
    # Nothing but the marker is within the marker metric's tolerance of the marker colour.
    assert not masks_from_marker(output.frames, MARKER).any()


def test_background_pans_at_its_velocity() -> None:
    scene = dataclasses.replace(scene_for(4, frames=2), shapes=())
    scene = dataclasses.replace(scene, background=dataclasses.replace(scene.background, pan=(3.0, -2.0)))
    frames = render(scene).frames
    # Content moves 3 px right and 2 px up per frame.
    np.testing.assert_array_equal(frames[1, :-2, 3:], frames[0, 2:, :-3])


def test_non_square_frames() -> None:
    scene = scene_for(8, frames=4, size=(80, 48))
    assert render(scene).frames.shape == (4, 48, 80, 3)


# --- rendering consistency ---------------------------------------------------------------------------


@FEW
@given(seed=SEEDS)
def test_rendering_twice_and_removing_nothing_give_the_source(seed: int) -> None:
    scene = scene_for(seed)
    source = render(scene).frames
    np.testing.assert_array_equal(render(scene, remove=(), replace={}, add=[], marker={}).frames, source)


@FEW
@given(seed=SEEDS)
def test_removing_then_inserting_back_reproduces_the_source(seed: int) -> None:
    scene = scene_for(seed)
    source = render(scene)
    for shape in scene.shapes:
        without = dataclasses.replace(scene, shapes=tuple(s for s in scene.shapes if s.id != shape.id))
        back = render(without, add=[shape])
        np.testing.assert_array_equal(back.frames, source.frames)
        for shape_id in source.instance_masks:
            np.testing.assert_array_equal(back.instance_masks[shape_id], source.instance_masks[shape_id])
            np.testing.assert_array_equal(back.shadow_masks[shape_id], source.shadow_masks[shape_id])


@FEW
@given(seed=SEEDS)
def test_removal_changes_only_the_object_and_its_shadow(seed: int) -> None:
    scene = scene_for(seed)
    source = render(scene)
    for shape in scene.shapes:
        removed = render(scene, remove={shape.id}).frames
        region = source.instance_masks[shape.id] | source.shadow_masks[shape.id]
        assert not (changed(removed, source.frames) & ~region).any()
        # The object's visible pixels are all gone (its colour is saturated, the background is not).
        assert not has_colour(removed, shape.colour)[source.instance_masks[shape.id]].any()


@FEW
@given(seed=SEEDS)
def test_masks_match_rendered_pixels(seed: int) -> None:
    scene = scene_for(seed)
    output = render(scene)
    shadows = union(output.shadow_masks.values())
    instances = list(output.instance_masks.values())
    assert (np.sum(instances, axis=0) <= 1).all()  # visible pixels belong to one shape at most
    for shape in scene.shapes:
        own = output.instance_masks[shape.id]
        # Where no shadow falls, a shape's visible pixels have exactly its flat colour...
        assert has_colour(output.frames, shape.colour)[own & ~shadows].all()
        # ... and its pixels in shadow are darker than that colour, never lighter.
        shaded = output.frames[own & shadows].astype(int)
        assert (shaded <= np.asarray(shape.colour)).all()
    outside = ~(union(instances) | shadows)
    background = background_of(scene)
    np.testing.assert_array_equal(output.frames[outside], background[outside])
    in_shadow_only = shadows & ~union(instances)
    assert (output.frames[in_shadow_only] <= background[in_shadow_only]).all()


def test_shadows_darken_visibly() -> None:
    scene = scene_for(3)
    output = render(scene)
    background = background_of(scene).astype(int)
    for shape in (s for s in scene.shapes if s.shadow is not None):
        region = output.shadow_masks[shape.id] & ~union(output.instance_masks.values())
        assert region.any()
        darkening = (background - output.frames.astype(int)).sum(axis=-1)[region]
        assert darkening.max() >= 30


def test_marker_paints_exactly_the_visible_pixels() -> None:
    scene = scene_for(9)
    for shape in scene.shapes:
        output = render(scene, marker={shape.id: MARKER})
        np.testing.assert_array_equal(has_colour(output.frames, MARKER), output.instance_masks[shape.id])


def test_unknown_or_duplicate_ids_are_refused() -> None:
    scene = scene_for(1)
    with pytest.raises(KeyError):
        render(scene, remove={99})
    with pytest.raises(ValueError, match="unique"):
        render(scene, add=[scene.shapes[0]])


# --- ground truth for the tasks ----------------------------------------------------------------------


MAKERS = {
    Task.REMOVE: make_remove,
    Task.EDIT: make_edit,
    Task.INSERT: make_insert,
    Task.TRACK: make_track,
}


def check_common(example: ToyExample, task: Task) -> None:
    """What every example guarantees: shapes, first frame, and changes confined to the masks."""
    frames, height, width = example.source.shape[:3]
    assert example.task is task
    assert example.target.shape == example.source.shape and example.masks.shape == (frames, height, width)
    assert example.masks.dtype == np.bool_
    np.testing.assert_array_equal(example.edited_first, example.target[0])
    assert not (changed(example.source, example.target) & ~example.masks).any()
    assert changed(example.source[0], example.edited_first).any()  # the edit shows in the first frame
    assert example.prompt


@FEW
@given(seed=SEEDS, task=st.sampled_from(list(Task)))
def test_examples_change_only_inside_their_masks(seed: int, task: Task) -> None:
    scene = scene_for(seed)
    check_common(MAKERS[task](scene, np.random.default_rng(seed)), task)


@FEW
@given(seed=SEEDS)
def test_remove_leaves_background_where_object_and_shadow_were(seed: int) -> None:
    scene = scene_for(seed)
    example = make_remove(scene, np.random.default_rng(seed))
    shape = scene.shape(example.object_id)
    assert not has_colour(example.target, shape.colour).any()
    np.testing.assert_array_equal(example.masks, example.object_masks | _or_false(example.shadow_masks))
    assert (example.shadow_masks is not None) == (shape.shadow is not None)
    # Where the removed shadow was and nothing else stands or casts a shadow, the target is the bare background.
    rest = render(scene, remove={shape.id})
    others = union([*rest.instance_masks.values(), *rest.shadow_masks.values()])
    bare = _or_false(example.shadow_masks) & ~others
    np.testing.assert_array_equal(example.target[bare], background_of(scene)[bare])


def _or_false(masks: np.ndarray | None) -> np.ndarray | bool:
    return masks if masks is not None else False


@pytest.mark.parametrize("kind", ["recolour", "reshape"])
def test_edit_recolours_or_reshapes_along_the_same_path(kind: str) -> None:
    scene = scene_for(21)
    example = make_edit(scene, np.random.default_rng(0), kind)
    check_common(example, Task.EDIT)
    assert example.edit_kind == kind
    old = render(scene)
    shape = scene.shape(example.object_id)
    if kind == "recolour":
        np.testing.assert_array_equal(example.masks, old.instance_masks[shape.id])
        assert not has_colour(example.target, shape.colour).any()
        unshaded = example.masks & ~union(old.shadow_masks.values())
        new_colour = example.target[unshaded][0]
        assert has_colour(example.target, new_colour)[unshaded].all()
    else:
        assert (example.masks >= old.instance_masks[shape.id]).all()
        assert (example.masks >= example.object_masks).all()
        assert not np.array_equal(example.object_masks, old.instance_masks[shape.id])


def test_edit_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="edit kind"):
        make_edit(scene_for(1), np.random.default_rng(0), "stretch")  # type: ignore[arg-type]


@FEW
@given(seed=SEEDS)
def test_insert_adds_a_shape_moving_with_the_pan(seed: int) -> None:
    scene = scene_for(seed)
    example = make_insert(scene, np.random.default_rng(seed))
    assert example.object_id == len(scene.shapes) + 1
    np.testing.assert_array_equal(example.masks, example.object_masks | _or_false(example.shadow_masks))
    # The same draw as make_insert's; the part of its motion not explained by the pan is slow.
    shape = sample_inserted_shape(scene, np.random.default_rng(seed))
    own = np.subtract(shape.trajectory.velocity, scene.background.pan)
    assert np.hypot(*own) <= 0.4 + 1e-9
    assert example.object_masks[0].sum() > 0


@FEW
@given(seed=SEEDS)
def test_track_masks_are_the_marker_pixels(seed: int) -> None:
    scene = scene_for(seed)
    example = make_track(scene, np.random.default_rng(seed))
    np.testing.assert_array_equal(example.masks, has_colour(example.target, MARKER))
    np.testing.assert_array_equal(example.masks, masks_from_marker(example.target, MARKER))
    np.testing.assert_array_equal(example.masks, render(scene).instance_masks[example.object_id])


def test_make_functions_accept_a_chosen_object() -> None:
    scene = scene_for(6)
    rng = np.random.default_rng(0)
    for shape in scene.shapes:
        assert make_remove(scene, rng, object_id=shape.id).object_id == shape.id
        assert make_track(scene, rng, object_id=shape.id).object_id == shape.id


# --- export ------------------------------------------------------------------------------------------


def test_davis_export_is_read_by_the_training_dataset(tmp_path: Path) -> None:
    names = export.write_davis(tmp_path, 2, seed=3, frames=6, size=64)
    dataset = DavisDataset(tmp_path)
    assert dataset.names() == names and dataset.report.skipped == []
    for index, name in enumerate(names):
        scene = sample_scene(export._rng(3, export._DAVIS_STREAM, index), frames=6, size=64)
        expected = render(scene)
        sample = dataset.load(index)
        assert sample.frames.shape == (6, 64, 64, 3)
        assert sorted(sample.instances) == list(range(1, len(scene.shapes) + 1))
        for shape_id, masks in sample.instances.items():
            np.testing.assert_array_equal(masks, expected.instance_masks[shape_id])
        # JPEG at quality 95: close to the rendered frames, not equal.
        error = np.abs(sample.frames.astype(int) - expected.frames.astype(int)).mean()
        assert error < 4.0
    clip = sample_clip(dataset.load(0), ClipSpec(frames=4, size=(32, 32)), np.random.default_rng(0))
    assert clip is not None and clip.frames.shape == (4, 32, 32, 3)


def test_davis_export_with_shadows_annotates_each_object_with_its_own_uncovered_shadow(tmp_path: Path) -> None:
    names = export.write_davis(tmp_path, 3, seed=3, frames=6, size=64, shadows=True)
    dataset = DavisDataset(tmp_path)
    grew = 0
    for index, _ in enumerate(names):
        expected = render(sample_scene(export._rng(3, export._DAVIS_STREAM, index), frames=6, size=64))
        covered = np.logical_or.reduce(list(expected.instance_masks.values()))
        union = np.zeros_like(covered)
        for shape_id, masks in dataset.load(index).instances.items():
            own, shadow = expected.instance_masks[shape_id], expected.shadow_masks[shape_id]
            assert not (masks & ~(own | (shadow & ~covered))).any()  # only its own pixels and its own shadow's
            np.testing.assert_array_equal(masks & covered, own)  # shapes keep their pixels
            grew += int((masks & ~own).any())
            union |= masks
        # every uncovered shadow pixel is annotated (where two shadows overlap, one label has to win)
        shadows = np.logical_or.reduce(list(expected.shadow_masks.values())) & ~covered
        np.testing.assert_array_equal(union, covered | shadows)
    assert grew > 0  # some shadow pixels really were added


def test_label_maps_number_visible_instances_contiguously() -> None:
    masks = {2: np.zeros((1, 2, 2), bool), 5: np.eye(2, dtype=bool)[None], 7: np.zeros((1, 2, 2), bool)}
    masks[7][0, 0, 1] = True  # id 2 never shows, so 5 -> 1 and 7 -> 2
    np.testing.assert_array_equal(export.label_maps(masks)[0], [[1, 2], [0, 1]])


def test_eval_set_round_trips_bit_exactly(tmp_path: Path) -> None:
    folders = export.write_eval_set(tmp_path / "a", 1, seed=4, frames=5, size=48)
    assert [f.name for f in folders] == [f"{task.value}-000" for task in Task]
    examples = export.read_eval_set(tmp_path / "a")
    for folder, example in zip(folders, examples):
        expected = toy_example(example.task, example.seed, frames=5, size=48)
        for field in ("source", "edited_first", "target", "masks", "object_masks", "shadow_masks"):
            written, regenerated = getattr(example, field), getattr(expected, field)
            if regenerated is None:
                assert written is None
            else:
                np.testing.assert_array_equal(written, regenerated)
                assert written.dtype == regenerated.dtype
        assert (example.object_id, example.edit_kind, example.prompt) == (
            expected.object_id,
            expected.edit_kind,
            expected.prompt,
        )
        assert example.name == folder.name
        np.testing.assert_array_equal(export.read_eval_example(folder).target, example.target)


def test_eval_set_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    export.write_eval_set(tmp_path / "a", 1, seed=9, frames=4, size=32)
    export.write_eval_set(tmp_path / "b", 1, seed=9, frames=4, size=32)
    export.write_eval_set(tmp_path / "c", 1, seed=10, frames=4, size=32)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert (tmp_path / "a" / "remove-000" / "target" / "00000.png").read_bytes() != (
        tmp_path / "c" / "remove-000" / "target" / "00000.png"
    ).read_bytes()


def test_eval_meta_describes_the_example(tmp_path: Path) -> None:
    import json

    export.write_eval_set(tmp_path, 1, seed=2, frames=3, size=32, tasks=[Task.EDIT])
    meta = json.loads((tmp_path / "edit-000" / "meta.json").read_text())
    assert meta["task"] == "edit" and meta["fps"] == 24 and meta["edit_kind"] in ("recolour", "reshape")
    assert meta["seed"] == export.example_seed(2, Task.EDIT, 0)
    assert meta["scene"]["width"] == 32 and len(meta["scene"]["shapes"]) >= 2
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["examples"] == [{"name": "edit-000", "path": "edit-000", "task": "edit"}]


def test_reading_a_broken_example_is_an_input_error(tmp_path: Path) -> None:
    from genprop_cli.errors import InputError

    with pytest.raises(InputError):
        export.read_eval_example(tmp_path / "missing")


# --- varied backgrounds --------------------------------------------------------------------------

from genprop_cli.toy.world import BACKGROUND_KINDS, HELD_OUT_PHOTOS, TRAIN_PHOTOS  # noqa: E402


def test_default_backgrounds_draw_the_original_toy_world() -> None:
    original = sample_scene(np.random.default_rng(5), frames=6)
    explicit = sample_scene(np.random.default_rng(5), frames=6, backgrounds=("waves",), camera_zoom=0.0)
    assert original == explicit and original.background.kind == "waves" and original.background.zoom == 0.0


@pytest.mark.parametrize("kind", BACKGROUND_KINDS)
def test_every_background_kind_keeps_ground_truth_exact(kind: str) -> None:
    for seed in range(3):
        scene = sample_scene(np.random.default_rng(seed), frames=6, backgrounds=(kind,), camera_zoom=0.02)
        assert scene.background.kind == kind
        first, again = render(scene), render(scene)
        np.testing.assert_array_equal(first.frames, again.frames)  # no random draws while rendering
        example = make_remove(scene, np.random.default_rng(seed))
        # Outside the removed object and its shadow, the target is the source exactly.
        np.testing.assert_array_equal(example.target[~example.masks], example.source[~example.masks])
        bare = background_of(scene)
        nothing = ~union([*first.instance_masks.values(), *first.shadow_masks.values()])
        np.testing.assert_array_equal(first.frames[nothing], bare[nothing])


def test_backgrounds_are_not_all_alike() -> None:
    """Each kind makes a different image statistic: a flat one has no detail, a photo or checker has plenty."""
    def detail(kind: str) -> float:
        scene = sample_scene(np.random.default_rng(1), frames=1, backgrounds=(kind,))
        frame = background_of(scene)[0].astype(float)
        return float(np.abs(np.diff(frame, axis=1)).mean())

    assert detail("flat") < 1.5 < detail("checker") and detail("photo") > detail("flat")
    gradient = background_of(sample_scene(np.random.default_rng(2), frames=1, backgrounds=("gradient",)))[0]
    assert np.ptp(gradient.astype(float).mean(axis=-1)) > 20  # both colours of the ramp show


def test_zoom_moves_the_texture_and_no_zoom_keeps_it_still() -> None:
    scene = sample_scene(np.random.default_rng(3), frames=11, backgrounds=("checker",))
    still = dataclasses.replace(scene.background, pan=(0.0, 0.0), grain_amount=0.0)
    zoomed = dataclasses.replace(scene, background=dataclasses.replace(still, zoom=0.05), shapes=())
    frames = render(zoomed).frames.astype(int)
    assert (frames[-1] != frames[0]).mean() > 0.2  # the rest moves outwards
    static = dataclasses.replace(zoomed, background=still)
    assert (render(static).frames == render(static).frames[0]).all()


def test_training_clips_never_show_held_out_photos(tmp_path) -> None:
    assert not set(TRAIN_PHOTOS) & set(HELD_OUT_PHOTOS)
    for index in range(12):
        scene = sample_scene(export._rng(0, export._DAVIS_STREAM, index), frames=2, backgrounds=("photo",),
                             photos=TRAIN_PHOTOS)
        assert scene.background.photo in TRAIN_PHOTOS
    folders = export.write_eval_set(tmp_path / "eval", 2, 7, frames=3, backgrounds=("photo",), tasks=[Task.REMOVE])
    for folder in folders:
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["scene"]["background"]["photo"] in HELD_OUT_PHOTOS


def test_unknown_background_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="background kinds"):
        sample_scene(np.random.default_rng(0), frames=2, backgrounds=("marble",))
