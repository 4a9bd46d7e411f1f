"""GenProp denoiser step vs bare backbone step, measured side by side in one run (CPU, tiny models of
both backbone families: the SVD U-Net and the Wan DiT).

    python benchmarks/bench_denoiser.py [--family svd|wan|both] [--frames 32] [--repeats 15]

Both denoisers share the same backbone weights and inputs; each repeat runs the bare backbone, the full
GenProp step (SCE + MPD: every training step, and every sampling step with --preserve) and the sampling
step (the MPD skipped: sampling reads the mask after its last step only), in an order that rotates from
repeat to repeat so that machine noise hits all alike. Ratios are taken within each repeat and the median
is reported.

Expected cost: the SCE copies the first N of the backbone's M blocks and the MPD one more, so the full
step should cost about 1 + (N + 1) / M of the bare step, and the sampling step 1 + N / M. That block count
is the estimate for a DiT, whose blocks are identical. A U-Net's blocks differ a lot in cost (the first
down block and the last up block, which the MPD copies, run at full latent resolution), so for the SVD
U-Net the estimate weighs each copied block by its time in the same repeat's bare pass (timed with
forward hooks on the top-level blocks: a few microseconds against a step of 100+ ms).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from genprop_cli.families import backbone_for
from genprop_cli.families.svd.tiny import build_random_tiny_pipeline
from genprop_cli.models.genprop import AdapterConfig, GenPropAdapter, GenPropDenoiser


class BlockTimer:
    """Seconds each named block spent in the forwards since the last `reset` (forward hooks)."""

    def __init__(self, blocks: dict[str, nn.Module]) -> None:
        self.spent: dict[str, float] = {}
        self._handles = []
        for name, block in blocks.items():
            self._handles.append(block.register_forward_pre_hook(self._start(name)))
            self._handles.append(block.register_forward_hook(self._stop(name)))

    def _start(self, name: str):
        def hook(_module, _args):
            self.spent[name] = self.spent.get(name, 0.0) - time.perf_counter()

        return hook

    def _stop(self, name: str):
        def hook(_module, _args, _output):
            self.spent[name] += time.perf_counter()

        return hook

    def reset(self) -> None:
        self.spent = {}


def interleaved(
    calls: dict[str, Callable[[], object]],
    repeats: int,
    before_each: Callable[[], None] | None = None,
    after_each: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each call per repeat (after two warm-ups each), the order rotating from repeat to repeat;
    `before_each` / `after_each` run around every repeat, outside the timing."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for _ in range(2):
            for call in calls.values():
                call()
        for r in range(repeats):
            if before_each is not None:
                before_each()
            for name in names[r % len(names):] + names[: r % len(names)]:
                t0 = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - t0)
            if after_each is not None:
                after_each()
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(num, den, strict=True))


def genprop_calls(denoiser: GenPropDenoiser, inputs: dict, source: torch.Tensor) -> dict[str, Callable[[], object]]:
    task = torch.tensor([1])
    return {
        "full": lambda: denoiser(**inputs, source_latents=source, task_ids=task),
        "sampling": lambda: denoiser(**inputs, source_latents=source, task_ids=task, predict_mask=False),
    }


def bench_svd(args) -> None:
    """U-Net blocks differ a lot in cost, so the estimate weighs the copied blocks by their measured time."""
    unet = build_random_tiny_pipeline(seed=0).unet.eval()
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        sample=torch.randn(1, args.frames, 8, args.height, args.width, generator=g),
        timestep=torch.tensor([0.5]),
        encoder_hidden_states=torch.randn(1, 1, unet.config.cross_attention_dim, generator=g),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.02]]),
    )
    source = torch.randn(1, args.frames, 4, args.height, args.width, generator=g)
    # GenProp's copies are made from a copy taken before the timing hooks exist (a deepcopy carries hooks).
    pristine = copy.deepcopy(unet)
    blocks = {f"down{i}": b for i, b in enumerate(unet.down_blocks)}
    blocks |= {"mid": unet.mid_block} | {f"up{i}": b for i, b in enumerate(unet.up_blocks)}
    timer = BlockTimer(blocks)
    m = backbone_for("svd", copy.deepcopy(pristine)).num_blocks
    encoder_names = [f"down{i}" for i in range(len(unet.down_blocks))] + ["mid"]
    last_up = f"up{len(unet.up_blocks) - 1}"

    print(f"tiny SVD U-Net (M={m} blocks), {args.frames} frames, latent {args.height}x{args.width}, {args.threads} "
          f"threads, torch {torch.__version__}, median of {args.repeats} per-repeat ratios")
    print(f"{'N':>3} {'bare ms':>8} {'full ms':>8} {'full/bare':>10} {'1+(N+1)/M':>10} {'block-time est':>15} "
          f"{'full/est':>9} {'sampling/bare':>14} {'est':>6} {'sampling/est':>13}")
    for n in range(1, len(encoder_names) + 1):
        backbone = backbone_for("svd", copy.deepcopy(pristine))
        denoiser = GenPropDenoiser(backbone, GenPropAdapter(backbone, AdapterConfig("svd", n)))
        spent_per_repeat: list[dict[str, float]] = []

        calls = {"bare": lambda: unet(**inputs, return_dict=False)} | genprop_calls(denoiser, inputs, source)
        times = interleaved(calls, args.repeats, timer.reset, lambda: spent_per_repeat.append(dict(timer.spent)))
        bare = times["bare"]
        # Each repeat's estimate comes from the block times of its own bare pass (the only hooked forward).
        sce = [sum(s[x] for x in encoder_names[:n]) for s in spent_per_repeat]
        lean_est = [1 + c / b for c, b in zip(sce, bare, strict=True)]
        full_est = [1 + (c + s[last_up]) / b for c, s, b in zip(sce, spent_per_repeat, bare, strict=True)]
        full_ratio = [f / b for f, b in zip(times["full"], bare)]
        lean_ratio = [f / b for f, b in zip(times["sampling"], bare)]
        med = statistics.median
        print(f"{n:>3} {med(bare) * 1e3:8.1f} {med(times['full']) * 1e3:8.1f} {med(full_ratio):10.3f} "
              f"{1 + (n + 1) / m:10.3f} {med(full_est):15.3f} {median_ratio(full_ratio, full_est):9.3f} "
              f"{med(lean_ratio):14.3f} {med(lean_est):6.3f} {median_ratio(lean_ratio, lean_est):13.3f}")


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
          f"{args.height}x{args.width} ({tokens} tokens), {args.threads} threads, median of {args.repeats} "
          "per-repeat ratios")
    print(f"{'N':>3} {'bare ms':>8} {'full ms':>8} {'full/bare':>10} {'1+(N+1)/M':>10} {'full/est':>9} "
          f"{'sampling/bare':>14} {'1+N/M':>6} {'sampling/est':>13}")
    for n in (1, 3, 6, 12):
        backbone = backbone_for("wan", copy.deepcopy(transformer))
        denoiser = GenPropDenoiser(backbone, GenPropAdapter(backbone, AdapterConfig("wan", n)))
        calls = {"bare": lambda: transformer(**inputs, return_dict=False)} | genprop_calls(denoiser, inputs, source)
        times = interleaved(calls, args.repeats)
        full = median_ratio(times["full"], times["bare"])
        lean = median_ratio(times["sampling"], times["bare"])
        full_est, lean_est = 1 + (n + 1) / m, 1 + n / m
        print(f"{n:>3} {statistics.median(times['bare']) * 1e3:8.1f} {statistics.median(times['full']) * 1e3:8.1f} "
              f"{full:10.3f} {full_est:10.3f} {full / full_est:9.3f} {lean:14.3f} {lean_est:6.3f} {lean / lean_est:13.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("svd", "wan", "both"), default="both")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=16, help="latent height (64x64 pixels -> 16 with the tiny VAEs)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.family in ("svd", "both"):
        bench_svd(args)
    if args.family in ("wan", "both"):
        bench_wan(args)


if __name__ == "__main__":
    main()
