"""GenProp denoiser step vs bare backbone step, measured side by side in one run (CPU, tiny models of
both backbone families: the SVD U-Net and the Wan DiT).

    python benchmarks/bench_denoiser.py [--family svd|wan|both] [--frames 32] [--repeats 7]

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


def interleaved_medians(bare_call, genprop_call, repeats: int) -> tuple[float, float]:
    """Median seconds of the two calls, run alternately after two warm-ups each."""
    bare_t, gp_t = [], []
    with torch.no_grad():
        for _ in range(2):
            bare_call()
            genprop_call()
        for _ in range(repeats):
            t0 = time.perf_counter()
            bare_call()
            t1 = time.perf_counter()
            genprop_call()
            t2 = time.perf_counter()
            bare_t.append(t1 - t0)
            gp_t.append(t2 - t1)
    return statistics.median(bare_t), statistics.median(gp_t)


# A DiT big enough that its blocks dominate (D = 128, 12 blocks), still seconds on a CPU. Real Wan blocks
# are far wider (3072 / 5120), which makes the per-block share even larger there.
WAN_BENCH = dict(
    patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=36, out_channels=16,
    text_dim=64, freq_dim=256, ffn_dim=512, num_layers=12, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    rope_max_seq_len=1024, image_dim=32,
)  # fmt: skip


def bench_wan(args) -> None:
    """Every DiT block costs the same, so the SCE + MPD should cost (N + 1) / M of the backbone."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**WAN_BENCH).eval()
    latent_frames = (args.frames - 1 + 3) // 4 + 1  # a chunk of F frames runs as 4k+1 -> (F_pad - 1) / 4 + 1 latents
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 36, latent_frames, args.height, args.width, generator=g),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 64, WAN_BENCH["text_dim"], generator=g),
        encoder_hidden_states_image=torch.randn(1, 17, WAN_BENCH["image_dim"], generator=g),
    )
    source = torch.randn(1, 16, latent_frames, args.height, args.width, generator=g)
    m = WAN_BENCH["num_layers"]
    tokens = latent_frames * (args.height // 2) * (args.width // 2)
    print(f"\ntiny Wan DiT (D=128, M={m} blocks), {args.frames} frames -> {latent_frames} latent frames, latent "
          f"{args.height}x{args.width} ({tokens} tokens), {args.threads} threads, median of {args.repeats}")
    print(f"{'N (SCE blocks)':>15} {'bare ms':>9} {'genprop ms':>11} {'ratio':>7} {'1+(N+1)/M':>10} {'ratio/est':>10}")
    for n in (1, 3, 6, 12):
        hooked = copy.deepcopy(transformer)
        backbone = backbone_for("wan", hooked)
        denoiser = GenPropDenoiser(backbone, GenPropAdapter(backbone, AdapterConfig("wan", n)))
        task = torch.tensor([1])
        bare, gp = interleaved_medians(
            lambda: transformer(**inputs, return_dict=False),
            lambda: denoiser(**inputs, source_latents=source, task_ids=task),
            args.repeats,
        )
        estimate = 1 + (n + 1) / m
        print(f"{n:>15} {bare * 1e3:9.1f} {gp * 1e3:11.1f} {gp / bare:7.3f} {estimate:10.3f} {gp / bare / estimate:10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("svd", "wan", "both"), default="both")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=16, help="latent height (64x64 pixels -> 16 with the tiny VAEs)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.family in ("svd", "both"):
        bench_svd(args)
    if args.family in ("wan", "both"):
        bench_wan(args)


def bench_svd(args) -> None:
    """U-Net blocks differ a lot in cost, so the block-count estimate is shown next to a block-time one."""
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
        bare, gp = interleaved_medians(
            lambda: unet(**inputs, return_dict=False),
            lambda: denoiser(**inputs, source_latents=source, task_ids=task),
            args.repeats,
        )
        # per_block holds three forwards' worth of time; the estimate adds one forward of the copied blocks.
        copied = (sum(per_block[name] for name in encoder_names[:n]) + per_block[last_up]) / 3
        print(f"{n:>15} {bare * 1e3:9.1f} {gp * 1e3:11.1f} {gp / bare:7.3f} {1 + (n + 1) / m:12.3f} "
              f"{1 + copied / bare:15.3f}")


if __name__ == "__main__":
    main()
