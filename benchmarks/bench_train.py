"""Training speed and peak memory on the CPU: gradient checkpointing off vs on, side by side in one run.

    python benchmarks/bench_train.py [--steps 20] [--frames 8] [--size 64]

Each setting trains the random-tiny variant's adapter for `--steps` steps on a small synthetic DAVIS-layout
dataset, in a fresh process (so peaks do not mix); steps/s excludes model loading.
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
import json, sys
from genprop_cli.training.trainer import TrainConfig, train
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
r = train(cfg)
print(json.dumps({"steps_per_s": r.steps_per_s, "peak_rss_mib": r.peak_rss_mib, "total": r.mean_terms_last_10["total"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from vis_datasets import scene, write_davis  # the test suite's synthetic DAVIS writer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_davis(Path(tmp) / "davis", {f"s{i}": scene(frames=24, size=(96, 64), seed=i) for i in range(4)})
        for checkpointing in (False, True):
            cfg = dict(data=str(data), output=str(Path(tmp) / f"run{checkpointing}"), steps=args.steps,
                       frames=args.frames, width=args.size, height=args.size, save_every=args.steps,
                       gradient_checkpointing=checkpointing, device="cpu")  # fmt: skip
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, check=True)
            rows.append({"checkpointing": checkpointing, **json.loads(proc.stdout.strip().splitlines()[-1])})
    print(f"train random-tiny adapter on CPU, batch 1, {args.frames} frames {args.size}x{args.size}, {args.steps} steps")
    print(f"{'grad checkpointing':>19} {'steps/s':>8} {'peak RSS MiB':>13} {'mean loss (last 10)':>20}")
    for r in rows:
        print(f"{str(r['checkpointing']):>19} {r['steps_per_s']:8.2f} {r['peak_rss_mib']:13.0f} {r['total']:20.4f}")
    print(f"speed ratio on/off: {rows[1]['steps_per_s'] / rows[0]['steps_per_s']:.3f}, "
          f"peak RSS ratio on/off: {rows[1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f}")


if __name__ == "__main__":
    main()
