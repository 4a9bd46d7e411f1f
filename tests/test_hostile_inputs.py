"""A corpus of malformed and unusual media, made here, run through the CLI: each case ends with a correct
output or a clear one-line error with its exit code, never a hang, a traceback or a half-written file. Then a
bounded property-based fuzz of the decode path and of the first-frame reader."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from clips import make_clip, pattern_frame
from genprop_cli.cli import app
from genprop_cli.errors import InputError
from genprop_cli.images import load_first_frame
from genprop_cli.video_io import iter_frames, probe_video

W, H = 96, 64
runner = CliRunner()
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


def lavfi(size: str = f"{W}x{H}", seconds: float = 1.0) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=s={size}:d={seconds}:r=24"]


# --- the corpus: (name -> builder writing the video, and what must happen) ---------------------------


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Path]  # folder -> input video path
    frames: int | None = None  # a correct output with this many frames, or
    exit_code: int | None = None  # a one-line error with this exit code
    message: str = ""  # ... containing this
    first_frame: Callable[[Path], Path] | None = None  # default: a plain RGB PNG of the right size
    extra: tuple[str, ...] = ()


def valid(folder: Path, name: str = "valid.mp4", frames: int = 40) -> Path:
    return make_clip(folder / name, width=W, height=H, frames=frames, audio="aac")


def renamed(suffix: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / f"wrong-extension{suffix}"
        shutil.copy(valid(folder, "src.mp4"), path)
        return path

    return build


def truncated(folder: Path) -> Path:
    data = valid(folder, "src.mp4").read_bytes()
    path = folder / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


def written(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    return build


def encoded(name: str, *options: str, size: str = f"{W}x{H}", seconds: float = 1.0) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        ffmpeg(*lavfi(size, seconds), *options, str(folder / name))
        return folder / name

    return build


def repeated_timestamps(folder: Path) -> Path:
    """Frames 10-12 all stamped at frame 9's time (the muxer keeps them): a broken timeline."""
    path = folder / "repeated-pts.mkv"
    ffmpeg(*lavfi(), "-c:v", "libx264", "-bf", "0", "-bsf:v",
           r"setts=pts=if(between(N\,10\,12)\,0\,PTS):dts=if(between(N\,10\,12)\,0\,DTS)", str(path))  # fmt: skip
    return path


def audio_only(folder: Path) -> Path:
    path = folder / "audio-only.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    return path


def a_folder(folder: Path) -> Path:
    (folder / "folder.mp4").mkdir()
    return folder / "folder.mp4"


def image(mode: str, name: str, **save) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        rgb = Image.fromarray(pattern_frame(0, W, H))
        img = rgb.convert(mode) if mode not in ("I;16",) else Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
        img.save(folder / name, **save)
        return folder / name

    return build


CORPUS: dict[str, Case] = {
    "zero-byte file": Case(written("empty.mp4", b""), exit_code=3),
    "text file named .mp4": Case(written("notes.mp4", b"not a video at all\n" * 50), exit_code=3),
    "folder named .mp4": Case(a_folder, exit_code=3),
    "truncated mp4": Case(truncated, exit_code=3, message="truncated"),
    "audio-only file": Case(audio_only, exit_code=3, message="no video stream"),
    "mp4 content named .mkv": Case(renamed(".mkv"), frames=40),
    "mp4 content named .avi": Case(renamed(".avi"), frames=40),
    "one-frame video": Case(encoded("one-frame.mp4", "-frames:v", "1", "-c:v", "libx264"), frames=1),
    "10-bit 4:2:0 source": Case(encoded("ten-bit.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p10le"), frames=24),
    "8-bit 4:4:4 source": Case(encoded("yuv444.mp4", "-c:v", "libx264", "-pix_fmt", "yuv444p"), frames=24),
    "raw H.264 stream, no timestamps": Case(encoded("raw.h264", "-c:v", "libx264", "-f", "h264"), frames=24),
    "repeated timestamps": Case(repeated_timestamps, frames=24),
    "huge declared frames": Case(
        encoded("huge.mp4", "-frames:v", "1", "-c:v", "libx264", "-preset", "ultrafast", size="9216x9216", seconds=0.05),
        exit_code=3, message="--max-pixels",
    ),  # fmt: skip
    "frame count over the limit": Case(lambda f: valid(f), exit_code=3, message="--max-frames", extra=("--max-frames", "20")),
    "first frame with alpha": Case(lambda f: valid(f), frames=40, first_frame=image("RGBA", "alpha.png")),
    "CMYK JPEG first frame": Case(lambda f: valid(f), frames=40, first_frame=image("CMYK", "cmyk.jpg", quality=95)),
    "16-bit first frame": Case(lambda f: valid(f), frames=40, first_frame=image("I;16", "deep.png")),
    "zero-byte first frame": Case(lambda f: valid(f), exit_code=3, first_frame=written("empty.png", b"")),
    "first frame of another shape": Case(
        lambda f: valid(f), exit_code=3, first_frame=lambda f: Image.new("RGB", (50, 50)).save(f / "sq.png") or f / "sq.png"
    ),  # fmt: skip
}


class Hang(Exception):
    pass


def _alarm(_signum, _frame):
    raise Hang("the command did not finish in time")


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_corpus_file_gives_a_correct_output_or_one_clear_error(name, tmp_path):
    case = CORPUS[name]
    video = case.build(tmp_path)
    frame = case.first_frame(tmp_path) if case.first_frame else image("RGB", "edited.png")(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "result.mp4"
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(120)
    try:
        result = runner.invoke(
            app, ["edit", str(video), "-f", str(frame), "-o", str(out), "--model", "random-tiny", "--steps", "1", *case.extra]
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "Traceback" not in result.output and not isinstance(result.exception, Hang), result.output
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()} == before  # inputs untouched
    if case.frames is not None:
        assert result.exit_code == 0, result.output
        with av.open(str(out)) as container:
            decoded = [f for f in container.decode(video=0)]
        assert len(decoded) == case.frames and (decoded[0].width, decoded[0].height) == (W, H)
        assert sorted(p.name for p in out_dir.iterdir()) == ["result.mp4"]
    else:
        assert result.exit_code == case.exit_code, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and case.message in lines[0], result.stderr
        assert list(out_dir.iterdir()) == []  # nothing half-written, no work folder


# --- bounded fuzzing of the decode path and the image reader -----------------------------------------


@pytest.fixture(scope="module")
def seed_clip(tmp_path_factory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("fuzz") / "seed.mp4", width=32, height=32, frames=6, audio="aac").read_bytes()


def mutate(data: bytes, cuts: list[tuple[float, bytes]], truncate: float | None) -> bytes:
    """Overwrites bytes at relative positions (uniform over the file: headers, index and payload alike)."""
    out = bytearray(data)
    for position, junk in cuts:
        at = min(int(position * len(out)), max(0, len(out) - 1))
        out[at : at + len(junk)] = junk
    return bytes(out[: int(truncate * len(out))] if truncate is not None else out)


MUTATIONS = st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=16)), max_size=6)
FRACTION = st.one_of(st.none(), st.floats(0, 1))

# Found by this fuzzer, fixed, and kept as properties of the corpus above: a stream whose codec header is
# damaged has no codec context (video: a clear error; audio: dropped), and raw elementary streams have
# packets with no timestamps at all (frames, not end-of-stream markers).


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=MUTATIONS, truncate=FRACTION)
def test_fuzzed_videos_decode_or_raise_a_domain_error(seed_clip, tmp_path_factory, cuts, truncate):
    path = tmp_path_factory.mktemp("case") / "fuzz.mp4"
    path.write_bytes(mutate(seed_clip, cuts, truncate))
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        info = probe_video(path)
        frames = sum(1 for _ in iter_frames(path))
        assert frames >= 1 and info.width > 0 and info.height > 0
    except InputError:
        pass  # the one allowed way to fail: a message for the user
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=MUTATIONS, truncate=FRACTION, suffix=st.sampled_from([".png", ".jpg", ".webp"]))
def test_fuzzed_first_frames_load_or_raise_a_domain_error(tmp_path_factory, cuts, truncate, suffix):
    folder = tmp_path_factory.mktemp("img")
    image("RGB", f"seed{suffix}")(folder)
    path = folder / f"fuzz{suffix}"
    path.write_bytes(mutate((folder / f"seed{suffix}").read_bytes(), cuts, truncate))
    try:
        rgb, _ = load_first_frame(path, (W, H))
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    except InputError:
        pass
