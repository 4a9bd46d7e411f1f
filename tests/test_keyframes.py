"""Edits on any frame (--at), several keyframes, and --start/--end: segment planning, the backward run on
reversed frames, a seamless join at the keyframe, untouched frames outside the range, and resume."""

from __future__ import annotations

import json
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clips import make_clip, pattern_frame
from genprop_cli import api
from genprop_cli.api import Clip, GenProp, Keyframe, propagate_keyframes, render
from genprop_cli.chunking import Segment, plan_segments
from genprop_cli.cli import app
from genprop_cli.config import PropagationOptions, Task, parse_position
from genprop_cli.errors import OptionError
from genprop_cli.toy import toy_example

runner = CliRunner()


def test_each_frame_goes_to_its_nearest_keyframe():
    assert plan_segments(100, [40]) == [Segment(0, 40, 0, 100)]
    assert plan_segments(100, [10, 50, 90]) == [Segment(0, 10, 0, 31), Segment(1, 50, 31, 71), Segment(2, 90, 71, 100)]
    assert plan_segments(100, [20], 10, 30) == [Segment(0, 20, 10, 30)]
    assert plan_segments(100, [10, 11]) == [Segment(0, 10, 0, 11), Segment(1, 11, 11, 100)]
    for bad in ([], [50, 10], [10, 10], [100]):
        with pytest.raises(ValueError):
            plan_segments(100, bad)
    with pytest.raises(ValueError, match="outside"):
        plan_segments(100, [5], 10, 30)


@pytest.mark.parametrize(("text", "frame"), [("120", 120), ("2.5s", 60), ("0:02.5", 60), ("1:00:00", 86400), ("0s", 0)])
def test_positions_are_frames_seconds_or_clock_times(text, frame):
    assert parse_position(text, lambda seconds: round(seconds * 24.0)) == frame


@pytest.mark.parametrize("text", ["abc", "-3", "2.5m", "", "1::2x"])
def test_bad_positions_are_option_errors(text):
    with pytest.raises(OptionError, match="--at"):
        parse_position(text, lambda seconds: round(seconds * 24.0))


@pytest.fixture(scope="module")
def toy() -> GenProp:
    return GenProp.load("toy", device="cpu")


def test_an_edit_in_the_middle_runs_backwards_on_reversed_frames_and_joins_without_a_seam(toy, monkeypatch):
    example = toy_example(Task.REMOVE, 4252, frames=48, size=64)
    clip = Clip.from_frames(example.source, example.edited_first)
    seen: list[list[int]] = []
    make_view = api._segment_clip

    def spying(clip, frames, count, image):
        def recorded():
            order = []
            seen.append(order)
            for f in frames():
                order.append(f.index)
                yield f

        return make_view(clip, recorded, count, image)

    monkeypatch.setattr(api, "_segment_clip", spying)
    out = list(propagate_keyframes(toy, clip, [Keyframe(24, example.target[24])], PropagationOptions(task=Task.REMOVE)))
    assert seen == [list(range(24, -1, -1)), list(range(24, 48))]  # backwards from the keyframe, then forwards
    assert [f.index for f in out] == list(range(48)) and [f.pts for f in out] == list(range(48))
    video = np.stack([f.rgb for f in out]).astype(np.float64)
    step = np.abs(np.diff(video, axis=0)).mean(axis=(1, 2, 3))  # step[i]: frame i -> i + 1
    typical = np.median(step)
    assert step[23] < 1.5 * typical and step[24] < 1.5 * typical, (step[22:26], typical)  # no seam at frame 24
    truth = example.target.astype(np.float64)
    assert np.abs(video[:24] - truth[:24]).mean() < np.abs(video[:24] - example.source[:24]).mean() + 8


def test_frames_outside_start_end_are_the_source_exactly_and_several_keyframes_each_get_their_segment(monkeypatch):
    model = GenProp.load("random-tiny", device="cpu")
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    clip = Clip.from_frames(video, video[0])
    runs: list[int] = []
    original = GenProp.propagate

    def counting(self, view, options, **kwargs):
        runs.append(view.info.num_frames)
        return original(self, view, options, **kwargs)

    monkeypatch.setattr(GenProp, "propagate", counting)
    keys = [Keyframe(15, video[15][:, ::-1].copy()), Keyframe(35, video[35][::-1].copy())]
    out = list(propagate_keyframes(model, clip, keys, PropagationOptions(task=Task.EDIT, steps=1), start=10, stop=50))
    assert [f.index for f in out] == list(range(60))
    # segments [10, 26) around 15 and [26, 50) around 35; both runs reach 4 (overlap / 2) frames past 26:
    # backward 10..15, forward 15..29, backward 22..35, forward 35..49
    assert runs == [6, 15, 14, 15]
    for f in out[:10] + out[50:]:
        assert np.array_equal(f.rgb, video[f.index]) and not f.mask.any()
    assert not all(np.array_equal(f.rgb, video[f.index]) for f in out[10:50])


def test_cli_at_with_two_keyframes_and_a_spliced_range_keeps_length_and_audio(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=48, audio="aac")
    for name, index in (("a.png", 0), ("b.png", 30)):
        Image.fromarray(pattern_frame(index, 64, 48)[:, ::-1].copy()).save(tmp_path / name)
    out = tmp_path / "out.mp4"
    result = runner.invoke(app, [
        "edit", str(clip), "-f", str(tmp_path / "a.png"), "-f", str(tmp_path / "b.png"), "--at", "8", "--at", "1.25s",
        "--start", "4", "--end", "44", "--splice", "-o", str(out), "--model", "random-tiny", "--steps", "1", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 48
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 48
        assert len(container.streams.audio) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "clip.mp4", "out.mp4"]
    bad = runner.invoke(app, ["edit", str(clip), "-f", str(tmp_path / "a.png"), "--at", "8", "--at", "9",
                              "-o", str(tmp_path / "x.mp4"), "--model", "random-tiny"])  # fmt: skip
    assert bad.exit_code == 2 and "one --first-frame per --at" in bad.stderr


def test_an_interrupted_keyframe_render_resumes_to_the_same_video(tmp_path):
    model = GenProp.load("random-tiny", device="cpu")
    clip_path = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=70, audio=None)
    Image.fromarray(pattern_frame(0, 64, 48)[:, ::-1].copy()).save(tmp_path / "e.png")
    clip = Clip.open(clip_path, tmp_path / "e.png")
    keys = [Keyframe(40, clip.first_frame)]
    options = PropagationOptions(task=Task.EDIT, steps=1, seed=3)
    render(model, clip, tmp_path / "ref.mp4", options, keyframes=keys)

    events: list[object] = []

    def stop_in_forward_run(event):  # backward run: chunks 1 and 2 of 2; the forward run's first chunk: stop
        events.append(event)
        if len(events) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render(model, clip, tmp_path / "out.mp4", options, keyframes=keys, on_progress=stop_in_forward_run)
    result = render(model, clip, tmp_path / "out.mp4", options, keyframes=keys)
    assert result.resumed_chunks == 2

    def frames(path):
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

    assert np.array_equal(frames(tmp_path / "out.mp4"), frames(tmp_path / "ref.mp4"))


def test_a_trimmed_range_is_output_alone_starting_at_zero_with_its_own_audio(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=72, audio="aac")  # 3 s at 24 fps
    Image.fromarray(pattern_frame(24, 64, 48)[:, ::-1].copy()).save(tmp_path / "e.png")
    out = tmp_path / "part.mp4"
    result = runner.invoke(app, ["remove", str(clip), "-f", str(tmp_path / "e.png"), "--start", "1s", "--end", "2.5s",
                                 "-o", str(out), "--model", "random-tiny", "--steps", "1", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 36
    assert json.loads(result.stdout)["chunks"] == 2  # frames 24..59: one forward chunk of 32, then 8 more
    with av.open(str(out)) as container:
        video = [f for f in container.decode(video=0)]
        assert len(video) == 36 and video[0].time == pytest.approx(0.0, abs=1e-6)
        assert video[-1].time == pytest.approx(35 / 24, abs=1e-3)
    with av.open(str(out)) as container:
        audio = [f for f in container.decode(audio=0)]
    first, end = audio[0].time, audio[-1].time + audio[-1].samples / audio[-1].sample_rate
    assert first == pytest.approx(0.0, abs=0.03)  # the range's audio, moved to time zero with its video
    assert end == pytest.approx(1.5, abs=0.05)


class _FlatModel:
    """Stands in for GenProp: every run outputs its keyframe image's first pixel value on every frame."""

    def resolve(self, options):
        return options.with_defaults(SimpleNamespace(chunk=32, overlap=8, steps=1, guidance=1.0))

    def propagate(self, view, options, on_progress=None, store=None):
        value = int(view.first_frame[0, 0, 0])
        for f in view.frames():
            yield api.OutputFrame(index=f.index, pts=f.pts, time_base=f.time_base, rgb=np.full_like(f.rgb, value),
                                  mask=np.full(f.rgb.shape[:2], value, np.uint8), source=f.rgb)  # fmt: skip


def test_where_two_keyframes_segments_meet_the_runs_are_cross_faded_over_the_overlap():
    video = np.zeros((40, 8, 8, 3), np.uint8)
    clip = Clip.from_frames(video, video[0])
    keys = [Keyframe(5, np.full((8, 8, 3), 0, np.uint8)), Keyframe(30, np.full((8, 8, 3), 200, np.uint8))]
    out = list(propagate_keyframes(_FlatModel(), clip, keys, PropagationOptions(task=Task.EDIT, overlap=8)))
    values = [int(f.rgb[0, 0, 0]) for f in out]
    assert [f.index for f in out] == list(range(40))
    # boundary at 18 (frames 0..17 are nearer 5): 4 frames each side, 14..21, ramp from 0 to 200
    ramp = [int((i + 0.5) / 8 * 200 + 0.5) for i in range(8)]
    assert values[:14] == [0] * 14 and values[14:22] == ramp and values[22:] == [200] * 18
    assert [int(f.mask[0, 0]) for f in out][14:22] == ramp
