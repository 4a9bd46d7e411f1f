"""A short toy-VAE training run that reports held-out reconstruction PSNR per background kind.

    python scripts/probe_toy_vae.py --data build/toy2/data --steps 1500 --channels 32,64,128 \
        --decoder 2d --norm-groups 8 --no-mid-attention
    python scripts/probe_toy_vae.py --data build/toy2/data --checkpoint build/toy2/checkpoints/vae-00004000 \
        --config configs/toy/backbone-wide.toml      # score a training run's checkpoint instead

It is how the first-stage recipe of issue 12 was chosen (docs/results.md): `train_vae` itself (L1 + MSE
+ a tiny KL, bf16 autocast, random 32x32 crops, warm-up and cosine decay), scored on full
64x64 frames of scenes drawn with a seed the training data never used, one row per background kind
(the photo row uses the held-out photo).
"""

from __future__ import annotations

import argparse
import math
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from genprop_cli.families.svd.sampler import decode_vae
from genprop_cli.toy.world import BACKGROUND_KINDS, HELD_OUT_PHOTOS, TRAIN_PHOTOS, render, sample_scene
from genprop_cli.training.backbone import BackboneArchitecture, BackboneTrainConfig, autocast, train_vae
from genprop_cli.training.objective import to_model_frames

HELD_OUT_SEED = 12345


def held_out_frames(per_kind: int = 4, frames: int = 4, size: int = 64) -> dict[str, torch.Tensor]:
    """(per_kind * frames, 3, size, size) frames in [-1, 1] for each background kind."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    out = {}
    for kind in BACKGROUND_KINDS:
        photos = HELD_OUT_PHOTOS if kind == "photo" else TRAIN_PHOTOS
        scenes = [sample_scene(rng, frames=frames, size=size, backgrounds=(kind,), photos=photos, camera_zoom=0.008)
                  for _ in range(per_kind)]  # fmt: skip
        out[kind] = torch.cat([to_model_frames(render(s).frames) for s in scenes])
    return out


@torch.no_grad()
def psnr_by_kind(vae: torch.nn.Module, held: dict[str, torch.Tensor], config: BackboneTrainConfig,
                 frames: int = 4) -> dict[str, float]:  # fmt: skip
    vae.eval()
    scores = {}
    with autocast(config, torch.device("cpu")):
        for kind, x in held.items():
            recon = decode_vae(vae, vae.encode(x).latent_dist.mode(), frames).float().clamp(-1, 1)
            scores[kind] = round(-10 * math.log10(((recon - x) / 2).square().mean().item()), 1)
    vae.train()
    return scores


def report(step: int, seconds: float, loss: float, scores: dict[str, float]) -> None:
    row = " ".join(f"{k} {v:.1f}" for k, v in scores.items())
    print(f"step {step} ({seconds:.0f} s) loss {loss:.4f} | {row} | mean {np.mean(list(scores.values())):.1f}",
          flush=True)


def train(vae: torch.nn.Module, config: BackboneTrainConfig, held: dict[str, torch.Tensor], evals: int) -> None:
    """`train_vae` itself, scored from its log callback `evals` times (and at the last step)."""
    started = time.perf_counter()

    def score(record: dict) -> None:
        if record["step"] > 1:
            report(record["step"], time.perf_counter() - started, record["loss"], psnr_by_kind(vae, held, config))

    every = max(1, config.vae_steps // evals)
    train_vae(vae, replace(config, log_every=every), torch.device("cpu"), score)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a `genprop toy dataset` folder")
    parser.add_argument("--config", type=Path, help="a backbone training config (its [architecture] and VAE options)")
    parser.add_argument("--checkpoint", type=Path, help="score this vae-N checkpoint of a run instead of training")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--evals", type=int, default=1, help="how many times to score during the run")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--channels", default="32,64,128")
    parser.add_argument("--latent-channels", type=int, default=16)
    parser.add_argument("--decoder", default="2d", choices=("temporal", "2d"))
    parser.add_argument("--norm-groups", type=int, default=8)
    parser.add_argument("--no-mid-attention", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.config is not None:
        raw = tomllib.loads(args.config.read_text())
        config = BackboneTrainConfig.from_dict({**raw, "data": args.data, "output": "unused"})
    else:
        arch = BackboneArchitecture(
            vae_channels=tuple(int(c) for c in args.channels.split(",")), latent_channels=args.latent_channels,
            vae_decoder=args.decoder, vae_norm_groups=args.norm_groups, vae_mid_attention=not args.no_mid_attention,
        )  # fmt: skip
        config = BackboneTrainConfig(data=args.data, output="unused", vae_steps=args.steps, vae_lr=args.lr,
                                     vae_warmup_steps=50, mixed_precision="bf16", architecture=arch)  # fmt: skip
    vae = config.architecture.build_vae()
    print(f"VAE {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters", flush=True)
    held = held_out_frames()
    if args.checkpoint is not None:
        from safetensors.torch import load_file

        tensors = load_file(str(args.checkpoint / "state.safetensors"))
        vae.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        report(int(args.checkpoint.name.rsplit("-", 1)[1]), 0.0, math.nan, psnr_by_kind(vae, held, config))
        return
    train(vae, config, held, args.evals)


if __name__ == "__main__":
    main()
