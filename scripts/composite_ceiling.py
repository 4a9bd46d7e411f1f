"""How far compositing could take a variant's output: its generation scored as is, composited with its
own MPD mask (`--composite`), and composited with the ground-truth edit region (an oracle no method has).

    python scripts/composite_ceiling.py EVAL_SET [--model toy] [--adapter PATH] [--preserve | --no-preserve]

The oracle keeps the source exactly wherever the edit changes nothing (the ground-truth masks, object and
shadow included, grown by 2 px and feathered), so what is left of the error is the generation inside the
edited region: if even this scores under a baseline, no mask can close the gap, only a better generator.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from genprop_cli.api import Clip, GenProp
from genprop_cli.config import PropagationOptions
from genprop_cli.evaluation.ceilings import true_region_weight
from genprop_cli.evaluation.runner import MethodOutput, composite, score
from genprop_cli.toy import read_eval_set

METRICS = ("psnr", "psnr_m", "residual_object", "residual_shadow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_set")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--adapter")
    parser.add_argument("--preserve", action=argparse.BooleanOptionalAction, default=None,
                        help="sample with (or without) --preserve; default: the variant's")
    args = parser.parse_args()
    model = GenProp.load(args.model, adapter=args.adapter, device="cpu")
    table: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for example in read_eval_set(args.eval_set):
        clip = Clip.from_frames(example.source, example.edited_first, name=example.name)
        options = PropagationOptions(task=example.task, preserve=args.preserve)
        frames = list(model.propagate(clip, options))
        video = np.stack([f.rgb for f in frames])
        mpd = np.stack([f.mask for f in frames]).astype(np.float32) / 255.0
        outputs = {
            "generated": video,
            "+composite (MPD mask)": composite(video, example.source, mpd),
            "+composite (true region)": composite(video, example.source, true_region_weight(example)),
        }
        for name, output in outputs.items():
            for metric, value in score(example, MethodOutput(output)).items():
                table[(example.task.value, name)][metric].append(min(value, 99.0))
    print("| task | output | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 2) + "|")
    for (task, name), scores in sorted(table.items()):
        # A metric's mean over the examples that have it (a removal without a shadow has no shadow residual).
        kept = {m: [v for v in scores.get(m, []) if not np.isnan(v)] for m in METRICS}
        cells = [f"{np.mean(kept[m]):.3g}" if kept[m] else "" for m in METRICS]
        print(f"| {task} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
