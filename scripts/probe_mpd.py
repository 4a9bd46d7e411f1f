"""How well the MPD marks what an edit changes, and nothing else, on an eval set: per example, the MPD's mean
probability inside and outside the true modified region, the area it marks (> 0.5) against the true area, and,
for track examples, the J&F of its masks (>= 0.5, as `genprop eval` scores them) and the area it marks when the
first frame is left unedited (identity: it should mark none). The probabilities are the calibrated ones the
commands write (`GenPropAdapter.mask_probability`).

    python scripts/probe_mpd.py build/toy2/probe-waves --model toy --adapter A.safetensors [--tasks remove,track]
"""

from __future__ import annotations

import argparse

import numpy as np

from genprop_cli.api import Clip, GenProp
from genprop_cli.config import PropagationOptions, Task
from genprop_cli.evaluation.metrics import jaccard_and_f
from genprop_cli.toy import read_eval_set


def mpd_masks(model: GenProp, source: np.ndarray, first: np.ndarray, task: Task) -> np.ndarray:
    """The MPD's soft masks (T, H, W) in [0, 1] for one propagation."""
    frames = model.propagate(Clip.from_frames(source, first), PropagationOptions(task=task))
    return np.stack([f.mask for f in frames]).astype(np.float32) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_set")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--adapter")
    parser.add_argument("--tasks", default="remove,track", help="comma-separated tasks to probe")
    args = parser.parse_args()
    model = GenProp.load(args.model, adapter=args.adapter, device="cpu")
    tasks = {Task(t) for t in args.tasks.split(",")}
    print("| example | mean p inside | mean p outside | marked area | true area | J&F | identity: marked area |")
    print("|---|---|---|---|---|---|---|")
    scores = []
    for example in read_eval_set(args.eval_set):
        if example.task not in tasks:
            continue
        soft, truth = mpd_masks(model, example.source, example.edited_first, example.task), example.masks
        identity = jf = ""
        if example.task is Task.TRACK:
            scores.append(jaccard_and_f(soft >= 0.5, truth)["JF"])
            jf = f"{scores[-1]:.2f}"
            identity = f"{np.mean(mpd_masks(model, example.source, example.source[0], Task.EDIT) > 0.5):.3f}"
        print(f"| {example.name} | {soft[truth].mean():.2f} | {soft[~truth].mean():.2f} | {np.mean(soft > 0.5):.3f} "
              f"| {truth.mean():.3f} | {jf} | {identity} |")
    if scores:
        print(f"\nmean track J&F: {np.mean(scores):.3f} over {len(scores)} examples")


if __name__ == "__main__":
    main()
