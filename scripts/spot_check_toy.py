"""Scores the shipped `toy` variant and the baselines on a few toy scenes (the spot check in docs/results.md).

    python scripts/spot_check_toy.py [--guidance 1 2] [--model NAME] [--adapter FILE] [--preserve | --no-preserve] [--preserve-margin N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from genprop_cli.api import Clip, GenProp
from genprop_cli.config import PropagationOptions, Task
from genprop_cli.evaluation import metrics
from genprop_cli.evaluation.baselines import BASELINES
from genprop_cli.evaluation.runner import composite
from genprop_cli.toy import toy_example

CASES = ((Task.REMOVE, 4252), (Task.REMOVE, 1234), (Task.EDIT, 4252))


def scores(video: np.ndarray, example) -> dict[str, float]:
    out = {"psnr": metrics.psnr(video, example.target), "psnr_m": metrics.psnr_m(video, example.source, example.masks)}
    if example.task is Task.REMOVE:
        residual = metrics.removal_residual(video, example.source, example.target, example.object_masks,
                                            example.shadow_masks)
        out |= {"object_residual": residual["object_mean"], "shadow_residual": residual["shadow_mean"]}
    return {k: round(float(v), 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--adapter", help="adapter weights instead of the variant's")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--preserve", action=argparse.BooleanOptionalAction, default=None,
                        help="sample with (or without) --preserve; default: the variant's")
    parser.add_argument("--preserve-margin", type=int, help="default: the variant's")
    args = parser.parse_args()
    model = GenProp.load(args.model, adapter=args.adapter, device="cpu")
    for task, seed in CASES:
        example = toy_example(task, seed, frames=48, size=64)
        for guidance in args.guidance:
            started = time.perf_counter()
            options = PropagationOptions(task=task, guidance=guidance, preserve=args.preserve,
                                         preserve_margin=args.preserve_margin)
            frames = list(model.propagate(Clip.from_frames(example.source, example.edited_first), options))
            video = np.stack([f.rgb for f in frames])
            soft = np.stack([f.mask for f in frames]).astype(np.float32) / 255
            composited = composite(video, example.source, soft)
            print(f"{task.value} seed {seed} guidance {guidance} ({time.perf_counter() - started:.0f} s): "
                  f"{scores(video, example)}; +composite {scores(composited, example)}; "
                  f"mask area {soft.mean():.3f} (truth {example.masks.mean():.3f})", flush=True)
        for name, baseline in BASELINES.items():
            if name != "mask_then_inpaint" or task is Task.REMOVE:
                print(f"    {name}: {scores(baseline(example.source, example.edited_first), example)}")


if __name__ == "__main__":
    main()
