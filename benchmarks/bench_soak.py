"""Soak: many short jobs through one batch process; memory at the start and the end, and every output checked.

    python benchmarks/bench_soak.py [--jobs 200] [--model random-tiny] [--steps 1] [--bound-mib 64]

Makes `--jobs` short clips (varied length, size, audio or none, all four tasks), writes a jobs file, loads the
model once and runs `batch.run_batch` over them in this process (what `genprop batch` does). Resident memory
(VmRSS) is sampled after the first 10 jobs (allocator and caches warmed up) and after the last; the run fails
if it grew by more than `--bound-mib`. Every output must decode and have exactly its input's frame count and
size, and the audio stream count must match: no output lost or corrupted.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

import av
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from clips import make_clip, pattern_frame  # noqa: E402  (the test suite's synthetic clip maker)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_jobs(folder: Path, count: int, seed: int) -> tuple[Path, dict[str, tuple[int, int, int, int]]]:
    """Clips + edited first frames + a jobs file; returns it and, per video, (frames, width, height, audio streams)."""
    rng = random.Random(seed)
    tasks = ["edit", "remove", "insert", "track"]
    expected, lines = {}, []
    for i in range(count):
        frames, (w, h) = rng.randint(4, 40), rng.choice([(64, 48), (96, 64), (80, 80), (66, 50)])
        audio = rng.choice(["aac", None])
        video = make_clip(folder / f"clip{i:03d}.mp4", width=w, height=h, frames=frames, audio=audio)
        Image.fromarray(pattern_frame(i, w, h)[:, ::-1].copy()).save(folder / f"clip{i:03d}.png")
        lines.append(f"{video.name} clip{i:03d}.png {tasks[i % 4]} out/clip{i:03d}.mp4")
        expected[f"clip{i:03d}.mp4"] = (frames, w, h, 1 if audio else 0)
    (folder / "out").mkdir()
    jobs = folder / "jobs.txt"
    jobs.write_text("\n".join(lines) + "\n")
    return jobs, expected


def check_output(path: Path, frames: int, width: int, height: int, audio: int) -> str | None:
    """None when the output is whole and right, else what is wrong with it."""
    try:
        with av.open(str(path)) as container:
            decoded = list(container.decode(video=0))
            streams = len(container.streams.audio)
    except (OSError, av.error.FFmpegError) as exc:
        return f"does not decode ({exc})"
    if len(decoded) != frames:
        return f"{len(decoded)} frames, expected {frames}"
    if (decoded[0].width, decoded[0].height) != (width, height):
        return f"size {decoded[0].width}x{decoded[0].height}, expected {width}x{height}"
    if streams != audio:
        return f"{streams} audio streams, expected {audio}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--model", default="random-tiny")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bound-mib", type=float, default=64.0, help="allowed RSS growth from job 10 to the end")
    args = parser.parse_args()

    from genprop_cli.api import GenProp
    from genprop_cli.batch import parse_jobs, run_batch
    from genprop_cli.config import PropagationOptions, RunSettings

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        jobs_file, expected = make_jobs(folder, args.jobs, args.seed)
        made_s = time.perf_counter() - t0
        model = GenProp.load(args.model, device="cpu")
        loaded = rss_mib()
        samples: dict[int, float] = {}

        def on_job(result) -> None:
            done = len(samples_done) + 1
            samples_done.append(result)
            if done in (10, args.jobs) or done % 50 == 0:
                gc.collect()
                samples[done] = rss_mib()

        samples_done: list = []
        t0 = time.perf_counter()
        summary = run_batch(model, parse_jobs(jobs_file), RunSettings(options=PropagationOptions(steps=args.steps)), on_job=on_job)
        run_s = time.perf_counter() - t0
        problems = []
        for result in summary.results:
            if result.status != "ok":
                problems.append(f"{result.video}: {result.status} {result.error}")
                continue
            name = Path(result.output).name
            issue = check_output(Path(result.output), *expected[name])
            if issue:
                problems.append(f"{name}: {issue}")
        leftovers = [p.name for p in (folder / "out").iterdir() if p.name.startswith(".")]

    first, last = samples[min(samples)], samples[max(samples)]
    growth = last - first
    print(f"soak: {args.jobs} jobs, variant {args.model}, {args.steps} step(s), one process "
          f"(clips made in {made_s:.0f} s, batch {run_s:.0f} s, {run_s / args.jobs:.2f} s/job)")
    print(f"RSS after load {loaded:.0f} MiB; after job " + ", ".join(f"{k}: {v:.0f} MiB" for k, v in sorted(samples.items())))
    print(f"growth job {min(samples)} -> {max(samples)}: {growth:+.1f} MiB (bound {args.bound_mib:.0f} MiB)")
    print(f"outputs: {summary.ok} ok, {summary.failed} failed; checked {len(expected) - len(problems)} whole and right; "
          f"hidden leftovers: {len(leftovers)}")
    for problem in problems[:10]:
        print(f"  PROBLEM {problem}")
    ok = not problems and not leftovers and growth <= args.bound_mib and summary.ok == args.jobs
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
