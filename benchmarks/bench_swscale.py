"""Cost and accuracy of swscale's RGB -> yuv420p conversion (the writer's) per interpolation flag, at 1080p.

    python benchmarks/bench_swscale.py [--repeats 30]

For each flag, prints the time per frame and the error against an exact BT.709 conversion whose chroma is
the 2x2 box average of the full-resolution chroma (luma: max error; Cb/Cr: mean and max). The frame has
smooth gradients, a block pattern, a rectangle on odd coordinates and scattered noise pixels, so point
sampling of the chroma shows. The writer uses AREA (it used swscale's default, bilinear, before this measurement).
"""

from __future__ import annotations

import argparse
import time

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

H, W = 1080, 1920
FLAGS = ("BILINEAR", "FAST_BILINEAR", "POINT", "AREA", "BICUBLIN")


def test_frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // W, yy * 255 // H, ((xx // 64 + yy // 64) % 2) * 200 + 20], -1).astype(np.uint8)
    img[301:701, 501:1301] = (250, 30, 40)
    img[::3, ::5] = rng.integers(0, 255, img[::3, ::5].shape)
    return img


def reference(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.709 limited range Y (full resolution) and Cb, Cr (2x2 box averages), as floats."""
    f = img.astype(np.float64) / 255
    luma = 0.2126 * f[..., 0] + 0.7152 * f[..., 1] + 0.0722 * f[..., 2]
    cb = 128 + 224 * (f[..., 2] - luma) / 1.8556
    cr = 128 + 224 * (f[..., 0] - luma) / 1.5748
    box = lambda c: c.reshape(H // 2, 2, W // 2, 2).mean((1, 3))  # noqa: E731
    return 16 + 219 * luma, box(cb), box(cr)


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    widths = (W, W // 2, W // 2)
    return [np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:, :w].astype(np.float64) for p, w in zip(frame.planes, widths)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    img = test_frame()
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    ref_y, ref_cb, ref_cr = reference(img)
    print(f"RGB -> yuv420p BT.709 at {W}x{H}, {args.repeats} conversions per flag (PyAV {av.__version__})")
    for name in FLAGS:
        reformatter, flag = VideoReformatter(), getattr(Interpolation, name)
        kwargs = dict(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG", interpolation=flag)
        out = reformatter.reformat(frame, **kwargs)  # warm-up: context set-up
        started = time.perf_counter()
        for _ in range(args.repeats):
            out = reformatter.reformat(frame, **kwargs)
        ms = (time.perf_counter() - started) / args.repeats * 1000
        y, cb, cr = planes(out)
        eu, ev = np.abs(cb - ref_cb), np.abs(cr - ref_cr)
        print(f"  {name:<14} {ms:6.2f} ms/frame   Y max err {np.abs(y - ref_y).max():6.2f}   "
              f"Cb/Cr mean err {eu.mean():.2f}/{ev.mean():.2f}   max {eu.max():.1f}/{ev.max():.1f}")


if __name__ == "__main__":
    main()
