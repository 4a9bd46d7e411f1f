"""Synthetic media for tests: small clips, broken files and images, all made on the fly (nothing checked in)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
from PIL import Image

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# Encoder names PyAV needs for the codec names tests use.
_AUDIO_ENCODERS = {"opus": "libopus", "mp3": "libmp3lame"}
_VFR_STEPS_MS = (33, 50, 67, 41, 100)


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """A smooth gradient with a coloured square that moves with ``index`` (so frames differ)."""
    y, x = np.meshgrid(np.linspace(0, 1, height, dtype=np.float32),
                       np.linspace(0, 1, width, dtype=np.float32), indexing="ij")
    rgb = np.stack([40 + 170 * x, 40 + 170 * y, 200 - 60 * (x + y)], axis=-1).astype(np.uint8)
    side = max(4, min(width, height) // 4)
    left = (index * 2) % max(1, width - side)
    top = (index * 1) % max(1, height - side)
    rgb[top:top + side, left:left + side] = (230, 60, 60)
    return rgb


def orientation_pattern(width: int, height: int) -> np.ndarray:
    """An image whose quadrants all differ, so any rotation or flip is visible."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2, : width // 2] = (255, 0, 0)
    rgb[: height // 2, width // 2:] = (0, 255, 0)
    rgb[height // 2:, : width // 2] = (0, 0, 255)
    rgb[height // 2:, width // 2:] = (255, 255, 0)
    return rgb


def frame_times_ms(frames: int, fps: int, vfr: bool) -> list[int]:
    """Presentation times in milliseconds: regular, or cycling through uneven steps for VFR."""
    if not vfr:
        return [round(i * 1000 / fps) for i in range(frames)]
    times, now = [], 0
    for i in range(frames):
        times.append(now)
        now += _VFR_STEPS_MS[i % len(_VFR_STEPS_MS)]
    return times


def _sine(seconds: float, rate: int, channels: int, frequency: float) -> np.ndarray:
    t = np.arange(int(round(seconds * rate)), dtype=np.float32) / rate
    tone = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return np.repeat(tone[None, :], channels, axis=0)


def _add_audio_stream(container: av.container.OutputContainer, codec: str, rate: int, channels: int,
                      language: str | None) -> av.audio.stream.AudioStream:
    layout = "mono" if channels == 1 else "stereo"
    stream = container.add_stream(_AUDIO_ENCODERS.get(codec, codec), rate=rate, layout=layout)
    if language:
        stream.metadata["language"] = language
    return stream


def _encode_tone(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                 seconds: float, frequency: float, delay_s: float = 0.0) -> None:
    rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
    samples = _sine(seconds - delay_s, rate, channels, frequency)
    layout = "mono" if channels == 1 else "stereo"
    chunk = 1024
    first = round(delay_s * rate)
    for start in range(0, samples.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + chunk]),
                                           format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = first + start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_clip(path: Path, *, width: int = 96, height: int = 64, frames: int = 40, fps: int = 24,
              audio: str | None = "aac", languages: Sequence[str | None] = (None,), vfr: bool = False,
              rotation: int = 0, codec: str = "libx264", audio_rate: int = 48000, channels: int = 2,
              title: str | None = None, faststart: bool = True, audio_delay_s: float = 0.0,
              pix_fmt: str | None = None) -> Path:
    """Write a clip whose container follows the suffix; one audio stream per entry of ``languages``.

    ``vfr`` gives uneven frame steps (time base 1/1000); ``rotation`` stores a display matrix
    (counter-clockwise degrees, like ``ffmpeg -display_rotation``); the tone starts ``audio_delay_s``
    after the first frame; ``pix_fmt`` is the encoder's pixel format (default: yuv420p, or yuv444p for an
    odd size).
    """
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart and path.suffix in (".mp4", ".mov") else {}
    times_ms = frame_times_ms(frames, fps, vfr)
    with av.open(str(path), mode="w", options=options) as container:
        if title:
            container.metadata["title"] = title
        video = container.add_stream(codec, rate=fps)
        # 4:2:0 needs even sizes; odd-sized test sources use 4:4:4.
        video.width, video.height = width, height
        video.pix_fmt = pix_fmt or ("yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p")
        video.codec_context.time_base = Fraction(1, 1000) if vfr else Fraction(1, fps)
        video.options = {"preset": "ultrafast", "crf": "12"} if codec == "libx264" else {}
        if rotation:
            video.set_display_rotation(rotation)
        audio_streams = [_add_audio_stream(container, audio, audio_rate, channels, language)
                         for language in languages] if audio else []
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(index, width, height), format="rgb24")
            frame.pts = times_ms[index] if vfr else index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        last_step_ms = _VFR_STEPS_MS[(frames - 1) % len(_VFR_STEPS_MS)] if vfr else 1000 / fps
        seconds = (times_ms[-1] + last_step_ms) / 1000
        for number, stream in enumerate(audio_streams):
            _encode_tone(container, stream, seconds, frequency=440 * (number + 1), delay_s=audio_delay_s)
    return path


def make_audio_only(path: Path, *, codec: str = "aac", seconds: float = 1.0) -> Path:
    """An audio file without any video stream."""
    with av.open(str(path), mode="w") as container:
        stream = _add_audio_stream(container, codec, 48000, 2, None)
        _encode_tone(container, stream, seconds, 440)
    return Path(path)


def add_subtitles(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` (.mkv) with an extra SRT subtitle stream (ffmpeg binary)."""
    srt = Path(target).with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:00,500\nhello\n\n", encoding="utf-8")
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(source), "-i", str(srt), "-map", "0",
                    "-map", "1", "-c", "copy", str(target)], check=True)
    return Path(target)


def make_truncated(source: Path, target: Path, fraction: float = 0.3) -> Path:
    """The first ``fraction`` of ``source``'s bytes."""
    data = Path(source).read_bytes()
    Path(target).write_bytes(data[: int(len(data) * fraction)])
    return Path(target)


def make_zero_byte(path: Path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def make_text_file(path: Path) -> Path:
    """A text file, whatever its name says."""
    Path(path).write_text("this is not a video\n" * 20, encoding="utf-8")
    return Path(path)


def ffmpeg_decode_rgb(path: Path, width: int, height: int) -> np.ndarray:
    """Decode with the ffmpeg binary (autorotate on) to (N, height, width, 3) RGB, as a reference."""
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def audio_packets(path: Path, stream_index: int) -> list[bytes]:
    """Payload bytes of every audio packet of one stream (demux only)."""
    with av.open(str(path)) as container:
        stream = container.streams[stream_index]
        return [bytes(packet) for packet in container.demux(stream)
                if packet.dts is not None and packet.size]


def audio_duration_s(path: Path, stream_index: int) -> float:
    """Decoded sample count / sample rate of one audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams[stream_index]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def audio_onset_s(path: Path, stream_index: int, threshold: float = 0.05) -> float:
    """Presentation time of the first decoded sample louder than ``threshold`` (full scale = 1)."""
    with av.open(str(path)) as container:
        stream = container.streams[stream_index]
        for frame in container.decode(stream):
            raw = frame.to_ndarray()
            samples = raw / 32768.0 if np.issubdtype(raw.dtype, np.integer) else raw.astype(np.float64)
            loud = np.nonzero(np.abs(samples.reshape(-1, frame.samples)).max(axis=0) > threshold)[0]
            if len(loud):
                return float(frame.time + loud[0] / frame.sample_rate)
    raise AssertionError(f"no audible sample in stream {stream_index} of {path}")


def make_image(path: Path, size: tuple[int, int], mode: str = "RGB", *,
               exif_orientation: int | None = None) -> Path:
    """Save the orientation pattern at ``size`` = (width, height) in ``mode`` (RGB, RGBA, CMYK, I;16, P, L).

    The format follows the suffix (CMYK needs .jpg or .tiff); ``exif_orientation`` adds that EXIF tag.
    """
    width, height = size
    rgb = orientation_pattern(width, height)
    image = Image.fromarray(rgb, "RGB")
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(np.full((height, width), 128, np.uint8), "L"))
    elif mode == "I;16":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(gray.astype("<u2"))  # Pillow infers I;16
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    elif mode != "RGB":
        image = image.convert(mode)
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    image.save(path, **kwargs)
    return Path(path)
