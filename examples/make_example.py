"""Regenerates the bundled examples: synthetic clips with a tone, and edited first frames for them.

    python examples/make_example.py   # writes examples/clip.mp4, clip-remove.png, clip-edit.png and
                                      # examples/toy.mp4, toy-remove.png, toy-edit.png, toy-track.png

`toy.mp4` is a toy-world scene (the world the default `toy` variant was trained on, drawn from a seed
that no training clip used) with its exact edited first frames from `genprop_cli.toy`.

The scene: a slowly panning textured background, a red disc that moves and casts a soft shadow, and a
blue square. `clip-remove.png` is frame 1 without the disc and its shadow; `clip-edit.png` is frame 1
with the disc recoloured green. Deterministic; uses PyAV directly (the package is not needed).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

W, H, FRAMES, FPS, RATE = 256, 144, 96, 24, 48000
HERE = Path(__file__).resolve().parent


def background(t: int) -> np.ndarray:
    """A gradient with a stripe texture that pans one pixel every other frame."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    shift = t / 2
    stripes = 0.5 + 0.5 * np.sin((x + shift) / 7.0) * np.cos(y / 11.0)
    img = np.stack([0.55 + 0.25 * stripes, 0.6 + 0.2 * (y / H), 0.45 + 0.3 * ((x + shift) / W % 1)], axis=-1)
    return img


def disc_mask(t: int, dx: float = 0.0, dy: float = 0.0, radius: float = 16.0) -> np.ndarray:
    cx, cy = 40 + 1.8 * t + dx, 70 + 18 * np.sin(t / 12) + dy
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return np.clip(radius + 0.5 - np.hypot(x - cx, y - cy), 0, 1)


def render(t: int, disc_colour: tuple[float, float, float] | None) -> np.ndarray:
    img = background(t)
    square = np.zeros((H, W), np.float32)
    sx = int(180 - 0.6 * t)
    square[20:50, max(sx, 0) : max(sx + 30, 0)] = 1
    img = img * (1 - square[..., None]) + square[..., None] * np.array([0.15, 0.25, 0.85])
    if disc_colour is not None:
        shadow = disc_mask(t, dx=7, dy=9, radius=17) * 0.45
        img = img * (1 - shadow[..., None])
        disc = disc_mask(t)
        img = img * (1 - disc[..., None]) + disc[..., None] * np.array(disc_colour)
    return (img.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def write_clip(path: Path, frames: int = FRAMES) -> None:
    """Encodes the scene (H.264) with a 440 Hz tone (AAC) of the same length."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        video.options = {"crf": "20", "preset": "veryfast"}
        audio = out.add_stream("aac", rate=RATE)
        audio.layout = "stereo"
        for t in range(frames):
            frame = av.VideoFrame.from_ndarray(render(t, (0.85, 0.12, 0.1)), format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        _write_tone(out, audio, frames)


TOY_SEED, TOY_FRAMES, TOY_SIZE = 4252, 48, 64


def write_toy_example() -> None:
    """The toy clip (48 frames: two chunks of 32 sharing 16) and the exact first frame of three edits."""
    from genprop_cli.config import Task
    from genprop_cli.toy import toy_example

    examples = {t: toy_example(t, TOY_SEED, frames=TOY_FRAMES, size=TOY_SIZE) for t in (Task.REMOVE, Task.EDIT, Task.TRACK)}
    frames = examples[Task.REMOVE].source
    assert all((e.source == frames).all() for e in examples.values()), "one scene for all three edits"
    write_frames(HERE / "toy.mp4", frames)
    for task, example in examples.items():
        Image.fromarray(example.edited_first).save(HERE / f"toy-{task.value}.png")


def write_frames(path: Path, frames: np.ndarray) -> None:
    """Encodes RGB frames (H.264, CRF 12: the toy frames are small) with a 440 Hz tone (AAC)."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "12", "preset": "veryfast"}
        audio = out.add_stream("aac", rate=RATE)
        audio.layout = "stereo"
        for rgb in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        _write_tone(out, audio, len(frames))


def _write_tone(out, audio, frames: int) -> None:
    seconds = np.arange(int(RATE * frames / FPS)) / RATE
    tone = (0.2 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)
    for start in range(0, tone.size, 1024):
        block = np.tile(tone[start : start + 1024], (2, 1))
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
        for packet in audio.encode(frame):
            out.mux(packet)
    for packet in audio.encode():
        out.mux(packet)


def main() -> None:
    write_toy_example()
    print(f"wrote {HERE / 'toy.mp4'}, toy-remove.png, toy-edit.png, toy-track.png")
    write_clip(HERE / "clip.mp4")
    Image.fromarray(render(0, None)).save(HERE / "clip-remove.png")
    Image.fromarray(render(0, (0.1, 0.8, 0.2))).save(HERE / "clip-edit.png")
    print(f"wrote {HERE / 'clip.mp4'}, clip-remove.png, clip-edit.png")


if __name__ == "__main__":
    main()
