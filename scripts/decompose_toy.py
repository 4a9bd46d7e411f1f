"""Where a toy variant loses quality, stage by stage, on one evaluation set (docs/results.md, "Decomposition").

    python scripts/decompose_toy.py EVAL_SET [EVAL_SET ...] [--model toy] [--adapter PATH] [--long-frames 96]
        [--preserve | --no-preserve] [--preserve-threshold P] [--tasks-only] [--combine]

For every example of each set, in the order the signal goes through the model:
  1. VAE: decode(encode(source)) against the source: nothing the model decodes can beat this;
  2. backbone alone: the frozen I2V model sampled from the unedited first frame with the adapter's
     residuals off (sce_scale 0), against the source: what the image-to-video prior keeps by itself;
  3. identity propagation: GenProp with the UNEDITED first frame (task edit), against the source: how
     much of the clip the SCE carries through when nothing was changed;
  4. the task itself: GenProp with the edited first frame, PSNR against the ground truth and PSNR_m
     (outside the true edit region, against the source), next to the classical baselines and to the first
     stage's ceilings: the ground truth through the VAE, as is and composited inside the true edit region
     (what a perfect generator would score without and with a perfect `--composite`).
Then one long clip (--long-frames, three 32-frame chunks at 96) is propagated and its PSNR_m printed per
frame and per chunk, to show drift within and between chunks. Stages 3 and 4 and the long clip are sampled
as the variant does by default; --preserve / --no-preserve and --preserve-threshold choose (with --preserve,
what the MPD leaves unmodified is anchored to the source's latents). --tasks-only runs stage 4 alone (GenProp
and the baselines), a third of the time, to compare adapters or sampling options. --combine prints one
table over the examples of all the sets (held-out sets made in parts, docs/results.md, tenth session).
A metric's mean is over the examples that have it (shadow residuals: removals with a shadow).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from genprop_cli.api import Clip, GenProp, to_model_frames
from genprop_cli.config import PropagationOptions, Task
from genprop_cli.evaluation import metrics
from genprop_cli.evaluation.baselines import BASELINES
from genprop_cli.evaluation.ceilings import first_stage_ceilings
from genprop_cli.evaluation.runner import MethodOutput, applies, genprop_method, score
from genprop_cli.toy import read_eval_set, toy_example


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) in [-1, 1] -> (F, H, W, 3) uint8."""
    return ((frames.float().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def vae_round_trip(model: GenProp, video: np.ndarray) -> np.ndarray:
    pipe = model.pipeline
    size = (video.shape[2], video.shape[1])
    return to_uint8(pipe.decode_latents(pipe.encode_frames(to_model_frames(list(video), size))))


def backbone_alone(model: GenProp, video: np.ndarray, steps: int, seed: int = 0) -> np.ndarray:
    """The frozen I2V model from the first frame, adapter residuals scaled to 0, one chunk of the whole clip."""
    pipe = model.pipeline
    size = (video.shape[2], video.shape[1])
    frames = to_model_frames(list(video), size)
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    result = pipe.sample_chunk(
        source_latents=pipe.encode_frames(frames), condition=pipe.encode_condition(frames[0], generator),
        anchor=pipe.embed_image(frames[0]), task=Task.EDIT, steps=steps, guidance=1.0, generator=generator,
        sce_scale=0.0,
    )  # fmt: skip
    return to_uint8(pipe.decode_latents(result.latents))


def propagated(model: GenProp, source: np.ndarray, first: np.ndarray, task: Task, **options) -> np.ndarray:
    clip = Clip.from_frames(source, first)
    return np.stack([f.rgb for f in model.propagate(clip, PropagationOptions(task=task, **options))])


def decompose(
    model: GenProp, examples, steps: int, sampling: dict[str, object], tasks_only: bool = False
) -> dict[str, dict[str, list[float]]]:
    """The stages' mean scores; `sampling`: the preserve options GenProp runs with (None: the variant's)."""
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    genprop = genprop_method(model, **sampling)  # the evaluation's own method: video and MPD masks
    for example in examples:
        source = example.source
        if not tasks_only:
            vae = metrics.psnr(vae_round_trip(model, source), source)
            table["1. VAE round trip (vs source)"]["psnr"].append(vae)
            alone = metrics.psnr(backbone_alone(model, source, steps), source)
            table["2. backbone alone (vs source)"]["psnr"].append(alone)
            identity = propagated(model, source, source[0], Task.EDIT, **sampling)
            table["3. identity propagation (vs source)"]["psnr"].append(metrics.psnr(identity, source))
        task = example.task.value
        for suffix, output in genprop(example).items():  # as generated, and "+composite"
            for name, value in score(example, output).items():
                table[f"4. {task}: genprop{suffix}"][name].append(value)
        for name, baseline in BASELINES.items():
            if applies(name, example.task):
                for metric, value in score(example, MethodOutput(baseline(source, example.edited_first))).items():
                    table[f"4. {task}: {name}"][metric].append(value)
        for suffix, output in first_stage_ceilings(example, lambda v: vae_round_trip(model, v)).items():
            for metric, value in score(example, output).items():
                table[f"4. {task}: VAE(ground truth){suffix}"][metric].append(value)
    return table


def mean_cell(values: list[float]) -> str:
    """The mean over the examples that have the metric (a removal without a shadow has no shadow residual),
    infinite PSNRs counted as 99 dB."""
    finite = np.minimum([v for v in values if not np.isnan(v)], 99.0)
    return f"{np.mean(finite):.3g}" if len(finite) else ""


def print_table(title: str, table: dict[str, dict[str, list[float]]]) -> None:
    columns = ("psnr", "psnr_m", "residual_object", "residual_shadow", "mpd_JF")
    print(f"\n### {title}\n")
    print("| stage | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for stage in sorted(table):
        cells = [mean_cell(table[stage].get(c, [])) for c in columns]
        print(f"| {stage} | " + " | ".join(cells) + " |")


def drift(model: GenProp, frames: int, seeds: tuple[int, ...], chunk: int, sampling: dict[str, object]) -> None:
    """Per-frame PSNR_m of edits and removals on long clips, and the mean per chunk."""
    curves, names = [], []
    for task in (Task.EDIT, Task.REMOVE):
        for seed in seeds:
            example = toy_example(task, seed, frames=frames, size=64)
            video = propagated(model, example.source, example.edited_first, task, **sampling)
            curves.append([metrics.psnr_m(video[t : t + 1], example.source[t : t + 1], example.masks[t : t + 1])
                           for t in range(frames)])  # fmt: skip
            names.append(f"{task.value} seed {seed}")
    curves = np.minimum(curves, 99.0)
    curve = curves.mean(axis=0)
    print(f"\n### PSNR_m per frame over {frames} frames (edit and remove, seeds {list(seeds)}, mean)\n")
    print(" ".join(f"{v:.1f}" for v in curve))
    starts = range(0, frames, chunk)
    print("\nper chunk of", chunk, "frames:", ", ".join(f"{np.mean(curve[s : s + chunk]):.2f}" for s in starts))
    for name, one in zip(names, curves):  # one clip can drift while the mean hides it
        print(f"  {name}:", ", ".join(f"{np.mean(one[s : s + chunk]):.2f}" for s in starts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_sets", nargs="+")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--adapter")
    parser.add_argument("--long-frames", type=int, default=96)
    parser.add_argument("--long-seeds", type=int, nargs="+", default=[7, 8])
    parser.add_argument("--preserve", action=argparse.BooleanOptionalAction, default=None,
                        help="sample GenProp with (or without) --preserve; default: the variant's")
    parser.add_argument("--preserve-threshold", type=float, help="as the commands' option; default: the variant's")
    parser.add_argument("--tasks-only", action="store_true", help="stage 4 only (GenProp and the baselines)")
    parser.add_argument("--combine", action="store_true", help="one table over all the sets' examples")
    args = parser.parse_args()
    model = GenProp.load(args.model, adapter=args.adapter, device="cpu")
    steps = model.variant.spec.defaults.steps
    sampling = {"preserve": args.preserve, "preserve_threshold": args.preserve_threshold}
    if args.combine:  # one table over every example of the sets, each example weighing the same
        tables = {" + ".join(args.eval_sets): [e for eval_set in args.eval_sets for e in read_eval_set(eval_set)]}
    else:
        tables = {eval_set: read_eval_set(eval_set) for eval_set in args.eval_sets}
    for title, examples in tables.items():
        print_table(title, decompose(model, examples, steps, sampling, args.tasks_only))
    if args.long_frames:
        drift(model, args.long_frames, tuple(args.long_seeds), model.variant.spec.defaults.chunk, sampling)


if __name__ == "__main__":
    main()
