"""Peak resident memory of a whole `render` (decode -> GenProp -> encode + audio) vs clip length.

    python benchmarks/bench_memory.py [--lengths 64 512 2048] [--chunk 32] [--model toy]

Each length runs in a fresh Python process (so peaks do not mix) on the example scene with a tone track,
with the chosen variant (default: the default variant, `toy`) on the CPU. Decoding and encoding stream and the stitcher holds only the
overlap, so the peak should not grow with the clip's length.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from genprop_cli.api import GenProp, OutputOptions, PropagationOptions, RunRequest, Task, render
clip_path, frame_path, out_path, chunk, variant = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
model = GenProp.load(variant or None, device="cpu")
loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
request = RunRequest(video=clip_path, first_frames=(frame_path,), options=PropagationOptions(task=Task.REMOVE, chunk=chunk),
                     outputs=OutputOptions(output=Path(out_path)))
result = render(model, request)
print(json.dumps({"frames": result.frames, "seconds": time.perf_counter() - t0, "loaded_mib": loaded_mib,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--model", default="", help="variant (default: the registry's default)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "examples"))
    from make_example import write_clip  # the example scene, any length

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.lengths:
            clip = Path(tmp) / f"clip{n}.mp4"
            write_clip(clip, frames=n)
            out = Path(tmp) / f"out{n}.mp4"
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(clip), str(ROOT / "examples/clip-remove.png"), str(out), str(args.chunk), args.model],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows.append({"length": n, **json.loads(proc.stdout.strip().splitlines()[-1])})
    base = rows[0]
    print(f"render on CPU, variant {args.model or 'default'}, 256x144 with AAC audio, chunk {args.chunk}")
    print(f"{'frames':>7} {'seconds':>8} {'after load MiB':>15} {'peak MiB':>9} {'peak / first':>13}")
    for r in rows:
        print(f"{r['frames']:>7} {r['seconds']:8.1f} {r['loaded_mib']:15.0f} {r['peak_mib']:9.0f} {r['peak_mib'] / base['peak_mib']:13.3f}")


if __name__ == "__main__":
    main()
