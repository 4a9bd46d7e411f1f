"""Edits on any frame (--at), several keyframes, and --start/--end: segment planning, the backward run on
reversed frames, a seamless join at the keyframe, untouched frames outside the range, and resume."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clips import make_clip, pattern_frame
from genprop_cli import propagation
from genprop_cli.api import Clip, GenProp, OutputFrame, OutputOptions, Placement, RunRequest, render
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


def keyframe_request(clip: Clip, at: list[int], images: list[np.ndarray], options: PropagationOptions, **where) -> RunRequest:
    """A request whose first --at shows the clip's edited frame and later ones `images`."""
    placement = Placement(at=tuple(map(str, at)), **{k: str(v) for k, v in where.items()})
    return RunRequest(video=clip.video, first_frames=(clip.first_frame, *images), options=options, placement=placement)


def run_frames(model: GenProp, clip: Clip, request: RunRequest, **kwargs) -> list[OutputFrame]:
    return list(model.frames(model.plan(request, clip=clip), **kwargs))


def spy_on_runs(monkeypatch) -> list[list[int]]:
    """Records, for every run of the model, the clip indices of the frames it reads, in the order read."""
    seen: list[list[int]] = []
    original = propagation._PlanRunner._run

    def recording(self, frames, image, store):
        order: list[int] = []
        seen.append(order)

        def read():
            for f in frames:
                order.append(f.index)
                yield f

        return original(self, read(), image, store)

    monkeypatch.setattr(propagation._PlanRunner, "_run", recording)
    return seen


@pytest.fixture(scope="module")
def toy() -> GenProp:
    return GenProp.load("toy", device="cpu")


def test_an_edit_in_the_middle_runs_backwards_on_reversed_frames_and_joins_without_a_seam(toy, monkeypatch):
    example = toy_example(Task.REMOVE, 4252, frames=48, size=64)
    clip = Clip.from_frames(example.source, example.target[24])
    seen = spy_on_runs(monkeypatch)
    out = run_frames(toy, clip, keyframe_request(clip, [24], [], PropagationOptions(task=Task.REMOVE)))
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
    clip = Clip.from_frames(video, video[15][:, ::-1].copy())
    seen = spy_on_runs(monkeypatch)
    options = PropagationOptions(task=Task.EDIT, steps=1)
    out = run_frames(model, clip, keyframe_request(clip, [15, 35], [video[35][::-1].copy()], options, start=10, end=50))
    assert [f.index for f in out] == list(range(60))
    # segments [10, 26) around 15 and [26, 50) around 35; both runs reach 4 (overlap / 2) frames past 26:
    # backward 15..10, forward 15..29, backward 35..22, forward 35..49
    assert seen == [list(range(15, 9, -1)), list(range(15, 30)), list(range(35, 21, -1)), list(range(35, 50))]
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
    options = PropagationOptions(task=Task.EDIT, steps=1, seed=3)

    def request(name: str) -> RunRequest:
        return RunRequest(video=clip_path, first_frames=(tmp_path / "e.png",), options=options,
                          placement=Placement(at=("40",)), outputs=OutputOptions(output=tmp_path / name))  # fmt: skip

    render(model, request("ref.mp4"))

    events: list[object] = []

    def stop_in_forward_run(event):  # backward run: chunks 1 and 2 of 2; the forward run's first chunk: stop
        events.append(event)
        if len(events) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render(model, request("out.mp4"), on_progress=stop_in_forward_run)
    result = render(model, request("out.mp4"))
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


def test_where_two_keyframes_segments_meet_the_runs_are_cross_faded_over_the_overlap(monkeypatch):
    """Every run outputs its keyframe image's first pixel value on every frame: the values then show where
    each segment's runs reach and how two of them are blended (the chunks' ramp, over overlap frames)."""

    def flat(self, frames, image, store):
        value = int(image[0, 0, 0])
        for f in frames:
            yield OutputFrame(index=f.index, pts=f.pts, time_base=f.time_base, rgb=np.full_like(f.rgb, value),
                              mask=np.full(f.rgb.shape[:2], value, np.uint8), source=f.rgb)  # fmt: skip

    monkeypatch.setattr(propagation._PlanRunner, "_run", flat)
    model = GenProp.load("random-tiny", device="cpu")
    video = np.zeros((40, 8, 8, 3), np.uint8)
    clip = Clip.from_frames(video, np.full((8, 8, 3), 0, np.uint8))
    request = keyframe_request(clip, [5, 30], [np.full((8, 8, 3), 200, np.uint8)], PropagationOptions(overlap=8))
    out = run_frames(model, clip, request)
    values = [int(f.rgb[0, 0, 0]) for f in out]
    assert [f.index for f in out] == list(range(40))
    # boundary at 18 (frames 0..17 are nearer 5): 4 frames each side, 14..21, ramp from 0 to 200
    ramp = [int((i + 1) / 9 * 200 + 0.5) for i in range(8)]
    assert values[:14] == [0] * 14 and values[14:22] == ramp and values[22:] == [200] * 18
    assert [int(f.mask[0, 0]) for f in out][14:22] == ramp
