"""How fast an adapter recipe learns to carry the source through (issue 12): train on ONE clip of a dataset for a
few steps, then propagate that clip from its own, unedited first frame (identity propagation) and score it
against the clip. A zero adapter scores what the backbone alone does; a perfect copy scores the VAE's ceiling.

    python scripts/probe_copy.py --data build/toy2/data --clip toy-00004 --steps 150 \
        [--lr 2e-4] [--noise-mean 0.7 --noise-std 1.6] [--model toy] [--work /tmp/probe-copy]

Prints the identity PSNR of the zero adapter and of the trained one (32 frames, the variant's sampling).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from genprop_cli.api import Clip, GenProp, PropagationOptions, Task
from genprop_cli.evaluation import metrics
from genprop_cli.training.losses import LossWeights
from genprop_cli.training.objective import NoiseSchedule
from genprop_cli.training.trainer import TrainConfig, train


def one_clip_dataset(data: Path, clip: str, work: Path) -> Path:
    """A DAVIS-layout dataset holding only `clip` (its frames and annotations)."""
    root = work / "data"
    for part in ("JPEGImages", "Annotations"):
        source = next((data / part).glob(f"*/{clip}"))
        shutil.copytree(source, root / part / source.parent.name / clip, dirs_exist_ok=True)
    return root


def zero_adapter(model_name: str, path: Path) -> Path:
    """A zero-initialised adapter file for the variant (GenProp is then exactly its backbone)."""
    import torch

    from genprop_cli.families import sampler_class
    from genprop_cli.weights import resolve_variant

    resolved = resolve_variant(model_name, require_adapter=False)
    pipe = sampler_class(resolved.spec.family).from_pretrained(
        resolved.backbone_dir, None, device=torch.device("cpu"), dtype=torch.float32,
        file_variant=resolved.spec.backbone_file_variant,
    )  # fmt: skip
    pipe.denoiser.adapter.save(path)
    return path


def identity_psnr(model_name: str, adapter: Path, frames: np.ndarray) -> float:
    model = GenProp.load(model_name, adapter=str(adapter), device="cpu")
    out = np.stack([f.rgb for f in model.propagate(Clip.from_frames(frames, frames[0]), PropagationOptions(task=Task.EDIT))])
    return metrics.psnr(out, frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--noise-mean", type=float, default=NoiseSchedule().log_sigma_mean)
    parser.add_argument("--noise-std", type=float, default=NoiseSchedule().log_sigma_std)
    parser.add_argument("--frames", type=int, default=32, help="frames scored (and of the clip's start)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/probe-copy"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    data = one_clip_dataset(args.data, args.clip, args.work)
    paths = sorted((data / "JPEGImages").glob(f"*/{args.clip}/*.jpg"))[: args.frames]
    frames = np.stack([np.array(Image.open(p).convert("RGB")) for p in paths])
    config = TrainConfig(
        data=str(data), output=str(args.work / "run"), model=args.model, steps=args.steps, batch_size=1,
        lr=args.lr, warmup_steps=10, frames=16, width=64, height=64, mixed_precision="bf16", save_every=10**6,
        seed=0, device="cpu", loss=LossWeights(), noise=NoiseSchedule(args.noise_mean, args.noise_std),
    )  # fmt: skip
    result = train(config)
    zero = zero_adapter(args.model, args.work / "zero.safetensors")
    print(f"zero adapter: identity PSNR {identity_psnr(args.model, zero, frames):.2f} dB")
    trained = identity_psnr(args.model, Path(result.adapter), frames)
    print(f"after {args.steps} steps (lr {args.lr}, log sigma ~ N({args.noise_mean}, {args.noise_std})): "
          f"identity PSNR {trained:.2f} dB")  # fmt: skip


if __name__ == "__main__":
    main()
