"""Throughput of genprop's video I/O layer vs the ffmpeg binary doing the same transcode.

    python benchmarks/bench_io.py [--seconds 5] [--size 1920x1080] [--fps 24] [--repeats 5]

Makes an H.264 + AAC test clip with the ffmpeg binary from imageio-ffmpeg (lavfi testsrc2 + sine), then
times, interleaved (the order alternates from one repeat to the next):

* ours:   probe_video -> iter_frames (decode to upright RGB uint8) -> VideoWriter (RGB -> yuv420p BT.709,
          libx264 at the preset/CRF given, AAC stream-copied, temp file renamed): the I/O path of
          ``genprop_cli.api.render`` with the model left out;
* ffmpeg: ``ffmpeg -i in.mp4 -c:v libx264 -preset P -crf C -pix_fmt yuv420p -c:a copy out.mp4``.

and, as a second pair, decoding alone: ``iter_frames`` (RGB arrays) vs ffmpeg decoding to raw rgb24
(``-pix_fmt rgb24 -f rawvideo``) into /dev/null; with ``--rgb-pair``, a third: the transcode against ffmpeg
made to take the same RGB round trip the model interface needs (``-vf format=rgb24`` before the yuv420p
encoder), which isolates what the I/O layer costs beyond those two colour conversions.

Threads: both sides run with their defaults, which are the same budget: libavcodec's automatic frame
threading for the H.264 decoder and x264's automatic thread count for the encoder. The x264 settings
each side really used are read back from the SEI x264 writes into its output and printed. Both
outputs must have as many frames as the input and keep the audio stream, or the script fails.

Ours runs in this process (modules already imported); ffmpeg's time includes starting the binary.
Besides wall-clock fps, the CPU time per frame (all threads; ffmpeg's from its rusage) is printed: on a
machine whose cores are shared with other work it is the steadier figure, and with every core busy
throughput follows it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import av
import imageio_ffmpeg

from genprop_cli.video_io import (
    EncoderOptions,
    VideoWriter,
    _host_has_avx512,
    iter_frames,
    output_pix_fmt,
    probe_video,
)

DEFAULTS = EncoderOptions()


def make_clip(ffmpeg: str, path: Path, seconds: float, size: str, fps: int, preset: str, crf: int) -> None:
    """A testsrc2 clip with a 440 Hz AAC tone, encoded like a typical camera/phone H.264 file."""
    subprocess.run(
        [ffmpeg, "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)],
        check=True,
    )  # fmt: skip


def ours_transcode(src: Path, dst: Path, encoder: EncoderOptions) -> int:
    info = probe_video(src)
    with VideoWriter(dst, source=info, width=info.width, height=info.height, encoder=encoder,
                     overwrite=True) as writer:
        for frame in iter_frames(src):
            writer.write(frame.rgb, frame.pts, frame.time_base)
    return info.num_frames


def ours_decode(src: Path) -> int:
    return sum(1 for _ in iter_frames(src))


def ffmpeg_transcode_cmd(ffmpeg: str, src: Path, dst: Path, encoder: EncoderOptions, x264_params: str) -> list[str]:
    cmd = [ffmpeg, "-v", "error", "-y", "-i", str(src), "-c:v", encoder.codec, "-preset", encoder.preset,
           "-crf", str(encoder.crf), "-pix_fmt", encoder.pix_fmt]
    if x264_params:
        cmd += ["-x264-params", x264_params]
    return cmd + ["-c:a", "copy", str(dst)]


def ffmpeg_decode_cmd(ffmpeg: str, src: Path) -> list[str]:
    return [ffmpeg, "-v", "error", "-i", str(src), "-an", "-pix_fmt", "rgb24", "-f", "rawvideo", "-y", os.devnull]


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) plus its finished children (the ffmpeg runs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    cpu, start = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - start, cpu_seconds() - cpu


def x264_threads(path: Path) -> str:
    """The thread settings x264 recorded in its SEI ("threads=3 lookahead_threads=1 sliced_threads=0")."""
    data = path.read_bytes()[:4_000_000]
    found = {key: re.search(rb" " + key.encode() + rb"=(\d+)", data) for key in
             ("threads", "lookahead_threads", "sliced_threads")}  # fmt: skip
    return " ".join(f"{k}={m.group(1).decode() if m else '?'}" for k, m in found.items())


def decoder_threads(path: Path) -> str:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # what iter_frames sets
        next(container.decode(stream))
        context = stream.codec_context
        return f"thread_type={context.thread_type.name} thread_count={context.thread_count}"


def summary(name: str, frames: int, runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    seconds = [wall for wall, _ in runs]
    best, median = frames / min(seconds), frames / statistics.median(seconds)
    cpu_ms = statistics.median(cpu for _, cpu in runs) / frames * 1000
    fps = " ".join(f"{frames / s:.1f}" for s in seconds)
    print(f"  {name:<8} median {median:6.1f} fps   best {best:6.1f} fps   CPU {cpu_ms:5.1f} ms/frame   (runs: {fps})")
    return median, best, cpu_ms


def ratios(frames: int, ours: list[tuple[float, float]], theirs: list[tuple[float, float]]) -> None:
    m_ours, b_ours, c_ours = summary("ours", frames, ours)
    m_ff, b_ff, c_ff = summary("ffmpeg", frames, theirs)
    pairs = [f[0] / o[0] for o, f in zip(ours, theirs)]
    print(f"  ratio ours/ffmpeg: median fps {m_ours / m_ff:.2f}, best fps {b_ours / b_ff:.2f}, "
          f"median of per-repeat ratios {statistics.median(pairs):.2f}; "
          f"CPU per frame ffmpeg/ours {c_ff / c_ours:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--preset", default=DEFAULTS.preset, help=f"x264 preset (default: {DEFAULTS.preset}, the project's)")
    parser.add_argument("--crf", type=int, default=DEFAULTS.crf, help=f"x264 CRF (default: {DEFAULTS.crf}, the project's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-decode", action="store_true", help="skip the decode-only pair")
    parser.add_argument("--rgb-pair", action="store_true", help="also time ffmpeg taking the same RGB round trip")
    parser.add_argument("--ffmpeg-x264-params", default="",
                        help="extra -x264-params for ffmpeg, e.g. asm=avx2 (what the writer sets on AVX-512 hosts)")
    args = parser.parse_args()

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    encoder = EncoderOptions(preset=args.preset, crf=args.crf)
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        src = tmp_path / "in.mp4"
        make_clip(ffmpeg, src, args.seconds, args.size, args.fps, args.preset, args.crf)
        info = probe_video(src)
        frames = info.num_frames
        # What the writer makes of --pix-fmt auto for this clip, spelled out for ffmpeg (yuv420p here).
        encoder = replace(encoder, pix_fmt=output_pix_fmt(encoder.pix_fmt, info))
        ours_out, ff_out = tmp_path / "ours.mp4", tmp_path / "ffmpeg.mp4"
        ff_cmd = ffmpeg_transcode_cmd(ffmpeg, src, ff_out, encoder, args.ffmpeg_x264_params)
        ff_dec = ffmpeg_decode_cmd(ffmpeg, src)
        ff_rgb = ff_cmd[:ff_cmd.index("-c:v")] + ["-vf", "format=rgb24"] + ff_cmd[ff_cmd.index("-c:v"):]

        # One untimed warm-up of each (page cache, lazy imports, x264 tables).
        ours_transcode(src, ours_out, encoder)
        subprocess.run(ff_cmd, check=True)

        t_ours, t_ff, d_ours, d_ff, r_ours, r_ff = [], [], [], [], [], []
        loads = [os.getloadavg()[0]]
        for repeat in range(args.repeats):
            pair = [("ours", lambda: ours_transcode(src, ours_out, encoder)),
                    ("ffmpeg", lambda: subprocess.run(ff_cmd, check=True))]
            for name, fn in pair if repeat % 2 == 0 else pair[::-1]:
                (t_ours if name == "ours" else t_ff).append(timed(fn))
            if not args.no_decode:
                pair = [("ours", lambda: ours_decode(src)), ("ffmpeg", lambda: subprocess.run(ff_dec, check=True))]
                for name, fn in pair if repeat % 2 == 0 else pair[::-1]:
                    (d_ours if name == "ours" else d_ff).append(timed(fn))
            if args.rgb_pair:
                pair = [("ours", lambda: ours_transcode(src, ours_out, encoder)),
                        ("ffmpeg", lambda: subprocess.run(ff_rgb, check=True))]
                for name, fn in pair if repeat % 2 == 0 else pair[::-1]:
                    (r_ours if name == "ours" else r_ff).append(timed(fn))
            loads.append(os.getloadavg()[0])

        # The outputs of the last repeat: same frame count as the input, audio kept, on both sides.
        checks = {name: probe_video(path) for name, path in (("ours", ours_out), ("ffmpeg", ff_out))}
        for name, out in checks.items():
            if out.num_frames != frames or len(out.audio) != len(info.audio):
                sys.exit(f"{name}: {out.num_frames} frames, {len(out.audio)} audio streams; "
                         f"input has {frames} frames, {len(info.audio)} audio streams")

        width, height = info.width, info.height
        print(f"clip: {width}x{height} {args.fps} fps, {frames} frames ({args.seconds:g} s), H.264 + AAC, "
              f"{src.stat().st_size / 1e6:.1f} MB")
        print(f"encode: {encoder.codec} preset={encoder.preset} crf={encoder.crf} pix_fmt={encoder.pix_fmt}, "
              f"audio stream-copied; {args.repeats} interleaved repeats after one warm-up")
        print(f"ffmpeg: {version} ({Path(ffmpeg).name})")
        print(f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}); CPU cores: {os.cpu_count()}; "
              f"1-min load average during the runs: {min(loads):.1f} to {max(loads):.1f}")
        print(f"decoder threads (ours): {decoder_threads(src)}; ffmpeg: its default (-threads auto)")
        print(f"x264 threads: ours {x264_threads(ours_out)}; ffmpeg {x264_threads(ff_out)}")
        extra = f" -x264-params {args.ffmpeg_x264_params}" if args.ffmpeg_x264_params else ""
        print(f"x264 asm: ours {'asm=avx2 (AVX-512 host)' if _host_has_avx512() else 'default'}; ffmpeg {extra.strip() or 'default'}")
        print(f"output frames: ours {checks['ours'].num_frames}, ffmpeg {checks['ffmpeg'].num_frames} "
              f"(input {frames}); sizes: ours {ours_out.stat().st_size / 1e6:.1f} MB, "
              f"ffmpeg {ff_out.stat().st_size / 1e6:.1f} MB")
        print()
        print("transcode (decode + encode + audio copy):")
        ratios(frames, t_ours, t_ff)
        if not args.no_decode:
            print("decode to RGB uint8 only:")
            ratios(frames, d_ours, d_ff)
        if args.rgb_pair:
            print("transcode, ffmpeg also through rgb24 (-vf format=rgb24):")
            ratios(frames, r_ours, r_ff)


if __name__ == "__main__":
    main()
