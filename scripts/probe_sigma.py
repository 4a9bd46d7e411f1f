"""At which noise levels the SCE carries the source through (issue 12): the denoising error of identity pairs (a
clip paired with itself, nothing edited) at fixed noise levels, with the adapter's residuals on and off (sce_scale
1 and 0: the backbone alone). A perfect copy has no error at any level; the backbone alone has the error of
guessing the clip from its first frame (large at high sigma) and of telling noise from texture (at low sigma).

    python scripts/probe_sigma.py build/toy2/probe-waves --model toy --adapter A.safetensors [--examples 3]

Prints, per sigma, the training loss's per-pixel term ((sigma^2+1)/sigma^2 * (denoised - x0)^2, averaged) and the
denoised latents' SNR, 10*log10(var(x0) / mse), for both settings.
"""

from __future__ import annotations

import argparse
import functools
import math

import numpy as np
import torch

from genprop_cli.api import GenProp
from genprop_cli.config import Task
from genprop_cli.families.svd.objective import denoising_loss, encode_pairs
from genprop_cli.toy import read_eval_set
from genprop_cli.training.augment import SyntheticPair
from genprop_cli.training.losses import LossWeights

SIGMAS = (0.05, 0.2, 1.0, 3.0, 10.0, 30.0, 100.0, 700.0)


def identity_pair(frames: np.ndarray) -> SyntheticPair:
    mask = np.zeros(frames.shape[:3], dtype=bool)
    return SyntheticPair(original=frames, edited=frames.copy(), mask=mask, task=Task.EDIT, kind="unchanged")


@torch.no_grad()
def errors(pipeline, batch, sigma: float, sce_scale: float, seed: int) -> tuple[float, float]:
    """(weighted per-pixel loss, latent SNR in dB of the denoised estimate) at one noise level: the training
    objective's own loss, whose L_non-mask is the whole-frame mean here since the mask is empty."""
    x0 = batch.target
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    terms = denoising_loss(
        functools.partial(pipeline.denoiser, sce_scale=sce_scale), batch, LossWeights(grad=0.0), torch.Generator(),
        time_ids=pipeline._added_time_ids(1, pipeline.conditioning).float(),
        sigma=torch.full((x0.shape[0],), sigma), noise=noise,
    )  # fmt: skip
    weighted = float(terms.non_mask)
    mse = weighted * sigma**2 / (sigma**2 + 1)  # undo the loss weight (sigma^2 + 1) / sigma^2
    return weighted, 10 * math.log10(float(x0.var()) / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_set")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--adapter")
    parser.add_argument("--examples", type=int, default=3)
    args = parser.parse_args()
    pipeline = GenProp.load(args.model, adapter=args.adapter, device="cpu").pipeline
    examples = read_eval_set(args.eval_set)[: args.examples]
    batch = encode_pairs(pipeline, [identity_pair(e.source) for e in examples], torch.Generator().manual_seed(0))
    print("| sigma | loss, adapter | loss, backbone alone | latent SNR dB, adapter | backbone alone |")
    print("|---|---|---|---|---|")
    for i, sigma in enumerate(SIGMAS):
        on, off = errors(pipeline, batch, sigma, 1.0, i), errors(pipeline, batch, sigma, 0.0, i)
        print(f"| {sigma:g} | {on[0]:.3f} | {off[0]:.3f} | {on[1]:.1f} | {off[1]:.1f} |")


if __name__ == "__main__":
    main()
