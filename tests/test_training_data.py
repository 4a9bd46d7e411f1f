"""Training datasets: DAVIS / YouTube-VIS reading, RLE and polygons, bad-annotation reports, clip sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from vis_datasets import (
    ELLIPSE_COLOUR,
    RECT_COLOUR,
    compress_counts,
    rle_counts,
    save_jpeg,
    save_palette_png,
    scene,
    write_davis,
    write_ytvis,
)
from PIL import Image

from genprop_cli.errors import InputError, OptionError
from genprop_cli.training.data import (
    ClipSpec,
    DavisDataset,
    VideoSample,
    YTVISDataset,
    decode_rle,
    open_dataset,
    polygons_to_mask,
    rle_counts_from_string,
    sample_clip,
)
from genprop_cli.training.data import _draw_crop

# A hand-made 2x5 mask; column-major it reads 0000011101: runs 5, 3, 1, 1.
HAND_MASK = np.array([[0, 0, 0, 1, 0], [0, 0, 1, 1, 1]], bool)
HAND_COUNTS = [5, 3, 1, 1]
HAND_STRING = "531N"  # the 4th run is stored as 1 - 3 = -2 -> one sign-extended 5-bit chunk 0b11110 -> 'N'


def skipped_items(report) -> dict[str, str]:
    return dict(report.skipped)


# --- RLE and polygons ----------------------------------------------------------------------------


def test_rle_string_decoding_matches_hand_computed_counts():
    assert rle_counts_from_string(HAND_STRING) == HAND_COUNTS
    assert rle_counts_from_string("X1") == [40]  # 40 = 8 + (1 << 5): two chunks, the first with 'more'
    assert rle_counts_from_string(b"414") == [4, 1, 4]


def test_rle_decodes_both_forms_to_the_hand_made_mask():
    assert np.array_equal(decode_rle({"size": [2, 5], "counts": HAND_COUNTS}), HAND_MASK)
    assert np.array_equal(decode_rle({"size": [2, 5], "counts": HAND_STRING}), HAND_MASK)
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    assert np.array_equal(decode_rle({"size": [3, 3], "counts": "414"}), centre)


def test_rle_round_trips_a_drawn_shape():
    _, instances = scene()
    mask = instances[2][3]
    counts = rle_counts(mask)
    assert np.array_equal(decode_rle({"size": list(mask.shape), "counts": counts}), mask)
    assert np.array_equal(decode_rle({"size": list(mask.shape), "counts": compress_counts(counts)}), mask)


@pytest.mark.parametrize("rle", [
    {"size": [2, 5], "counts": [5, 3, 1]},  # covers 9 of 10 pixels
    {"size": [2, 5], "counts": "53"},
    {"size": [2, 5], "counts": "5\x7f"},
    {"size": [2], "counts": [10]},
])
def test_bad_rle_raises_value_error(rle):
    with pytest.raises(ValueError):
        decode_rle(rle)


def test_polygon_rasterises_a_hand_drawn_rectangle():
    expected = np.zeros((10, 10), bool)
    expected[3:7, 2:6] = True  # corners (2, 3) and (6, 7) enclose 4x4 pixels
    assert np.array_equal(polygons_to_mask([[2, 3, 6, 3, 6, 7, 2, 7]], 10, 10), expected)


def test_polygons_are_united_and_clipped():
    mask = polygons_to_mask([[0, 0, 2, 0, 2, 2, 0, 2], [7, 7, 12, 7, 12, 12, 7, 12]], 10, 10)
    expected = np.zeros((10, 10), bool)
    expected[0:2, 0:2] = True
    expected[7:, 7:] = True
    assert np.array_equal(mask, expected)


# --- DAVIS ---------------------------------------------------------------------------------------


def check_video(sample: VideoSample, expected: tuple[np.ndarray, dict[int, np.ndarray]]) -> None:
    frames, instances = expected
    assert sample.frames.shape == frames.shape and sample.frames.dtype == np.uint8
    assert np.abs(sample.frames.astype(int) - frames).mean() < 3  # JPEG
    assert sorted(sample.instances) == sorted(i for i, m in instances.items() if m.any())
    for instance_id, masks in sample.instances.items():
        assert masks.dtype == bool
        assert np.array_equal(masks, instances[instance_id])
    rect = sample.frames[0][instances[1][0]].astype(int)
    assert np.abs(rect.mean(axis=0) - RECT_COLOUR).max() < 10


@pytest.mark.parametrize("resolution", ["480p", "Full-Resolution", None])
def test_davis_reads_back_frames_and_instances(tmp_path, resolution):
    videos = {"bear": scene(6, seed=1), "car": scene(5, seed=2, hidden={2: [4]})}
    write_davis(tmp_path, videos, resolution=resolution)
    dataset = open_dataset(tmp_path, "davis")
    assert dataset.resolution == (resolution or ".")
    assert len(dataset) == 2 and dataset.names() == ["bear", "car"]
    for i, name in enumerate(dataset.names()):
        check_video(dataset.load(i), videos[name])
    assert dataset.report.to_dict() == {"sequences": 2, "used": 2, "skipped": []}


def test_davis_prefers_480p_and_accepts_an_explicit_resolution(tmp_path):
    write_davis(tmp_path, {"a": scene(5)}, resolution="480p")
    write_davis(tmp_path, {"b": scene(5), "c": scene(5)}, resolution="Full-Resolution")
    assert DavisDataset(tmp_path).names() == ["a"]
    assert DavisDataset(tmp_path, resolution="Full-Resolution").names() == ["b", "c"]
    with pytest.raises(InputError, match="1080p"):
        DavisDataset(tmp_path, resolution="1080p")


def test_davis_void_is_ignored_and_binary_grayscale_masks_are_one_object(tmp_path):
    frames, instances = scene(5)
    write_davis(tmp_path, {"void": (frames, instances)})
    for t in range(5):  # void border on the palette annotations
        path = tmp_path / "Annotations/480p/void" / f"{t:05d}.png"
        labels = np.array(Image.open(path))
        labels[0, :] = 255
        save_palette_png(path, labels)
    (tmp_path / "Annotations/480p/single").mkdir(parents=True)
    for t in range(5):  # DAVIS 2016: grayscale 0/255, one object
        save_jpeg(tmp_path / "JPEGImages/480p/single" / f"{t:05d}.jpg", frames[t])
        binary = Image.fromarray(instances[1][t].astype(np.uint8) * 255)
        binary.save(tmp_path / "Annotations/480p/single" / f"{t:05d}.png")
    dataset = DavisDataset(tmp_path)
    single = dataset.load(dataset.names().index("single"))
    assert list(single.instances) == [1] and np.array_equal(single.instances[1], instances[1])
    void = dataset.load(dataset.names().index("void"))
    assert sorted(void.instances) == [1, 2] and 255 not in void.instances


def break_png(path: Path, size: tuple[int, int]) -> None:
    save_palette_png(path, np.ones(size[::-1], np.uint8))


def test_davis_bad_annotations_are_skipped_and_reported_with_the_file(tmp_path):
    good = scene(5, seed=3)
    names = ["good", "missing", "extra", "wrongsize", "unreadable", "empty", "noannotations", "short"]
    write_davis(tmp_path, {n: good for n in names})
    ann, img = tmp_path / "Annotations/480p", tmp_path / "JPEGImages/480p"
    (ann / "missing/00002.png").unlink()
    break_png(ann / "extra/00009.png", (48, 32))
    break_png(ann / "wrongsize/00003.png", (40, 30))
    (img / "unreadable/00001.jpg").write_bytes(b"not a jpeg at all")
    for t in range(5):
        save_palette_png(ann / "empty" / f"{t:05d}.png", np.zeros((32, 48), np.uint8))
    for path in (ann / "noannotations").iterdir():
        path.unlink()
    (ann / "noannotations").rmdir()
    for t in (3, 4):
        (img / "short" / f"{t:05d}.jpg").unlink()
        (ann / "short" / f"{t:05d}.png").unlink()

    dataset = DavisDataset(tmp_path, min_frames=4)
    index_time = skipped_items(dataset.report)
    assert "missing annotation PNG" in index_time["Annotations/480p/missing/00002.png"]
    assert "5 frames but 6 annotation PNGs" in index_time["Annotations/480p/extra"]
    assert "no annotation folder" in index_time["Annotations/480p/noannotations"]
    assert "only 3 frames" in index_time["JPEGImages/480p/short"]
    assert dataset.names() == ["empty", "good", "unreadable", "wrongsize"]
    assert (dataset.report.sequences, dataset.report.used) == (8, 4)

    samples = {name: dataset.load(i) for i, name in enumerate(dataset.names())}
    assert samples["good"].instances
    for name in ("empty", "unreadable", "wrongsize"):
        assert samples[name].frames.shape[0] == 0 and samples[name].instances == {}
        assert sample_clip(samples[name], ClipSpec(frames=3, size=(24, 16)), np.random.default_rng(0)) is None
    skipped = skipped_items(dataset.report)
    assert "unreadable image" in skipped["JPEGImages/480p/unreadable/00001.jpg"]
    assert "annotation is 40x30, frame is 48x32" in skipped["Annotations/480p/wrongsize/00003.png"]
    assert "no instance" in skipped["Annotations/480p/empty"]
    assert dataset.report.used == 1 and len(dataset.report.skipped) == 7

    dataset.verify()  # loading again reports nothing twice
    assert len(dataset.report.skipped) == 7 and dataset.report.used == 1
    assert len(dataset.report.to_dict()["skipped"]) == 7


def test_davis_with_nothing_usable_or_no_folder_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        DavisDataset(tmp_path / "nope")
    with pytest.raises(InputError, match="JPEGImages"):
        DavisDataset(tmp_path)
    write_davis(tmp_path, {"a": scene(5)})
    (tmp_path / "Annotations/480p/a/00000.png").unlink()
    with pytest.raises(InputError, match="no usable sequence.*00000.png"):
        DavisDataset(tmp_path)


def test_unknown_format_is_an_option_error(tmp_path):
    with pytest.raises(OptionError):
        open_dataset(tmp_path, "coco")  # type: ignore[arg-type]


# --- YouTube-VIS ---------------------------------------------------------------------------------


@pytest.fixture
def ytvis_videos():
    first = scene(6, seed=4, hidden={2: [5]})  # the ellipse is gone in the last frame: a null segmentation
    second = scene(5, seed=5)
    return {"vid_a": first, "vid_b": (second[0], {3: second[1][1], 4: second[1][2]})}


def test_ytvis_reads_rle_uncompressed_rle_and_polygons(tmp_path, ytvis_videos):
    encodings = {1: "polygon", 2: "rle", 3: "polygon", 4: "counts"}
    write_ytvis(tmp_path, ytvis_videos, encodings)
    document = json.loads((tmp_path / "instances.json").read_text())
    segs = {a["id"]: a["segmentations"] for a in document["annotations"]}
    assert isinstance(segs[2][0]["counts"], str) and segs[2][5] is None
    assert isinstance(segs[4][0]["counts"], list) and isinstance(segs[1][0], list)

    dataset = open_dataset(tmp_path, "ytvis")
    assert dataset.names() == ["vid_a", "vid_b"]
    check_video(dataset.load(0), ytvis_videos["vid_a"])
    b = dataset.load(1)
    frames, instances = ytvis_videos["vid_b"]
    assert sorted(b.instances) == [3, 4]
    assert all(np.array_equal(b.instances[i], instances[i]) for i in (3, 4))
    assert np.abs(b.frames[0][instances[4][0]].astype(int).mean(axis=0) - ELLIPSE_COLOUR).max() < 10
    assert dataset.report.to_dict() == {"sequences": 2, "used": 2, "skipped": []}


def test_ytvis_json_is_found_or_named(tmp_path, ytvis_videos):
    path = write_ytvis(tmp_path, ytvis_videos)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(InputError, match="exactly one"):
        YTVISDataset(tmp_path)
    assert len(YTVISDataset(tmp_path, annotations=path)) == 2
    with pytest.raises(InputError, match="not a YouTube-VIS"):
        YTVISDataset(tmp_path, annotations=tmp_path / "other.json")
    (tmp_path / "other.json").write_text("{ broken")
    with pytest.raises(InputError, match="cannot read"):
        YTVISDataset(tmp_path, annotations=tmp_path / "other.json")


def test_ytvis_bad_annotations_are_skipped_and_reported(tmp_path):
    videos = {f"v{i}": scene(5, seed=i) for i in range(8)}
    renumbered = {n: (f, {10 * i + k: m for k, m in inst.items()}) for i, (n, (f, inst)) in enumerate(videos.items())}
    encodings = {}
    for i in range(8):
        encodings[10 * i + 1] = "polygon" if i % 2 else "rle"  # the rectangle
        encodings[10 * i + 2] = "counts" if i % 2 else "rle"  # the ellipse
    json_path = write_ytvis(tmp_path, renumbered, encodings)
    document = json.loads(json_path.read_text())
    ann = {a["id"]: a for a in document["annotations"]}
    ann[1]["segmentations"] = ann[1]["segmentations"][:4]  # v0: length mismatch (instance 2 stays)
    ann[11]["segmentations"] = [None] * 5  # v1: empty in every frame (index time)
    ann[12]["segmentations"] = [{"size": [32, 48], "counts": [48 * 32]}] * 5  # v1: all-zero RLE (load time)
    document["annotations"] = [a for a in document["annotations"] if a["video_id"] != 3]  # v2: none
    ann[31]["segmentations"][0] = {"size": [30, 40], "counts": [1200]}  # v3: wrong size
    ann[32]["segmentations"][2] = {"size": [32, 48], "counts": "))"}  # v3: undecodable (load time)
    (tmp_path / "JPEGImages/v4/00002.jpg").unlink()  # v4: missing frame file
    (tmp_path / "JPEGImages/v5/00001.jpg").write_bytes(b"garbage")  # v5: unreadable
    save_jpeg(tmp_path / "JPEGImages/v6/00003.jpg", np.zeros((30, 40, 3), np.uint8))  # v6: wrong frame size
    document["videos"][7]["length"] = 9  # v7: length differs from file_names
    json_path.write_text(json.dumps(document))

    dataset = YTVISDataset(tmp_path)
    name = "instances.json"
    index_time = skipped_items(dataset.report)
    assert "4 segmentations for a video of 5 frames" in index_time[f"{name}: annotation 1 (video 1)"]
    assert "empty in every frame" in index_time[f"{name}: annotation 11 (video 2)"]
    assert "no usable annotations" in index_time[f"{name}: video 3"]
    assert "segmentation is 40x30, the video is 48x32" in index_time[f"{name}: annotation 31 (video 4)"]
    assert "missing" in index_time["JPEGImages/v4/00002.jpg"]
    assert "length is 9" in index_time[f"{name}: video 8"]
    assert dataset.names() == ["v0", "v1", "v3", "v5", "v6"]
    assert (dataset.report.sequences, dataset.report.used) == (8, 5)

    samples = {n: dataset.load(i) for i, n in enumerate(dataset.names())}
    assert list(samples["v0"].instances) == [2]
    assert samples["v1"].instances == {} and samples["v3"].instances == {}
    assert samples["v5"].instances == {} and samples["v6"].instances == {}
    skipped = skipped_items(dataset.report)
    assert "empty in every frame" in skipped[f"{name}: annotation 12 (video 2)"]
    assert "cannot decode" in skipped[f"{name}: annotation 32 (video 4)"]
    assert "unreadable image" in skipped["JPEGImages/v5/00001.jpg"]
    assert "frame is 40x30, expected 48x32" in skipped["JPEGImages/v6/00003.jpg"]
    assert dataset.report.used == 1


def test_ytvis_with_nothing_usable_raises_input_error(tmp_path, ytvis_videos):
    with pytest.raises(InputError, match="does not exist"):
        YTVISDataset(tmp_path / "nope")
    json_path = write_ytvis(tmp_path, ytvis_videos)
    document = json.loads(json_path.read_text())
    del document["annotations"]  # a test split: videos without annotations
    json_path.write_text(json.dumps(document))
    with pytest.raises(InputError, match="no usable sequence.*no usable annotations"):
        YTVISDataset(tmp_path)


# --- clips ---------------------------------------------------------------------------------------


def indexed_video(length: int, size: tuple[int, int] = (40, 30)) -> VideoSample:
    """Flat frames whose value is 5 x the frame index, with one big instance in every frame."""
    width, height = size
    frames = np.repeat((np.arange(length, dtype=np.uint8) * 5)[:, None, None, None], height, 1)
    frames = np.repeat(np.repeat(frames, width, 2), 3, 3)
    masks = np.zeros((length, height, width), bool)
    masks[:, height // 4:3 * height // 4, width // 4:3 * width // 4] = True
    return VideoSample("indexed", frames, {7: masks})


def source_indices(clip: VideoSample) -> np.ndarray:
    return clip.frames[:, 0, 0, 0].astype(int) // 5


def test_clip_has_the_spec_length_size_and_a_stride_in_bounds():
    spec = ClipSpec(frames=4, size=(24, 16), max_stride=3)
    strides = set()
    for seed in range(60):
        clip = sample_clip(indexed_video(20), spec, np.random.default_rng(seed))
        assert clip.frames.shape == (4, 16, 24, 3) and clip.frames.dtype == np.uint8
        assert clip.instances[7].shape == (4, 16, 24) and clip.instances[7].dtype == bool
        steps = np.diff(source_indices(clip))
        assert len(set(steps)) == 1 and 1 <= steps[0] <= 3
        assert 0 <= source_indices(clip)[0] and source_indices(clip)[-1] < 20
        strides.add(int(steps[0]))
    assert strides == {1, 2, 3}


def test_clip_stride_shrinks_for_short_videos_and_too_short_videos_are_none():
    spec = ClipSpec(frames=5, size=(24, 16), max_stride=3)
    for seed in range(20):
        clip = sample_clip(indexed_video(6), spec, np.random.default_rng(seed))
        assert np.all(np.diff(source_indices(clip)) == 1)
    assert sample_clip(indexed_video(4), spec, np.random.default_rng(0)) is None


def test_clip_is_deterministic_for_a_seed():
    frames, instances = scene(8, seed=6)
    sample = VideoSample("s", frames, instances)
    spec = ClipSpec(frames=4, size=(32, 24))
    a, b = (sample_clip(sample, spec, np.random.default_rng(11)) for _ in range(2))
    assert np.array_equal(a.frames, b.frames) and a.instances.keys() == b.instances.keys()
    assert all(np.array_equal(a.instances[i], b.instances[i]) for i in a.instances)
    others = [sample_clip(sample, spec, np.random.default_rng(s)) for s in range(12, 16)]
    assert any(not np.array_equal(a.frames, o.frames) for o in others)


def test_clip_without_crop_is_the_resized_video_and_masks_follow():
    frames, instances = scene(6, seed=7)
    clip = sample_clip(VideoSample("s", frames, instances), ClipSpec(6, (48, 32), 1, 1.0), np.random.default_rng(0))
    assert np.array_equal(clip.frames, frames)
    assert all(np.array_equal(clip.instances[i], instances[i]) for i in (1, 2))
    half = sample_clip(VideoSample("s", frames, instances), ClipSpec(6, (24, 16), 1, 1.0), np.random.default_rng(0))
    assert np.array_equal(half.instances[1], instances[1][:, 1::2, 1::2])


def test_clip_keeps_only_instances_present_in_its_first_frame():
    frames, instances = scene(6, seed=8, hidden={2: range(6)})
    instances[2][5:, 20:30, 30:40] = True  # only in the last frame, never a 3-frame clip's first
    instances[3] = np.zeros_like(instances[1])
    instances[3][:, 0, 0] = True  # one pixel: below the 0.5% area threshold
    spec = ClipSpec(3, (48, 32), 1, 1.0)
    sample = VideoSample("s", frames, instances)
    for seed in range(10):
        assert list(sample_clip(sample, spec, np.random.default_rng(seed)).instances) == [1]
    late = VideoSample("s", frames[5:], {2: instances[2][5:]})
    assert list(sample_clip(late, ClipSpec(1, (48, 32)), np.random.default_rng(0)).instances) == [2]
    tiny = VideoSample("s", frames, {3: instances[3]})
    assert sample_clip(tiny, spec, np.random.default_rng(0)) is None


@pytest.mark.parametrize("source, largest", [((60, 30), (60, 30)), ((40, 40), (40, 20)), ((30, 60), (30, 15))])
def test_clip_crop_keeps_the_clip_aspect_and_covers_min_crop(source, largest):
    spec = ClipSpec(2, (20, 10), 1, 0.6)
    sides = []
    for seed in range(40):
        crop = _draw_crop(*source, spec, np.random.default_rng(seed))
        assert abs(crop.width / crop.height - 2) < 0.15
        assert 0.6 * largest[0] - 1 <= crop.width <= largest[0] and crop.height <= largest[1]
        assert 0 <= crop.left <= source[0] - crop.width and 0 <= crop.top <= source[1] - crop.height
        sides.append(crop.width)
    assert min(sides) < 0.75 * largest[0] and max(sides) > 0.9 * largest[0]


@pytest.mark.parametrize("bad", [dict(frames=0), dict(max_stride=0), dict(min_crop=0.0), dict(min_crop=1.5),
                                 dict(size=(0, 10))])
def test_bad_clip_spec_raises(bad):
    with pytest.raises(ValueError):
        ClipSpec(**{"frames": 4, "size": (24, 16), **bad})


def test_dataset_to_clip_end_to_end(tmp_path):
    write_davis(tmp_path, {"a": scene(8, seed=9), "b": scene(6, seed=10)})
    dataset = open_dataset(tmp_path, "davis", min_frames=6)
    spec = ClipSpec(frames=6, size=(32, 24))
    clips = [sample_clip(dataset.load(i), spec, np.random.default_rng(i)) for i in range(len(dataset))]
    assert all(c is not None and c.frames.shape == (6, 24, 32, 3) for c in clips)
