"""Video probing, streaming decode and streaming, atomic H.264 encode with audio kept.

This is the only module of the project that imports PyAV. Every failure caused by a bad input file
is raised as a :mod:`genprop_cli.errors` class whose message names the file.
"""

from __future__ import annotations

import bisect
import functools
import os
import platform
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from genprop_cli.config import EncoderOptions, InputLimits
from genprop_cli.errors import OutputError, VideoReadError
from genprop_cli.fileio import fsync_path, partial_owner, partial_path

__all__ = [
    "CONTAINER_FORMATS",
    "AudioStreamInfo",
    "EncoderOptions",
    "VideoFrame",
    "VideoInfo",
    "VideoWriter",
    "check_output_path",
    "iter_frames",
    "probe_video",
]

# Chroma subsampling for the encoder: swscale's area filter averages each 2x2 block, which is both cheaper
# than its default bilinear at 1080p (3.5 vs 4.6 ms a frame) and closer to the exact BT.709 average (chroma
# off by at most 0.6 levels instead of 26; benchmarks/bench_swscale.py), and decodes back closer to the input
# (docs/performance.md, "Video I/O vs ffmpeg").
_CHROMA_FILTER = Interpolation.AREA

# Errors PyAV raises for unreadable data; InvalidDataError is also a ValueError, I/O errors are OSError.
_AV_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError, RuntimeError)

# Output extension -> FFmpeg muxer name.
CONTAINER_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
_FASTSTART_FORMATS = {"mp4", "mov"}
# MP4/MOV muxers accept more (pcm, vorbis...) but players handle those badly there: transcode them.
_MP4_COPYABLE_AUDIO = frozenset({"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"})
_NAMED_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AAC_BITRATE_PER_CHANNEL = 64_000
_DEFAULT_TIME_BASE = Fraction(1, 90_000)


# --------------------------------------------------------------------------------------------------
# Data classes


@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio stream of the input, as probed."""

    index: int
    codec: str
    channels: int
    sample_rate: int
    language: str | None


@dataclass(frozen=True)
class VideoInfo:
    """What the rest of the program needs to know about the input video (no frame decoded but one)."""

    path: Path
    width: int
    height: int
    rotation: int
    num_frames: int
    time_base: Fraction
    average_rate: Fraction | None
    duration_s: float
    codec: str
    audio: tuple[AudioStreamInfo, ...]
    # Presentation time of each frame in seconds from the first, in order; empty when the stream has no
    # timestamps (raw elementary streams), where positions fall back to the average rate.
    frame_times: tuple[float, ...] = ()
    # The decoder's pixel format ("yuv420p", "yuv444p10le", "gbrp", ...): what `--pix-fmt auto` follows.
    # None where unknown (frames given from memory).
    pix_fmt: str | None = None

    def frame_at(self, seconds: float) -> int:
        """Index of the frame shown `seconds` after the first one: exact on variable frame rate clips."""
        if self.frame_times:
            return max(bisect.bisect_right(self.frame_times, seconds + 1e-6) - 1, 0)
        return round(seconds * self.fps)

    @property
    def fps(self) -> float:
        """Average frame rate; falls back to frames / duration when the container has none."""
        if self.average_rate:
            return float(self.average_rate)
        if self.duration_s > 0:
            return self.num_frames / self.duration_s
        return 0.0


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame, upright, with its presentation time."""

    index: int
    pts: int
    time_base: Fraction
    rgb: np.ndarray

    @property
    def time_s(self) -> float:
        """Presentation time in seconds."""
        return float(self.pts * self.time_base)


# --------------------------------------------------------------------------------------------------
# Reading


def _reason(error: BaseException) -> str:
    """The short human part of a PyAV/OS error (without the repeated file name)."""
    strerror = getattr(error, "strerror", None)
    return str(strerror or error or type(error).__name__)


def _open_input(path: Path) -> av.container.InputContainer:
    """Open a media file for reading, or raise VideoReadError naming it."""
    if not path.exists():
        raise VideoReadError(f"input video {path} does not exist")
    if not path.is_file():
        raise VideoReadError(f"input video {path} is not a file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"input video {path} is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except _AV_ERRORS as error:
        raise VideoReadError(
            f"cannot read {path}: not a video file, or it is corrupt ({_reason(error)})"
        ) from error


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The main video stream: the first one that is not a cover picture."""
    candidates = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    for stream in candidates:
        if stream.codec_context is not None:
            return stream
    if candidates:
        raise VideoReadError(f"{path} has a video stream whose codec cannot be identified (damaged or unsupported)")
    raise VideoReadError(f"{path} has no video stream")


def _fraction(value: object) -> Fraction | None:
    """PyAV rational (Fraction in <=18, AVRational in 19) -> Fraction, or None when unset or zero."""
    if not value:
        return None
    return Fraction(value.numerator, value.denominator)  # type: ignore[attr-defined]


def _codec_name(stream: av.stream.Stream) -> str:
    """Canonical codec name ("av1", not the decoder's "libdav1d")."""
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


def _language(stream: av.stream.Stream) -> str | None:
    language = stream.metadata.get("language")
    return None if not language or language == "und" else language


def _rotation_steps(rotation: float | None) -> int:
    """Counter-clockwise quarter turns that make the frame upright (what ffmpeg's autorotate does)."""
    return round((rotation or 0) / 90) % 4


def _to_rgb24(frame: av.VideoFrame, reformatter: VideoReformatter) -> av.VideoFrame:
    """Decoded frame -> rgb24 frame, using the frame's own colour tags (rotation side data kept).

    One reformatter serves a whole stream: ``frame.to_ndarray(format=...)`` sets up and tears down a
    swscale context and its thread pool for every frame, for the same pixels.
    """
    return reformatter.reformat(frame, format="rgb24", src_color_range=frame.color_range or None)


def _upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """rgb24 frame (from _to_rgb24) -> (H, W, 3) uint8 RGB, rotation applied."""
    rgb = frame.to_ndarray()
    steps = _rotation_steps(frame.rotation)
    if steps:
        rgb = np.rot90(rgb, steps)
    return np.ascontiguousarray(rgb)


def _audio_infos(container: av.container.InputContainer) -> tuple[AudioStreamInfo, ...]:
    return tuple(
        AudioStreamInfo(
            index=stream.index,
            codec=_codec_name(stream),
            channels=stream.codec_context.channels,
            sample_rate=stream.codec_context.sample_rate,
            language=_language(stream),
        )
        for stream in container.streams.audio
        if stream.codec_context is not None  # an unidentifiable codec (damaged header): not kept
    )


@dataclass
class _PacketScan:
    """What one demux pass over the video stream tells: packet count, time span, first frame."""

    count: int = 0
    first_pts: int | None = None
    end_pts: int | None = None
    first_frame: av.VideoFrame | None = None
    pts: list[int] = field(default_factory=list)  # every packet's pts (decode order), when all have one


def _scan_video_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                        path: Path) -> _PacketScan:
    """Count video packets without decoding them; decode only until the first frame comes out."""
    scan = _PacketScan()
    try:
        for packet in container.demux(stream):
            if _is_flush(packet):
                continue
            scan.count += 1
            if packet.pts is not None:
                scan.pts.append(packet.pts)
                end = packet.pts + (packet.duration or 0)
                scan.first_pts = packet.pts if scan.first_pts is None else min(scan.first_pts, packet.pts)
                scan.end_pts = end if scan.end_pts is None else max(scan.end_pts, end)
            if scan.first_frame is None:
                scan.first_frame = next(iter(packet.decode()), None)
        if scan.first_frame is None and scan.count:
            scan.first_frame = next(iter(stream.codec_context.decode(None)), None)
    except _AV_ERRORS as error:
        raise VideoReadError(
            f"cannot read {path}: corrupt video data after {scan.count} packets ({_reason(error)})"
        ) from error
    return scan


def _is_flush(packet: av.Packet) -> bool:
    """The empty packets demux() yields at the end. A packet with data but no timestamps is a frame: raw
    elementary streams (.h264, .hevc) carry none, and Matroska B-frames lack a dts."""
    return packet.size == 0


def _duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                scan: _PacketScan, time_base: Fraction) -> float:
    """Video stream duration; else the span of its packets; else the container's duration."""
    if stream.duration:
        return float(stream.duration * time_base)
    if scan.first_pts is not None and scan.end_pts is not None and scan.end_pts > scan.first_pts:
        return float((scan.end_pts - scan.first_pts) * time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def probe_video(path: Path, limits: InputLimits = InputLimits()) -> VideoInfo:
    """Describe a video by demuxing its packets; only the first frame is decoded (for rotation/size)."""
    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        limits.check_size(path, stream.codec_context.width or 0, stream.codec_context.height or 0)
        time_base = _fraction(stream.time_base) or _DEFAULT_TIME_BASE
        scan = _scan_video_packets(container, stream, path)
        if scan.count == 0 or scan.first_frame is None:
            raise VideoReadError(f"{path} has no video frames that can be decoded")
        limits.check_frames(path, scan.count)
        limits.check_size(path, scan.first_frame.width, scan.first_frame.height)
        if stream.frames and scan.count < stream.frames:
            # The container's index (e.g. an MP4 moov written first) lists frames whose data is missing.
            raise VideoReadError(
                f"{path} is truncated or corrupt: its index lists {stream.frames} video frames "
                f"but only {scan.count} can be read"
            )
        frame = scan.first_frame
        rotation = _rotation_steps(frame.rotation) * 90
        width, height = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            rotation=rotation,
            num_frames=scan.count,
            time_base=time_base,
            average_rate=_fraction(stream.average_rate),
            duration_s=_duration_s(container, stream, scan, time_base),
            codec=_codec_name(stream),
            audio=_audio_infos(container),
            frame_times=_frame_times(scan, time_base),
            pix_fmt=frame.format.name,
        )


def _frame_times(scan: _PacketScan, time_base: Fraction) -> tuple[float, ...]:
    """Presentation times (s, from the first frame) of the scanned frames; () unless every packet had a pts."""
    if not scan.pts or len(scan.pts) != scan.count:
        return ()
    return tuple(float((p - scan.first_pts) * time_base) for p in sorted(scan.pts))


def _decoded(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
             path: Path) -> Iterator[av.VideoFrame]:
    """Decoded frames, with PyAV errors turned into VideoReadError."""
    frames = container.decode(stream)
    count = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except _AV_ERRORS as error:
            raise VideoReadError(
                f"cannot decode {path}: corrupt video data after {count} frames ({_reason(error)})"
            ) from error
        count += 1
        yield frame


def _pts_step(stream: av.video.stream.VideoStream, time_base: Fraction) -> int:
    """Nominal frame duration in time_base units, used only to fill missing timestamps."""
    rate = _fraction(stream.average_rate) or _fraction(stream.guessed_rate) or Fraction(25)
    return max(1, round(1 / (rate * time_base)))


def iter_frames(path: Path) -> Iterator[VideoFrame]:
    """Decode the video lazily, one upright RGB frame at a time (never the whole clip in memory).

    Errors surface on the first ``next()``: VideoReadError when the file cannot be read or nothing
    decodes.
    """
    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        time_base = _fraction(stream.time_base) or _DEFAULT_TIME_BASE
        step = _pts_step(stream, time_base)
        to_rgb = VideoReformatter()
        index = 0
        previous_pts: int | None = None
        for frame in _decoded(container, stream, path):
            pts = frame.pts
            if pts is None:
                pts = 0 if previous_pts is None else previous_pts + step
            rgb = _upright_rgb(_to_rgb24(frame, to_rgb))
            yield VideoFrame(index=index, pts=pts, time_base=time_base, rgb=rgb)
            previous_pts = pts
            index += 1
        if index == 0:
            raise VideoReadError(f"{path} has no video frames that can be decoded")


# --------------------------------------------------------------------------------------------------
# Output paths


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_output_path(output: Path, *, input_path: Path, overwrite: bool) -> None:
    """Raise OutputError unless ``output`` can be written (right extension, folder exists, not the input)."""
    output, input_path = Path(output), Path(input_path)
    suffix = output.suffix.lower()
    if suffix not in CONTAINER_FORMATS:
        shown = f"'{output.suffix}'" if output.suffix else "no extension"
        raise OutputError(f"output {output} has {shown}; use one of {', '.join(CONTAINER_FORMATS)}")
    folder = output.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist")
    if _same_file(output, input_path):
        raise OutputError(f"output {output} is the input video; write to another file")
    if output.is_dir():
        raise OutputError(f"output {output} is a folder")
    if output.exists() and not overwrite:
        raise OutputError(f"output {output} exists; pass --overwrite to replace it")


def remove_stale_partials(output: Path) -> list[Path]:
    """Deletes temp files of ``output`` left by writers whose process is gone (``kill -9``, power loss)."""
    output = Path(output)
    removed = []
    for temp in output.parent.glob(f".{output.name}.partial-*"):
        pid = partial_owner(temp, output)
        if pid is not None and pid != os.getpid() and not _process_alive(pid):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True




# --------------------------------------------------------------------------------------------------
# Writing: audio


class _CopiedAudio:
    """An audio stream remuxed packet for packet."""

    def __init__(self, output: av.container.OutputContainer, source: av.audio.stream.AudioStream):
        self._output = output
        self.stream = output.add_stream_from_template(source)

    def mux(self, packet: av.Packet, shift_s: float = 0.0) -> None:
        if shift_s:
            shift = round(shift_s / packet.time_base)
            packet.pts = packet.pts - shift if packet.pts is not None else None
            packet.dts = packet.dts - shift if packet.dts is not None else None
        packet.stream = self.stream
        self._output.mux(packet)

    def flush(self) -> None:
        """Nothing is buffered when copying."""


class _TranscodedAudio:
    """An audio stream decoded, resampled to fltp with a named layout, and encoded to AAC."""

    def __init__(self, output: av.container.OutputContainer, source: av.audio.stream.AudioStream):
        self._output = output
        self._decoder = source.codec_context
        channels = source.codec_context.channels
        # Decoders of some codecs (pcm_mulaw, wmav2) report an unnamed "N channels" layout that the AAC
        # encoder rejects with error 22; name it from the channel count.
        layout = _NAMED_LAYOUTS.get(channels, "stereo")
        rate = _nearest_aac_rate(source.codec_context.sample_rate)
        self.stream = output.add_stream("aac", rate=rate)
        self.stream.codec_context.layout = layout
        self.stream.codec_context.format = "fltp"
        self.stream.codec_context.bit_rate = _AAC_BITRATE_PER_CHANNEL * av.AudioLayout(layout).nb_channels
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._rate = rate
        self._next_pts: int | None = None
        self._shift_s = 0.0

    def mux(self, packet: av.Packet, shift_s: float = 0.0) -> None:
        self._shift_s = shift_s
        for frame in self._decoder.decode(packet):
            self._encode(frame)

    def flush(self) -> None:
        for frame in self._decoder.decode(None):
            self._encode(frame)
        self._encode(None)
        for packet in self.stream.encode(None):
            self._output.mux(packet)

    def _encode(self, frame: av.AudioFrame | None) -> None:
        if self._next_pts is None and frame is not None:
            self._next_pts = max(0, round(((frame.time or 0.0) - self._shift_s) * self._rate))
        for resampled in self._resampler.resample(frame):
            # Count samples from the first frame's time, as ffmpeg does: source timestamps in coarse
            # units (Matroska's ms) would otherwise give the AAC packets jittery, overlapping times.
            resampled.pts = self._next_pts
            resampled.time_base = Fraction(1, self._rate)
            self._next_pts += resampled.samples
            for packet in self.stream.encode(resampled):
                self._output.mux(packet)


def _nearest_aac_rate(rate: int) -> int:
    return min(_AAC_RATES, key=lambda candidate: abs(candidate - rate))


def _can_copy_audio(codec: str, container_format: str, output: av.container.OutputContainer) -> bool:
    if container_format in _FASTSTART_FORMATS:
        return codec in _MP4_COPYABLE_AUDIO
    return codec in output.supported_codecs


def _packet_start_s(packet: av.Packet) -> float | None:
    timestamp = packet.pts if packet.pts is not None else packet.dts
    if timestamp is None or not packet.time_base:
        return None
    return float(timestamp * packet.time_base)


class _AudioInterleaver:
    """Copies or transcodes the source's audio streams, advancing a second demuxer over the source.

    Why a second demuxer instead of buffering or a second pass: audio packets go to the muxer as the
    video advances, so memory stays flat however long the clip is, and the file is written only once.
    """

    def __init__(self, source: av.container.InputContainer, output: av.container.OutputContainer,
                 container_format: str, stream_indices: list[int], warnings: list[str]):
        self._source = source
        self._source_path = Path(source.name)
        self._routes: dict[int, _CopiedAudio | _TranscodedAudio] = {}
        for index in stream_indices:
            stream = source.streams[index]
            codec = _codec_name(stream)
            if _can_copy_audio(codec, container_format, output):
                route: _CopiedAudio | _TranscodedAudio = _CopiedAudio(output, stream)
            else:
                route = _TranscodedAudio(output, stream)
                warnings.append(f"audio stream {index} ({codec}) transcoded to aac")
            for key in ("language", "title"):
                if stream.metadata.get(key):
                    route.stream.metadata[key] = stream.metadata[key]
            self._routes[index] = route
        self._packets = source.demux(*(source.streams[i] for i in stream_indices))
        self._pending: av.Packet | None = None
        self._exhausted = False
        self.start_s = 0.0  # source time that becomes time zero of the output (a trimmed range's start)

    def mux_until(self, time_s: float) -> None:
        """Mux every source audio packet that starts before ``time_s`` (source time)."""
        while (packet := self._next_packet()) is not None:
            start = _packet_start_s(packet)
            if start is not None and start >= time_s:
                self._pending = packet
                return
            self._mux(packet, start)

    def finish(self, cutoff_s: float | None) -> None:
        """Mux the remaining packets (dropping those that start at or after ``cutoff_s``), then flush."""
        while (packet := self._next_packet()) is not None:
            start = _packet_start_s(packet)
            if cutoff_s is not None and start is not None and start >= cutoff_s:
                continue
            self._mux(packet, start)
        for route in self._routes.values():
            route.flush()

    def _mux(self, packet: av.Packet, start: float | None) -> None:
        """Packets before the output's time zero are dropped; the rest move back by it."""
        if self.start_s and start is not None and start < self.start_s - 1e-9:
            return
        self._routes[packet.stream.index].mux(packet, self.start_s)

    def close(self) -> None:
        self._source.close()

    def _next_packet(self) -> av.Packet | None:
        if self._pending is not None:
            packet, self._pending = self._pending, None
            return packet
        while not self._exhausted:
            try:
                packet = next(self._packets)
            except StopIteration:
                self._exhausted = True
                break
            except _AV_ERRORS as error:
                raise VideoReadError(
                    f"cannot read the audio of {self._source_path}: corrupt data ({_reason(error)})"
                ) from error
            if not _is_flush(packet):
                return packet
        return None


# --------------------------------------------------------------------------------------------------
# Writing: video


@functools.cache
def _host_has_avx512() -> bool:
    """True on an x86-64 Linux host whose CPU advertises AVX-512 (other hosts: False, left alone)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and " avx512f" in line for line in cpuinfo.splitlines())


def _muxer_options(container_format: str) -> dict[str, str]:
    if container_format in _FASTSTART_FORMATS:
        return {"movflags": "+faststart"}
    # Matroska can store negative times; without this a copied AAC stream's priming packet (pts < 0)
    # makes the muxer shift every stream, so all frame times would move by ~21 ms.
    return {"avoid_negative_ts": "disabled"}


def _chroma_subsampling(pix_fmt: str) -> tuple[bool, bool]:
    """Whether the pixel format halves chroma horizontally / vertically (then sizes must be even)."""
    components = av.VideoFormat(pix_fmt, 2, 2).components
    if len(components) < 3:
        return False, False
    return components[1].width < 2, components[1].height < 2


# What `--pix-fmt auto` writes for an input whose chroma samples are this many luma pixels apart
# (across, down); any other spacing (4:2:0, 4:1:1, 4:4:0) or no chroma at all gets yuv420p.
_KEPT_CHROMA = {(1, 1): "yuv444p", (2, 1): "yuv422p"}


def output_pix_fmt(requested: str, source: VideoInfo) -> str:
    """The pixel format written for `--pix-fmt requested`: itself, or for "auto" the input's chroma where it
    is finer than 4:2:0 (4:4:4 and RGB -> yuv444p, 4:2:2 -> yuv422p), else yuv420p (also for frames from
    memory and unknown formats)."""
    if requested != "auto":
        return requested
    return _KEPT_CHROMA.get(_chroma_spacing(source.pix_fmt), "yuv420p")


def _chroma_spacing(pix_fmt: str | None) -> tuple[int, int] | None:
    """Luma pixels per chroma sample across and down: (1, 1) 4:4:4 or RGB, (2, 1) 4:2:2, (2, 2) 4:2:0;
    None for grey, Bayer mosaics and names FFmpeg does not know. A palette gives each pixel its own colour."""
    try:
        fmt = av.VideoFormat(pix_fmt or "", 16, 16)
    except ValueError:
        return None
    if fmt.has_palette:
        return 1, 1
    if fmt.is_bayer or len(fmt.components) < 3:
        return None
    chroma = fmt.components[1]
    return 16 // max(chroma.width, 1), 16 // max(chroma.height, 1)


def _pad_to(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Grow the frame to (height, width) by repeating its last row/column."""
    pad_h, pad_w = height - rgb.shape[0], width - rgb.shape[1]
    if pad_h == 0 and pad_w == 0:
        return rgb
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _rescale_pts(pts: int, src: Fraction, dst: Fraction) -> int:
    if src == dst:
        return int(pts)
    return round(Fraction(pts) * src / dst)


class VideoWriter:
    """Streaming H.264 writer; remuxes the source's audio; atomic: temp file in the target folder, renamed on success.

    Frames are written upright (no rotation metadata) and converted RGB -> ``pix_fmt`` with the BT.709
    matrix in TV range, and the stream is tagged BT.709 so players do not guess. Each frame keeps the pts
    the caller gives (the encoder runs in the source's time base), so variable frame rate survives.

    Chroma: ``encoder.pix_fmt``, or with "auto" the input's where it is 4:4:4 or 4:2:2, else yuv420p
    (:func:`output_pix_fmt`). Odd sizes: 4:2:0 needs even dimensions (4:2:2 an even width). Rather than
    cropping away a row/column of the edit or resampling the whole frame, an odd width/height is padded
    by one replicated edge pixel (e.g. 321x241 -> 322x242) and a note is added to ``warnings``.

    Audio: every source audio stream is stream-copied when the container plays it well, else transcoded
    to AAC; subtitle/data streams are dropped with a note. Use as a context manager: an exception
    (KeyboardInterrupt included) aborts and deletes the temp file, a clean exit closes and renames.
    """

    def __init__(self, path: Path, *, source: VideoInfo, width: int, height: int,
                 encoder: EncoderOptions = EncoderOptions(), overwrite: bool = False,
                 audio: bool = True, trim_start: bool = False) -> None:
        """``trim_start``: the first frame written becomes time zero (a trimmed range: audio before it is
        dropped and the rest moved back with the video)."""
        self.path = Path(path)
        self._trim_start = trim_start
        self._offset: int | None = None  # writer time-base ticks subtracted from every pts (trim_start)
        self.width, self.height = int(width), int(height)
        self.warnings: list[str] = []
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        check_output_path(self.path, input_path=source.path, overwrite=overwrite)
        self._source = source
        self._overwrite = overwrite
        self._encoder = encoder
        self._time_base = source.time_base or _DEFAULT_TIME_BASE
        self._pix_fmt = output_pix_fmt(encoder.pix_fmt, source)
        self._coded_width, self._coded_height = self._coded_size(self._pix_fmt)
        self._frames_written = 0
        self._last_pts: int | None = None
        self._frame_step: int | None = None
        self._nudged_pts = False
        self._finished = False
        self._output: av.container.OutputContainer | None = None
        self._audio: _AudioInterleaver | None = None
        # One RGB -> pix_fmt converter and one RGB staging frame for the whole stream: a new swscale
        # context (and its thread pool) and a freshly allocated frame for every frame give the same
        # pictures, only slower (docs/performance.md, "Video I/O vs ffmpeg").
        self._to_pix_fmt = VideoReformatter()
        self._staging: tuple[av.VideoFrame, np.ndarray] | None = None
        self._temp = partial_path(self.path)
        # Safety net for a writer that is dropped without close()/abort(): the temp file still goes.
        weakref.finalize(self, self._temp.unlink, missing_ok=True)
        try:
            self._open(audio)
        except BaseException as error:
            self.abort()
            if isinstance(error, _AV_ERRORS) and not isinstance(error, (VideoReadError, OutputError)):
                raise OutputError(f"cannot write {self.path}: {_reason(error)}") from error
            raise

    # -- set-up

    def _coded_size(self, pix_fmt: str) -> tuple[int, int]:
        even_w, even_h = _chroma_subsampling(pix_fmt)
        coded_w = self.width + (self.width % 2 if even_w else 0)
        coded_h = self.height + (self.height % 2 if even_h else 0)
        if (coded_w, coded_h) != (self.width, self.height):
            self.warnings.append(
                f"padded {self.width}x{self.height} to {coded_w}x{coded_h} for {pix_fmt} "
                "(--pix-fmt yuv444p keeps the exact size)"
            )
        return coded_w, coded_h

    def _open(self, audio: bool) -> None:
        container_format = CONTAINER_FORMATS[self.path.suffix.lower()]
        if not self._source.path.is_file():  # frames that never came from a file: nothing to carry over
            options = _muxer_options(container_format)
            self._output = av.open(str(self._temp), mode="w", format=container_format, options=options)
            self._video = self._add_video_stream(container_format)
            return
        source = _open_input(self._source.path)
        try:
            audio_indices = self._audio_to_keep(source, audio)
            self._note_dropped_streams(source)
            options = _muxer_options(container_format)
            self._output = av.open(str(self._temp), mode="w", format=container_format, options=options)
            if source.metadata.get("title"):
                self._output.metadata["title"] = source.metadata["title"]
            # Size, format and options are set before anything is muxed: the first mux opens every codec.
            self._video = self._add_video_stream(container_format)
            if audio_indices:
                self._audio = _AudioInterleaver(source, self._output, container_format, audio_indices,
                                                self.warnings)
        finally:
            if self._audio is None:
                source.close()

    def _audio_to_keep(self, source: av.container.InputContainer, audio: bool) -> list[int]:
        wanted = [info.index for info in self._source.audio]
        available = {stream.index for stream in source.streams.audio}
        indices = [index for index in wanted if index in available]
        if indices and not audio:
            self.warnings.append(f"{len(indices)} audio stream(s) dropped (audio disabled)")
            return []
        return indices

    def _note_dropped_streams(self, source: av.container.InputContainer) -> None:
        main_video = _video_stream(source, self._source.path)
        for stream in source.streams:
            if stream.type == "audio" or stream is main_video:
                continue
            codec = _codec_name(stream) if stream.codec_context else "unknown codec"
            self.warnings.append(f"{stream.type} stream {stream.index} ({codec}) dropped")

    def _add_video_stream(self, container_format: str) -> av.video.stream.VideoStream:
        encoder = self._encoder
        stream = self._output.add_stream(encoder.codec, rate=self._source.average_rate or None)
        stream.width, stream.height = self._coded_width, self._coded_height
        stream.pix_fmt = self._pix_fmt
        # The encoder must run in the source's time base: with the default 1/rate, source pts of a VFR
        # clip are rejected ("Invalid argument", error 22) and frame times would be rounded.
        stream.codec_context.time_base = self._time_base
        context = stream.codec_context
        # Frame threading, as the ffmpeg CLI does. PyAV's default thread_type is SLICE, which makes
        # libx264 use sliced threads (2 on a 2-core machine): about 1.3x slower at 1080p than x264's
        # default frame threads (3 there) (docs/performance.md, "Video I/O vs ffmpeg").
        context.thread_type = "AUTO"
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = 1  # MPEG (TV) range
        if encoder.codec in ("libx264", "libx265"):
            stream.options = {"crf": str(encoder.crf), "preset": encoder.preset}
        if encoder.codec == "libx264" and _host_has_avx512():
            # x264's AVX-512 kernels make its MB-tree rate control vary from run to run (seen with
            # PyAV's bundled x264: same frames, different pictures). Capping at AVX2 restores
            # same input -> same file, at no measurable speed cost (docs/performance.md).
            stream.options["x264-params"] = "asm=avx2"
        if encoder.codec == "libx265":
            stream.options["x265-params"] = "log-level=error"
            if container_format in _FASTSTART_FORMATS:
                stream.codec_tag = "hvc1"  # Apple players need hvc1; ffmpeg's default is hev1.
        return stream

    # -- writing

    def write(self, rgb: np.ndarray, pts: int, time_base: Fraction) -> None:
        """Encode one upright (height, width, 3) uint8 RGB frame shown at ``pts * time_base`` seconds."""
        if self._finished:
            raise RuntimeError(f"VideoWriter for {self.path} is already closed")
        rgb = self._checked_frame(rgb)
        source_pts = _rescale_pts(pts, Fraction(time_base), self._time_base)
        if self._offset is None:
            self._offset = source_pts if self._trim_start else 0
            if self._audio is not None:
                self._audio.start_s = float(self._offset * self._time_base)
        frame_pts = self._monotonic_pts(source_pts - self._offset)
        staging, pixels = self._staging or self._new_staging()
        pixels[...] = _pad_to(rgb, self._coded_height, self._coded_width)
        frame = self._to_pix_fmt.reformat(staging, format=self._pix_fmt, dst_colorspace="ITU709",
                                          dst_color_range="MPEG", interpolation=_CHROMA_FILTER)
        # An rgb24 encoder gets the staging frame itself, and may keep a reference to it: never reuse it then.
        self._staging = None if frame is staging else (staging, pixels)
        frame.pts = frame_pts
        frame.time_base = self._time_base
        try:
            for packet in self._video.encode(frame):
                self._output.mux(packet)
            if self._audio is not None:
                self._audio.mux_until(float((frame_pts + self._offset) * self._time_base))
        except BaseException as error:
            self._fail(error)
        self._frames_written += 1

    def _new_staging(self) -> tuple[av.VideoFrame, np.ndarray]:
        """An rgb24 frame of the coded size (laid out as VideoFrame.from_ndarray's) and a numpy view of its pixels."""
        frame = av.VideoFrame(self._coded_width, self._coded_height, "rgb24")
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(self._coded_height, plane.line_size)
        return frame, rows[:, : 3 * self._coded_width].reshape(self._coded_height, self._coded_width, 3)

    def _checked_frame(self, rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb)
        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(
                f"frame shape {rgb.shape} does not match the writer's {self.height}x{self.width}x3"
            )
        if rgb.dtype != np.uint8:
            raise ValueError(f"frame dtype must be uint8, got {rgb.dtype}")
        return np.ascontiguousarray(rgb)

    def _monotonic_pts(self, pts: int) -> int:
        """Encoders need strictly increasing pts; nudge a repeated/backward one and say so."""
        if self._last_pts is not None and pts <= self._last_pts:
            if not self._nudged_pts:
                self.warnings.append(f"frame {self._frames_written}: pts {pts} not after the previous "
                                     f"frame's; later frames nudged forward where needed")
                self._nudged_pts = True
            pts = self._last_pts + 1
        if self._last_pts is not None:
            self._frame_step = pts - self._last_pts
        self._last_pts = pts
        return pts

    # -- finishing

    def _video_end_s(self) -> float:
        """End of the last written frame (its pts plus the previous frame interval)."""
        step = self._frame_step
        if step is None:
            fps = self._source.fps
            step = round(1 / (fps * self._time_base)) if fps > 0 else 0
        return float((self._last_pts + step) * self._time_base)

    def close(self) -> Path:
        """Flush the encoders, finish the audio, sync and rename the temp file to the output path."""
        if self._finished:
            raise RuntimeError(f"VideoWriter for {self.path} is already closed")
        try:
            if self._frames_written == 0:
                raise OutputError(f"cannot write {self.path}: no video frames were written")
            for packet in self._video.encode(None):
                self._output.mux(packet)
            if self._audio is not None:
                shortened = self._frames_written < self._source.num_frames
                end_s = self._video_end_s() + float(self._offset * self._time_base)
                self._audio.finish(end_s if shortened else None)
                self._audio.close()
                self._audio = None
            self._output.close()
            self._output = None
            fsync_path(self._temp)
            if not self._overwrite and self.path.exists():
                raise OutputError(f"output {self.path} exists; pass --overwrite to replace it")
            os.replace(self._temp, self.path)
        except BaseException as error:
            self._fail(error)
        self._finished = True
        fsync_path(self.path.parent)
        return self.path

    def _fail(self, error: BaseException) -> None:
        """Abort, then re-raise; PyAV/OS errors become one OutputError naming the output."""
        self.abort()
        if isinstance(error, _AV_ERRORS) and not isinstance(error, (VideoReadError, OutputError)):
            raise OutputError(f"cannot write {self.path}: {_reason(error)}") from error
        raise error

    def abort(self) -> None:
        """Stop writing and delete the temp file; safe to call more than once."""
        self._finished = True
        for closeable in (self._audio, self._output):
            if closeable is None:
                continue
            try:
                closeable.close()
            except _AV_ERRORS:
                pass  # The file is being thrown away; a failing trailer write does not matter.
        self._audio = None
        self._output = None
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is None:
            if not self._finished:
                self.close()
        else:
            self.abort()
