"""video_io: probing, streaming decode, and the atomic writer that keeps timing, orientation and audio."""

from __future__ import annotations

import gc
import inspect
import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import (
    add_subtitles,
    audio_duration_s,
    audio_onset_s,
    audio_packets,
    frame_times_ms,
    ffmpeg_decode_rgb,
    make_audio_only,
    make_clip,
    make_text_file,
    make_truncated,
    make_zero_byte,
    pattern_frame,
)

from genprop_cli import video_io
from genprop_cli.config import PIX_FMTS, EncoderOptions
from genprop_cli.errors import OptionError, OutputError, VideoReadError
from genprop_cli.video_io import (
    AudioStreamInfo,
    VideoInfo,
    VideoWriter,
    check_output_path,
    iter_frames,
    output_pix_fmt,
    probe_video,
)

# Matroska stores times in milliseconds: frame times can move by up to half a millisecond there.
TIME_TOLERANCE = {".mp4": 1e-6, ".mov": 1e-6, ".mkv": 5e-4}


def frame_times(path: Path) -> list[float]:
    return [float(frame.pts * frame.time_base) for frame in iter_frames(path)]


def frames_rgb(path: Path) -> np.ndarray:
    return np.stack([frame.rgb for frame in iter_frames(path)])


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def reencode(source: Path, output: Path, **writer_options) -> VideoWriter:
    """Decode every frame of ``source`` and write it back with its own pts."""
    info = probe_video(source)
    with VideoWriter(output, source=info, width=info.width, height=info.height, **writer_options) as writer:
        for frame in iter_frames(source):
            writer.write(frame.rgb, frame.pts, frame.time_base)
    return writer


def partial_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if ".partial-" in path.name]


def coded_video(path: Path) -> tuple[str, int, int]:
    """(pix_fmt, width, height) of the file's video stream, as its decoder reports them."""
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        return context.pix_fmt, context.width, context.height


def stream_types(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [stream.type for stream in container.streams]


# --------------------------------------------------------------------------------------------------
# probe_video / iter_frames


def test_probe_describes_the_clip(clip_factory):
    path = clip_factory("clip.mp4", width=96, height=64, frames=40, fps=24, audio="aac")
    info = probe_video(path)
    assert (info.path, info.width, info.height, info.rotation) == (path, 96, 64, 0)
    assert info.num_frames == 40
    assert info.average_rate == Fraction(24) and info.fps == 24.0
    assert info.duration_s == pytest.approx(40 / 24, abs=1 / 24)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.time_base > 0
    assert info.audio == (AudioStreamInfo(index=1, codec="aac", channels=2, sample_rate=48000, language=None),)


def test_fps_falls_back_to_frames_over_duration(tmp_path):
    info = VideoInfo(path=tmp_path / "x.mp4", width=2, height=2, rotation=0, num_frames=50,
                     time_base=Fraction(1, 1000), average_rate=None, duration_s=2.0, codec="h264", audio=())
    assert info.fps == 25.0


def test_iter_frames_yields_upright_rgb_in_order(clip_factory):
    path = clip_factory("clip.mkv", width=80, height=48, frames=20, audio=None)
    frames = list(iter_frames(path))
    assert [frame.index for frame in frames] == list(range(20))
    assert all(b.pts > a.pts for a, b in itertools.pairwise(frames))
    for frame in frames:
        assert frame.rgb.shape == (48, 80, 3) and frame.rgb.dtype == np.uint8
        assert frame.rgb.flags.c_contiguous
        assert mean_abs_diff(frame.rgb, pattern_frame(frame.index, 80, 48)) < 3


def test_iter_frames_is_a_lazy_generator(clip_factory, monkeypatch):
    path = clip_factory("long.mp4", frames=80, audio=None)
    converted = []
    real_upright_rgb = video_io._upright_rgb
    monkeypatch.setattr(video_io, "_upright_rgb", lambda frame: converted.append(1) or real_upright_rgb(frame))
    frames = iter_frames(path)
    assert inspect.isgenerator(frames)
    assert converted == []  # nothing happens before the first next()
    first = list(itertools.islice(frames, 3))
    frames.close()
    assert [frame.index for frame in first] == [0, 1, 2]
    assert len(converted) == 3


def test_rotated_source_decodes_upright_like_ffmpeg(clip_factory):
    path = clip_factory("rot.mp4", width=96, height=64, frames=12, rotation=90, audio=None)
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (64, 96, 90)
    ours = frames_rgb(path)
    reference = ffmpeg_decode_rgb(path, width=64, height=96)  # ffmpeg autorotates
    assert ours.shape == reference.shape == (12, 96, 64, 3)
    assert mean_abs_diff(ours, reference) < 1


# --------------------------------------------------------------------------------------------------
# Bad inputs


def test_missing_file_is_a_video_read_error(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoReadError, match="nope.mp4 does not exist"):
        probe_video(missing)
    with pytest.raises(VideoReadError, match="nope.mp4"):
        next(iter_frames(missing))


@pytest.mark.parametrize("make_bad", [make_zero_byte, make_text_file], ids=["zero-byte", "text"])
def test_not_a_video_is_a_video_read_error(tmp_path, make_bad):
    path = make_bad(tmp_path / "bad.mp4")
    with pytest.raises(VideoReadError, match="bad.mp4"):
        probe_video(path)
    with pytest.raises(VideoReadError, match="bad.mp4"):
        list(iter_frames(path))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = make_audio_only(tmp_path / "song.m4a")
    with pytest.raises(VideoReadError, match="song.m4a has no video stream"):
        probe_video(path)
    with pytest.raises(VideoReadError, match="no video stream"):
        list(iter_frames(path))


@pytest.mark.parametrize("faststart", [True, False], ids=["moov-first", "moov-last"])
def test_truncated_file_fails_cleanly_or_gives_fewer_frames(clip_factory, tmp_path, faststart):
    source = clip_factory("full.mp4", frames=40, faststart=faststart)
    truncated = make_truncated(source, tmp_path / "cut.mp4", fraction=0.3)
    try:
        info = probe_video(truncated)
        frames = list(iter_frames(truncated))
    except VideoReadError as error:
        assert "cut.mp4" in str(error)
    else:
        assert 0 < info.num_frames < 40
        assert 0 < len(frames) < 40


# --------------------------------------------------------------------------------------------------
# Output paths


def test_check_output_path_accepts_a_new_file(tmp_path, clip_factory):
    source = clip_factory("in.mp4", frames=4, audio=None)
    check_output_path(tmp_path / "out.MKV", input_path=source, overwrite=False)
    (tmp_path / "exists.mov").write_bytes(b"old")
    check_output_path(tmp_path / "exists.mov", input_path=source, overwrite=True)


@pytest.mark.parametrize(
    ("name", "overwrite", "message"),
    [
        ("exists.mp4", False, "exists; pass --overwrite to replace it"),
        ("missing/out.mp4", True, "output folder .*missing does not exist"),
        ("in.mp4", True, "is the input video"),
        ("sub/../in.mp4", True, "is the input video"),
        ("out.avi", False, r"'\.avi'; use one of \.mp4, \.mov, \.mkv"),
        ("out", False, "no extension"),
    ],
)
def test_check_output_path_rejects(tmp_path, clip_factory, name, overwrite, message):
    source = clip_factory("in.mp4", frames=4, audio=None)
    (tmp_path / "exists.mp4").write_bytes(b"old")
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputError, match=message):
        check_output_path(tmp_path / name, input_path=source, overwrite=overwrite)


def test_writer_refuses_an_existing_output_and_creates_nothing(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=4, audio=None)
    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"keep me")
    info = probe_video(source)
    with pytest.raises(OutputError, match="exists"):
        VideoWriter(existing, source=info, width=info.width, height=info.height)
    assert existing.read_bytes() == b"keep me"
    assert partial_files(tmp_path) == []


def test_overwrite_replaces_the_output(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=6, audio=None)
    output = tmp_path / "out.mp4"
    output.write_bytes(b"old")
    reencode(source, output, overwrite=True)
    assert probe_video(output).num_frames == 6


# --------------------------------------------------------------------------------------------------
# Round trips: timing, pixels, orientation, size


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_round_trip_keeps_frames_times_and_pixels(clip_factory, tmp_path, suffix):
    source = clip_factory("in.mp4", width=96, height=64, frames=30, fps=24, audio="aac")
    output = tmp_path / f"out{suffix}"
    writer = reencode(source, output)
    assert writer.warnings == []
    assert audio_packets(output, 1) == audio_packets(source, 1)
    before, after = probe_video(source), probe_video(output)
    assert (after.width, after.height, after.num_frames) == (96, 64, 30)
    assert after.duration_s == pytest.approx(before.duration_s, abs=1 / 24)
    assert np.allclose(frame_times(output), frame_times(source), rtol=0, atol=TIME_TOLERANCE[suffix])
    assert mean_abs_diff(frames_rgb(output), frames_rgb(source)) < 3
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize(("source_name", "suffix"), [("vfr.mkv", ".mp4"), ("vfr.mkv", ".mkv"),
                                                     ("vfr.mp4", ".mp4"), ("vfr.mp4", ".mov")])
def test_variable_frame_rate_times_are_kept_exactly(clip_factory, tmp_path, source_name, suffix):
    source = clip_factory(source_name, frames=30, vfr=True, audio=None)
    times_in = frame_times(source)
    assert len(set(np.round(np.diff(times_in), 4))) > 2  # really variable
    output = tmp_path / f"out{suffix}"
    reencode(source, output)
    assert len(frame_times(output)) == 30
    assert np.allclose(frame_times(output), times_in, rtol=0, atol=1e-6)
    assert probe_video(output).duration_s == pytest.approx(probe_video(source).duration_s, abs=0.1)


def test_rotated_source_is_written_upright_without_rotation_metadata(clip_factory, tmp_path):
    source = clip_factory("rot.mp4", width=96, height=64, frames=12, rotation=90, audio=None)
    output = tmp_path / "out.mp4"
    reencode(source, output)
    info = probe_video(output)
    assert (info.width, info.height, info.rotation) == (64, 96, 0)
    upright_source = ffmpeg_decode_rgb(source, width=64, height=96)
    assert mean_abs_diff(ffmpeg_decode_rgb(output, width=64, height=96), upright_source) < 3


def test_odd_size_is_padded_by_edge_replication(clip_factory, tmp_path):
    # An odd-sized 4:2:0 input (FFV1 stores one; x264 cannot) stays 4:2:0 by default, padded to even.
    source = clip_factory("odd.mkv", width=65, height=49, frames=8, audio=None, codec="ffv1", pix_fmt="yuv420p")
    assert probe_video(source).pix_fmt == "yuv420p"
    output = tmp_path / "out.mp4"
    writer = reencode(source, output)
    assert writer.warnings == ["padded 65x49 to 66x50 for yuv420p (--pix-fmt yuv444p keeps the exact size)"]
    info = probe_video(output)
    assert (info.width, info.height, info.num_frames) == (66, 50, 8)
    assert coded_video(output) == ("yuv420p", 66, 50)
    written, original = frames_rgb(output), frames_rgb(source)
    assert mean_abs_diff(written[:, :49, :65], original) < 3
    assert mean_abs_diff(written[:, :49, 65], original[:, :, 64]) < 6  # replicated last column
    assert mean_abs_diff(written[:, 49, :65], original[:, 48, :]) < 6  # replicated last row


def test_yuv444p_keeps_an_odd_size_exactly(clip_factory, tmp_path):
    source = clip_factory("odd.mkv", width=65, height=49, frames=8, audio=None)
    output = tmp_path / "out.mp4"
    writer = reencode(source, output, encoder=EncoderOptions(pix_fmt="yuv444p"))
    assert writer.warnings == []
    info = probe_video(output)
    assert (info.width, info.height, info.num_frames) == (65, 49, 8)
    assert mean_abs_diff(frames_rgb(output), frames_rgb(source)) < 3


# x264 at 4:4:4 decodes as yuv444p; libx264rgb (H.264 in RGB) as gbrp.
@pytest.mark.parametrize(("codec", "pix_fmt", "probed"),
                         [("libx264", "yuv444p", "yuv444p"), ("libx264rgb", "rgb24", "gbrp")])
def test_auto_keeps_an_odd_4_4_4_input_exact_and_4_4_4(clip_factory, tmp_path, codec, pix_fmt, probed):
    source = clip_factory("odd.mkv", width=65, height=49, frames=6, audio=None, codec=codec, pix_fmt=pix_fmt)
    assert probe_video(source).pix_fmt == probed
    output = tmp_path / "out.mp4"
    writer = reencode(source, output)  # the default: --pix-fmt auto
    assert EncoderOptions().pix_fmt == "auto" and writer.warnings == []
    assert coded_video(output) == ("yuv444p", 65, 49)
    assert mean_abs_diff(frames_rgb(output), frames_rgb(source)) < 3


def test_auto_keeps_a_4_2_2_input_4_2_2(clip_factory, tmp_path):
    # 4:2:2 halves chroma across only: an odd height needs no padding either.
    source = clip_factory("in.mkv", width=64, height=49, frames=6, audio=None, pix_fmt="yuv422p")
    assert probe_video(source).pix_fmt == "yuv422p"
    output = tmp_path / "out.mp4"
    writer = reencode(source, output)
    assert writer.warnings == []
    assert coded_video(output) == ("yuv422p", 64, 49)
    assert mean_abs_diff(frames_rgb(output), frames_rgb(source)) < 3


def test_explicit_yuv420p_turns_a_4_4_4_input_into_padded_4_2_0(clip_factory, tmp_path):
    source = clip_factory("odd.mkv", width=65, height=49, frames=6, audio=None)  # yuv444p
    output = tmp_path / "out.mp4"
    writer = reencode(source, output, encoder=EncoderOptions(pix_fmt="yuv420p"))
    assert writer.warnings == ["padded 65x49 to 66x50 for yuv420p (--pix-fmt yuv444p keeps the exact size)"]
    assert coded_video(output) == ("yuv420p", 66, 50)
    assert mean_abs_diff(frames_rgb(output)[:, :49, :65], frames_rgb(source)) < 3


@pytest.mark.parametrize(("source", "written"), [
    ("yuv444p", "yuv444p"), ("yuvj444p", "yuv444p"), ("yuv444p10le", "yuv444p"), ("yuva444p", "yuv444p"),
    ("nv24", "yuv444p"), ("gbrp", "yuv444p"), ("gbrp10le", "yuv444p"), ("rgb24", "yuv444p"), ("bgra", "yuv444p"),
    ("pal8", "yuv444p"), ("yuv422p", "yuv422p"), ("yuvj422p", "yuv422p"), ("yuv422p10le", "yuv422p"),
    ("uyvy422", "yuv422p"), ("yuv420p", "yuv420p"), ("yuvj420p", "yuv420p"), ("yuv420p10le", "yuv420p"),
    ("nv12", "yuv420p"), ("yuv411p", "yuv420p"), ("yuv440p", "yuv420p"), ("gray", "yuv420p"),
    ("bayer_rggb8", "yuv420p"), ("no-such-format", "yuv420p"), (None, "yuv420p"),
])  # fmt: skip
def test_auto_follows_the_input_chroma(tmp_path, source, written):
    info = VideoInfo(path=tmp_path / "x.mkv", width=4, height=4, rotation=0, num_frames=1, time_base=Fraction(1, 25),
                     average_rate=Fraction(25), duration_s=0.04, codec="x", audio=(), pix_fmt=source)
    assert output_pix_fmt("auto", info) == written
    for explicit in ("yuv420p", "yuv422p", "yuv444p"):
        assert output_pix_fmt(explicit, info) == explicit


def test_only_the_supported_pixel_formats_are_accepted():
    for pix_fmt in PIX_FMTS:
        assert EncoderOptions(pix_fmt=pix_fmt).pix_fmt == pix_fmt
    with pytest.raises(OptionError, match="--pix-fmt must be one of auto, yuv420p, yuv422p, yuv444p, got 'rgb24'"):
        EncoderOptions(pix_fmt="rgb24")


def test_output_is_tagged_bt709_tv_range(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=4, audio=None)
    output = tmp_path / "out.mp4"
    reencode(source, output)
    with av.open(str(output)) as container:
        frame = next(container.decode(video=0))
        assert (frame.colorspace, frame.color_primaries, frame.color_trc, frame.color_range) == (1, 1, 1, 1)


def test_encoded_chroma_is_the_2x2_average_of_exact_bt709_chroma(clip_factory, tmp_path):
    """Sharp colour edges on odd pixels: each stored Cb/Cr sample is its 2x2 block's mean (swscale's area
    filter); the default bilinear filter is off by up to ~26 levels on such a frame."""
    source = clip_factory("in.mp4", frames=1, width=64, height=48, audio=None)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    rgb[:, 1::4] = (250, 20, 30)  # lone red columns: a bilinear filter smears them across blocks
    output = tmp_path / "out.mp4"
    with VideoWriter(output, source=probe_video(source), width=64, height=48, audio=False,
                     encoder=EncoderOptions(crf=0)) as writer:  # x264 at CRF 0 is lossless
        writer.write(rgb, 0, Fraction(1, 25))
    with av.open(str(output)) as container:
        planes = next(container.decode(video=0)).to_ndarray()  # yuv420p: Y on top, then U and V
    f = rgb.astype(np.float64) / 255
    luma = f @ [0.2126, 0.7152, 0.0722]
    box = lambda c: c.reshape(24, 2, 32, 2).mean((1, 3))  # noqa: E731
    expected_cb = box(128 + 224 * (f[..., 2] - luma) / 1.8556)
    expected_cr = box(128 + 224 * (f[..., 0] - luma) / 1.5748)
    cb = planes[48:60].reshape(24, 32).astype(np.float64)
    cr = planes[60:72].reshape(24, 32).astype(np.float64)
    assert np.abs(planes[:48] - (16 + 219 * luma)).max() <= 1.0
    assert np.abs(cb - expected_cb).max() <= 1.5 and np.abs(cr - expected_cr).max() <= 1.5


def test_frames_given_in_another_time_base_are_rescaled(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=10, fps=25, audio=None)
    info = probe_video(source)
    output = tmp_path / "out.mp4"
    with VideoWriter(output, source=info, width=info.width, height=info.height) as writer:
        for frame in iter_frames(source):
            writer.write(frame.rgb, frame.index * 40, Fraction(1, 1000))
    assert np.allclose(frame_times(output), [i * 0.04 for i in range(10)], atol=1e-6)


def test_repeated_pts_are_nudged_forward_with_one_warning(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=6, audio=None)
    info = probe_video(source)
    output = tmp_path / "out.mp4"
    with VideoWriter(output, source=info, width=info.width, height=info.height) as writer:
        for frame in iter_frames(source):
            writer.write(frame.rgb, 0, frame.time_base)
    assert len(writer.warnings) == 1 and "not after the previous" in writer.warnings[0]
    assert probe_video(output).num_frames == 6


def test_write_rejects_a_frame_of_the_wrong_size(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=4, audio=None)
    info = probe_video(source)
    with pytest.raises(ValueError, match="does not match"):
        with VideoWriter(tmp_path / "out.mp4", source=info, width=info.width, height=info.height) as writer:
            writer.write(np.zeros((10, 10, 3), np.uint8), 0, info.time_base)
    assert list(tmp_path.glob("out*")) == [] and partial_files(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# Atomicity


@pytest.mark.parametrize("interrupt", [RuntimeError("model crashed"), KeyboardInterrupt()],
                         ids=["exception", "ctrl-c"])
def test_failure_inside_the_writer_leaves_nothing_behind(clip_factory, tmp_path, interrupt):
    source = clip_factory("in.mp4", frames=20)
    source_bytes = source.read_bytes()
    info = probe_video(source)
    output = tmp_path / "out.mp4"
    with pytest.raises(type(interrupt)):
        with VideoWriter(output, source=info, width=info.width, height=info.height) as writer:
            for frame in iter_frames(source):
                writer.write(frame.rgb, frame.pts, frame.time_base)
                assert not output.exists() and len(partial_files(tmp_path)) == 1
                if frame.index == 10:
                    raise interrupt
    assert not output.exists()
    assert partial_files(tmp_path) == []
    assert source.read_bytes() == source_bytes


def test_a_writer_dropped_without_close_removes_its_temp_file(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=20, audio="aac")
    info = probe_video(source)
    writer = VideoWriter(tmp_path / "out.mp4", source=info, width=info.width, height=info.height)
    for frame in iter_frames(source):
        writer.write(frame.rgb, frame.pts, frame.time_base)
    assert len(partial_files(tmp_path)) == 1
    del writer
    gc.collect()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.mp4"]


def test_abort_is_idempotent(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=4, audio=None)
    info = probe_video(source)
    writer = VideoWriter(tmp_path / "out.mp4", source=info, width=info.width, height=info.height)
    writer.write(next(iter_frames(source)).rgb, 0, info.time_base)
    writer.abort()
    writer.abort()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.mp4"]


def test_closing_without_frames_is_an_error_and_leaves_nothing(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=4, audio=None)
    info = probe_video(source)
    with pytest.raises(OutputError, match="no video frames"):
        with VideoWriter(tmp_path / "out.mp4", source=info, width=info.width, height=info.height):
            pass
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.mp4"]


# --------------------------------------------------------------------------------------------------
# Audio and other streams


def test_aac_is_copied_packet_for_packet(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=40, audio="aac")
    output = tmp_path / "out.mp4"
    writer = reencode(source, output)
    assert writer.warnings == []
    copied, original = audio_packets(output, 1), audio_packets(source, 1)
    assert len(copied) == len(original) > 10
    assert copied == original


def test_two_audio_streams_are_kept_with_their_languages(clip_factory, tmp_path):
    source = clip_factory("in.mov", frames=24, audio="aac", languages=("eng", "fra"))
    output = tmp_path / "out.mp4"
    reencode(source, output)
    audio = probe_video(output).audio
    assert [(stream.codec, stream.language) for stream in audio] == [("aac", "eng"), ("aac", "fra")]
    for stream in audio:
        assert audio_packets(output, stream.index) == audio_packets(source, stream.index)


@pytest.mark.parametrize(
    ("source_name", "codec", "suffix", "expected_codec"),
    [
        ("pcm.mov", "pcm_s16le", ".mp4", "aac"),
        ("pcm.mkv", "pcm_s16le", ".mov", "aac"),
        ("pcm.mkv", "pcm_s16le", ".mkv", "pcm_s16le"),
        ("opus.mkv", "opus", ".mp4", "opus"),
        ("mp3.mkv", "mp3", ".mp4", "mp3"),
    ],
)
def test_audio_is_copied_or_transcoded_per_container(clip_factory, tmp_path, source_name, codec, suffix,
                                                     expected_codec):
    source = clip_factory(source_name, frames=36, audio=codec, languages=("spa",))
    output = tmp_path / f"out{suffix}"
    writer = reencode(source, output)
    (audio,) = probe_video(output).audio
    assert (audio.codec, audio.language, audio.channels) == (expected_codec, "spa", 2)
    transcoded = expected_codec != codec
    assert (f"audio stream 1 ({codec}) transcoded to aac" in writer.warnings) == transcoded
    assert audio_duration_s(output, audio.index) == pytest.approx(audio_duration_s(source, 1), abs=0.05)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_delayed_audio_keeps_its_offset_against_the_video(clip_factory, tmp_path, suffix):
    source = clip_factory("late.mkv", frames=36, audio="pcm_s16le", audio_delay_s=0.5)
    assert audio_onset_s(source, 1) == pytest.approx(0.5, abs=1e-3)
    output = tmp_path / f"out{suffix}"
    reencode(source, output)
    assert audio_onset_s(output, 1) == pytest.approx(0.5, abs=2e-3)
    assert frame_times(output)[0] == 0.0


def test_unnamed_mono_mulaw_layout_is_transcoded(clip_factory, tmp_path):
    source = clip_factory("mulaw.mov", frames=24, audio="pcm_mulaw", audio_rate=8000, channels=1)
    output = tmp_path / "out.mp4"
    writer = reencode(source, output)
    assert writer.warnings == ["audio stream 1 (pcm_mulaw) transcoded to aac"]
    (audio,) = probe_video(output).audio
    assert (audio.codec, audio.channels, audio.sample_rate) == ("aac", 1, 8000)
    # AAC codes whole 1024-sample frames: at 8 kHz the tail may grow by up to 0.128 s.
    assert audio_duration_s(output, audio.index) == pytest.approx(audio_duration_s(source, 1), abs=0.13)


def test_video_without_audio_gives_video_only_output(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=8, audio=None)
    output = tmp_path / "out.mp4"
    assert reencode(source, output).warnings == []
    assert stream_types(output) == ["video"]


def test_audio_false_drops_audio(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=8, audio="aac")
    output = tmp_path / "out.mp4"
    writer = reencode(source, output, audio=False)
    assert stream_types(output) == ["video"]
    assert writer.warnings == ["1 audio stream(s) dropped (audio disabled)"]


def test_subtitles_are_dropped_with_a_warning(clip_factory, tmp_path):
    plain = clip_factory("plain.mkv", frames=12, audio="aac")
    source = add_subtitles(plain, tmp_path / "subs.mkv")
    output = tmp_path / "out.mp4"
    writer = reencode(source, output)
    assert writer.warnings == ["subtitle stream 2 (subrip) dropped"]
    assert stream_types(output) == ["video", "audio"]


def test_shortened_video_cuts_audio_after_its_end(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=48, fps=24, audio="aac")
    info = probe_video(source)
    output = tmp_path / "out.mp4"
    with VideoWriter(output, source=info, width=info.width, height=info.height) as writer:
        for frame in itertools.islice(iter_frames(source), 24):
            writer.write(frame.rgb, frame.pts, frame.time_base)
    assert probe_video(output).num_frames == 24
    kept = audio_duration_s(output, 1)
    assert 0.95 <= kept <= 1.05  # 24 frames at 24 fps = 1 s, give or take one AAC frame
    assert len(audio_packets(output, 1)) < len(audio_packets(source, 1))


def test_pixels_survive_with_default_encoder_and_custom_crf(clip_factory, tmp_path):
    source = clip_factory("in.mp4", frames=10, audio=None)
    low, high = tmp_path / "low.mp4", tmp_path / "high.mp4"
    reencode(source, low, encoder=EncoderOptions(crf=40))
    reencode(source, high, encoder=EncoderOptions(crf=10))
    original = frames_rgb(source)
    assert mean_abs_diff(frames_rgb(high), original) < mean_abs_diff(frames_rgb(low), original)
    assert high.stat().st_size > low.stat().st_size


def test_the_same_frames_always_encode_to_the_same_pictures(tmp_path):
    """Re-rendering with the same seed must give the same video. Noise frames drive x264's MB-tree
    hard; with its AVX-512 kernels 15 encodes gave 5 to 12 different results on this machine."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    frames = [np.roll(base, i, axis=1) for i in range(40)]
    info = VideoInfo(path=tmp_path / "none.mp4", width=96, height=64, rotation=0, num_frames=40,
                     time_base=Fraction(1, 24), average_rate=Fraction(24), duration_s=40 / 24, codec="h264",
                     audio=())
    decoded = set()
    for attempt in range(8):
        out = tmp_path / f"run{attempt}.mp4"
        with VideoWriter(out, source=info, width=96, height=64) as writer:
            for index, rgb in enumerate(frames):
                writer.write(rgb, index, Fraction(1, 24))
        decoded.add(frames_rgb(out).tobytes())
    assert len(decoded) == 1


@pytest.mark.parametrize("vfr", [False, True])
def test_a_time_maps_to_the_frame_shown_at_that_time(tmp_path, vfr):
    times = [t / 1000 for t in frame_times_ms(30, 24, vfr)]
    info = probe_video(make_clip(tmp_path / "c.mkv", frames=30, audio=None, vfr=vfr))
    assert info.frame_times == pytest.approx(times, abs=1e-6)
    for index in (0, 7, 18, 29):
        assert info.frame_at(times[index]) == index  # at its own time
        assert info.frame_at(times[index] + 0.004) == index  # still shown 4 ms later (steps are >= 10 ms)
    assert info.frame_at(times[-1] + 5.0) == 29 and info.frame_at(0.0) == 0
    if vfr:  # where the average rate would land elsewhere
        assert any(round(times[i] * info.fps) != i for i in range(30))
