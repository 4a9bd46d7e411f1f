"""GenProp denoiser step vs bare backbone step, measured side by side in one run (CPU, tiny SVD model).

    python benchmarks/bench_denoiser.py [--frames 32] [--repeats 7]

Both denoisers share the same backbone weights and inputs; runs are interleaved (bare, genprop, bare, ...)
so that machine noise hits both alike, and the median is reported. The SCE copies the first N of the
U-Net's blocks and the MPD one more block, so the expected extra cost is roughly the cost of those blocks;
`(N + 1) / M` counts blocks, while the "block-time estimate" weighs each copied block by its measured time
in the backbone (U-Net blocks differ a lot in cost, unlike DiT blocks).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from genprop_cli.models.backbones import backbone_for
from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter, GenPropDenoiser
from genprop_cli.random_tiny import build_random_tiny_pipeline


def block_times(unet, inputs) -> dict[str, float]:
    """Seconds spent in each top-level block of one bare forward (forward hooks with timestamps)."""
    spent: dict[str, float] = {}
    handles = []
    named = {f"down{i}": b for i, b in enumerate(unet.down_blocks)}
    named |= {"mid": unet.mid_block} | {f"up{i}": b for i, b in enumerate(unet.up_blocks)}
    for name, block in named.items():
        def pre(_m, _a, _n=name):
            spent[_n] = spent.get(_n, 0.0) - time.perf_counter()

        def post(_m, _a, _o, _n=name):
            spent[_n] += time.perf_counter()

        handles += [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    with torch.no_grad():
        for _ in range(3):
            unet(**inputs, return_dict=False)
    for h in handles:
        h.remove()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=16, help="latent height (64x64 pixels -> 16 with the tiny VAE)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    unet = build_random_tiny_pipeline(seed=0).unet.eval()
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        sample=torch.randn(1, args.frames, 8, args.height, args.width, generator=g),
        timestep=torch.tensor([0.5]),
        encoder_hidden_states=torch.randn(1, 1, unet.config.cross_attention_dim, generator=g),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.02]]),
    )
    source = torch.randn(1, args.frames, 4, args.height, args.width, generator=g)
    per_block = block_times(unet, inputs)

    print(f"tiny SVD U-Net, {args.frames} frames, latent {args.height}x{args.width}, {args.threads} threads, "
          f"torch {torch.__version__}, median of {args.repeats}")
    print(f"{'N (SCE blocks)':>15} {'bare ms':>9} {'genprop ms':>11} {'ratio':>7} {'(N+1)/M est':>12} {'block-time est':>15}")
    m = backbone_for("svd", unet).num_blocks
    encoder_names = [f"down{i}" for i in range(len(unet.down_blocks))] + ["mid"]
    last_up = f"up{len(unet.up_blocks) - 1}"
    for n in range(1, len(encoder_names) + 1):
        hooked = copy.deepcopy(unet)
        backbone = backbone_for("svd", hooked)
        denoiser = GenPropDenoiser(backbone, GenPropAdapter(backbone, AdapterConfig("svd", n)))
        task = torch.tensor([1])
        bare_t, gp_t = [], []
        with torch.no_grad():
            for _ in range(2):  # warm-up
                unet(**inputs, return_dict=False)
                denoiser(**inputs, source_latents=source, task_ids=task)
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                unet(**inputs, return_dict=False)
                t1 = time.perf_counter()
                denoiser(**inputs, source_latents=source, task_ids=task)
                t2 = time.perf_counter()
                bare_t.append(t1 - t0)
                gp_t.append(t2 - t1)
        bare, gp = statistics.median(bare_t), statistics.median(gp_t)
        # per_block holds three forwards' worth of time; the estimate adds one forward of the copied blocks.
        copied = (sum(per_block[name] for name in encoder_names[:n]) + per_block[last_up]) / 3
        print(f"{n:>15} {bare * 1e3:9.1f} {gp * 1e3:11.1f} {gp / bare:7.3f} {1 + (n + 1) / m:12.3f} "
              f"{1 + copied / bare:15.3f}")


if __name__ == "__main__":
    main()
